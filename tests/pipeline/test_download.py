"""Tests for `tol download`: the sample kit served with faults, kill and resume, --retry-failed, the composites."""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import logging
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import cli, download
from pipeline.download import FetchParts, PartPlan, ReadManifest, Summary, parse_args, pipeline_options, prepare
from pipeline.fetch import FetchPolicy, user_agent
from pipeline.parts import (
    JOB_FILE,
    MANIFEST_FAILURE_SCHEMA,
    MANIFEST_FAILURES,
    PART_SCHEMA,
    default_num_parts,
    finished_parts,
    latest_failures,
    parse_part_name,
    part_name,
    part_of,
)
from pipeline.records import Reason
from pipeline.serve_kit import FaultSpec, KitServer, RequestRecord
from pipeline.sources.eol import MANIFEST_COLUMNS, ManifestRow, iter_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
RATE, BURST = 40, 1
HANG_S = 0.5  # how long /_fault/hang/ stays silent: past the read timeout, and logged only after it
JITTER_S = 0.1  # server arrival times wobble around the client's token times (more so on a loaded machine)
FLAGS = ["--contact", "tests@example.org", "--read-timeout", "0.25", "--connect-timeout", "1", "--backoff-base", "0.02",
         "--backoff-cap", "0.2", "--max-bytes", "4M", "--rate", str(RATE), "--burst", str(BURST)]


# ---- helpers -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def expected(kit: Path) -> dict:
    return json.loads((kit / "EXPECTED.json").read_text(encoding="utf-8"))


