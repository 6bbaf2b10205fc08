"""The build's manifests: one row per kept sample (catalog, licenses), per drop (failures), per shard (shards).

    rows = catalog_row(record, processed, taxon, "train", "shard-000003.tar")
    write_table(CATALOG_SCHEMA, [rows], Path("out/manifests/catalog.parquet"))

Pure functions over records; no Beam. Parquet files are written with fixed settings, rows sorted, to a temp name
then renamed, so the same rows give the same bytes (and so is `write_json`, for build_summary.json). `catalog.csv` repeats the catalog in TreeOfLife-10M's exact
column order (BIOCLIP_CATALOG_COLUMNS). `check_accounting` is the nothing-lost check: every input id ends in
exactly one of the catalog and the failures.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa

from pipeline.images import Processed
from pipeline.records import Failure, SourceRecord
from taxonomy.build import write_atomic, write_parquet
from taxonomy.captions import RANKS
from taxonomy.records import Taxon

CATALOG, CATALOG_CSV, FAILURES, LICENSES, SHARDS, INPUTS = (
    "catalog.parquet", "catalog.csv", "failures.parquet", "licenses.parquet", "shards.parquet", "inputs.parquet")
SOURCE_ID_COLUMNS = ("eol_content_id", "eol_page_id", "bioscan_part", "bioscan_filename", "inat21_filename",
                     "inat21_cls_name", "inat21_cls_num")
# TreeOfLife-10M metadata/catalog.csv (the same order as ToL-EDA's data/tol_hierarchy_test.csv, plus `split`).
BIOCLIP_CATALOG_COLUMNS = ("split", "treeoflife_id", *SOURCE_ID_COLUMNS, *RANKS, "common")
_S = pa.string()
CATALOG_SCHEMA = pa.schema([("split", _S), ("treeoflife_id", _S), ("source", _S), ("native_id", _S),
                            *((c, _S) for c in SOURCE_ID_COLUMNS), ("taxon_id", _S), *((r, _S) for r in RANKS),
                            ("common", _S), ("shard", _S), ("md5", _S), ("phash", _S), ("license", _S)])
FAILURE_SCHEMA = pa.schema([("source", _S), ("native_id", _S), ("treeoflife_id", _S), ("stage", _S), ("reason", _S),
                            ("detail", _S), ("file", _S), ("line", pa.int64())])
LICENSE_SCHEMA = pa.schema([("treeoflife_id", _S), ("source", _S), ("license", _S), ("rights_holder", _S),
                            ("source_url", _S), ("md5", _S)])
SHARD_SCHEMA = pa.schema([("split", _S), ("shard", _S), ("count", pa.int64()), ("bytes", pa.int64()),
                          ("sha256", _S)])
INPUT_SCHEMA = pa.schema([("source", _S), ("treeoflife_id", _S)])

Row = dict[str, object]


def source_ids(record: SourceRecord) -> dict[str, str]:
    """The per-source id columns of BioCLIP's catalog ("" where they do not apply)."""
    ids = dict.fromkeys(SOURCE_ID_COLUMNS, "")
    provenance, label = dict(record.provenance), record.label_dict()
    if record.source == "eol":
        ids.update(eol_content_id=record.native_id, eol_page_id=label.get("page_id", ""))
    elif record.source == "bioscan":
        ids.update(bioscan_part=provenance.get("chunk_number", ""), bioscan_filename=record.native_id)
    elif record.source == "inat21":
        path = PurePosixPath(provenance.get("file_name") or record.image_ref)
        ids.update(inat21_filename=path.name, inat21_cls_name=path.parent.name,
                   inat21_cls_num=label.get("category_id", ""))
    return ids


def catalog_row(record: SourceRecord, processed: Processed, taxon: Taxon, split: str, shard: str) -> Row:
    return {"split": split, "treeoflife_id": record.treeoflife_id, "source": record.source,
            "native_id": record.native_id, **source_ids(record), "taxon_id": taxon.taxon_id,
            **dict(zip(RANKS, taxon.ranks, strict=True)), "common": taxon.common_name, "shard": shard,
            "md5": processed.md5, "phash": f"{processed.phash:016x}", "license": record.license}


def license_row(record: SourceRecord, processed: Processed) -> Row:
    return {"treeoflife_id": record.treeoflife_id, "source": record.source, "license": record.license,
            "rights_holder": record.rights_holder, "source_url": record.source_url, "md5": processed.md5}


