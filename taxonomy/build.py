"""`tol taxonomy RAW OUT`: every source label resolved to seven ranks and a common name, written as parquet.

    tol taxonomy demo-out/kit demo-out/taxonomy --profile bioclip-v1

RAW is a raw-data root laid out like the sample kit (inat21/train.json, bioscan/BIOSCAN_Insect_Dataset_metadata.tsv,
eol/media_manifest.tgz, authorities/..., eol/dh/...). --inat21-json, --bioscan-metadata and --eol-manifest replace
one source's file; --authorities the folders searched for the dumps (default RAW). The dumps are loaded into
OUT/authorities.duckdb, which is kept while every dump's sha256 matches what it recorded; the labels
(taxonomy.labels) are resolved with the profile (taxonomy.resolve; with --online, GBIF for what no dump has,
taxonomy.gbif_online), and OUT receives, each written to a temp file and renamed:
- taxa.parquet: taxon_id, kingdom .. species (the epithet), scientific_name, common_name, common_name_source,
  <rank>_authority and <rank>_match for each of the seven ranks, match (of the most specific rank), status
- label_map.parquet: source, label_key, taxon_id (null if unresolved), status, reason, match
- conflicts.parquet: source, label_key, candidates (authority + seven ranks each), why
- unresolved.parquet: source, label_key, reason, detail (conflicts included, as `ambiguous_homonym`)
- summary.json: the counts printed at the end; only its "run" section differs between runs on the same inputs.
The parquet files are byte-identical for identical inputs: rows sorted, fixed writer settings, no timestamps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.argtypes import number_in, positive_int
from taxonomy.authorities import AuthorityFiles, load_authorities
from taxonomy.authorities.load import LAYOUT, sha256_of
from taxonomy.captions import RANKS
from taxonomy.gbif_online import GbifOnline
from taxonomy.labels import DEFAULT_PATHS, LabelInputs, collect_labels
from taxonomy.profiles import get_profile
from taxonomy.records import UNRESOLVED, Resolution, UnresolvedReason
from taxonomy.resolve import resolve_labels

log = logging.getLogger(__name__)
FLAGS = {"inat21": "--inat21-json", "bioscan": "--bioscan-metadata", "eol": "--eol-manifest"}
OUTPUTS = ("taxa.parquet", "label_map.parquet", "conflicts.parquet", "unresolved.parquet")
RANK_FIELDS = [pa.field(rank, pa.string()) for rank in RANKS]
TAXA_SCHEMA = pa.schema([
    pa.field("taxon_id", pa.string()), *RANK_FIELDS, pa.field("scientific_name", pa.string()),
    pa.field("common_name", pa.string()), pa.field("common_name_source", pa.string()),
    *(pa.field(f"{rank}_authority", pa.string()) for rank in RANKS),
    *(pa.field(f"{rank}_match", pa.string()) for rank in RANKS),
    pa.field("match", pa.string()), pa.field("status", pa.string())])
LABEL_MAP_SCHEMA = pa.schema([("source", pa.string()), ("label_key", pa.string()), ("taxon_id", pa.string()),
                              ("status", pa.string()), ("reason", pa.string()), ("match", pa.string())])
CONFLICTS_SCHEMA = pa.schema([("source", pa.string()), ("label_key", pa.string()),
                              ("candidates", pa.list_(pa.struct([("authority", pa.string()), *RANK_FIELDS]))),
                              ("why", pa.string())])
UNRESOLVED_SCHEMA = pa.schema([("source", pa.string()), ("label_key", pa.string()), ("reason", pa.string()),
                               ("detail", pa.string())])


@dataclass(frozen=True, slots=True)
class TaxonomyConfig:
    """What one `tol taxonomy` run reads and where it writes; paths already checked to exist."""

    out: Path
    inputs: LabelInputs
    authority_roots: tuple[Path, ...]
    profile: str = "bioclip-v1"
    online: bool = False
    gbif_cache: Path | None = None  # default OUT/gbif_cache
    gbif_rate: float = 3.0
    batch_size: int = 50_000

    @classmethod
    def for_raw(cls, raw: Path, out: Path, **options) -> TaxonomyConfig:
        """Every input at its usual place under a raw-data root (the sample kit's layout)."""
        return cls(out, LabelInputs.under(raw), (raw,), **options)


def config_from_args(args: argparse.Namespace) -> TaxonomyConfig:
    """A checked config; raises ValueError (unknown profile) or FileNotFoundError naming the flag and path."""
    get_profile(args.profile)
    if not args.raw.is_dir():
        raise FileNotFoundError(f"RAW {args.raw} is not a directory; pass the raw-data root (laid out like a kit)")
    found = LabelInputs.under(args.raw).by_source()
    for source, flag in FLAGS.items():
        given = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if given is not None and not given.is_file():
            raise FileNotFoundError(f"{flag} {given} does not exist")
        found[source] = given or found[source]
        if found[source] is None:
            log.warning("taxonomy: no %s metadata under %s (looked for %s); pass %s to read it", source, args.raw,
                        " or ".join(DEFAULT_PATHS[source]), flag)
    if not any(found.values()):
        expected = ", ".join(path for paths in DEFAULT_PATHS.values() for path in paths)
        raise FileNotFoundError(f"no source metadata under {args.raw} (expected {expected}); pass "
                                f"{', '.join(FLAGS.values())}")
    roots = tuple(args.authorities or [args.raw])
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"--authorities {root} is not a directory")
    if not AuthorityFiles.discover(*roots).present():
        raise FileNotFoundError(f"no authority dump under {', '.join(map(str, roots))}: pass --authorities DIR, a "
                                f"folder holding some of {', '.join(paths[0] for paths in LAYOUT.values())}")
    inputs = LabelInputs(found["inat21"], found["bioscan"], found["eol"])
    return TaxonomyConfig(args.out, inputs, roots, args.profile, args.online, args.gbif_cache, args.gbif_rate,
                          args.batch_size)


