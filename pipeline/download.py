"""`tol download`: fetch the EOL images of a media manifest politely into resumable parquet parts.

    tol download demo-out/kit/eol/media_manifest.tgz demo-out/out/downloads --contact you@example.org

OUT_DIR receives `part-NNNNN.parquet` (one row per manifest row: the original bytes, or the failure's reason),
`manifest_failures.parquet` (manifest rows that could not be read) and `_download.json` (the part count and the
manifest's checksum, fixed by the first run). A row's part is a stable hash of its content id, so a rerun skips
the parts already written and fetches the rest; `--retry-failed` re-fetches only the failed rows of finished parts
into new `part-NNNNN-retry-K.parquet` files. No part is ever rewritten.

Everything after `--beam` is a Beam pipeline option, e.g. `--beam --runner=DirectRunner
--direct_running_mode=multi_processing --direct_num_workers=4`; without `--runner` the pipeline runs on Beam's
FnApiRunner in this process. `--rate` is per host for the whole job: each worker gets rate / workers, the workers
being --workers, else direct_num_workers on the local runners, else the runner's --max_num_workers/--num_workers.
As a script (`python -m pipeline.download MANIFEST OUT_DIR ...`), unknown `--flag=value` options also go to Beam.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, WorkerOptions

from pipeline.argtypes import byte_size, contact_email, int_at_least, number_in, positive_int
from pipeline.cli import beam_script_args
from pipeline.fetch import UNSET_CONTACT, Fetcher, FetchPolicy, FetchResult, open_session, user_agent
from pipeline.fsio import join
from pipeline.parts import (
    JOB_FILE,
    MANIFEST_FAILURES,
    MAX_PARTS,
    ROWS_PER_PART,
    JobRecord,
    PartWriter,
    check_job,
    default_num_parts,
    finished_parts,
    latest_failures,
    manifest_fingerprint,
    part_name,
    part_of,
    read_columns,
    read_job,
    temp_files,
    write_job,
    write_manifest_failures,
)
from pipeline.records import Failure
from pipeline.sources.eol import ManifestRow, iter_manifest

log = logging.getLogger(__name__)

KeyedRow = tuple[int, ManifestRow | None]  # (part, row); a None row only says "write this part, even if empty"
PartRows = tuple[int, Iterable[ManifestRow | None]]  # a part and all its rows, after GroupByKey
Status = tuple[str, str, int]  # (status, reason, attempts) of one part row

NAMESPACE = "download"  # of the Beam counters
DEFAULT_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = frozenset({"fnapirunner", "directrunner", "switchingdirectrunner", "bundlebaseddirectrunner",
                           "testdirectrunner"})
PROGRESS_EVERY_S = 5.0


# ---- pure functions ----------------------------------------------------------------------------------------------

def part_row(row: ManifestRow, result: FetchResult) -> dict:
    """A manifest row and its fetch result as one row of a part (`parts.PART_SCHEMA`)."""
    return {"content_id": row.content_id, "page_id": row.page_id, "url": result.url, "http_status": result.http_status,
            "content_type": result.content_type, "data": result.data, "md5": result.md5,
            "byte_count": result.byte_count, "elapsed_s": result.elapsed_s, "attempts": result.attempts,
            "status": result.status, "reason": result.reason.value if result.reason else "", "detail": result.detail}


def bounded_map(pool: Executor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """`fn` over `items` on `pool`, results in order, with at most `window` pending (so memory stays bounded)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@dataclass(frozen=True)
class PartPlan:
    """Which parts this run writes and which rows go in them."""

    num_parts: int
    parts: frozenset[int]
    retry_round: int = 0  # 0: first pass, part-NNNNN.parquet; K: part-NNNNN-retry-K.parquet
    only: frozenset[int] | None = None  # with --retry-failed: the content ids to fetch again

    def wants(self, row: ManifestRow) -> bool:
        in_part = part_of(row.content_id, self.num_parts) in self.parts
        return in_part and (self.only is None or row.content_id in self.only)

    def keyed(self, row: ManifestRow) -> KeyedRow:
        return part_of(row.content_id, self.num_parts), row

    def file_name(self, part: int) -> str:
        return part_name(part, self.retry_round)


