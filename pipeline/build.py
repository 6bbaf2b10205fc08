"""`tol build OUT`: sources + taxa + exclusions -> webdataset shards per split and the build's manifests (Beam).

    tol build demo-out --kit demo-out/kit --taxonomy demo-out/taxonomy
    tol build out --inat21-json raw/inat21/train.json --inat21-images raw/inat21/train.tar.gz \
        --bioscan-metadata raw/bioscan/BIOSCAN_Insect_Dataset_metadata.tsv \
        --bioscan-images raw/bioscan/cropped_256.zip \
        --eol-manifest raw/eol/media_manifest.tgz --eol-downloads out/downloads --taxonomy out/taxonomy \
        --exclude-species out/rare_species/exclusions.parquet --beam --runner=DirectRunner \
        --direct_running_mode=multi_processing --direct_num_workers=4

Steps (`BuildTreeOfLife`): read every source and process every image; join each sample's label to its taxon
(`label_map.parquet` + `taxa.parquet`; partial taxa are kept, unresolved labels dropped); exact dedup (md5), near
dedup (pHash), eval leakage (`--eval-images`), Rare Species exclusion (`--exclude-species`); hash-based splits
(train / val, train_small = 10% of train, also listed under train); webdataset shards in OUT/shards/{split}/ with
a shard count per split from its sample count and bytes, computed inside the pipeline (a side input), so there is
one pass; then OUT/manifests/{catalog,failures,licenses,shards,inputs}.parquet and catalog.csv (BioCLIP's column
order). After the pipeline, the nothing-lost check: every input record (by treeoflife_id) is in exactly one of
catalog and failures, or the build exits 1 naming the counts. Done shards (stats file present) are not rewritten
on a rerun; manifests are rewritten atomically with the same bytes.

Everything after `--beam` is a Beam pipeline option; the default runner is FnApiRunner in this process. The
build's own flags are Beam options too (`BuildOptions`); as a script (`python -m pipeline.build OUT ...`), unknown
`--flag=value` options also go to Beam. PortableRunner (Flink, Spark, or Beam's local job service) gives the
same bytes; OUT must be a path the launcher and every worker see (a `gs://` OUT is refused, see below).
A stopped build leaves only dot-named temp files (no partial file under a final name); a rerun removes them.

Scale notes. The label join is a CoGroupByKey on the label key, so it scales as is; the label table itself is read
on the launcher (at 10M: about 500K label keys). Manifests are collected with ToList into one worker each: fine
to a few million rows; at 10M, write sharded parquet parts and merge them with DuckDB. Manifest paths are local.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import manifests, provenance
from pipeline.argtypes import non_negative_int, positive_int
from pipeline.cli import beam_script_args
from pipeline.dedup import (
    ExactDedup,
    ExcludeSpecies,
    LeakageFilter,
    NearDedup,
    exclusion_keys,
    signed_hash,
)
from pipeline.front import ReadSources, SourcePaths
from pipeline.images import RESIZE_MODES, ImageError, Processed, ResizeSpec, process
from pipeline.phash_index import DEFAULT_THRESHOLD
from pipeline.process import FAILURES, ProcessImages
from pipeline.records import Failure, Reason, SourceRecord
from pipeline.shards import (
    ShardSample,
    WriteShardFn,
    finish_split,
    num_shards,
    shard_name,
    shard_of,
    shard_sample,
    split_dir,
)
from pipeline.splits import SPLITS, VAL_FRACTION, AssignSplits, check_fraction
from taxonomy.captions import RANKS
from taxonomy.records import Taxon

log = logging.getLogger(__name__)
DEFAULT_RUNNER = "FnApiRunner"
SUMMARY_FILE = "build_summary.json"
SAMPLES = "samples"
TAR_HEADER_BYTES = 512  # one ustar header per member, besides its padded data
Labelled = tuple[SourceRecord, Processed, Taxon]  # a sample with its taxon; the dedup stages read [0] and [1]
Tagged = tuple[str, Labelled]  # (split, labelled sample)


# --- pure functions ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LabelEntry:
    """Where one label key went: its taxon (None when unresolved), the status and the taxonomy's reason."""

    taxon: Taxon | None
    status: str
    reason: str


