"""`tol rare-species OUT`: curate the Rare Species benchmark and the exclusion list `tol build` honours.

    tol rare-species demo-out/rare_species --kit demo-out/kit --taxonomy demo-out/taxonomy \
        --downloads demo-out/downloads --species 8 --images-per-species 5 --seed 0
    tol rare-species out/rare_species --from-published data/annotation/rare_species/metadata.csv

Fresh selection (rare_species.select): IUCN category in --categories (rare_species.iucn; legacy names mapped,
unknown strings counted) -> an EOL page resolved to all seven ranks (taxa + label_map of `tol taxonomy`) -> not in
iNat21 or BIOSCAN (accepted names) -> at least --images-per-species unique images in the download parts (md5, then
pHash Hamming <= --threshold) -> --species chosen in seeded blake2b order (--stratify-by class: round-robin over
classes), and per species the images in the same seeded order. --from-published instead takes BioCLIP's published
annotation file as the selection; image bytes, md5 and pHash come only from --downloads parts, if given.
Outputs (rare_species.layout) plus OUT/selection-report.json, whose steps are also printed.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.argtypes import non_negative_int, positive_int
from pipeline.images import ImageError, process
from pipeline.phash_index import DEFAULT_THRESHOLD
from pipeline.sources.eol import (
    DownloadRow,
    ManifestRow,
    iter_manifest,
    list_download_parts,
    read_download_part,
    winning_download,
)
from rare_species import select
from rare_species.iucn import CODES, DEFAULT_CATEGORIES, check_categories, read_assessments
from rare_species.layout import Entry, read_published, write_outputs

log = logging.getLogger(__name__)


def downloads_for(downloads: str | None, content_ids: set[int], why: Counter) -> dict[int, DownloadRow]:
    """The winning download row of each wanted content id (bytes kept only for those); missing parts are counted."""
    parts = list_download_parts(downloads) if downloads else []
    if downloads and not parts:
        why["no_download_parts"] += 1
        log.warning("no part-*.parquet under %s: run tol download first; no image bytes are available", downloads)
    rows: dict[int, list[DownloadRow]] = defaultdict(list)
    for part in parts:
        for row in read_download_part(part):
            if row.content_id in content_ids:
                rows[row.content_id].append(row)
    return {cid: winning_download(found) for cid, found in rows.items()}


def hashed(row: DownloadRow | None, why: Counter) -> tuple[str, int] | None:
    """(md5, pHash) of a downloaded original, or None with the reason counted."""
    if row is None:
        why["not_downloaded"] += 1
    elif row.status != "ok":
        why[f"download_failed:{row.reason}"] += 1
    else:
        try:
            processed = process(row.data or b"", md5=row.md5 or None)
        except ImageError as error:
            why[f"undecodable:{error.reason}"] += 1
            return None
        return processed.md5, processed.phash
    return None


def species_images(species: Iterable[select.Species], manifest: str, downloads: str,
                   why: Counter) -> dict[str, list[select.Image]]:
    """Each candidate's downloaded, decodable EOL images (manifest rows of its pages joined to the parts)."""
    page_to_key = {page: s.key for s in species for page in s.pages}
    rows: list[ManifestRow] = [r for r in iter_manifest(manifest) if isinstance(r, ManifestRow)
                               and r.page_id in page_to_key]
    won = downloads_for(downloads, {r.content_id for r in rows}, why)
    images: dict[str, list[select.Image]] = defaultdict(list)
    for row in rows:
        download = won.get(row.content_id)
        hashes = hashed(download, why)
        if hashes:
            images[page_to_key[row.page_id]].append(select.Image(
                row.content_id, row.page_id, download.data or b"", hashes[0], hashes[1], download.url or
                row.full_size_url, row.license_name, row.copyright_owner))
    return images


def read_taxonomy(taxonomy: Path) -> tuple[list[dict], dict[str, dict]]:
    label_map = pq.read_table(taxonomy / "label_map.parquet").to_pylist()
    taxa = {row["taxon_id"]: row for row in pq.read_table(taxonomy / "taxa.parquet").to_pylist()}
    return label_map, taxa


def fresh_selection(args: argparse.Namespace, report: select.Report) -> list[Entry]:
    export = read_assessments(str(args.iucn))
    report.notes["iucn"] = {"rows": export.rows, "unknown_categories": dict(export.unknown),
                            "unusable_rows": dict(export.unusable_names)}
    for text, n in sorted(export.unknown.items()):
        log.warning("IUCN category %r (%d rows) is not in data_manifests/rare_species/iucn_categories.csv; "
                    "those species are left out", text, n)
    label_map, taxa = read_taxonomy(args.taxonomy)
    eol, page_why = select.eol_species(label_map, taxa)
    report.notes["eol_pages"] = {"resolved_seven_ranks": sum(len(p) for _, p in eol.values()), **page_why}
    report.step("iucn_assessed", len(export.assessments), {"unknown_category": sum(export.unknown.values()),
                                                           **export.unusable_names}, "a known category")
    candidates = select.candidates(export.assessments, args.categories, eol,
                                   select.seen_keys(label_map, taxa), report)
    image_why = Counter()
    images = species_images(candidates, str(args.eol_manifest), str(args.downloads), image_why)
    report.notes["images_unusable"] = dict(sorted(image_why.items()))
    unique = select.enough_images(candidates, lambda s: images.get(s.key, []), args.images_per_species, report)
    chosen = select.choose_species([c for c in candidates if c.key in unique], args.species, args.seed,
                                   args.stratify_by)
    report.step("chosen", len(chosen), {"not_chosen": len(unique) - len(chosen)},
                f"first {args.species} by blake2b(seed={args.seed}, binomial)"
                + (f", round-robin over {args.stratify_by}" if args.stratify_by else ""))
    if len(chosen) < args.species:
        report.notes["shortfall"] = args.species - len(chosen)
        log.warning("only %d species pass every rule; %d asked for", len(chosen), args.species)
    return [Entry(i.content_id, i.page_id, s.ranks, s.common_name, s.assessment.category, s.assessment.scientific_name,
                  s.assessment.code, i.md5, f"{i.phash:016x}", i.source_url, i.license_name, i.owner, i.data)
            for s in chosen for i in select.choose_images(unique[s.key], args.images_per_species, args.seed)]


