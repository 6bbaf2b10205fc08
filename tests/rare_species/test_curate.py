"""Tests for `tol rare-species`: --from-published on BioCLIP's real annotation file, and a fresh selection on a
downloaded, resolved sample kit (rules hold, reruns identical, seeds differ, bad inputs reported not crashed)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli, download
from pipeline.dedup import exclusion_keys, normalised_binomial
from pipeline.images import hamming
from pipeline.samplekit.kit import KitConfig, build_kit
from pipeline.serve_kit import KitServer
from rare_species import curate
from rare_species.select import RANKS, order_key
from taxonomy.build import TaxonomyConfig, build_taxonomy

PUBLISHED = "bioclip/data/annotation/rare_species/metadata.csv"
DOWNLOAD_FLAGS = ["--rate", "200", "--burst", "8", "--read-timeout", "0.25", "--connect-timeout", "1",
                  "--max-attempts", "2", "--backoff-base", "0.02", "--backoff-cap", "0.1", "--contact", "t@localhost"]
SMALL = ["--species", "4", "--images-per-species", "3"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_from_published_keeps_every_row_rank_and_name(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / PUBLISHED
    assert cli.main(["rare-species", str(tmp_path), "--from-published", str(source)]) == 0
    given = {int(r["filepath"].rsplit("/", 1)[1].split("_")[0]): r for r in read_csv(source)}
    annotation = read_csv(tmp_path / "annotation.csv")
    assert len(annotation) == len(given) == 11_983
    columns = ("kingdom", "phylum", "cls", "order", "family", "genus", "species", "common_name", "class")
    for row in annotation:
        content_id = int(row["filepath"].rsplit("/", 1)[1].split("_")[0])
        assert tuple(row[c] for c in columns) == tuple(given[content_id][c] for c in columns)
    catalog = read_csv(tmp_path / "metadata/rarespecies-catalog.csv")
    assert len(catalog) == 11_983 and len({r["sciName"] for r in catalog}) == 400
    assert len(exclusion_keys(str(tmp_path / "exclusions.parquet"))) == 400
    exclusions = pq.read_table(tmp_path / "exclusions.parquet")
    assert exclusions.column_names == ["binomial", "md5", "phash"] and exclusions.num_rows == 11_983
    assert not (tmp_path / "dataset").exists()  # no download parts given: no image bytes
    assert {r["file_name"].split("/")[0] for r in read_csv(tmp_path / "metadata.csv")} == {"dataset"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scale-200 kit, its EOL images downloaded from a loopback server, and its taxonomy (as in test_build)."""
    root = tmp_path_factory.mktemp("rare")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    build_kit(KitConfig(root / "kit", seed=0, scale=200, eol_base_url=f"http://127.0.0.1:{port}", workers=2))
    with KitServer(root / "kit/eol/images", port=port, hang_seconds=1):
        assert download.run([str(root / "kit/eol/media_manifest.tgz"), str(root / "downloads"), *DOWNLOAD_FLAGS]) == 0
    build_taxonomy(TaxonomyConfig.for_raw(root / "kit", root / "taxonomy"))
    return root


def curate_kit(root: Path, out: Path, *extra: str, downloads: Path | None = None) -> dict:
    args = [str(out), "--kit", str(root / "kit"), "--taxonomy", str(root / "taxonomy"), "--downloads",
            str(downloads or root / "downloads"), *extra]
    assert cli.main(["rare-species", *args]) == 0
    return json.loads((out / "selection-report.json").read_text(encoding="utf-8"))


def seen_binomials(root: Path) -> set[str]:
    taxa = {r["taxon_id"]: r for r in pq.read_table(root / "taxonomy/taxa.parquet").to_pylist()}
    return {normalised_binomial(f"{taxa[r['taxon_id']]['genus']} {taxa[r['taxon_id']]['species']}")
            for r in pq.read_table(root / "taxonomy/label_map.parquet").to_pylist()
            if r["source"] in ("inat21", "bioscan") and r["taxon_id"] and taxa[r["taxon_id"]]["species"]}


def test_fresh_selection_satisfies_every_rule(root: Path, tmp_path: Path) -> None:
    report = curate_kit(root, tmp_path, *SMALL)
    catalog = read_csv(tmp_path / "metadata/rarespecies-catalog.csv")
    chosen = {r["sciName"] for r in catalog}
    assert len(chosen) == 4 and len(catalog) == 12
    assert all(all(r[rank] for rank in RANKS) for r in catalog)
    assert not {normalised_binomial(name) for name in chosen} & seen_binomials(root)
    categories = {r["binomial"]: r["iucn_code"] for r in read_csv(tmp_path / "metadata/iucn-categories.csv")}
    assert set(categories) == chosen and set(categories.values()) <= {"NT", "VU", "EN", "CR", "EW"}
    assert "botaurus poiciloptilus" not in {normalised_binomial(n) for n in chosen}  # 'Vulnerabel' is not guessed
    assert report["iucn"]["unknown_categories"] == {"Vulnerabel": 1}
    kept = {s["step"]: s["kept"] for s in report["steps"]}
    assert kept["chosen"] == 4 and kept["iucn_category"] >= kept["seven_ranks"] >= kept["enough_images"] >= 4
    rows = pq.read_table(tmp_path / "exclusions.parquet").to_pylist()
    assert len(rows) == 12 and all(len(r["md5"]) == 32 and len(r["phash"]) == 16 for r in rows)
    assert len({r["md5"] for r in rows}) == 12
    for name in chosen:  # no two images of a species are near duplicates
        hashes = [int(r["phash"], 16) for r in rows if r["binomial"] == name]
        assert all(hamming(a, b) > 8 for i, a in enumerate(hashes) for b in hashes[i + 1:])
    for row in read_csv(tmp_path / "metadata.csv"):  # original bytes, decodable, md5 as listed
        data = (tmp_path / row["file_name"]).read_bytes()
        Image.open(io.BytesIO(data)).verify()
        assert hashlib.md5(data).hexdigest() in {r["md5"] for r in rows}
    assert exclusion_keys(str(tmp_path / "exclusions.parquet")) == {normalised_binomial(n) for n in chosen}


