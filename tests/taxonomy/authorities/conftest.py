"""The sample kit's authority dumps loaded once per test module, and an open read-only connection to it."""

from pathlib import Path

import duckdb
import pytest

from taxonomy.authorities import LoadReport, load_authorities


@pytest.fixture(scope="module")
def kit_load(kit: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadReport:
    """The kit's dumps loaded into a fresh database (tests must not modify it)."""
    return load_authorities(kit, tmp_path_factory.mktemp("authorities") / "authorities.duckdb")


@pytest.fixture()
def kit_db(kit_load: LoadReport):
    with duckdb.connect(str(kit_load.db_path), read_only=True) as con:
        yield con