def published_selection(args: argparse.Namespace, report: select.Report) -> list[Entry]:
    entries = read_published(str(args.from_published))
    manifest = {r.content_id: r for r in iter_manifest(str(args.eol_manifest))
                if isinstance(r, ManifestRow)} if args.eol_manifest else {}
    why = Counter()
    won = downloads_for(str(args.downloads), {e.content_id for e in entries}, why) if args.downloads else {}
    out = []
    for entry in entries:
        row, download = manifest.get(entry.content_id), won.get(entry.content_id)
        hashes = hashed(download, why) if args.downloads else None
        out.append(Entry(entry.content_id, entry.page_id, entry.ranks, entry.common_name,
                         md5=hashes[0] if hashes else "", phash=f"{hashes[1]:016x}" if hashes else "",
                         source_url=(download.url if download else "") or (row.full_size_url if row else ""),
                         license_name=row.license_name if row else "", owner=row.copyright_owner if row else "",
                         data=download.data if hashes else None))
    report.step("published_rows", len(out), {}, f"rows of {args.from_published}")
    report.notes["images_unusable"] = dict(sorted(why.items()))
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("out", type=Path, help="output folder (published layout + exclusions.parquet + selection-report.json)")
    add("--from-published", type=Path, metavar="METADATA_CSV", help="BioCLIP's rare_species/metadata.csv as the "
        "selection, instead of selecting afresh")
    add("--kit", type=Path, help="a raw-data root like the sample kit: defaults --iucn and --eol-manifest")
    add("--iucn", type=Path, help="IUCN assessments.csv (default KIT/iucn/assessments.csv)")
    add("--taxonomy", type=Path, help="tol taxonomy output folder (taxa.parquet, label_map.parquet)")
    add("--eol-manifest", type=Path, help="EOL media manifest (default KIT/eol/media_manifest.tgz)")
    add("--downloads", type=Path, help="tol download output folder (part-*.parquet)")
    add("--categories", default=",".join(DEFAULT_CATEGORIES),
        help=f"IUCN codes to keep, comma-separated, of {','.join(CODES)} (default %(default)s)")
    add("--species", type=positive_int, default=400, help="species to choose (default 400)")
    add("--images-per-species", type=positive_int, default=30, help="unique images per species (default 30)")
    add("--seed", type=non_negative_int, default=0, help="seed of the blake2b order (default 0)")
    add("--stratify-by", choices=select.RANKS[:5], help="round-robin over this rank's values (e.g. class)")
    add("--threshold", type=non_negative_int, default=DEFAULT_THRESHOLD, help="pHash Hamming distance of a "
        "near duplicate (default 8)")


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults from --kit, categories validated, required inputs checked; raises ValueError naming the flag."""
    args.categories = check_categories(tuple(c.strip().upper() for c in args.categories.split(",") if c.strip()))
    if args.kit:
        args.iucn = args.iucn or args.kit / "iucn/assessments.csv"
        args.eol_manifest = args.eol_manifest or args.kit / "eol/media_manifest.tgz"
    needed = {"--from-published": args.from_published} if args.from_published else {
        "--iucn": args.iucn, "--taxonomy": args.taxonomy, "--eol-manifest": args.eol_manifest,
        "--downloads": args.downloads}
    for flag, value in needed.items():
        if value is None:
            raise ValueError(f"{flag} is required (or --kit for --iucn/--eol-manifest)")
        if not Path(value).exists():
            raise ValueError(f"{flag} {value} does not exist")
    return args


def run(args: argparse.Namespace | list[str]) -> int:
    if isinstance(args, list):
        parser = argparse.ArgumentParser(prog="tol rare-species")
        configure(parser)
        args = parser.parse_args(args)
    try:
        args = resolve_args(args)
    except ValueError as error:
        log.error("%s", error)
        return 2
    report = select.Report()
    entries = published_selection(args, report) if args.from_published else fresh_selection(args, report)
    counts = write_outputs(args.out, entries)
    report.notes["written"] = counts
    (args.out / "selection-report.json").write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
    print(f"Rare Species -> {args.out}: {counts['species']} species, {counts['images']} images "
          f"({counts['image_files']} image files)")
    print("\n".join(report.lines()))
    for key in ("iucn", "images_unusable", "images_removed_by_dedup", "shortfall"):
        if report.notes.get(key):
            print(f"  {key}: {json.dumps(report.notes[key], sort_keys=True)}")
    return 0