def failure_row(failure: Failure) -> Row:
    return {"source": failure.source, "native_id": failure.native_id, "treeoflife_id": failure.treeoflife_id,
            "stage": str(failure.stage), "reason": str(failure.reason), "detail": failure.detail,
            "file": failure.file, "line": failure.line}


def shard_rows(shards_dir: Path) -> list[Row]:
    """One row per finished shard under `shards_dir/{split}/`, read from the stats files (written last)."""
    rows = []
    for path in sorted(shards_dir.glob("*/shard-*.stats.json")):
        stats = json.loads(path.read_text(encoding="utf-8"))
        rows.append({"split": stats["split"], "shard": f"{stats['split']}/{stats['name']}", "count": stats["count"],
                     "bytes": stats["bytes"], "sha256": stats["sha256"]})
    return rows


def _sort_key(schema: pa.Schema):
    names = schema.names
    return lambda row: tuple("" if row[n] is None else str(row[n]) if not isinstance(row[n], int) else f"{row[n]:020d}"
                             for n in names)


def write_table(schema: pa.Schema, rows: Iterable[Row], path: Path) -> int:
    """Write `rows` (sorted by every column in schema order) as parquet at `path`, atomically; return the count."""
    ordered = sorted(rows, key=_sort_key(schema))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pa.Table.from_pylist(ordered, schema=schema), path)
    return len(ordered)


def write_catalog_csv(rows: Iterable[Row], path: Path) -> None:
    """The catalog in TreeOfLife-10M's column order, rows sorted by (split, treeoflife_id)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BIOCLIP_CATALOG_COLUMNS)
    for row in sorted(rows, key=lambda r: (r["split"], r["treeoflife_id"])):
        writer.writerow([row[c] for c in BIOCLIP_CATALOG_COLUMNS])
    text = buffer.getvalue()
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, value: object) -> None:
    """`value` as indented JSON at `path`, written to a temp name and renamed (a killed build leaves no half file)."""
    text = json.dumps(value, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Accounting:
    """The nothing-lost check: input ids against the ids in the catalog and the failures."""

    inputs: int
    kept: int
    dropped: int
    rowless_failures: int  # failures of rows that never became a record (no id): counted apart
    missing: tuple[str, ...]  # input ids in neither manifest
    both: tuple[str, ...]  # ids both kept and dropped
    repeated: tuple[str, ...]  # ids dropped more than once, or in more than one of train/val
    unknown: tuple[str, ...]  # ids in a manifest that no input had

    @property
    def ok(self) -> bool:
        return not (self.missing or self.both or self.repeated or self.unknown)

    def message(self) -> str:
        head = (f"{self.inputs} input records -> {self.kept} kept + {self.dropped} dropped"
                f" (+ {self.rowless_failures} unusable rows without an id)")
        if self.ok:
            return head + ": every record accounted for exactly once"
        problems = [f"{name} {len(ids)} (e.g. {', '.join(ids[:3])})" for name, ids in (
            ("missing from both manifests", self.missing), ("both kept and dropped", self.both),
            ("listed more than once", self.repeated), ("not an input", self.unknown)) if ids]
        return head + ": NOT accounted for: " + "; ".join(problems)


def check_accounting(input_ids: Sequence[str], catalog: Sequence[Mapping], failures: Sequence[Mapping]) -> Accounting:
    """Every input id ends in exactly one of catalog (train or val; train_small repeats train) and failures."""
    inputs = set(input_ids)
    main_splits = Counter(str(r["treeoflife_id"]) for r in catalog if r["split"] in ("train", "val"))
    kept = {str(r["treeoflife_id"]) for r in catalog}
    dropped = Counter(str(r["treeoflife_id"]) for r in failures if r["treeoflife_id"])
    repeated = sorted({i for i, n in main_splits.items() if n > 1} | {i for i, n in dropped.items() if n > 1}
                      | (kept - set(main_splits)))
    return Accounting(len(inputs), len(kept), len(dropped), sum(1 for r in failures if not r["treeoflife_id"]),
                      tuple(sorted(inputs - kept - set(dropped))), tuple(sorted(kept & set(dropped))),
                      tuple(repeated), tuple(sorted((kept | set(dropped)) - inputs)))
