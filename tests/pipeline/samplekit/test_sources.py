"""The kit's iNat21, BIOSCAN-1M and EOL files match the real distributions' layouts, read with plain readers."""

import csv
import gzip
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline.samplekit.archives import FIXED_MTIME

INAT_IMAGE_KEYS = {"id", "width", "height", "file_name", "license", "rights_holder", "date", "latitude", "longitude",
                   "location_uncertainty"}
INAT_CATEGORY_KEYS = {"id", "name", "common_name", "supercategory", "kingdom", "phylum", "class", "order", "family",
                      "genus", "specific_epithet", "image_dir_name"}
BIOSCAN_HEADER = [
    "sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe", "genus",
    "species", "subspecies", "nucraw", "image_file", "large_diptera_family", "medium_diptera_family",
    "small_diptera_family", "large_insect_order", "medium_insect_order", "small_insect_order", "chunk_number",
    "copyright_license", "copyright_holder", "copyright_institution", "copyright_contact", "photographer", "author",
]
EOL_HEADER = ["EOL content ID", "EOL page ID", "Medium Source URL", "EOL Full-Size Copy URL", "License Name",
              "Copyright Owner"]


@pytest.fixture(scope="module")
def expected(kit: Path) -> dict:
    return json.loads((kit / "EXPECTED.json").read_text())


def defects_of(expected: dict, kind: str) -> list[dict]:
    found = [d for d in expected["defects"] if d["kind"] == kind]
    assert found, f"the kit holds no {kind} defect"
    return found


@pytest.fixture(scope="module")
def inat(kit: Path) -> dict:
    return json.loads((kit / "inat21/train.json").read_text(encoding="utf-8"))


def test_inat21_json_has_the_coco_layout_of_the_real_release(inat: dict, shared_data: Path) -> None:
    assert set(inat) == {"info", "images", "categories", "annotations", "licenses"}
    real = json.loads((shared_data / "inat21/tfds_dummy_train.json").read_text())
    assert set(real["images"][0]) == INAT_IMAGE_KEYS and set(real["categories"][0]) == INAT_CATEGORY_KEYS
    assert all(set(image) == INAT_IMAGE_KEYS for image in inat["images"])
    assert all(set(category) == INAT_CATEGORY_KEYS for category in inat["categories"])
    assert all(set(a) == {"id", "image_id", "category_id"} for a in inat["annotations"])
    assert {license["id"] for license in inat["licenses"]} >= {image["license"] for image in inat["images"]}


