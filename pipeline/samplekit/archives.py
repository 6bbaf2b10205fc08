"""Byte-reproducible archives and text files: fixed mtimes and owners, sorted members, atomic renames."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

# 2021-03-01T00:00:00Z: the iNat21 release date; any fixed instant would do.
FIXED_MTIME = 1_614_556_800
ZIP_DATE_TIME = (2021, 3, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it into place only if the block finishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def deterministic_gzip(path: Path) -> Iterator[gzip.GzipFile]:
    """A gzip stream with no name and mtime 0 in its header, so equal content gives equal bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        yield gz


def tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, FIXED_MTIME, 0, 0, "", ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    return info


def tar_gz_tree(root: Path, top: str, path: Path) -> None:
    """Pack the directory `root/top` as `path` (.tar.gz), members sorted, directories included."""
    with deterministic_gzip(path) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            tar.addfile(tar_info(rel_dir + "/", directory=True))
            for name in sorted(filenames):
                file_path = Path(dirpath) / name
                with open(file_path, "rb") as f:
                    tar.addfile(tar_info(f"{rel_dir}/{name}", file_path.stat().st_size), f)


def tar_gz_members(members: list[tuple[str, bytes]], path: Path) -> None:
    """Pack in-memory files as `path` (.tar.gz), in the order given."""
    with deterministic_gzip(path) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(tar_info(name, len(data)), io.BytesIO(data))


class DeterministicZip:
    """A zip written member by member with fixed timestamps and permissions (JPEGs stored, not deflated)."""

    def __init__(self, path: Path) -> None:
        self._atomic = atomic_path(path)
        self._zip = zipfile.ZipFile(self._atomic.__enter__(), "w", compression=zipfile.ZIP_STORED)

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self) -> None:
        self._zip.close()
        self._atomic.__exit__(None, None, None)

    def __enter__(self) -> DeterministicZip:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._zip.close()
            self._atomic.__exit__(kind, value, traceback)
