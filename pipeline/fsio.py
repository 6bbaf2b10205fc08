"""File access through Beam FileSystems, so every path may be local or a `gs://` / `s3://` URL."""

from __future__ import annotations

from typing import BinaryIO


def open_read(path: str) -> BinaryIO:
    """Open `path` for binary reading (seekable for local files and GCS)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type="uncompressed")


def expand(pattern: str) -> list[str]:
    """The sorted paths a glob pattern matches; raise FileNotFoundError naming the pattern if none."""
    from apache_beam.io.filesystems import FileSystems

    paths = sorted(metadata.path for result in FileSystems.match([pattern]) for metadata in result.metadata_list)
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    return paths


def join(base: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(base, *parts)