def ensure_authorities(roots: Sequence[Path], db_path: Path) -> bool:
    """Load the dumps under `roots` into `db_path` unless it already holds exactly them; True if it was reused."""
    present = AuthorityFiles.discover(*roots).present()
    wanted = {str(path.resolve()): sha256_of(path) for path in set(present.values())}
    if db_path.is_file():
        try:
            with duckdb.connect(str(db_path), read_only=True) as con:
                rows = con.execute("SELECT file, sha256 FROM loads").fetchall()
            recorded = {str(Path(file).resolve()): sha for file, sha in rows}
        except duckdb.Error as error:
            log.warning("taxonomy: %s is unreadable (%s); loading the dumps again", db_path, error)
            recorded = {}
        if recorded == wanted:
            log.info("taxonomy: %s already holds these %d dumps (sha256 match); reused", db_path, len(wanted))
            return True
    load_authorities(AuthorityFiles(**present), db_path)
    return False


def _table(rows: Sequence, columns: Sequence[Callable], schema: pa.Schema) -> pa.Table:
    return pa.table([[column(row) for row in rows] for column in columns], schema=schema)


def tables(resolution: Resolution) -> dict[str, pa.Table]:
    """The four output tables, rows in the resolution's (sorted) order."""
    def by_rank(attribute: str) -> list[Callable]:
        return [lambda t, i=i: getattr(t, attribute)[i] for i in range(len(RANKS))]

    taxa = [lambda t: t.taxon_id, *by_rank("ranks"), lambda t: t.scientific_name, lambda t: t.common_name,
            lambda t: t.common_name_source, *by_rank("authorities"), *by_rank("matches"), lambda t: t.match,
            lambda t: t.status]
    mapping = [lambda m: m.source, lambda m: m.key, lambda m: m.taxon_id, lambda m: m.status, lambda m: m.reason,
               lambda m: m.match]
    conflict = [lambda c: c.source, lambda c: c.key, lambda c: [{"authority": authority, **dict(zip(RANKS, ranks))}
                                                                for authority, ranks in c.candidates], lambda c: c.why]
    unresolved = [lambda u: u.source, lambda u: u.key, lambda u: str(u.reason), lambda u: u.detail]
    return {"taxa.parquet": _table(resolution.taxa, taxa, TAXA_SCHEMA),
            "label_map.parquet": _table(resolution.mappings, mapping, LABEL_MAP_SCHEMA),
            "conflicts.parquet": _table(resolution.conflicts, conflict, CONFLICTS_SCHEMA),
            "unresolved.parquet": _table(resolution.unresolved, unresolved, UNRESOLVED_SCHEMA)}


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temp)` next to `path`, then rename into place; a failed write leaves no file at `path`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Fixed writer settings, one row group: the same table gives the same bytes."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", compression_level=3,
                                                  use_dictionary=True, write_statistics=True, version="2.6",
                                                  row_group_size=max(1, table.num_rows)))


def summarise(labels: dict[str, list], resolution: Resolution, online: GbifOnline | None) -> dict:
    """The counts of summary.json: per source, resolved + partial + unresolved + conflicts = labels."""
    conflicted = {(c.source, c.key) for c in resolution.conflicts}
    by_source = {source: Counter() for source in labels}
    for m in resolution.mappings:
        outcome = "conflicts" if (m.source, m.key) in conflicted else m.status
        by_source.setdefault(m.source, Counter())[outcome] += 1
    outcomes = ("resolved", "partial", UNRESOLVED, "conflicts")
    reasons = Counter(str(u.reason) for u in resolution.unresolved if u.reason != UnresolvedReason.AMBIGUOUS_HOMONYM)
    summary = {
        "labels": {source: len(found) for source, found in labels.items()},
        "outcomes": {o: sum(c[o] for c in by_source.values()) for o in outcomes},
        "by_source": {s: {o: c[o] for o in outcomes} for s, c in sorted(by_source.items())},
        "unresolved_by_reason": dict(sorted(reasons.items())),
        "matches": dict(sorted(Counter(m.match for m in resolution.mappings if m.taxon_id).items())),
        "taxa": {"total": len(resolution.taxa),
                 "by_status": dict(sorted(Counter(t.status for t in resolution.taxa).items())),
                 "by_kingdom": dict(sorted(Counter(t.ranks[0] or "(none)" for t in resolution.taxa).items())),
                 "common_name_sources": dict(sorted(Counter(t.common_name_source for t in resolution.taxa).items()))},
    }
    if online is not None:
        stats = online.stats
        summary["online"] = {"labels": stats.labels, "queries": stats.queries, "cached": stats.cached,
                             "fetched": stats.fetched, "errors": stats.errors,
                             "match_types": dict(sorted(stats.match_types.items()))}
    return summary


def build_taxonomy(config: TaxonomyConfig) -> dict:
    """Load the dumps, collect and resolve every label, write OUT; return the summary (as summary.json holds it)."""
    started = time.monotonic()
    profile = get_profile(config.profile)
    config.out.mkdir(parents=True, exist_ok=True)
    db_path = config.out / "authorities.duckdb"
    reused = ensure_authorities(config.authority_roots, db_path)
    labels = collect_labels(config.inputs)
    log.info("taxonomy: resolving %d labels with profile %s%s", sum(map(len, labels.values())), profile.name,
             " (and GBIF online)" if config.online else "")
    online = GbifOnline(profile, config.gbif_cache or config.out / "gbif_cache", rate=config.gbif_rate) \
        if config.online else None
    with duckdb.connect(str(db_path), read_only=True) as con:
        resolution = resolve_labels(con, (label for found in labels.values() for label in found), profile,
                                    config.batch_size, online)
    files = {}
    for name, table in tables(resolution).items():
        write_parquet(table, config.out / name)
        files[name] = {"rows": table.num_rows, "sha256": sha256_of(config.out / name)}
    summary = {"profile": profile.name,
               "inputs": {s: str(p) if p else None for s, p in config.inputs.by_source().items()},
               **summarise(labels, resolution, online), "files": files,
               "run": {"elapsed_s": round(time.monotonic() - started, 3), "authorities_db": str(db_path),
                       "authorities_db_reused": reused,
                       "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}}
    text = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"
    write_atomic(config.out / "summary.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return summary


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def format_summary(summary: dict, out: Path | None = None) -> str:
    """The short printed summary of a run."""
    labels, outcomes, taxa = summary["labels"], summary["outcomes"], summary["taxa"]
    lines = [f"taxonomy ({summary['profile']}): {sum(labels.values())} labels ({_counts(labels)}) -> "
             f"{taxa['total']} taxa in {summary['run']['elapsed_s']:.1f} s",
             f"  labels:   {_counts(outcomes)}",
             *(f"  {source:9s} {_counts(counts)}" for source, counts in summary["by_source"].items()),
             f"  unresolved by reason: {_counts(summary['unresolved_by_reason'])}",
             f"  taxa by kingdom: {_counts(taxa['by_kingdom'])}",
             f"  common names: {_counts(taxa['common_name_sources'])}"]
    if online := summary.get("online"):
        asked = {k: v for k, v in online.items() if k != "match_types"}
        lines.append(f"  gbif online: {_counts(asked)}; answers {_counts(online['match_types'])}")
    if out is not None:
        lines.append(f"  written to {out}: {', '.join(OUTPUTS)}, summary.json")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("raw", type=Path, metavar="RAW", help="raw-data root laid out like a sample kit")
    add("out", type=Path, metavar="OUT", help="output folder (created), e.g. out/taxonomy")
    add("--profile", default="bioclip-v1", metavar="NAME",
        help="resolution profile of data_manifests/taxonomy/profiles/ (default bioclip-v1; also gbif-first)")
    add("--inat21-json", type=Path, metavar="PATH", help="iNat21 train.json (default RAW/inat21/train.json)")
    add("--bioscan-metadata", type=Path, metavar="PATH",
        help="BIOSCAN-1M metadata TSV or JSON-LD (default RAW/bioscan/BIOSCAN_Insect_Dataset_metadata.tsv)")
    add("--eol-manifest", type=Path, metavar="PATH", help="EOL media manifest (default RAW/eol/media_manifest.tgz)")
    add("--authorities", type=Path, nargs="+", metavar="DIR", help="folders searched for the dumps (default RAW)")
    add("--online", action="store_true", help="ask GBIF (pygbif) about the labels no dump resolves")
    add("--gbif-cache", type=Path, metavar="DIR", help="folder of cached GBIF answers (default OUT/gbif_cache)")
    add("--gbif-rate", type=number_in(0.01, 50, "requests per second"), default=3.0, metavar="N",
        help="most GBIF requests per second with --online (default 3)")
    add("--batch-size", type=positive_int, default=50_000, metavar="N", help="labels per resolver batch (50000)")


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        summary = build_taxonomy(config)
    except (ValueError, OSError, duckdb.Error) as error:  # bad input: unknown profile, a missing file, bad dumps
        log.error("%s", error, exc_info=log.isEnabledFor(logging.DEBUG))
        return 2
    print(format_summary(summary, config.out))
    return 0
