"""Tests for pipeline.parts: part names and assignment, the job record, and temp-then-rename writing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.parts import (
    MANIFEST_FAILURE_SCHEMA,
    PART_SCHEMA,
    ROW_GROUP_ROWS,
    JobRecord,
    PartWriter,
    check_job,
    finished_parts,
    latest_failures,
    manifest_fingerprint,
    parse_part_name,
    part_name,
    part_of,
    read_columns,
    read_job,
    temp_files,
    write_job,
    write_manifest_failures,
)
from pipeline.records import Failure, Reason


def part_row(content_id: int, status: str = "ok") -> dict:
    return {"content_id": content_id, "page_id": 7, "url": f"http://h/{content_id}.jpg", "status": status,
            "data": b"JPEG" if status == "ok" else None}


# ---- names ---------------------------------------------------------------------------------------------------------

def test_part_assignment_is_stable_and_names_parse_back() -> None:
    assert [part_of(content_id, 7) for content_id in (0, 1, 97, 900000000)] == [
        part_of(content_id, 7) for content_id in (0, 1, 97, 900000000)]
    assert part_of(123456789, 1000) == int.from_bytes(
        hashlib.blake2b(b"123456789", digest_size=8).digest(), "big") % 1000  # not Python's per-process hash()
    assert part_name(3) == "part-00003.parquet" and part_name(3, 2) == "part-00003-retry-2.parquet"
    assert parse_part_name("part-00003-retry-2.parquet") == (3, 2) and parse_part_name("part-00003.parquet") == (3, 0)
    for other in (".part-00003.parquet.tmp-ab12", "part-3.parquet", "part-00003-retry-0.parquet", "_download.json"):
        assert parse_part_name(other) is None


def test_latest_failures_follow_the_highest_retry_round() -> None:
    def table(rows: list[tuple[int, str]]) -> pa.Table:
        return pa.table({"content_id": [r[0] for r in rows], "status": [r[1] for r in rows]})

    parts = [(0, 2, table([(1, "ok")])), (0, 0, table([(1, "failed"), (2, "failed"), (3, "ok")])),
             (1, 0, table([(4, "failed")])), (0, 1, table([(1, "failed"), (2, "ok")]))]
    assert latest_failures(parts) == {4: 1}


# ---- writing and reading -----------------------------------------------------------------------------------------

def test_a_part_appears_only_when_complete_and_in_row_groups(tmp_path) -> None:
    path = tmp_path / part_name(0)
    rows = [part_row(content_id) for content_id in range(ROW_GROUP_ROWS + 1)]
    with PartWriter(str(path)) as writer:
        for row in rows:
            writer.write(row)
        temp = Path(writer.temp).name
        assert temp.startswith(f".{part_name(0)}.tmp-") and [p.name for p in tmp_path.iterdir()] == [temp]
    assert [p.name for p in tmp_path.iterdir()] == [part_name(0)]
    assert pq.ParquetFile(path).num_row_groups == 2 and pq.read_schema(path).equals(PART_SCHEMA)
    assert read_columns(str(path), ["content_id"])["content_id"].to_pylist() == list(range(ROW_GROUP_ROWS + 1))


def test_a_failed_part_leaves_neither_the_part_nor_its_temp_file(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="fetch thread died"):
        with PartWriter(str(tmp_path / part_name(1, 2))) as writer:
            writer.write(part_row(1))
            raise RuntimeError("fetch thread died")
    assert list(tmp_path.iterdir()) == [] and finished_parts(str(tmp_path)) == {}


def test_only_finished_part_names_count_and_temp_files_are_found(tmp_path) -> None:
    for name in (part_name(0), part_name(0, 1), part_name(4, 12), "part-3.parquet", ".part-00002.parquet.tmp-ab12"):
        (tmp_path / name).write_bytes(b"")
    assert finished_parts(str(tmp_path)) == {part_name(0): (0, 0), part_name(0, 1): (0, 1), part_name(4, 12): (4, 12)}
    assert [path.rsplit("/", 1)[-1] for path in temp_files(str(tmp_path))] == [".part-00002.parquet.tmp-ab12"]


def test_manifest_failures_are_written_sorted_with_their_reason(tmp_path) -> None:
    failures = [Failure.of(Reason.MALFORMED_ROW, "expected 6 fields, got 3", source="eol", file="b.csv", line=2),
                Failure.of(Reason.MALFORMED_ROW, "id 'n/a' is not a non-negative integer", source="eol", file="a.csv",
                           line=9)]
    path = write_manifest_failures(failures, str(tmp_path / "manifest_failures.parquet"))
    table = pq.read_table(path)
    assert table.schema.equals(MANIFEST_FAILURE_SCHEMA)
    assert [(row["file"], row["line"], row["reason"]) for row in table.to_pylist()] == [
        ("a.csv", 9, "malformed_row"), ("b.csv", 2, "malformed_row")]
    assert pq.read_table(write_manifest_failures([], str(tmp_path / "none.parquet"))).num_rows == 0


# ---- the job record ------------------------------------------------------------------------------------------------

def test_the_job_record_round_trips_and_refuses_a_different_run(tmp_path) -> None:
    (tmp_path / "m1.csv").write_bytes(b"header\n1,2\n")
    (tmp_path / "m2.csv").write_bytes(b"header\n3,4\n")
    size, sha256 = manifest_fingerprint(str(tmp_path / "m*.csv"))
    assert (size, sha256) == (22, hashlib.sha256(b"header\n1,2\nheader\n3,4\n").hexdigest())
    out = tmp_path / "out"
    out.mkdir()
    assert read_job(str(out)) is None
    record = JobRecord(3, "m*.csv", size, sha256, 2)
    write_job(str(out), record)
    assert read_job(str(out)) == record
    check_job(record, None, size, sha256, str(out))
    check_job(record, 3, size, sha256, str(out))
    with pytest.raises(ValueError, match="--num-parts 4 differs from the 3 parts"):
        check_job(record, 4, size, sha256, str(out))
    with pytest.raises(ValueError, match="is not the one"):
        check_job(record, None, size + 1, sha256, str(out))