def taxon_of(row: dict) -> Taxon:
    """A Taxon from a row of taxa.parquet."""
    text = {key: value or "" for key, value in row.items()}
    return Taxon(text["taxon_id"], tuple(text[r] for r in RANKS), text["scientific_name"], text["common_name"],
                 text["common_name_source"], tuple(text[f"{r}_authority"] for r in RANKS),
                 tuple(text[f"{r}_match"] for r in RANKS), text["match"], text["status"])


def load_labels(taxonomy_dir: Path) -> list[tuple[str, LabelEntry]]:
    """(label_key, LabelEntry) for every row of label_map.parquet, its taxon joined from taxa.parquet."""
    taxa = {row["taxon_id"]: taxon_of(row) for row in pq.read_table(taxonomy_dir / "taxa.parquet").to_pylist()}
    entries = []
    for row in pq.read_table(taxonomy_dir / "label_map.parquet").to_pylist():
        taxon = taxa.get(row["taxon_id"]) if row["taxon_id"] else None
        reason = row["reason"] or ("" if taxon else f"taxon {row['taxon_id']!r} not in taxa.parquet")
        entries.append((row["label_key"], LabelEntry(taxon, row["status"] or "", reason)))
    return sorted(entries, key=lambda entry: entry[0])


def label_outcome(record: SourceRecord, entries: Sequence[LabelEntry]) -> Taxon | Failure:
    """The taxon of a record's label, or the UNRESOLVED_LABEL failure that says why there is none."""
    if not entries:
        return Failure.of(Reason.UNRESOLVED_LABEL, f"label {record.label_key!r} is not in label_map.parquet "
                                                   "(run tol taxonomy on the same sources)", record=record)
    entry = min(entries, key=lambda e: (e.taxon is None, e.status, e.reason))
    if entry.taxon is None:
        return Failure.of(Reason.UNRESOLVED_LABEL, f"{record.label_key}: {entry.status} {entry.reason}".strip(),
                          record=record)
    return entry.taxon


def taxon_completeness(sample: Labelled) -> int:
    """Non-empty ranks of the resolved taxon: the dedup survivor rule prefers the most complete."""
    return sum(1 for rank in sample[2].ranks if rank)


def taxon_binomial(sample: Labelled) -> str:
    """`Genus epithet` of the resolved taxon ("" without an epithet), the key exclusions compare."""
    genus, epithet = sample[2].ranks[5], sample[2].ranks[6]
    return f"{genus} {epithet}" if genus and epithet else ""


def to_shard_sample(tagged: Tagged) -> ShardSample:
    split, (record, processed, taxon) = tagged
    return shard_sample(record, processed, taxon, split)


def shard_bytes(sample: ShardSample) -> int:
    """The bytes a sample adds to a tar (data plus a header per member), for the shard count."""
    return sum(TAR_HEADER_BYTES + len(data) for _, data in sample.members())


def eval_hash(path: str, spec: ResizeSpec) -> tuple[str, int] | None:
    """(eval set = the image's folder name, signed pHash) of one evaluation image; None if it cannot be decoded.

    The hash is taken with the build's own ResizeSpec: the decoder's draft scale follows the target size, and the
    pHash is computed from that decoded image, so another size would hash slightly differently.
    """
    try:
        with open(path, "rb") as handle:
            phash = process(handle.read(), spec).phash
    except (ImageError, OSError) as error:
        log.warning("build: evaluation image %s is skipped: %s", path, error)
        return None
    return Path(path).parent.name, signed_hash(phash)


# --- DoFns ------------------------------------------------------------------------------------------------------

class JoinLabelFn(beam.DoFn):
    """(label_key, {samples, labels}) -> (record, processed, taxon), or a tagged UNRESOLVED_LABEL failure."""

    def __init__(self) -> None:
        self._joined = Metrics.counter("label", "joined")
        self._unresolved = Metrics.counter("label", str(Reason.UNRESOLVED_LABEL))

    def process(self, element):
        _, grouped = element
        entries = list(grouped["labels"])
        for record, processed in grouped[SAMPLES]:
            outcome = label_outcome(record, entries)
            if isinstance(outcome, Failure):
                self._unresolved.inc()
                yield beam.pvalue.TaggedOutput(FAILURES, outcome)
            else:
                self._joined.inc()
                yield record, processed, outcome