def test_reruns_are_identical_and_another_seed_changes_the_choice(root: Path, tmp_path: Path) -> None:
    curate_kit(root, tmp_path / "a", *SMALL)
    curate_kit(root, tmp_path / "b", *SMALL)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    chosen = read_csv(tmp_path / "a/metadata/rarespecies-catalog.csv")
    others = []
    for seed in ("1", "2", "3"):
        curate_kit(root, tmp_path / seed, *SMALL, "--seed", seed)
        others.append(read_csv(tmp_path / seed / "metadata/rarespecies-catalog.csv"))
    assert any({r["eol_content_id"] for r in other} != {r["eol_content_id"] for r in chosen} for other in others)
    names = sorted({r["sciName"] for r in chosen}, key=lambda n: order_key(0, normalised_binomial(n)))
    assert len(names) == 4


def test_too_few_images_and_missing_parts_are_reported(root: Path, tmp_path: Path) -> None:
    report = curate_kit(root, tmp_path / "few", "--species", "4", "--images-per-species", "1000")
    step = next(s for s in report["steps"] if s["step"] == "enough_images")
    assert step["kept"] == 0 and step["dropped"]["fewer_than_1000_unique_images"] > 0
    assert report["shortfall"] == 4
    empty = tmp_path / "no-parts"
    empty.mkdir()
    report = curate_kit(root, tmp_path / "none", *SMALL, downloads=empty)
    assert report["images_unusable"]["no_download_parts"] == 1 and report["images_unusable"]["not_downloaded"] > 0
    assert report["written"] == {"species": 0, "images": 0, "image_files": 0}


def test_missing_input_names_the_flag(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert curate.run([str(tmp_path), "--taxonomy", str(root / "taxonomy")]) == 2
    assert "--iucn is required" in caplog.text
    assert curate.run([str(tmp_path), "--kit", str(root / "kit"), "--taxonomy", str(root / "taxonomy"),
                       "--downloads", str(root / "downloads"), "--categories", "NT,ZZ"]) == 2
    assert "ZZ not among" in caplog.text


def build_excluding(root: Path, out: Path, exclusions: Path) -> tuple[list[dict], list[dict]]:
    """`tol build` on the resolved kit with `--exclude-species exclusions`; its catalog and failure rows."""
    from pipeline import build
    assert build.run([str(out), "--kit", str(root / "kit"), "--downloads", str(root / "downloads"), "--taxonomy",
                      str(root / "taxonomy"), "--shard-samples", "40", "--exclude-species", str(exclusions)]) == 0
    return (pq.read_table(out / "manifests/catalog.parquet").to_pylist(),
            pq.read_table(out / "manifests/failures.parquet").to_pylist())


def test_build_with_the_exclusions_keeps_no_selected_species(root: Path, tmp_path: Path) -> None:
    curate_kit(root, tmp_path / "rare", *SMALL)
    excluded = exclusion_keys(str(tmp_path / "rare/exclusions.parquet"))
    catalog, failures = build_excluding(root, tmp_path / "build", tmp_path / "rare/exclusions.parquet")
    assert not {normalised_binomial(f"{r['genus']} {r['species']}") for r in catalog} & excluded
    assert {r["detail"] for r in failures if r["reason"] == "rare_species_excluded"} == excluded
    # and by image: no selected image's original bytes are in any split
    selected_md5 = set(pq.read_table(tmp_path / "rare/exclusions.parquet").column("md5").to_pylist())
    assert selected_md5 and not selected_md5 & {r["md5"] for r in catalog}


def test_the_published_exclusions_remove_the_kits_rare_species_from_the_build(shared_data: Path, root: Path,
                                                                             tmp_path: Path) -> None:
    assert cli.main(["rare-species", str(tmp_path / "published"), "--from-published", str(shared_data / PUBLISHED)]) == 0
    published = exclusion_keys(str(tmp_path / "published/exclusions.parquet"))
    expected = json.loads((root / "kit/EXPECTED.json").read_text())
    in_kit = {normalised_binomial(c["scientific_name"]) for c in expected["rare_species_candidates"]}
    assert in_kit and in_kit <= published  # the kit's EOL rare taxa are real Rare Species
    catalog, failures = build_excluding(root, tmp_path / "build", tmp_path / "published/exclusions.parquet")
    assert not {normalised_binomial(f"{r['genus']} {r['species']}") for r in catalog} & published
    excluded = {r["detail"] for r in failures if r["reason"] == "rare_species_excluded"}
    assert excluded and excluded <= published
