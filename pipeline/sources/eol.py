"""EOL: the media manifest (`media_manifest.tgz` of CSV chunks) and the images the download stage fetched.

    tol download demo-out/kit/eol/media_manifest.tgz demo-out/out/downloads

The manifest's real quirks are handled here: header rows repeated where chunks were concatenated, quoted owners
containing commas, empty owners, integer ids written as floats ("97.0"). A row that cannot be used becomes a
failure naming the chunk and the line.
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.fsio import expand, open_read
from pipeline.records import Failure, Reason

MANIFEST_COLUMNS = ("EOL content ID", "EOL page ID", "Medium Source URL", "EOL Full-Size Copy URL", "License Name",
                    "Copyright Owner")


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One usable media-manifest row, with the chunk and line it came from."""

    content_id: int
    page_id: int
    medium_source_url: str
    full_size_url: str
    license_name: str
    copyright_owner: str
    file: str
    line: int


def lenient_int(text: str) -> int:
    """An id as spreadsheets export it: "97", " 97 ", "97.0" -> 97; anything else raises ValueError."""
    try:
        value = float(text) if "." in text else int(text)
    except ValueError:
        value = -1.0
    if value != int(value) or value < 0:
        raise ValueError(f"id {text!r} is not a non-negative integer")
    return int(value)


def parse_chunk(text: str, name: str) -> Iterator[ManifestRow | Failure]:
    """Rows of one manifest chunk; its header (and any repeat of it) is skipped."""
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        if tuple(row) == MANIFEST_COLUMNS or not row:
            continue
        line = reader.line_num
        if len(row) != len(MANIFEST_COLUMNS):
            yield Failure.of(Reason.MALFORMED_ROW, f"expected {len(MANIFEST_COLUMNS)} fields, got {len(row)}",
                             source="eol", file=name, line=line)
            continue
        try:
            content_id, page_id = lenient_int(row[0]), lenient_int(row[1])
        except ValueError as error:
            yield Failure.of(Reason.MALFORMED_ROW, f"{error} (columns: EOL content ID, EOL page ID)", source="eol",
                             file=name, line=line)
            continue
        yield ManifestRow(content_id, page_id, row[2].strip(), row[3].strip(), row[4].strip(), row[5].strip(), name, line)


def manifest_chunks(path: str) -> Iterator[tuple[str, str]]:
    """(name, text) of each chunk: members of a .tgz/.tar.gz, or the CSV files a path or glob names."""
    for match in expand(path):
        if match.endswith((".tgz", ".tar.gz")):
            with open_read(match) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".csv"):
                        yield member.name, tar.extractfile(member).read().decode("utf-8-sig")
        else:
            with open_read(match) as raw:
                yield match.rsplit("/", 1)[-1], raw.read().decode("utf-8-sig")


def iter_manifest(path: str) -> Iterator[ManifestRow | Failure]:
    """Every row of the media manifest at `path` (a .tgz, a CSV, or a glob of CSV chunks), in file order."""
    for name, text in manifest_chunks(path):
        yield from parse_chunk(text, name)
