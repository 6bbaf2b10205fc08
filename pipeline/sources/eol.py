"""EOL: the media manifest (`media_manifest.tgz` of CSV chunks) and the images the download stage fetched.

    tol download demo-out/kit/eol/media_manifest.tgz demo-out/out/downloads

The manifest's real quirks are handled here: header rows repeated where chunks were concatenated, quoted owners
containing commas, empty owners, integer ids written as floats ("97.0"). A row that cannot be used becomes a
failure naming the chunk and the line.

Below the manifest parsing, the reader that joins the manifest to the download stage's parquet parts
(`DOWNLOADS_DIR/part-*.parquet`) by content id:

    .venv/bin/python -c "
    import apache_beam as beam
    from pipeline.sources.eol import ReadEol
    with beam.Pipeline('FnApiRunner') as p:
        out = p | ReadEol('demo-out/kit/eol/media_manifest.tgz', 'demo-out/out/downloads')
        out['failures'] | beam.Map(print)"

`ReadEol` returns `{"records": PCollection[SourceImage], "failures": PCollection[Failure]}`. Where several parts
hold a content id (a `--retry-failed` run adds parts), an "ok" row beats "failed" ones and, among equals, the newest
part wins: the highest retry round, then the part number, then the name (see `pipeline.parts`). A manifest row with
no download row is missing_image ("not downloaded: run tol download"); a failed download keeps its own reason and
detail; a repeated content id keeps its first row.
"""

from __future__ import annotations

import csv
import io
import posixpath
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipeline.fsio import expand, join, open_read
from pipeline.parts import parse_part_name
from pipeline.records import Failure, Reason, SourceRecord
from pipeline.sources.common import FAILURES, RECORDS, route

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


# ---- reading the manifest together with the download stage's parquet parts ----

SOURCE = "eol"
SourceImage = tuple[SourceRecord, bytes]
DOWNLOAD_COLUMNS = ("content_id", "url", "status", "reason", "detail", "data")
PARTS_GLOB = "part-*.parquet"


@dataclass(frozen=True, slots=True)
class DownloadRow:
    """The columns of one download-part row the reader needs, with the part file it came from."""

    content_id: int
    part: str
    status: str
    url: str = ""
    reason: str = ""
    detail: str = ""
    data: bytes | None = None
    md5: str = ""  # of `data`, as the download stage computed it


def read_download_part(path: str, batch_size: int = 64) -> Iterator[DownloadRow]:
    """The rows of one parquet part, a batch at a time (bytes included)."""
    with open_read(path) as raw:
        part = pq.ParquetFile(raw)
        missing = [name for name in DOWNLOAD_COLUMNS if name not in part.schema_arrow.names]
        if missing:
            raise ValueError(f"{path} is not a download part: no column {', '.join(missing)} "
                             f"(expected at least {', '.join(DOWNLOAD_COLUMNS)})")
        name = posixpath.basename(path.replace("\\", "/"))
        columns = [*DOWNLOAD_COLUMNS, *(["md5"] if "md5" in part.schema_arrow.names else [])]
        for batch in part.iter_batches(batch_size=batch_size, columns=columns):
            for row in batch.to_pylist():
                yield DownloadRow(int(row["content_id"]), name, row["status"] or "", row["url"] or "",
                                  row["reason"] or "", row["detail"] or "", row["data"], row.get("md5") or "")


def list_download_parts(downloads_dir: str) -> list[str]:
    """The part files under `downloads_dir`, sorted; none (or no directory) is an empty list, not an error."""
    try:
        return expand(join(downloads_dir, PARTS_GLOB))
    except FileNotFoundError:
        return []


def part_order(part: str) -> tuple[int, int, str]:
    """Sort key of a download part: later retry rounds are newer (`part-00003-retry-2.parquet` -> (2, 3, name));
    a name the download stage does not write sorts before every part it does."""
    parsed = parse_part_name(part)
    return (parsed[1], parsed[0], part) if parsed else (-1, -1, part)


def winning_download(rows: Iterable[DownloadRow]) -> DownloadRow | None:
    """An ok row over failed ones; among equals the newest part (then the row's own fields) wins."""
    rows = list(rows)
    pool = [row for row in rows if row.status == "ok"] or rows
    return max(pool, key=lambda r: (part_order(r.part), r.url, r.reason, r.detail, r.data or b""), default=None)


def download_reason(row: DownloadRow) -> tuple[Reason, str]:
    """The reason and detail a failed download row records; an unknown reason is itself a malformed row."""
    try:
        return Reason(row.reason), row.detail
    except ValueError:
        return Reason.MALFORMED_ROW, (f"download row in {row.part} has status {row.status!r} and unknown reason "
                                      f"{row.reason!r}: {row.detail}")