@pytest.fixture
def serve(kit: Path) -> Iterator[Callable[..., KitServer]]:
    """Start KitServers on the kit's EOL images (faults as spec text) and stop them after the test."""
    servers: list[KitServer] = []

    def start(spec: str = "", **kwargs: object) -> KitServer:
        server = KitServer(kit / "eol" / "images", faults=FaultSpec.parse(spec), hang_seconds=HANG_S, **kwargs)
        servers.append(server.start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def rebased_manifest(kit: Path, expected: dict, server: KitServer, dest: Path) -> str:
    """The kit's manifest chunks as CSV files whose URLs point at `server` (the kit was written for port 8765)."""
    dest.mkdir()
    with tarfile.open(kit / "eol" / "media_manifest.tgz") as tar:
        for member in tar.getmembers():
            text = tar.extractfile(member).read().decode("utf-8")
            (dest / Path(member.name).name).write_text(text.replace(expected["kit"]["eol_base_url"], server.url))
    return str(dest / "*.csv")


def manifest_rows(manifest: str) -> list[ManifestRow]:
    return [item for item in iter_manifest(manifest) if isinstance(item, ManifestRow)]


def raw_data_lines(manifest: str) -> int:
    """Data lines of the CSV chunks, counted without the parser under test: every line that is not a header."""
    chunks = [path.read_text(encoding="utf-8") for path in Path(manifest).parent.glob("*.csv")]
    return sum(1 for text in chunks for row in csv.reader(io.StringIO(text)) if row and tuple(row) != MANIFEST_COLUMNS)


def read_parts(out: Path, pattern: str = "part-*.parquet") -> pa.Table:
    tables = [pq.read_table(path) for path in sorted(out.glob(pattern))]
    for table in tables:
        assert table.schema.equals(PART_SCHEMA), table.schema
    return pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()


def download_reasons(expected: dict) -> dict[int, str]:
    """content id -> reason, for the kit's EOL records that must fail at the download stage."""
    return {int(d["native_id"]): d["expected"]["reason"] for d in expected["defects"]
            if d["source"] == "eol" and d["expected"].get("stage") == "download"}


def url_paths(rows: list[ManifestRow]) -> set[str]:
    return {urlsplit(url).path for row in rows for url in (row.full_size_url, row.medium_source_url)}


def settled(server: KitServer) -> list[RequestRecord]:
    """The request log once requests still in the server's hands are logged (a hang is logged when it ends)."""
    time.sleep(HANG_S)
    return server.requests


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((bisect.bisect_right(times, start + window) - i for i, start in enumerate(times)), default=0)


def statuses_by_id(table: pa.Table) -> dict[int, tuple[str, str]]:
    return {row["content_id"]: (row["status"], row["reason"]) for row in table.select(
        ["content_id", "status", "reason"]).to_pylist()}


# ---- the kit, served with faults -----------------------------------------------------------------------------------

def test_every_manifest_row_ends_as_an_image_or_its_expected_failure(kit, expected, serve, tmp_path) -> None:
    server = serve("429=0.2:1,503=0.1,reset=0.05,truncate=0.05")
    manifest = rebased_manifest(kit, expected, server, tmp_path / "manifest")
    out = tmp_path / "downloads"
    assert download.run([manifest, str(out), *FLAGS, "--max-attempts", "8"]) == 0

    table, rows = read_parts(out), manifest_rows(manifest)
    failures = pq.read_table(out / MANIFEST_FAILURES)
    assert failures.schema.equals(MANIFEST_FAILURE_SCHEMA)
    assert table.num_rows + failures.num_rows == raw_data_lines(manifest)  # nothing lost
    assert sorted(table["content_id"].to_pylist()) == sorted(row.content_id for row in rows)  # each row exactly once
    malformed = {(d["where"]["file"], d["where"]["line"]) for d in expected["defects"] if d["kind"] == "malformed_row"
                 and d["source"] == "eol"}
    assert {(f["file"], f["line"]) for f in failures.to_pylist()} == malformed
    assert set(failures["reason"].to_pylist()) == {Reason.MALFORMED_ROW.value}

    must_fail, by_id = download_reasons(expected), {row.content_id: row for row in rows}
    assert len(must_fail) == 6
    for result in table.to_pylist():
        row = by_id[result["content_id"]]
        assert result["page_id"] == row.page_id
        if result["content_id"] in must_fail:
            assert (result["status"], result["reason"], result["data"]) == ("failed", must_fail[row.content_id], None)
            assert result["url"] == row.full_size_url and row.medium_source_url in result["detail"]
            continue
        served = (kit / "eol" / "images" / urlsplit(result["url"]).path.lstrip("/")).read_bytes()
        assert (result["status"], result["reason"], result["http_status"]) == ("ok", "", 200), result["detail"]
        assert result["data"] == served and result["md5"] == hashlib.md5(served).hexdigest()
        assert result["byte_count"] == len(served) and result["url"] in (row.full_size_url, row.medium_source_url)
    fallback = next(int(d["native_id"]) for d in expected["defects"] if d["kind"] == "fallback_to_source_url")
    assert [r["url"] for r in table.to_pylist() if r["content_id"] == fallback] == [by_id[fallback].medium_source_url]

    log = settled(server)
    assert {record.fault for record in log} >= {"429", "503", "reset", "truncate"}  # the faults did fire
    assert max_in_window([record.time for record in log]) <= RATE * (1 + JITTER_S) + BURST


def test_the_rate_is_split_across_workers(kit, expected, serve, tmp_path) -> None:
    server = serve()
    manifest = rebased_manifest(kit, expected, server, tmp_path / "manifest")
    flags = [*FLAGS, "--max-attempts", "1", "--num-parts", "4"]
    assert download.run([manifest, str(tmp_path / "out"), *flags, "--beam", "--direct_running_mode=multi_processing",
                         "--direct_num_workers=2"]) == 0
    assert read_parts(tmp_path / "out").num_rows == len(manifest_rows(manifest))
    # Two workers at RATE/2 each: at most RATE and a burst per worker in any second.
    assert max_in_window([record.time for record in settled(server)]) <= RATE * (1 + JITTER_S) + 2 * BURST


# ---- kill and resume -----------------------------------------------------------------------------------------------

def test_a_killed_run_resumes_without_refetching_finished_parts(kit, expected, serve, tmp_path) -> None:
    server = serve("latency=1:0.05")
    manifest = rebased_manifest(kit, expected, server, tmp_path / "manifest")
    flags = [*FLAGS, "--rate", "100", "--max-attempts", "2", "--backoff-cap", "0.1"]
    assert download.run([manifest, str(tmp_path / "reference"), *flags]) == 0  # uninterrupted, in one part

    out, num_parts = tmp_path / "killed", 12
    argv = [sys.executable, "-m", "pipeline.cli", "download", manifest, str(out), *flags, "--num-parts", str(num_parts)]
    with (tmp_path / "killed.log").open("w") as stderr:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 60
        while len(finished_parts(str(out))) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_at = time.time()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    before = {part for part, _ in finished_parts(str(out)).values()}
    assert 3 <= len(before) < num_parts
    rows = manifest_rows(manifest)
    for name in finished_parts(str(out)):  # what looks finished is complete: every row of its part
        part = parse_part_name(name)[0]
        assert sorted(pq.read_table(out / name)["content_id"].to_pylist()) == sorted(
            row.content_id for row in rows if part_of(row.content_id, num_parts) == part)

    assert download.run([manifest, str(out), *flags]) == 0  # --num-parts comes from _download.json
    refetched = {record.path for record in settled(server) if record.time > killed_at}
    finished_urls = url_paths([row for row in rows if part_of(row.content_id, num_parts) in before])
    assert refetched and not refetched & finished_urls
    assert not list(out.glob(".*tmp*"))  # the killed run's temp file was cleared away

    resumed, reference = read_parts(out), read_parts(tmp_path / "reference")
    ok_ids = [row["content_id"] for row in resumed.to_pylist() if row["status"] == "ok"]
    assert len(ok_ids) == len(set(ok_ids))
    assert statuses_by_id(resumed) == statuses_by_id(reference)
    assert {(r["content_id"], r["md5"]) for r in resumed.select(["content_id", "md5"]).to_pylist()} == {
        (r["content_id"], r["md5"]) for r in reference.select(["content_id", "md5"]).to_pylist()}


# ---- --retry-failed ------------------------------------------------------------------------------------------------

def test_retry_failed_fetches_only_the_failed_rows_into_new_parts(kit, expected, serve, tmp_path) -> None:
    server = serve("503=0.5")
    manifest = rebased_manifest(kit, expected, server, tmp_path / "manifest")
    out, flags = tmp_path / "out", [*FLAGS, "--rate", "100", "--num-parts", "4", "--backoff-cap", "0.1"]
    assert download.run([manifest, str(out), *flags, "--max-attempts", "1"]) == 0
    first = {path.name: path.read_bytes() for path in out.glob("part-*.parquet")}
    assert sorted(first) == [part_name(part) for part in range(4)]
    failed_before = {cid for cid, (status, _) in statuses_by_id(read_parts(out)).items() if status == "failed"}
    assert len(failed_before) > len(download_reasons(expected))  # the 503s failed some good rows

    rows = {row.content_id: row for row in manifest_rows(manifest)}
    for retry_round, attempts in ((1, "1"), (2, "4")):
        tables = [(part, r, pq.read_table(out / name)) for name, (part, r) in finished_parts(str(out)).items()]
        failed = latest_failures(tables)
        started = time.time()
        assert download.run([manifest, str(out), *flags, "--retry-failed", "--max-attempts", attempts]) == 0
        requested = {record.path for record in settled(server) if record.time >= started}
        assert requested <= url_paths([rows[cid] for cid in failed])  # only the failed rows' URLs
        assert {urlsplit(rows[cid].full_size_url).path for cid in failed} <= requested  # all of them
        retried = read_parts(out, f"part-*-retry-{retry_round}.parquet")
        assert sorted(retried["content_id"].to_pylist()) == sorted(failed)
        assert {path.name for path in out.glob(f"part-*-retry-{retry_round}.parquet")} == {
            part_name(part, retry_round) for part in set(failed.values())}

    assert {path.name: path.read_bytes() for path in out.glob("part-?????.parquet")} == first  # never rewritten
    tables = [(part, r, pq.read_table(out / name)) for name, (part, r) in finished_parts(str(out)).items()]
    still_failed = latest_failures(tables)
    assert set(download_reasons(expected)) <= set(still_failed) and len(still_failed) < len(failed_before)


def test_retry_failed_with_nothing_to_retry_writes_nothing(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.download")
    manifest = write_manifest(tmp_path, [])
    out = tmp_path / "out"
    assert download.run([manifest, str(out)]) == 0
    assert download.run([manifest, str(out), "--retry-failed"]) == 0 and "no failed rows to retry" in caplog.text
    assert sorted(path.name for path in out.glob("part-*")) == [part_name(0)] and read_parts(out).num_rows == 0


# ---- configuration -------------------------------------------------------------------------------------------------

def write_manifest(tmp_path: Path, rows: list[tuple[int, str]]) -> str:
    path = tmp_path / "media_manifest_1.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows([content_id, 7, url, url, "cc-by-3.0", ""] for content_id, url in rows)
    return str(path)


def test_the_part_count_is_fixed_by_the_first_run(tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path, [(i, f"ftp://example.org/{i}.jpg") for i in range(5)])  # BAD_URL: no request
    out = tmp_path / "out"
    assert download.run([manifest, str(out), "--num-parts", "3"]) == 0
    assert json.loads((out / JOB_FILE).read_text())["num_parts"] == 3
    table = read_parts(out)
    assert set(table["reason"].to_pylist()) == {Reason.BAD_URL.value} and table["attempts"].to_pylist() == [0] * 5
    assert download.run([manifest, str(out), "--num-parts", "4"]) == 2
    assert "--num-parts 4 differs from the 3 parts" in caplog.text
    assert download.run([manifest, str(out)]) == 0 and len(list(out.glob("part-*"))) == 3

    Path(manifest).write_text(Path(manifest).read_text() + "99,7,ftp://x/99.jpg,ftp://x/99.jpg,cc-by-3.0,\n")
    assert download.run([manifest, str(out)]) == 2 and "is not the one" in caplog.text


def test_the_default_part_count_follows_the_manifest_size(tmp_path) -> None:
    manifest = write_manifest(tmp_path, [(i, "ftp://x/") for i in range(3)])
    assert download.run([manifest, str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / JOB_FILE).read_text())["num_parts"] == 1
    assert default_num_parts(2500) == 3 and default_num_parts(0) == 1


@pytest.mark.parametrize(("flag", "value"), [("--rate", "0"), ("--max-attempts", "0"), ("--read-timeout", "-1"),
                                             ("--max-bytes", "lots"), ("--num-parts", "0"), ("--contact", "")])
def test_bad_flags_are_refused_naming_the_flag_and_value(flag, value, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["download", "m.csv", str(tmp_path), flag, value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and flag in err and repr(value) in err


def test_inconsistent_settings_are_refused_before_any_work(tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path, [(1, "ftp://x/")])
    assert download.run([manifest, str(tmp_path / "a"), "--backoff-base", "9", "--backoff-cap", "1"]) == 2
    assert "--backoff-base (9 s) must not exceed --backoff-cap (1 s)" in caplog.text
    assert download.run([manifest, str(tmp_path / "b"), "--beam", "--runner=DataflowRunner"]) == 2
    assert "--workers" in caplog.text
    assert download.run([str(tmp_path / "missing.tgz"), str(tmp_path / "c")]) == 2
    assert "missing.tgz" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_options_default_to_the_fnapi_runner_and_split_the_rate(tmp_path, caplog) -> None:
    manifest = write_manifest(tmp_path, [(1, "ftp://x/")])
    args = parse_args([manifest, str(tmp_path / "out"), "--rate", "10", "--direct_num_workers=4"])
    assert args.beam == ["--direct_num_workers=4"]
    options = pipeline_options(args)
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    job = prepare(args.manifest, args.out_dir, options)
    assert (job.workers, job.policy.rate, job.plan.parts) == (4, 2.5, frozenset({0}))
    assert job.policy.user_agent == user_agent("unset")
    args = parse_args([manifest, str(tmp_path / "out"), "--workers", "5", "--beam", "--runner=DataflowRunner"])
    assert prepare(args.manifest, args.out_dir, pipeline_options(args)).policy.rate == 2.0
    caplog.set_level(logging.WARNING)
    assert download.run([manifest, str(tmp_path / "out")]) == 0
    assert caplog.text.count("--contact is unset") == 1


# ---- pure helpers and composites ----------------------------------------------------------------------------------

def test_summary_counts_reasons_and_requests_per_second() -> None:
    summary = Summary.of([("ok", "", 1), ("failed", "timeout", 3), ("failed", "timeout", 3), ("ok", "", 1)], 4.0)
    assert (summary.ok, summary.failed, summary.attempts) == (2, {"timeout": 2}, 8)
    assert summary.describe() == "2 ok, 2 failed (timeout 2) in 4.0 s, 8 requests, 2.0 requests/s"


def test_read_manifest_routes_unreadable_rows_with_their_reason(tmp_path) -> None:
    path = tmp_path / "media_manifest_1.csv"
    path.write_text("\n".join([",".join(MANIFEST_COLUMNS), "5.0,7,http://h/m.jpg,http://h/f.jpg,cc-by-3.0,J. Smith",
                               ",".join(MANIFEST_COLUMNS), "n/a,7,http://h/m.jpg,http://h/f.jpg,cc-by-3.0,", "6,7,x"]))
    with TestPipeline() as pipeline:
        rows, failures = pipeline | ReadManifest(str(path))
        assert_that(rows | beam.Map(lambda row: (row.content_id, row.full_size_url, row.line)),
                    equal_to([(5, "http://h/f.jpg", 2)]), label="rows")
        assert_that(failures | beam.Map(lambda failure: (failure.reason, failure.line)),
                    equal_to([(Reason.MALFORMED_ROW, 4), (Reason.MALFORMED_ROW, 5)]), label="failures")


def fetch_parts(rows: list[ManifestRow], plan: PartPlan, out: Path, names: list[str]) -> dict[str, int]:
    """Run FetchParts on `rows`, asserting it emits the part `names`; return the download counters."""
    pipeline = TestPipeline()
    written = pipeline | beam.Create(rows) | FetchParts(plan, FetchPolicy(rate=100, max_attempts=1), str(out), 4)
    assert_that(written, equal_to(names))
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("download"))["counters"]
    return {counter.key.metric.name: counter.committed for counter in counters}


def test_fetch_parts_writes_every_planned_part_and_counts_each_reason(kit, expected, serve, tmp_path) -> None:
    server = serve()
    good = next(row for row in manifest_rows(rebased_manifest(kit, expected, server, tmp_path / "m"))
                if row.content_id not in download_reasons(expected))
    missing = ManifestRow(2, 7, f"{server.url}/nothing.jpg", f"{server.url}/_fault/status/404/x.jpg", "", "", "f", 3)
    html = ManifestRow(3, 7, "", f"{server.url}/_fault/html/y.jpg", "", "", "f", 4)
    bad = ManifestRow(4, 7, "", "ftp://example.org/z.jpg", "", "", "f", 5)
    plan = PartPlan(3, frozenset({0, 1, 2}))
    counters = fetch_parts([good, missing, html, bad], plan, tmp_path / "out", [part_name(part) for part in range(3)])
    table = read_parts(tmp_path / "out")
    assert statuses_by_id(table) == {good.content_id: ("ok", ""), 2: ("failed", "http_not_found"),
                                     3: ("failed", "not_an_image"), 4: ("failed", "bad_url")}
    assert {name: counters[name] for name in ("ok", "http_not_found", "not_an_image", "bad_url", "http_200",
                                              "http_404", "parts_written")} == {
        "ok": 1, "http_not_found": 1, "not_an_image": 1, "bad_url": 1, "http_200": 2, "http_404": 1,
        "parts_written": 3}


def test_fetch_parts_on_empty_input_still_writes_the_planned_parts_empty(tmp_path) -> None:
    counters = fetch_parts([], PartPlan(4, frozenset({1, 3})), tmp_path / "out", [part_name(1), part_name(3)])
    assert counters["parts_written"] == 2
    assert read_parts(tmp_path / "out").num_rows == 0


def test_a_rerun_skips_finished_parts(tmp_path) -> None:
    manifest = write_manifest(tmp_path, [(i, "ftp://x/") for i in range(6)])
    out = tmp_path / "out"
    assert download.run([manifest, str(out), "--num-parts", "3"]) == 0
    (out / part_name(1)).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    args = parse_args([manifest, str(out)])
    assert prepare(args.manifest, args.out_dir, pipeline_options(args)).plan.parts == frozenset({1})
    assert download.run([manifest, str(out)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert sorted(after) == [part_name(i) for i in range(3)] and all(after[n] == t for n, t in before.items())
