"""Checked-in reference data (rule tables, source formats, sample-kit name lists), read through `path`."""

from importlib import resources
from pathlib import Path


def path(relative: str) -> Path:
    """The on-disk path of a reference file, e.g. `path("sample_kit/inat21_taxa.csv")`."""
    found = resources.files(__name__).joinpath(relative)
    if not found.is_file():
        raise FileNotFoundError(f"no reference file {relative!r} in data_manifests/")
    return Path(str(found))
