"""EOL reader: manifest quirks, the join to the download parts (ok beats failed, latest part wins), failures kept."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from beam_support import run_reader

from pipeline.records import Reason, SourceRecord, Stage, treeoflife_id
from pipeline.sources.eol import (
    DownloadRow,
    ManifestRow,
    ReadEol,
    eol_records,
    iter_manifest,
    list_download_parts,
    part_order,
    read_download_part,
    winning_download,
)

HEADER = "EOL content ID,EOL page ID,Medium Source URL,EOL Full-Size Copy URL,License Name,Copyright Owner\n"
PART_SCHEMA = pa.schema([
    ("content_id", pa.int64()), ("page_id", pa.int64()), ("url", pa.string()), ("http_status", pa.int32()),
    ("content_type", pa.string()), ("data", pa.binary()), ("md5", pa.string()), ("byte_count", pa.int64()),
    ("elapsed_s", pa.float64()), ("attempts", pa.int32()), ("status", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()),
])


def manifest_row(content_id: int = 97, page_id: int = 328598, line: int = 2, file: str = "m.csv") -> ManifestRow:
    return ManifestRow(content_id, page_id, f"https://src.example/{content_id}.jpg", f"https://eol.example/{content_id}.jpg",
                       "cc-by-3.0", "Lee, Ming-Wei", file, line)


def ok(content_id: int, part: str, data: bytes = b"JPEG", url: str = "") -> DownloadRow:
    return DownloadRow(content_id, part, "ok", url or f"https://eol.example/{content_id}.jpg", "", "", data)


def failed(content_id: int, part: str, reason: str = "timeout", detail: str = "read timed out after 3 tries") -> DownloadRow:
    return DownloadRow(content_id, part, "failed", f"https://eol.example/{content_id}.jpg", reason, detail, None)


def write_part(path: Path, rows: list[dict]) -> Path:
    """A download part with the download stage's columns; `rows` give content_id, status and what differs."""
    full = [{"page_id": 1, "url": "", "http_status": 200, "content_type": "image/jpeg", "data": None, "md5": "",
             "byte_count": 0, "elapsed_s": 0.1, "attempts": 1, "reason": "", "detail": "", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=PART_SCHEMA), path)
    return path


# ---- the manifest's quirks (pipeline.sources.eol.iter_manifest) ----

def test_manifest_quirks(tmp_path):
    (tmp_path / "media_manifest_1.csv").write_text(
        HEADER + '97.0,328598,https://s/97.jpg,https://f/97.jpg,cc-by-3.0,"Smithsonian Institution, NMNH"\n'
        + HEADER + "98,328598,https://s/98.jpg,https://f/98.jpg,public domain,\n"
        + "n/a,1,a,b,c,d\n" + "99,1,a,b\n")
    items = list(iter_manifest(str(tmp_path / "media_manifest_1.csv")))
    rows, failures = items[:2], items[2:]
    assert [(r.content_id, r.copyright_owner, r.line) for r in rows] == [
        (97, "Smithsonian Institution, NMNH", 2), (98, "", 4)]
    assert [(f.reason, f.file, f.line) for f in failures] == [(Reason.MALFORMED_ROW, "media_manifest_1.csv", 5),
                                                                (Reason.MALFORMED_ROW, "media_manifest_1.csv", 6)]


# ---- the join (pure) ----

def test_record_fields():
    [(record, data)] = eol_records([manifest_row()], [ok(97, "part-00000.parquet", url="https://src.example/97.jpg")])
    assert data == b"JPEG" and record == SourceRecord(
        "eol", "97", treeoflife_id("eol", "97"), "97", "eol:328598", (("page_id", "328598"),), "cc-by-3.0",
        "Lee, Ming-Wei", "https://src.example/97.jpg",
        (("medium_source_url", "https://src.example/97.jpg"), ("full_size_url", "https://eol.example/97.jpg")))