# --- composites -------------------------------------------------------------------------------------------------

class JoinLabels(beam.PTransform):
    """(record, processed) -> `samples` (record, processed, taxon) and `failures` (UNRESOLVED_LABEL)."""

    def __init__(self, entries: Sequence[tuple[str, LabelEntry]]) -> None:
        super().__init__()
        self._entries = list(entries)

    def expand(self, samples):
        labels = samples.pipeline | "LabelMap" >> beam.Create(self._entries)  # (label_key, LabelEntry)
        keyed = samples | "KeyByLabel" >> beam.Map(lambda s: (s[0].label_key, s))  # (label_key, sample)
        return ({SAMPLES: keyed, "labels": labels}
                | "GroupByLabel" >> beam.CoGroupByKey()  # (label_key, {samples, labels})
                | "Join" >> beam.ParDo(JoinLabelFn()).with_outputs(FAILURES, main=SAMPLES))


class ReadEvalHashes(beam.PTransform):
    """Glob patterns of evaluation images -> (eval set, signed pHash)."""

    def __init__(self, patterns: Sequence[str], spec: ResizeSpec) -> None:
        super().__init__()
        self._spec = spec
        self._paths = sorted({path for pattern in patterns for path in glob.glob(pattern, recursive=True)})

    def expand(self, pbegin):
        return (pbegin
                | "EvalPaths" >> beam.Create(self._paths)  # path
                | "Hash" >> beam.Map(eval_hash, self._spec)  # (eval set, phash) | None
                | "Decoded" >> beam.Filter(lambda item: item is not None))


class WriteSplitShards(beam.PTransform):
    """(split, labelled sample) -> shards in OUT/shards/{split}/ and `shard_counts` (split, shard count).

    The shard count of a split comes from its sample count and bytes (`num_shards`), computed here and passed on
    as a side input, so the samples are not read twice.
    """

    def __init__(self, shards_dir: str, target_samples: int) -> None:
        super().__init__()
        self._dir, self._target = shards_dir, target_samples

    def expand(self, tagged):
        target, shards_dir = self._target, self._dir
        samples = tagged | "ToShardSample" >> beam.Map(to_shard_sample)  # ShardSample
        counts = (samples
                  | "SizeOf" >> beam.Map(lambda s: (s.split, (1, shard_bytes(s))))  # (split, (1, bytes))
                  | "SumSizes" >> beam.CombinePerKey(lambda values: tuple(map(sum, zip(*values))) or (0, 0))
                  | "ShardCount" >> beam.MapTuple(
                      lambda split, size: (split, num_shards(size[0], size[1], target))))  # (split, n)
        stats = (samples
                 | "KeyByShard" >> beam.Map(lambda s, n: ((s.split, shard_of(s.key, n[s.split])), s),
                                            n=beam.pvalue.AsDict(counts))  # ((split, shard), ShardSample)
                 | "GroupByShard" >> beam.GroupByKey()  # ((split, shard), [ShardSample])
                 | "WriteShard" >> beam.ParDo(WriteShardFn(shards_dir)))  # (split, ShardStats)
        splits = tagged.pipeline | "Splits" >> beam.Create([(split, None) for split in SPLITS])
        _ = ({"stats": stats, "split": splits}
             | "GroupBySplit" >> beam.CoGroupByKey()  # (split, {stats, split})
             | "FinishSplit" >> beam.Map(_finish_split, shards_dir, n=beam.pvalue.AsDict(counts)))  # summary
        return counts


def _finish_split(element: tuple[str, dict], shards_dir: str, n: dict[str, int]) -> dict[str, object]:
    split, grouped = element
    return finish_split(split_dir(shards_dir, split), split, n.get(split, 1), grouped["stats"])