def manifest_record(row: ManifestRow, url: str = "", md5: str = "") -> SourceRecord:
    provenance = (("medium_source_url", row.medium_source_url), ("full_size_url", row.full_size_url))
    return SourceRecord.create(
        SOURCE, str(row.content_id), image_ref=str(row.content_id), label_key=f"eol:{row.page_id}",
        label=(("page_id", str(row.page_id)),), license=row.license_name, rights_holder=row.copyright_owner,
        source_url=url or row.full_size_url, provenance=provenance + ((("md5", md5),) if md5 else ()))


def eol_record(row: ManifestRow, download: DownloadRow | None) -> SourceImage | Failure:
    """A manifest row with the bytes its winning download fetched, or the failure that replaces them."""
    if download is None:
        return Failure.of(Reason.MISSING_IMAGE, "not downloaded: run tol download", record=manifest_record(row),
                          file=row.file, line=row.line)
    record = manifest_record(row, download.url, download.md5 if download.status == "ok" else "")
    if download.status != "ok":
        reason, detail = download_reason(download)
        return Failure.of(reason, detail, record=record, file=row.file, line=row.line)
    return record, download.data or b""


def eol_records(manifest_rows: Iterable[ManifestRow | Failure],
                download_rows: Iterable[DownloadRow]) -> Iterator[SourceImage | Failure]:
    """Join manifest rows (in manifest order) to download rows by content id; a repeated id keeps its first row."""
    downloads: dict[int, list[DownloadRow]] = defaultdict(list)
    for download in download_rows:
        downloads[download.content_id].append(download)
    first: dict[int, ManifestRow] = {}
    for row in manifest_rows:
        if isinstance(row, Failure):
            yield row
        elif row.content_id in first:
            kept = first[row.content_id]
            yield Failure.of(Reason.MALFORMED_ROW, f"duplicate content id, first at {kept.file}:{kept.line}",
                             source=SOURCE, file=row.file, line=row.line)
        else:
            first[row.content_id] = row
            yield eol_record(row, winning_download(downloads.get(row.content_id, ())))


class ReadManifest(beam.DoFn):
    """Rows keyed by content id, with their position in the manifest so the first of a repeated id is known."""

    def process(self, path: str) -> Iterator[object]:
        for position, item in enumerate(iter_manifest(path)):
            yield route(SOURCE, item) if isinstance(item, Failure) else (item.content_id, (position, item))


class ReadDownloadPart(beam.DoFn):
    def process(self, path: str) -> Iterator[tuple[int, DownloadRow]]:
        for row in read_download_part(path):
            Metrics.counter(SOURCE, f"download_rows_{row.status}").inc()
            yield row.content_id, row


class JoinDownloads(beam.DoFn):
    def process(self, element: tuple[int, Mapping[str, list]]) -> Iterator[object]:
        _, grouped = element
        rows = [row for _, row in sorted(grouped["manifest"], key=lambda positioned: positioned[0])]
        if not rows:
            Metrics.counter(SOURCE, "downloads_without_manifest_row").inc()
        for item in eol_records(rows, grouped["downloads"]):
            yield route(SOURCE, item)


class ReadEol(beam.PTransform):
    """EOL records with their downloaded bytes: `{"records": SourceImage, "failures": Failure}`."""

    def __init__(self, manifest_path: str, downloads_dir: str) -> None:
        super().__init__()
        if not manifest_path or not downloads_dir:
            raise ValueError(f"ReadEol needs the media manifest and the downloads directory; got "
                             f"manifest_path={manifest_path!r}, downloads_dir={downloads_dir!r}")
        self.manifest_path, self.downloads_dir = manifest_path, downloads_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        manifest = (pbegin
                    | "ManifestPath" >> beam.Create([self.manifest_path])
                    | "ReadManifest" >> beam.ParDo(ReadManifest()).with_outputs(FAILURES, main="rows"))
        # rows: (content_id, (position, ManifestRow))
        downloads = (pbegin
                     | "DownloadsDir" >> beam.Create([self.downloads_dir])
                     | "ListParts" >> beam.FlatMap(list_download_parts)  # part path
                     | "SpreadParts" >> beam.Reshuffle()
                     | "ReadParts" >> beam.ParDo(ReadDownloadPart()))  # (content_id, DownloadRow)
        joined = ({"manifest": manifest["rows"], "downloads": downloads}
                  | "JoinByContentId" >> beam.CoGroupByKey()  # (content_id, {"manifest": [...], "downloads": [...]})
                  | "Join" >> beam.ParDo(JoinDownloads()).with_outputs(FAILURES, main=RECORDS))  # SourceImage
        return {RECORDS: joined[RECORDS],
                FAILURES: (manifest[FAILURES], joined[FAILURES]) | "Failures" >> beam.Flatten()}