def test_ok_beats_failed_and_the_latest_part_wins():
    downloads = [ok(1, "part-00000.parquet", b"old"), failed(1, "part-00002.parquet"), ok(1, "part-00001.parquet", b"new"),
                 failed(2, "part-00000.parquet"), ok(2, "part-00001.parquet", b"retried"),
                 failed(3, "part-00000.parquet", "http_server_error", "500"),
                 failed(3, "part-00001.parquet", "http_not_found", "404 on both URLs")]
    one, two, three = eol_records([manifest_row(1), manifest_row(2), manifest_row(3, line=4)], downloads)
    assert one[1] == b"new" and two[1] == b"retried"
    assert (three.reason, three.stage, three.detail, three.native_id, three.file, three.line) == (
        Reason.HTTP_NOT_FOUND, Stage.DOWNLOAD, "404 on both URLs", "3", "m.csv", 4)


def test_missing_download_duplicates_and_unknown_reasons():
    rows = [manifest_row(5, line=2), manifest_row(5, line=9, file="m2.csv"), manifest_row(6, line=3)]
    missing, duplicate, unknown = eol_records(rows, [failed(6, "part-00000.parquet", "gremlins", "??")])
    assert (missing.reason, missing.detail, missing.native_id, missing.line) == (
        Reason.MISSING_IMAGE, "not downloaded: run tol download", "5", 2)
    assert (duplicate.reason, duplicate.detail, duplicate.file, duplicate.line, duplicate.native_id) == (
        Reason.MALFORMED_ROW, "duplicate content id, first at m.csv:2", "m2.csv", 9, "")
    assert unknown.reason == Reason.MALFORMED_ROW and "'gremlins'" in unknown.detail


def test_download_parts_are_read_and_checked(tmp_path):
    assert list_download_parts(str(tmp_path / "nowhere")) == [] and list_download_parts(str(tmp_path)) == []
    write_part(tmp_path / "part-00000.parquet", [{"content_id": 1, "status": "ok", "url": "u", "data": b"D"},
                                                 {"content_id": 2, "status": "failed", "reason": "timeout"}])
    (tmp_path / ".part-00001.parquet.tmp").write_bytes(b"unfinished")
    [part] = list_download_parts(str(tmp_path))
    assert list(read_download_part(part)) == [DownloadRow(1, "part-00000.parquet", "ok", "u", "", "", b"D"),
                                              DownloadRow(2, "part-00000.parquet", "failed", "", "timeout", "", None)]
    pq.write_table(pa.table({"content_id": [1]}), tmp_path / "part-00002.parquet")
    with pytest.raises(ValueError, match="no column url, status, reason, detail, data"):
        list(read_download_part(str(tmp_path / "part-00002.parquet")))


# ---- the Beam reader ----

def kit_downloads(kit: Path, expected: dict, out: Path) -> tuple[list, list]:
    """Parts as the download stage would write them for the kit, plus (records, failures) the reader must give.

    Download-fault records fail with their expected reason; one clean record fails in part 0 and succeeds in part 1;
    another has stale bytes in part 0 and its real bytes in part 1.
    """
    base = expected["kit"]["eol_base_url"] + "/"
    defects = {d["native_id"]: d for d in expected["defects"] if d["source"] == "eol" and d["native_id"]}
    rows = [r for r in iter_manifest(str(kit / "eol" / "media_manifest.tgz")) if isinstance(r, ManifestRow)]
    part0, part1, records, failures = [], [], [], []
    for row in rows:
        defect = defects.get(str(row.content_id), {"kind": "", "expected": {}})
        if defect["expected"].get("stage") == "download":
            part0.append({"content_id": row.content_id, "status": "failed", "reason": defect["expected"]["reason"],
                          "detail": defect["kind"], "url": row.full_size_url})
            failures.append((Reason(defect["expected"]["reason"]), str(row.content_id), defect["kind"],
                             defect["where"]["file"], defect["where"]["line"]))
            continue
        url = row.medium_source_url if defect["kind"] == "fallback_to_source_url" else row.full_size_url
        data = (kit / "eol" / "images" / url.removeprefix(base)).read_bytes()
        final = {"content_id": row.content_id, "status": "ok", "url": url, "data": data}
        if len(records) in (3, 4):  # a retry that succeeded; a re-download that replaced stale bytes
            stale = {"status": "failed", "reason": "timeout", "data": None} if len(records) == 3 else {"data": b"stale"}
            part0.append({**final, **stale})
            part1.append(final)
        else:
            part0.append(final)
        records.append((row, url, data))
    write_part(out / "part-00000.parquet", part0)
    write_part(out / "part-00001.parquet", part1)
    return records, failures