def _catalog_row(tagged: Tagged, counts: dict[str, int]) -> manifests.Row:
    split, (record, processed, taxon) = tagged
    return manifests.catalog_row(record, processed, taxon, split,
                                 f"{split}/{shard_name(shard_of(record.treeoflife_id, counts[split]))}")


def _write_catalog(rows: list[manifests.Row], directory: Path) -> None:
    manifests.write_table(manifests.CATALOG_SCHEMA, rows, directory / manifests.CATALOG)
    manifests.write_catalog_csv(rows, directory / manifests.CATALOG_CSV)


class WriteManifests(beam.PTransform):
    """Tagged samples, failures, input ids and shard counts -> OUT/manifests/*.parquet (and catalog.csv)."""

    def __init__(self, directory: Path, failures, inputs, shard_counts) -> None:
        super().__init__()
        self._dir, self._failures, self._inputs, self._counts = directory, failures, inputs, shard_counts

    def expand(self, tagged):
        directory, m = self._dir, manifests
        catalog = tagged | "CatalogRow" >> beam.Map(_catalog_row, counts=beam.pvalue.AsDict(self._counts))
        licenses = (tagged
                    | "MainSplits" >> beam.Filter(lambda t: t[0] != "train_small")  # one row per sample
                    | "LicenseRow" >> beam.MapTuple(lambda _, s: m.license_row(s[0], s[1])))
        failures = self._failures | "FailureRow" >> beam.Map(m.failure_row)
        _ = (catalog | "AllCatalog" >> beam.combiners.ToList()
             | "WriteCatalog" >> beam.Map(_write_catalog, directory))
        for name, rows, schema, path in (("Failures", failures, m.FAILURE_SCHEMA, m.FAILURES),
                                         ("Licenses", licenses, m.LICENSE_SCHEMA, m.LICENSES),
                                         ("Inputs", self._inputs, m.INPUT_SCHEMA, m.INPUTS)):
            _ = (rows | f"All{name}" >> beam.combiners.ToList()
                 | f"Write{name}" >> beam.Map(lambda r, s, p: m.write_table(s, r, directory / p), schema, path))
        return catalog


def _input_row(element) -> manifests.Row:
    record = element[0] if isinstance(element, tuple) else element
    return {"source": record.source, "treeoflife_id": record.treeoflife_id}


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """What one `tol build` reads and writes; checked before any work (`check`)."""

    out: Path
    paths: SourcePaths
    taxonomy: Path
    exclude_species: tuple[str, ...] = ()
    eval_images: tuple[str, ...] = ()
    spec: ResizeSpec = dataclasses.field(default_factory=ResizeSpec)
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    shard_samples: int = 10_000
    near_threshold: int = DEFAULT_THRESHOLD

    def check(self) -> None:
        """Raise ValueError / FileNotFoundError naming the flag and the bad value."""
        check_fraction("--val-fraction", self.val_fraction)
        if not 0 <= self.near_threshold <= 63:
            raise ValueError(f"--near-threshold {self.near_threshold} must be in 0..63")
        for flag, value in (("--shard-samples", self.shard_samples), ("--size", self.spec.size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} {value!r} must be an integer >= 1")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed {self.seed!r} must be an integer >= 0")
        if self.spec.mode not in RESIZE_MODES:
            raise ValueError(f"--resize-mode {self.spec.mode!r} must be one of {', '.join(RESIZE_MODES)}")
        for name in ("taxa.parquet", "label_map.parquet"):
            if not (self.taxonomy / name).is_file():
                raise FileNotFoundError(f"--taxonomy {self.taxonomy} has no {name}: run tol taxonomy first")
        for field in dataclasses.fields(self.paths):
            value = getattr(self.paths, field.name)
            if value and "://" not in value and not Path(value).exists():
                raise FileNotFoundError(f"--{field.name.replace('_', '-')} {value} does not exist")
        for path in self.exclude_species:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--exclude-species {path} does not exist (a parquet with `binomial`, or "
                                        "BioCLIP's unseen_in_training.json)")