def test_inat21_categories_are_real_iNat21_classes(inat: dict, shared_data: Path) -> None:
    labels = (shared_data / "inat21/tfds_i_naturalist2021_labels_ordered_by_json_id.txt").read_text().splitlines()
    for category in inat["categories"]:
        assert labels[category["id"]] == category["name"].lower().replace(" ", "_")
        ranks = [category[k] for k in ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")]
        assert category["image_dir_name"] == f"{category['id']:05d}_" + "_".join(ranks)


def test_inat21_tree_and_tarball_hold_the_same_files(kit: Path, inat: dict, expected: dict) -> None:
    missing = {d["native_id"] for d in defects_of(expected, "missing_image_inat21")}
    with tarfile.open(kit / "inat21/train.tar.gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names[0] == "train" and members[0].isdir() and all(m.mtime == FIXED_MTIME and m.uid == 0 for m in members)
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    for image in inat["images"]:
        on_disk = kit / "inat21" / image["file_name"]
        if str(image["id"]) in missing:
            assert not on_disk.exists() and image["file_name"] not in files
        else:
            assert files[image["file_name"]] == on_disk.read_bytes()
    assert len(files) == len(inat["images"]) - len(missing)


def test_inat21_images_are_at_most_500px_and_match_their_declared_size(kit: Path, inat: dict, expected: dict) -> None:
    undecodable = {d["native_id"] for d in expected["defects"] if d["expected"].get("stage") in ("read", "process")}
    checked = 0
    for image in inat["images"]:
        if str(image["id"]) in undecodable:
            continue
        with Image.open(kit / "inat21" / image["file_name"]) as picture:
            assert max(picture.size) <= 500
            assert picture.size == (image["width"], image["height"])
        checked += 1
    assert checked > 100


def test_bioscan_tsv_has_the_release_header_and_not_classified_ranks(kit: Path) -> None:
    table = pd.read_csv(kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv", sep="\t", dtype=str, keep_default_na=False,
                        on_bad_lines="skip")
    assert list(table.columns) == BIOSCAN_HEADER
    assert (table["phylum"] == "Arthropoda").all() and (table["class"] == "Insecta").all()
    assert (table["tribe"] == "not_classified").all()
    family_only = table[table["genus"] == "not_classified"]
    assert len(family_only) and (family_only["species"] == "not_classified").all()
    assert not (table[["order", "family", "genus", "species"]] == "").any().any()


def test_bioscan_zip_members_follow_the_cropped_256_layout(kit: Path, expected: dict) -> None:
    missing = {d["native_id"] for d in defects_of(expected, "missing_image")}
    broken = {d["native_id"] for d in defects_of(expected, "truncated_jpeg")}
    with open(kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["author"]]
    with zipfile.ZipFile(kit / "bioscan/cropped_256.zip") as archive:
        names = set(archive.namelist())
        for row in rows:
            member = f"bioscan/images/cropped_256/part{row['chunk_number']}/{row['image_file']}"
            assert (member in names) == (row["image_file"] not in missing)
            if member in names and row["image_file"] not in broken:
                with Image.open(io.BytesIO(archive.read(member))) as picture:
                    assert min(picture.size) == 256
    assert len(names) == len(rows) - len(missing)


def test_bioscan_malformed_rows_are_short_at_the_listed_lines(kit: Path, expected: dict) -> None:
    lines = (kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv").read_text().split("\n")
    for defect in [d for d in defects_of(expected, "malformed_row") if d["source"] == "bioscan"]:
        assert len(lines[defect["where"]["line"] - 1].split("\t")) == 12 < len(BIOSCAN_HEADER)


def manifest_chunks(kit: Path) -> dict[str, list[list[str]]]:
    with tarfile.open(kit / "eol/media_manifest.tgz") as tar:
        return {m.name: list(csv.reader(io.StringIO(tar.extractfile(m).read().decode()))) for m in tar.getmembers()}


def test_eol_manifest_chunks_have_the_real_header_and_quirks(kit: Path, expected: dict) -> None:
    chunks = manifest_chunks(kit)
    assert sorted(chunks) == [f"media_manifest_{n}.csv" for n in range(1, len(chunks) + 1)]
    rows = [row for chunk in chunks.values() for row in chunk]
    assert all(chunk[0] == EOL_HEADER for chunk in chunks.values())
    records = [row for row in rows if row != EOL_HEADER and len(row) == 6 and row[0] != "n/a"]
    owners = {row[5] for row in records}
    assert "" in owners and any("," in owner for owner in owners)
    assert len({row[4] for row in records}) >= 4
    assert all(row[3].startswith(expected["kit"]["eol_base_url"] + "/") for row in records)
    header_repeat = defects_of(expected, "repeated_header")[0]["where"]
    assert chunks[header_repeat["file"]][header_repeat["line"] - 1] == EOL_HEADER
    for defect in [d for d in defects_of(expected, "malformed_row") if d["source"] == "eol"]:
        bad = chunks[defect["where"]["file"]][defect["where"]["line"] - 1]
        assert len(bad) != 6 or not bad[0].isdigit()
    lenient = defects_of(expected, "lenient_integer_id")[0]["where"]["content_id"]
    assert re.fullmatch(r"\d+\.0", lenient) and any(row[0] == lenient for row in records)


def test_eol_images_are_served_where_the_manifest_points(kit: Path, expected: dict) -> None:
    base = expected["kit"]["eol_base_url"] + "/"
    fates = {d["native_id"]: d["kind"] for d in expected["defects"] if d["source"] == "eol"}
    sizes = []
    for row in [r for chunk in manifest_chunks(kit).values() for r in chunk[1:] if len(r) == 6 and r[0][0].isdigit()]:
        content_id = row[0].removesuffix(".0")
        full, source = (kit / "eol/images" / url.removeprefix(base) for url in (row[3], row[2]))
        kind = fates.get(content_id, "")
        if kind.startswith("http_"):
            assert "/_fault/" in row[3] and not full.exists()
        elif kind == "fallback_to_source_url":
            assert "/_fault/status/404/" in row[3] and source.exists()
        else:
            assert full.is_file()
            if kind not in ("decompression_bomb",):
                with Image.open(full) as picture:
                    sizes.append(max(picture.size))
    assert max(sizes) > 1000 and min(sizes) < 700  # EOL sizes vary widely, up to ~2000 px


def test_eol_dumps_have_their_real_headers(kit: Path) -> None:
    with gzip.open(kit / "eol/provider_ids.csv.gz", "rt") as f:
        assert next(csv.reader(f)) == ["node_id", "resource_pk", "resource_id", "page_id", "preferred_canonical_for_page"]
    with open(kit / "eol/vernacularnames.csv", newline="") as f:
        assert next(csv.reader(f)) == ["page_id", "canonical_form", "vernacular_string", "language_code", "resource_name",
                                       "is_preferred_by_resource", "is_preferred_by_eol"]
    dh = pd.read_csv(kit / "eol/dh/taxon.tab", sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    assert list(dh.columns) == ["taxonID", "source", "furtherInformationURL", "acceptedNameUsageID", "parentNameUsageID",
                                "scientificName", "higherClassification", "taxonRank", "taxonomicStatus", "taxonRemarks",
                                "datasetID", "canonicalName", "EOLid", "EOLidAnnotations", "Landmark"]
    assert set(dh["parentNameUsageID"]) - {""} <= set(dh["taxonID"])
    assert "Metazoa" in set(dh[dh["taxonRank"] == "kingdom"]["canonicalName"])
    assert "Animalia" not in set(dh["canonicalName"])
