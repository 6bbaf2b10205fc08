"""The download stage's output directory: part files, the job record, and writing them so no reader sees half a file.

Every manifest row belongs to one part, `part_of(content_id, num_parts)`, a stable hash of its content id. A first
pass writes each part as `part-NNNNN.parquet` (five digits); every `--retry-failed` round K writes the rows still
failing as `part-NNNNN-retry-K.parquet` (K >= 1), so a row's latest outcome is in its highest round. Parts are
written to a hidden temp file (`.NAME.tmp-HEX`) renamed into place only when complete, and never rewritten: a name
that parses is a finished part. `_download.json` records what the first run fixed (part count, manifest checksum);
`manifest_failures.parquet` lists the manifest rows that could not be read. Paths go through Beam FileSystems
(imported on first use), so OUT_DIR may be local, gs:// or s3://.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fsio import expand, join, open_read
from pipeline.records import Failure

log = logging.getLogger(__name__)

MIB = 1024 * 1024
ROWS_PER_PART, MAX_PARTS = 1000, 100_000
JOB_FILE, MANIFEST_FAILURES = "_download.json", "manifest_failures.parquet"
PART_NAME = re.compile(r"part-(\d{5})(?:-retry-([1-9]\d*))?\.parquet")
TEMP_GLOB = ".*.tmp-*"  # what temp_name() makes
ROW_GROUP_ROWS, ROW_GROUP_BYTES = 64, 64 * MIB
PART_SCHEMA = pa.schema([
    ("content_id", pa.int64()), ("page_id", pa.int64()), ("url", pa.string()), ("http_status", pa.int32()),
    ("content_type", pa.string()), ("data", pa.binary()), ("md5", pa.string()), ("byte_count", pa.int64()),
    ("elapsed_s", pa.float64()), ("attempts", pa.int32()), ("status", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()),
])
MANIFEST_FAILURE_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                                     ("detail", pa.string())])


def _filesystems():
    """Beam's FileSystems, imported on first use so that this module loads without Beam."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


# ---- names -------------------------------------------------------------------------------------------------------

def part_of(content_id: int, num_parts: int) -> int:
    """The part a content id belongs to: a stable hash (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(str(content_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_parts


def part_name(part: int, retry_round: int = 0) -> str:
    return f"part-{part:05d}.parquet" if retry_round == 0 else f"part-{part:05d}-retry-{retry_round}.parquet"


def parse_part_name(name: str) -> tuple[int, int] | None:
    """(part, retry round; 0 for a first pass) of a finished part's file name, or None for any other name."""
    match = PART_NAME.fullmatch(name)
    return (int(match[1]), int(match[2] or 0)) if match else None


def default_num_parts(rows: int) -> int:
    return min(MAX_PARTS, max(1, math.ceil(rows / ROWS_PER_PART)))


def latest_failures(parts: Iterable[tuple[int, int, pa.Table]]) -> dict[int, int]:
    """content id -> part, for every row whose latest outcome (highest retry round) is a failure.

    `parts` holds (part, retry round, table with content_id and status) for each finished part file.
    """
    latest: dict[int, tuple[str, int]] = {}
    for part, _, table in sorted(parts, key=lambda item: item[1]):
        for content_id, status in zip(table["content_id"].to_pylist(), table["status"].to_pylist()):
            latest[content_id] = (status, part)
    return {content_id: part for content_id, (status, part) in latest.items() if status == "failed"}


# ---- the job record ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JobRecord:
    """What the first run fixed in OUT_DIR/_download.json; every later run must agree with it."""

    num_parts: int
    manifest: str
    manifest_bytes: int
    manifest_sha256: str
    manifest_rows: int
    format_version: int = 1


def check_job(recorded: JobRecord, num_parts: int | None, manifest_bytes: int, manifest_sha256: str,
              out_dir: str) -> None:
    """Raise ValueError if this run's --num-parts or manifest differ from what OUT_DIR was started with."""
    if num_parts is not None and num_parts != recorded.num_parts:
        raise ValueError(f"--num-parts {num_parts} differs from the {recorded.num_parts} parts {out_dir} was started "
                         f"with (recorded in {JOB_FILE}); omit --num-parts or pass {recorded.num_parts}, or use a new "
                         f"OUT_DIR")
    if (manifest_bytes, manifest_sha256) != (recorded.manifest_bytes, recorded.manifest_sha256):
        raise ValueError(f"the manifest ({manifest_bytes} bytes, sha256 {manifest_sha256[:12]}...) is not the one "
                         f"{out_dir} was started with ({recorded.manifest!r}: {recorded.manifest_bytes} bytes, sha256 "
                         f"{recorded.manifest_sha256[:12]}...); finished parts would miss its new rows: use a new "
                         f"OUT_DIR")