class BuildTreeOfLife(beam.PTransform):
    """The whole build as a list of verbs; returns nothing (its outputs are files under config.out)."""

    def __init__(self, config: BuildConfig) -> None:
        super().__init__()
        self._config = config
        self._labels = load_labels(config.taxonomy)
        self._excluded = frozenset().union(*(exclusion_keys(p) for p in config.exclude_species))

    def expand(self, pbegin):
        c = self._config
        read = pbegin | "ReadSources" >> ReadSources(c.paths)  # {records: (SourceRecord, bytes), failures}
        inputs = ((read["records"], read[FAILURES] | "WithId" >> beam.Filter(lambda f: f.treeoflife_id))
                  | "AllInputs" >> beam.Flatten()
                  | "InputRow" >> beam.Map(_input_row))  # {source, treeoflife_id}
        processed = read["records"] | "ProcessImages" >> ProcessImages(c.spec)  # (record, processed)
        labelled = processed.samples | "JoinLabels" >> JoinLabels(self._labels)  # (record, processed, taxon)
        exact = labelled[SAMPLES] | "ExactDedup" >> ExactDedup(completeness=taxon_completeness)
        near = exact[SAMPLES] | "NearDedup" >> NearDedup(c.near_threshold, completeness=taxon_completeness)
        stages = [read[FAILURES], processed.failures, labelled[FAILURES], exact[FAILURES], near[FAILURES]]
        kept = near[SAMPLES]
        if c.eval_images:
            hashes = pbegin | "EvalHashes" >> ReadEvalHashes(c.eval_images, c.spec)  # (eval set, phash)
            leak = kept | "LeakageFilter" >> LeakageFilter(hashes, c.near_threshold)
            kept, stages = leak[SAMPLES], [*stages, leak[FAILURES]]
        if self._excluded:
            excluded = kept | "ExcludeSpecies" >> ExcludeSpecies(self._excluded, binomial_of=taxon_binomial)
            kept, stages = excluded[SAMPLES], [*stages, excluded[FAILURES]]
        tagged = (kept
                  | "BreakFusion" >> beam.Reshuffle()
                  | "AssignSplits" >> AssignSplits(c.seed, c.val_fraction))  # (split, labelled)
        counts = tagged | "WriteShards" >> WriteSplitShards(str(c.out / "shards"), c.shard_samples)  # (split, n)
        failures = stages | "AllFailures" >> beam.Flatten()  # Failure
        _ = tagged | "WriteManifests" >> WriteManifests(c.out / "manifests", failures, inputs, counts)


# --- options ----------------------------------------------------------------------------------------------------

SOURCE_FLAGS = (("inat21-json", "iNat21 train.json"), ("inat21-images", "iNat21 train.tar.gz or train/"),
                ("bioscan-metadata", "BIOSCAN-1M metadata TSV"), ("bioscan-images", "BIOSCAN cropped_256.zip"),
                ("eol-manifest", "EOL media_manifest.tgz"), ("eol-downloads", "tol download's parts folder"))