@dataclass(frozen=True, slots=True)
class Summary:
    """Rows written, by outcome, with the attempts made and the time taken."""

    ok: int
    failed: dict[str, int]
    attempts: int
    elapsed_s: float

    @classmethod
    def of(cls, statuses: Iterable[Status], elapsed_s: float) -> Summary:
        ok, failed, attempts = 0, Counter(), 0
        for status, reason, tries in statuses:
            ok += status == "ok"
            failed.update([reason] if status != "ok" else [])
            attempts += tries
        return cls(ok, dict(failed.most_common()), attempts, elapsed_s)

    def describe(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.failed.items())
        rate = self.attempts / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"{self.ok} ok, {sum(self.failed.values())} failed{f' ({reasons})' if reasons else ''} in "
                f"{self.elapsed_s:.1f} s, {self.attempts} requests, {rate:.1f} requests/s")


class Progress:
    """Counts a worker's finished rows and logs done / failed / rate every `every` seconds (one thread only)."""

    def __init__(self, every: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self._clock = every, clock
        self.done = self.failed = 0
        self._started = self._last = clock()

    def add(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            log.info("download worker %d: %d rows done (%d ok, %d failed), %.1f rows/s", os.getpid(), self.done,
                     self.done - self.failed, self.failed, self.done / max(now - self._started, 1e-9))


# ---- DoFns -------------------------------------------------------------------------------------------------------

class RouteManifestFn(beam.DoFn):
    """Usable manifest rows to the main output; rows that could not be read to FAILURES, counted by reason."""

    FAILURES = "failures"

    def process(self, item: ManifestRow | Failure) -> Iterator:
        if isinstance(item, Failure):
            Metrics.counter(NAMESPACE, f"manifest_{item.reason.value}").inc()
            yield beam.pvalue.TaggedOutput(self.FAILURES, item)
        else:
            Metrics.counter(NAMESPACE, "manifest_rows").inc()
            yield item


class FetchPartFn(beam.DoFn):
    """Fetches a part's rows on a small thread pool and writes them as one part file; yields the file name."""

    def __init__(self, policy: FetchPolicy, out_dir: str, retry_round: int, threads: int) -> None:
        self._policy, self._out_dir, self._retry_round, self._threads = policy, out_dir, retry_round, threads

    def setup(self) -> None:
        self._session = open_session(self._policy, pool_size=self._threads)
        self._fetcher = Fetcher(self._session, self._policy)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="fetch")
        self._progress = Progress()

    def _fetch(self, row: ManifestRow) -> FetchResult:
        return self._fetcher.fetch([row.full_size_url, row.medium_source_url])

    def process(self, element: PartRows) -> Iterator[str]:
        part, members = element
        rows = sorted((row for row in members if row is not None), key=lambda row: (row.content_id, row.file, row.line))
        path = join(self._out_dir, part_name(part, self._retry_round))
        if FileSystems.exists(path):  # a retried bundle, or another run, finished it: parts are never rewritten
            Metrics.counter(NAMESPACE, "parts_already_written").inc()
            return
        with PartWriter(path) as writer:
            for row, result in zip(rows, bounded_map(self._pool, self._fetch, rows, self._threads * 4)):
                writer.write(part_row(row, result))
                self._count(result)
        Metrics.counter(NAMESPACE, "parts_written").inc()
        yield FileSystems.split(path)[1]

    def _count(self, result: FetchResult) -> None:
        # Counted here, not in the fetch threads: Beam's metrics container is per thread.
        Metrics.counter(NAMESPACE, "ok" if result.ok else result.reason.value).inc()
        if result.http_status:
            Metrics.counter(NAMESPACE, f"http_{result.http_status}").inc()
        Metrics.counter(NAMESPACE, "attempts").inc(result.attempts)
        self._progress.add(result.ok)

    def teardown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()


# ---- composite transforms ------------------------------------------------------------------------------------------

class ReadManifest(beam.PTransform):
    """The media manifest at `path` -> usable rows (main output) and Failures (output "failures")."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, pbegin):
        return (pbegin
                | "Manifest path" >> beam.Create([self._path])
                | "Parse rows" >> beam.FlatMap(iter_manifest)  # ManifestRow | Failure
                | "Route failures" >> beam.ParDo(RouteManifestFn()).with_outputs(RouteManifestFn.FAILURES,
                                                                                  main="rows"))


class FetchParts(beam.PTransform):
    """Manifest rows -> the names of the part files written (every planned part is written, even if empty)."""

    def __init__(self, plan: PartPlan, policy: FetchPolicy, out_dir: str, threads: int) -> None:
        super().__init__()
        self._plan, self._policy, self._out_dir, self._threads = plan, policy, out_dir, threads

    def expand(self, rows):
        plan = self._plan
        markers = (rows.pipeline
                   | "Planned parts" >> beam.Create(sorted(plan.parts))
                   | "Mark parts" >> beam.Map(lambda part: (part, None)))  # KeyedRow with no row
        keyed = (rows
                 | "Keep planned rows" >> beam.Filter(plan.wants)
                 | "Key by part" >> beam.Map(plan.keyed))  # KeyedRow
        return ((keyed, markers)
                | "Add markers" >> beam.Flatten()
                | "Group by part" >> beam.GroupByKey()  # PartRows
                | "Fetch and write" >> beam.ParDo(FetchPartFn(self._policy, self._out_dir, plan.retry_round,
                                                              self._threads)))  # part file name


class WriteManifestFailures(beam.PTransform):
    """Failures -> one parquet file at `path` (empty when the manifest has no bad row)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, failures):
        return (failures
                | "Collect" >> beam.combiners.ToList()  # [Failure]
                | "Write" >> beam.Map(write_manifest_failures, self._path))


# ---- options -------------------------------------------------------------------------------------------------------

class DownloadOptions(PipelineOptions):
    """The download's own flags; `tol download` adds the same ones (defined once, here)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        default = FetchPolicy()
        parser.add_argument("--contact", metavar="EMAIL", type=contact_email, default=UNSET_CONTACT,
                            help="contact named in the User-Agent so image hosts can reach you (default: unset)")
        parser.add_argument("--rate", metavar="R", type=number_in(0.001, 10_000, "requests/s"), default=default.rate,
                            help=f"requests per second per host, for the whole job (default {default.rate:g})")
        parser.add_argument("--burst", metavar="N", type=number_in(1, 1000, "requests"), default=default.burst,
                            help=f"requests a worker may send back to back per host (default {default.burst:g})")
        parser.add_argument("--per-host-concurrency", metavar="N", type=int_at_least(1),
                            default=default.per_host_concurrency,
                            help=f"requests in flight per host per worker (default {default.per_host_concurrency})")
        parser.add_argument("--threads", metavar="N", type=positive_int, default=16,
                            help="fetch threads per worker, across hosts (default 16)")
        parser.add_argument("--connect-timeout", metavar="S", type=number_in(0.001, 3600, "seconds"),
                            default=default.connect_timeout,
                            help=f"seconds to wait for a connection (default {default.connect_timeout:g})")
        parser.add_argument("--read-timeout", metavar="S", type=number_in(0.001, 3600, "seconds"),
                            default=default.read_timeout,
                            help=f"longest silence while reading a response (default {default.read_timeout:g})")
        parser.add_argument("--max-attempts", metavar="N", type=int_at_least(1), default=default.max_attempts,
                            help=f"attempts per URL for transient failures (default {default.max_attempts})")
        parser.add_argument("--max-bytes", metavar="SIZE", type=byte_size, default=default.max_bytes,
                            help="largest body kept, e.g. 50M (default 50M); larger ones fail as too_large")
        parser.add_argument("--backoff-base", metavar="S", type=number_in(0, 3600, "seconds"),
                            default=default.backoff_base,
                            help=f"first retry waits base/2..base seconds, doubling per retry "
                                 f"(default {default.backoff_base:g})")
        parser.add_argument("--backoff-cap", metavar="S", type=number_in(0, 86_400, "seconds"),
                            default=default.backoff_cap,
                            help=f"longest backoff between attempts (default {default.backoff_cap:g})")
        parser.add_argument("--max-retry-after", metavar="S", type=number_in(0, 86_400, "seconds"),
                            default=default.max_retry_after,
                            help=f"longest Retry-After honoured; a longer one ends the URL's retries "
                                 f"(default {default.max_retry_after:g})")
        parser.add_argument("--num-parts", metavar="N", type=int_at_least(1), default=None,
                            help=f"parts to spread rows over, fixed by the first run (default: one per "
                                 f"{ROWS_PER_PART} rows; at most {MAX_PARTS})")
        parser.add_argument("--workers", metavar="N", type=positive_int, default=None,
                            help="fetching workers the --rate is split across (default: from the runner options)")
        parser.add_argument("--retry-failed", action="store_true",
                            help="fetch again only the failed rows of finished parts, into part-NNNNN-retry-K files")


def download_option_names() -> frozenset[str]:
    parser = argparse.ArgumentParser()
    DownloadOptions._add_argparse_args(parser)
    return frozenset(vars(parser.parse_args([])))


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """Beam options from `--beam ...`, holding the download flags too; FnApiRunner unless --runner says otherwise."""
    names = download_option_names()
    options = PipelineOptions(list(args.beam), **{name: getattr(args, name) for name in names if hasattr(args, name)})
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options


def worker_count(options: PipelineOptions) -> int:
    """How many workers fetch at once, so that each can take rate / workers."""
    if options.view_as(DownloadOptions).workers:
        return options.view_as(DownloadOptions).workers
    runner = str(options.view_as(StandardOptions).runner)
    if runner.rsplit(".", 1)[-1].lower() in LOCAL_RUNNERS | {name.removesuffix("runner") for name in LOCAL_RUNNERS}:
        workers = options.view_as(DirectOptions).direct_num_workers
        return (os.cpu_count() or 1) if workers == 0 else max(1, workers)
    worker = options.view_as(WorkerOptions)
    count = max(worker.max_num_workers or 0, worker.num_workers or 0)
    if count < 1:
        raise ValueError(f"--rate is for the whole job and is split across workers, but --runner={runner} gives no "
                         f"worker count: pass --workers N (fetching processes in all) or --max_num_workers")
    return count


# ---- the run -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadJob:
    """Everything a run needs, checked before any work."""

    manifest: str
    out_dir: str
    plan: PartPlan
    policy: FetchPolicy  # for one worker
    threads: int
    workers: int
    write_manifest_failures: bool


def prepare(manifest: str, out_dir: str, options: PipelineOptions) -> DownloadJob:
    """Validate the configuration, fix or check OUT_DIR/_download.json, and plan the parts; raise ValueError or
    OSError naming the problem."""
    flags = options.view_as(DownloadOptions)
    workers = worker_count(options)
    policy = FetchPolicy(rate=flags.rate, burst=flags.burst, per_host_concurrency=flags.per_host_concurrency,
                         connect_timeout=flags.connect_timeout, read_timeout=flags.read_timeout,
                         max_attempts=flags.max_attempts, max_bytes=flags.max_bytes, backoff_base=flags.backoff_base,
                         backoff_cap=flags.backoff_cap, max_retry_after=flags.max_retry_after,
                         user_agent=user_agent(flags.contact)).split(workers)
    if flags.num_parts is not None and not 1 <= flags.num_parts <= MAX_PARTS:
        raise ValueError(f"--num-parts must be between 1 and {MAX_PARTS}, got {flags.num_parts}")
    manifest_bytes, manifest_sha256 = manifest_fingerprint(manifest)  # FileNotFoundError names the path
    if not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    recorded = read_job(out_dir)
    if recorded is None:
        rows = sum(isinstance(item, ManifestRow) for item in iter_manifest(manifest))
        recorded = JobRecord(flags.num_parts or default_num_parts(rows), manifest, manifest_bytes, manifest_sha256,
                             rows)
        write_job(out_dir, recorded)
        log.info("%s: %d manifest rows in %d parts (recorded in %s)", out_dir, rows, recorded.num_parts, JOB_FILE)
    else:
        check_job(recorded, flags.num_parts, manifest_bytes, manifest_sha256, out_dir)
    stale = temp_files(out_dir)
    if stale:
        log.info("removing %d temp files a stopped run left in %s", len(stale), out_dir)
        FileSystems.delete(stale)
    plan = plan_parts(out_dir, recorded.num_parts, flags.retry_failed)
    failures_path = join(out_dir, MANIFEST_FAILURES)
    return DownloadJob(manifest, out_dir, plan, policy, flags.threads, workers, not FileSystems.exists(failures_path))


def plan_parts(out_dir: str, num_parts: int, retry_failed: bool) -> PartPlan:
    """The first pass: every part without a file. --retry-failed: a new round over the rows that failed last."""
    finished = finished_parts(out_dir)
    if not retry_failed:
        done = {part for part, retry_round in finished.values() if retry_round == 0}
        return PartPlan(num_parts, frozenset(range(num_parts)) - done)
    unfinished = num_parts - sum(retry_round == 0 for _, retry_round in finished.values())
    if unfinished:
        log.warning("%d of %d parts are not finished; --retry-failed only retries finished ones (rerun without it "
                    "to finish them)", unfinished, num_parts)
    tables = [(part, retry_round, read_columns(join(out_dir, name), ["content_id", "status"]))
              for name, (part, retry_round) in finished.items()]
    failed = latest_failures(tables)
    retry_round = 1 + max((retry_round for _, retry_round in finished.values()), default=0)
    return PartPlan(num_parts, frozenset(failed.values()), retry_round, frozenset(failed))


def build(pipeline: beam.Pipeline, job: DownloadJob) -> None:
    rows, failures = pipeline | "Read manifest" >> ReadManifest(job.manifest)
    if job.write_manifest_failures:
        _ = failures | "Write manifest failures" >> WriteManifestFailures(join(job.out_dir, MANIFEST_FAILURES))
    _ = rows | "Fetch parts" >> FetchParts(job.plan, job.policy, job.out_dir, job.threads)


def statuses(out_dir: str, names: Iterable[str]) -> Iterator[Status]:
    for name in names:
        table = read_columns(join(out_dir, name), ["status", "reason", "attempts"])
        yield from zip(*(table[column].to_pylist() for column in ("status", "reason", "attempts")))


def report(job: DownloadJob, elapsed_s: float) -> Summary:
    """Log what this run wrote and where OUT_DIR stands; return this run's summary."""
    finished = finished_parts(job.out_dir)
    written = [job.plan.file_name(part) for part in sorted(job.plan.parts) if job.plan.file_name(part) in finished]
    summary = Summary.of(statuses(job.out_dir, written), elapsed_s)
    log.info("download: this run wrote %d of %d planned parts: %s", len(written), len(job.plan.parts),
             summary.describe())
    done = sum(retry_round == 0 for _, retry_round in finished.values())
    tables = [(part, retry_round, read_columns(join(job.out_dir, name), ["content_id", "status"]))
              for name, (part, retry_round) in finished.items()]
    still_failed = len(latest_failures(tables))
    log.info("download: %s holds %d of %d parts; %d rows failed in their latest attempt%s", job.out_dir, done,
             job.plan.num_parts, still_failed, " (rerun with --retry-failed to retry them)" if still_failed else "")
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST",
                        help="EOL media manifest: a .tgz of CSV chunks, a CSV, or a glob of CSVs (local, gs://, s3://)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory for the parts; rerun with the same one to resume")
    DownloadOptions._add_argparse_args(parser)
    parser.add_argument("--beam", nargs=argparse.REMAINDER, default=[], metavar="OPTION",
                        help="the rest of the line is Beam pipeline options, e.g. --beam --runner=DirectRunner "
                             "--direct_running_mode=multi_processing --direct_num_workers=4 (default: FnApiRunner)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """A script's arguments: the download's own flags; unknown `--flag=value` ones join the Beam options."""
    return beam_script_args("python -m pipeline.download", __doc__, configure, argv)


def run(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """`tol download` (a parsed Namespace), or a script's argv (default sys.argv[1:]; unknown flags go to Beam)."""
    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    if not getattr(args, "verbose", False):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # its INFO notes would drown the progress lines
    options = pipeline_options(args)
    if options.view_as(DownloadOptions).contact == UNSET_CONTACT:
        log.warning("--contact is unset: pass --contact EMAIL so image hosts can reach you instead of blocking you")
    try:
        job = prepare(args.manifest, args.out_dir, options)
    except (ValueError, OSError) as error:  # OSError: a missing manifest, an OUT_DIR that cannot be made
        log.error("%s", error)
        return 2
    if not job.plan.parts and not job.write_manifest_failures:
        done = "no failed rows to retry" if job.plan.retry_round else f"all {job.plan.num_parts} parts are finished"
        log.info("download: nothing to do in %s: %s", job.out_dir, done)
        return 0
    log.info("download: %d parts to write%s, %d worker(s) at %.3g requests/s per host each, User-Agent %r",
             len(job.plan.parts), f" (retry round {job.plan.retry_round})" if job.plan.retry_round else "",
             job.workers, job.policy.rate, job.policy.user_agent)
    started = time.monotonic()
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, job)
    report(job, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(run())