def manifest_fingerprint(pattern: str) -> tuple[int, str]:
    """(total bytes, sha256) of the manifest file(s) a path or glob names, in sorted order."""
    digest, size = hashlib.sha256(), 0
    for path in expand(pattern):
        with open_read(path) as file:
            while chunk := file.read(MIB):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def read_job(out_dir: str) -> JobRecord | None:
    path = join(out_dir, JOB_FILE)
    if not _filesystems().exists(path):
        return None
    with open_read(path) as file:
        return JobRecord(**json.loads(file.read().decode("utf-8")))


def write_job(out_dir: str, record: JobRecord) -> None:
    write_atomic(join(out_dir, JOB_FILE), (json.dumps(asdict(record), indent=1) + "\n").encode())


# ---- writing: temp file, then rename ---------------------------------------------------------------------------------

def temp_name(path: str) -> str:
    """A hidden, unique temp path next to `path`, which no part-name glob matches."""
    directory, name = _filesystems().split(path)
    return join(directory, f".{name}.tmp-{uuid.uuid4().hex}")


class _Sink:
    """A write-only file that knows its position (pyarrow asks; not every FileSystems writer can tell)."""

    def __init__(self, raw) -> None:
        self.raw, self.position, self.closed = raw, 0, False

    def write(self, data) -> int:
        self.raw.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.closed = True


class PartWriter:
    """Writes rows to a hidden temp file in row groups; renames it to `path` only when complete, else deletes it."""

    def __init__(self, path: str, schema: pa.Schema = PART_SCHEMA) -> None:
        self.path, self.schema, self.temp = path, schema, temp_name(path)
        self._rows: list[dict] = []
        self._bytes = 0

    def __enter__(self) -> PartWriter:
        self._raw = _filesystems().create(self.temp, compression_type="uncompressed")
        self._writer = pq.ParquetWriter(pa.PythonFile(_Sink(self._raw), mode="w"), self.schema)
        return self

    def write(self, row: dict) -> None:
        self._rows.append(row)
        self._bytes += len(row.get("data") or b"")
        if len(self._rows) >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows, self._bytes = [], 0

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                self._flush()
            self._writer.close()
        finally:
            self._raw.close()
        if exc_type is None:
            _filesystems().rename([self.temp], [self.path])
        else:
            _filesystems().delete([self.temp])


def write_atomic(path: str, data: bytes) -> None:
    temp = temp_name(path)
    with _filesystems().create(temp, compression_type="uncompressed") as file:
        file.write(data)
    _filesystems().rename([temp], [path])


def write_manifest_failures(failures: list[Failure], path: str) -> str:
    """Write the manifest rows that could not be read (file, line, reason, detail) to `path`; return it."""
    rows = [{"file": f.file, "line": f.line, "reason": f.reason.value, "detail": f.detail}
            for f in sorted(failures, key=lambda f: (f.file, f.line))]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_FAILURE_SCHEMA), buffer)
    write_atomic(path, buffer.getvalue())
    if failures:
        counts = Counter(f.reason.value for f in failures)
        log.warning("%d manifest rows could not be read (%s); listed in %s", len(failures),
                    ", ".join(f"{reason} {count}" for reason, count in counts.items()), path)
    return path


# ---- reading -------------------------------------------------------------------------------------------------------

def list_matches(pattern: str) -> list[str]:
    """The sorted paths a glob matches; none is an empty list (unlike fsio.expand)."""
    return sorted(metadata.path for result in _filesystems().match([pattern]) for metadata in result.metadata_list)


def finished_parts(out_dir: str) -> dict[str, tuple[int, int]]:
    """name -> (part, retry round) of every finished part file in `out_dir` (temp files never match)."""
    names = (_filesystems().split(path)[1] for path in list_matches(join(out_dir, "part-*.parquet")))
    return {name: parsed for name in names if (parsed := parse_part_name(name)) is not None}


def temp_files(out_dir: str) -> list[str]:
    """The temp files a stopped run left in `out_dir`."""
    return list_matches(join(out_dir, TEMP_GLOB))


def read_columns(path: str, columns: list[str]) -> pa.Table:
    with open_read(path) as file:
        return pq.read_table(file, columns=columns)