class BuildOptions(PipelineOptions):
    """The build's own flags; `tol build` adds the same ones (defined once, here), plus OUT and `--beam`.

    Beam parses every PipelineOptions subclass of the process with one parser, so these names must not clash with
    DownloadOptions' or Beam's own (a test checks it). Paths are kept as strings here, so that the options
    serialise to any runner (PortableRunner sends them to the job service as a protobuf Struct).
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument
        add("--kit", default=None, metavar="RAW", help="take every source path from a sample-kit layout under RAW")
        add("--downloads", default=None, metavar="DIR",
            help="EOL download parts with --kit (default RAW/../downloads)")
        for flag, what in SOURCE_FLAGS:
            add(f"--{flag}", default="", metavar="P", help=f"{what} (overrides --kit)")
        add("--taxonomy", default=None, metavar="DIR", help="tol taxonomy's output (default OUT/taxonomy)")
        add("--exclude-species", action="append", default=[], metavar="FILE",
            help="species to keep out (exclusions.parquet or unseen_in_training.json); repeatable")
        add("--eval-images", action="append", default=[], metavar="GLOB",
            help="evaluation images (glob; the folder names the eval set): near copies are dropped as leaks")
        add("--size", type=positive_int, default=224, help="output side in pixels (default 224)")
        add("--resize-mode", choices=RESIZE_MODES, default="squash", help="default squash (BioCLIP's)")
        add("--seed", type=non_negative_int, default=0, help="split seed (default 0)")
        add("--val-fraction", type=float, default=VAL_FRACTION,
            help=f"val share per source (default {VAL_FRACTION})")
        add("--near-threshold", type=non_negative_int, default=DEFAULT_THRESHOLD,
            help=f"pHash bits (of 64) within which images are near duplicates or eval leaks "
                 f"(default {DEFAULT_THRESHOLD})")
        add("--shard-samples", type=positive_int, default=10_000, help="target samples per shard (default 10000)")


def build_option_names() -> frozenset[str]:
    parser = argparse.ArgumentParser()
    BuildOptions._add_argparse_args(parser)
    return frozenset(vars(parser.parse_args([])))


# --- the run ----------------------------------------------------------------------------------------------------

def stale_temps(out: Path) -> list[Path]:
    """Temp files a killed build left under OUT (`.NAME.UUID.tmp` from the shard writer, `.NAME.tmp-PID` from the
    manifest writer). They never carry a final name, so they are only litter; a rerun removes them."""
    folders = [out, out / "manifests", *sorted((out / "shards").glob("*/"))]
    return sorted(path for folder in folders for pattern in (".*.tmp", ".*.tmp-*")
                  for path in folder.glob(pattern) if path.is_file())


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist() if path.is_file() else []


def summarise(out: Path, shard_counters: dict[str, int], elapsed: float) -> tuple[dict, manifests.Accounting]:
    """The build's summary and the nothing-lost check, from the manifests just written."""
    directory = out / "manifests"
    inputs, catalog = read_rows(directory / manifests.INPUTS), read_rows(directory / manifests.CATALOG)
    failures = read_rows(directory / manifests.FAILURES)
    accounting = manifests.check_accounting([r["treeoflife_id"] for r in inputs], catalog, failures)
    rowless = Counter(r["source"] for r in failures if not r["treeoflife_id"])
    per_source = Counter(r["source"] for r in inputs)
    summary = {
        "inputs": {s: {"records": per_source[s], "unusable_rows": rowless[s]} for s in sorted(per_source | rowless)},
        "kept": dict(sorted(Counter(r["split"] for r in catalog).items())),
        "dropped": dict(sorted(Counter(f"{r['stage']}:{r['reason']}" for r in failures).items())),
        "shards": {**shard_counters, "total": len(manifests.shard_rows(out / "shards"))},
        "check": accounting.message(), "elapsed_s": round(elapsed, 1)}
    return summary, accounting


def format_summary(summary: dict, out: Path) -> str:
    lines = [f"tol build -> {out} in {summary['elapsed_s']:.1f} s"]
    lines += [f"  inputs  {source:8s} {c['records']:6d} records" + (f" + {c['unusable_rows']} unusable rows"
                                                                 if c["unusable_rows"] else "")
              for source, c in summary["inputs"].items()]
    lines.append("  kept    " + ", ".join(f"{split} {n}" for split, n in summary["kept"].items()))
    lines += [f"  dropped {reason:36s} {n}" for reason, n in summary["dropped"].items()]
    shards = summary["shards"]
    lines.append(f"  shards  {shards['total']} in all: {shards.get('written', 0)} written, "
                 f"{shards.get('skipped', 0)} already done")
    lines.append(f"  check   {summary['check']}")
    return "\n".join(lines)


def shard_counters(result) -> dict[str, int]:
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("shards"))["counters"]
    except (AttributeError, NotImplementedError, KeyError):
        return {}
    return {c.key.metric.name: int(c.committed or c.attempted or 0) for c in counters
            if c.key.metric.name in ("written", "skipped")}


