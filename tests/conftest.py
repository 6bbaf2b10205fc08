"""Shared fixtures: one small sample kit per test session, and the reference data in ../shared/data."""

from pathlib import Path

import pytest

from pipeline.samplekit.kit import KitConfig, build_kit

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
KIT_SCALE = 240


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample kit (seed 0) built once for the whole session; tests must not modify it."""
    out = tmp_path_factory.mktemp("kit")
    build_kit(KitConfig(out, seed=0, scale=KIT_SCALE, workers=2))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real reference data (../shared/data), present beside every checkout and in CI."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA
