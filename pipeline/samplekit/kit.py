"""Write a small raw-data tree in the exact formats of iNat21, BIOSCAN-1M, EOL and the taxonomic authorities.

    tol sample-kit demo-out/kit --seed 0 --scale 600 --eol-base-url http://127.0.0.1:8765

The taxa are real (iNat21 categories, BIOSCAN labels, the 400 Rare Species, and taxonomic hard cases); the
pictures are drawn from the taxonomy so a model can learn them; deliberate defects (duplicates, corrupt files,
failing URLs, malformed rows) are listed with their expected fate in OUT/EXPECTED.json. The same seed and scale
give byte-identical files, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.argtypes import http_base_url, int_at_least, non_negative_int, positive_int
from pipeline.samplekit.authorities import write_authorities
from pipeline.samplekit.plan import DEFECTS, ROW_DEFECTS, SOURCES, KitRecord, make_plan, source_sizes
from pipeline.samplekit.render import render
from pipeline.samplekit.sources import write_bioscan, write_eol_media, write_inat21
from pipeline.samplekit.taxa import RANK_NAMES, KitTaxa, choose_taxa, hard_cases, read_csv

log = logging.getLogger(__name__)
MIN_SCALE = 200  # below this, not every defect kind finds a record to live in
KIT_PARTS = ("inat21", "bioscan", "eol", "authorities", "iucn", "EXPECTED.json")


@dataclass(frozen=True, slots=True)
class KitConfig:
    out: Path
    seed: int = 0
    scale: int = 600
    eol_base_url: str = "http://127.0.0.1:8765"
    workers: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.scale < MIN_SCALE:
            raise ValueError(f"--scale must be at least {MIN_SCALE} so every defect kind fits, got {self.scale}")


def rendered(records: list[KitRecord], pool, label: str) -> Iterator[tuple[KitRecord, bytes | None]]:
    """Records with their bytes, in plan order (so output is independent of the worker count)."""
    images = pool.imap(render, records, chunksize=8) if pool else map(render, records)
    yield from tqdm(zip(records, images), total=len(records), desc=f"sample-kit {label}", unit="img", leave=False)


def prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a kit there")
        for part in KIT_PARTS:
            target = out / part
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def defect_entries(plan: dict[str, list[KitRecord]], where: dict[str, dict]) -> list[dict]:
    entries = []
    for records in plan.values():
        for record in records:
            if record.defect:
                entry = {"kind": record.defect, "source": record.source, "native_id": record.native_id,
                         "expected": DEFECTS[record.defect][1], "where": where.get(record.key, {})}
                if record.copy_of is not None:
                    entry["copy_of"] = {"source": record.copy_of.source, "native_id": record.copy_of.native_id}
                entries.append(entry)
    for key, place in where.items():
        kind = key.split(":", 1)[0]
        if kind in ROW_DEFECTS:
            source = "bioscan" if key.startswith("malformed_row:bioscan") else "eol"
            entries.append({"kind": kind, "source": source, "native_id": None, "expected": ROW_DEFECTS[kind], "where": place})
    return entries


def hard_case_entries(plan: dict[str, list[KitRecord]]) -> list[dict]:
    carriers: dict[str, list[str]] = {}
    for records in plan.values():
        for record in records:
            if record.taxon.hard_case:
                carriers.setdefault(record.taxon.hard_case, []).append(record.native_id)
    entries = []
    for case in hard_cases():
        label = case.get("bioscan") or {"eol_page_id": case["page_id"], "dh_scientific_name": case["dh_name"]}
        entries.append({"id": case["id"], "kind": case["kind"], "source": case["source"], "label": label,
                        "records": carriers.get(case["id"], []), "why": case["why"],
                        "expected": dict(zip(RANK_NAMES, case["expected"]))})
    return entries


def expected_document(config: KitConfig, taxa: KitTaxa, plan: dict[str, list[KitRecord]], where: dict[str, dict],
                      authority_counts: dict[str, int]) -> dict:
    defects = defect_entries(plan, where)
    fates = Counter(f"{d['expected'].get('stage', d['expected']['fate'])}:{d['expected'].get('reason', '')}".rstrip(":")
                    for d in defects)
    return {
        "kit": {"seed": config.seed, "scale": config.scale, "eol_base_url": config.eol_base_url, "format_version": 1},
        "native_ids": "iNat21: image id; BIOSCAN-1M: image_file; EOL: EOL content ID",
        "counts": {**{source: {"records": len(plan[source]), "taxa": len({r.taxon for r in plan[source]})}
                      for source in SOURCES}, "authorities": authority_counts},
        "fates_of_defects": dict(sorted(fates.items())),
        "defects": defects,
        "hard_cases": hard_case_entries(plan),
        "rare_species_candidates": [{"scientific_name": t.binomial, "eol_page_id": t.eol_page_id} for t in taxa.rare],
    }


def build_kit(config: KitConfig) -> dict:
    """Write the kit under `config.out`; return the EXPECTED.json document."""
    prepare(config.out, config.overwrite)
    taxa = choose_taxa(config.seed, source_sizes(config.scale))
    plan = make_plan(taxa, config.scale, config.seed)
    supercategories = {int(row["category_id"]): row["supercategory"] for row in read_csv("inat21_taxa.csv")}
    per_kind = max(1, config.scale // 1000)
    pool = multiprocessing.get_context("fork").Pool(config.workers) if config.workers > 1 else None
    try:
        where = write_inat21(config.out / "inat21", rendered(plan["inat21"], pool, "inat21"), supercategories)
        where |= write_bioscan(config.out / "bioscan", rendered(plan["bioscan"], pool, "bioscan"), per_kind)
        where |= write_eol_media(config.out / "eol", rendered(plan["eol"], pool, "eol"), config.eol_base_url, per_kind)
    finally:
        if pool:
            pool.close()
            pool.join()
    eol_taxa = list(dict.fromkeys(r.taxon for r in plan["eol"]))
    all_taxa = list(dict.fromkeys([r.taxon for records in plan.values() for r in records]))
    counts = write_authorities(config.out, all_taxa, eol_taxa, list(taxa.inat21), list(taxa.rare))
    document = expected_document(config, taxa, plan, where, counts)
    (config.out / "EXPECTED.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return document


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="directory to write the kit into (created; must be empty)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed; the same seed gives identical bytes (default 0)")
    parser.add_argument("--scale", type=int_at_least(MIN_SCALE), default=600,
                        help=f"number of image records across the three sources (default 600, at least {MIN_SCALE}); "
                             "use 100000 or more for benchmarks")
    parser.add_argument("--eol-base-url", type=http_base_url, default="http://127.0.0.1:8765",
                        help="base of the EOL image URLs written into the media manifest; serve OUT/eol/images there "
                             "with 'tol serve-kit' (default http://127.0.0.1:8765)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="processes drawing images (default: all cores); does not change the output")
    parser.add_argument("--overwrite", action="store_true", help="replace a kit already in OUT")


def run(args: argparse.Namespace) -> int:
    try:
        config = KitConfig(args.out, args.seed, args.scale, args.eol_base_url, args.workers, args.overwrite)
        document = build_kit(config)
    except (ValueError, FileExistsError) as error:
        log.error("%s", error)
        return 2
    counts = document["counts"]
    log.info("sample kit written to %s: %s", args.out,
             ", ".join(f"{s} {counts[s]['records']} records / {counts[s]['taxa']} taxa" for s in SOURCES))
    log.info("%d deliberate defects and %d taxonomic hard cases listed in %s", len(document["defects"]),
             len(document["hard_cases"]), args.out / "EXPECTED.json")
    return 0