def provenance_record(config: BuildConfig, options: PipelineOptions) -> dict[str, list]:
    """The build's settings (command, code version, runner, flags) and inputs (paths, sizes, checksums)."""
    paths = {name: value for name, value in dataclasses.asdict(config.paths).items() if value}
    pairs = {"runner": options.view_as(StandardOptions).runner, "taxonomy": config.taxonomy, "seed": config.seed,
             "val_fraction": config.val_fraction, "size": config.spec.size, "resize_mode": config.spec.mode,
             "near_threshold": config.near_threshold, "shard_samples": config.shard_samples,
             "exclude_species": ", ".join(config.exclude_species) or "none",
             "eval_images": ", ".join(config.eval_images) or "none"}
    inputs = [provenance.describe_input(name, location) for name, location in paths.items()]
    inputs += [provenance.describe_input("exclude_species", location) for location in config.exclude_species]
    return {"settings": provenance.settings(pairs), "source_inputs": inputs}


def build(config: BuildConfig, options: PipelineOptions) -> tuple[dict, manifests.Accounting]:
    """Run the pipeline, then summarise and check; writes OUT/build_summary.json."""
    config.check()
    started = time.monotonic()
    stale = stale_temps(config.out)
    if stale:
        log.info("build: removing %d temp files a stopped build left under %s", len(stale), config.out)
        for path in stale:
            path.unlink(missing_ok=True)
    (config.out / "manifests").mkdir(parents=True, exist_ok=True)
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Build" >> BuildTreeOfLife(config)
    result = pipeline.run()
    result.wait_until_finish()
    shard_rows = manifests.shard_rows(config.out / "shards")
    manifests.write_table(manifests.SHARD_SCHEMA, shard_rows, config.out / "manifests" / manifests.SHARDS)
    summary, accounting = summarise(config.out, shard_counters(result), time.monotonic() - started)
    summary.update(provenance_record(config, options))
    manifests.write_json(config.out / SUMMARY_FILE, summary)
    return summary, accounting


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output root (a local path): shards/ and manifests/ go under it")
    BuildOptions._add_argparse_args(parser)
    parser.add_argument("--beam", nargs=argparse.REMAINDER, default=[], metavar="OPTION",
                        help="the rest of the line is Beam pipeline options (default runner: FnApiRunner)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """A script's arguments: the build's own flags; unknown `--flag=value` ones join the Beam options."""
    return beam_script_args("python -m pipeline.build", __doc__, configure, argv)


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """Beam options from `--beam ...`, holding the build flags too; FnApiRunner unless --runner says otherwise."""
    names = build_option_names()
    options = PipelineOptions(list(args.beam), **{name: getattr(args, name) for name in names if hasattr(args, name)})
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER  # never Beam's default (it fetches Prism)
    return options


def config_from_options(out: str, options: PipelineOptions) -> BuildConfig:
    """The BuildConfig of OUT and the build flags; raise ValueError naming OUT if it is not a local path."""
    if "://" in str(out):
        raise ValueError(f"OUT {out} must be a local (or mounted) path: the manifests are written with local file "
                         "APIs after the pipeline")
    flags, out_path = options.view_as(BuildOptions), Path(out)
    kit = SourcePaths()
    if flags.kit:
        kit = SourcePaths.from_kit(Path(flags.kit), Path(flags.downloads) if flags.downloads
                                   else Path(flags.kit).parent / "downloads")
    names = [f.name for f in dataclasses.fields(SourcePaths)]
    paths = SourcePaths(**{name: getattr(flags, name) or getattr(kit, name) for name in names})
    return BuildConfig(out_path, paths, Path(flags.taxonomy) if flags.taxonomy else out_path / "taxonomy",
                       tuple(flags.exclude_species or ()), tuple(flags.eval_images or ()),
                       ResizeSpec(flags.size, flags.resize_mode), flags.seed, flags.val_fraction, flags.shard_samples,
                       flags.near_threshold)


def run(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """`tol build` (a parsed Namespace), or a script's argv (default sys.argv[1:]; unknown flags go to Beam)."""
    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    try:
        options = pipeline_options(args)
        config = config_from_options(args.out, options)
        config.check()
    except (ValueError, OSError) as error:
        log.error("build: %s", error)
        return 2
    summary, accounting = build(config, options)
    print(format_summary(summary, config.out))
    if not accounting.ok:
        log.error("build: the nothing-lost check failed: %s", accounting.message())
        return 1
    return 0


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    sys.exit(run())