def test_kit_manifest_and_parts(kit, tmp_path):
    expected = json.loads((kit / "EXPECTED.json").read_text())
    rows, download_failures = kit_downloads(kit, expected, tmp_path)
    read_defects = [d for d in expected["defects"] if d["source"] == "eol" and d["expected"].get("stage") == "read"]
    assert read_defects and len(download_failures) == 6
    assert len(rows) == expected["counts"]["eol"]["records"] - len(download_failures)
    [lenient] = [d["where"]["content_id"] for d in expected["defects"] if d["kind"] == "lenient_integer_id"]
    ids = {str(row.content_id) for row, _, _ in rows} | {failure[1] for failure in download_failures}
    assert lenient.endswith(".0") and lenient.removesuffix(".0") in ids
    records = [(SourceRecord.create("eol", str(row.content_id), image_ref=str(row.content_id),
                                    label_key=f"eol:{row.page_id}", label=(("page_id", str(row.page_id)),),
                                    license=row.license_name, rights_holder=row.copyright_owner, source_url=url,
                                    provenance=(("medium_source_url", row.medium_source_url),
                                                ("full_size_url", row.full_size_url))), data) for row, url, data in rows]
    failures = download_failures + [(Reason.MALFORMED_ROW, "", None, d["where"]["file"], d["where"]["line"])
                                    for d in read_defects]
    run_reader(ReadEol(str(kit / "eol" / "media_manifest.tgz"), str(tmp_path)), records, failures,
               lambda f: (f.reason, f.native_id, f.detail if f.stage == "download" else None, f.file, f.line))


def test_manifest_without_parts_is_missing_images(tmp_path):
    (tmp_path / "m.csv").write_text(HEADER + "7,1,https://s/7.jpg,https://f/7.jpg,cc-by-3.0,A\n")
    run_reader(ReadEol(str(tmp_path / "m.csv"), str(tmp_path / "downloads")), [],
               [(Reason.MISSING_IMAGE, "7", "not downloaded: run tol download", "m.csv", 2)],
               lambda f: (f.reason, f.native_id, f.detail, f.file, f.line))


def test_empty_input_gives_nothing(tmp_path):
    (tmp_path / "m.csv").write_text(HEADER)
    run_reader(ReadEol(str(tmp_path / "m.csv"), str(tmp_path)), [], [])


def test_later_retry_rounds_win_among_failed_rows() -> None:
    rows = [DownloadRow(1, part, "failed", "http://127.0.0.1/x", reason, "", None)
            for part, reason in (("part-00001.parquet", "timeout"), ("part-00001-retry-9.parquet", "http_server_error"),
                                 ("part-00001-retry-10.parquet", "http_not_found"))]
    assert winning_download(rows).reason == "http_not_found"


def test_part_order_puts_retry_round_before_part_number_and_unknown_names_first() -> None:
    names = ["part-00010.parquet", "part-3.parquet", "part-00002-retry-1.parquet", "part-00001-retry-2.parquet",
             "part-00011.parquet"]
    assert part_order("part-00003-retry-2.parquet") == (2, 3, "part-00003-retry-2.parquet")
    assert sorted(names, key=part_order) == ["part-3.parquet", "part-00010.parquet", "part-00011.parquet",
                                             "part-00002-retry-1.parquet", "part-00001-retry-2.parquet"]


def test_the_download_stage_md5_travels_with_the_record() -> None:
    row = ManifestRow(7, 42, "http://127.0.0.1/s.jpg", "http://127.0.0.1/f.jpg", "cc-by-3.0", "", "m.csv", 2)
    record, data = eol_records([row], [DownloadRow(7, "part-00000.parquet", "ok", row.full_size_url, data=b"JPEG",
                                                   md5="0123abcd")]).__next__()
    assert dict(record.provenance)["md5"] == "0123abcd" and data == b"JPEG"
