"""iNat21 reader: train.json parsing, the tree and the streamed tar giving the same records, unsafe members refused."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_support import run_reader

from pipeline.records import Reason, SourceRecord, Stage, treeoflife_id
from pipeline.sources.common import is_safe_member
from pipeline.sources.inat21 import ReadInat21, iter_tar_images, parse_inat21_json

CATEGORY = {"id": 2912, "name": "Ameiurus nebulosus", "common_name": "Brown Bullhead Catfish",
            "supercategory": "Ray-finned Fishes", "kingdom": "Animalia", "phylum": "Chordata", "class": "Actinopterygii",
            "order": "Siluriformes", "family": "Ictaluridae", "genus": "Ameiurus", "specific_epithet": "nebulosus"}
LICENSES = [{"id": 0, "name": "Attribution-NonCommercial License"}, {"id": 1, "name": "Attribution License"}]


def image(image_id: int, file_name: str | None = None, **extra) -> dict:
    return {"id": image_id, "file_name": file_name or f"train/02912_x/{image_id}.jpg", "license": 1,
            "rights_holder": "Ken-ichi Ueda", "date": "2010-07-14 20:19:00+00:00", "latitude": 43.83486,
            "longitude": -71.22231, **extra}


def document(images: list[dict], annotations: list[dict] | None = None) -> dict:
    if annotations is None:
        annotations = [{"id": i, "image_id": im.get("id"), "category_id": 2912} for i, im in enumerate(images)]
    return {"images": images, "annotations": annotations, "categories": [CATEGORY], "licenses": LICENSES}


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- pure parsing ----

def test_record_fields_follow_the_json():
    [record] = parse_inat21_json(json.dumps(document([image(7)])), "train.json")
    assert record == SourceRecord(
        "inat21", "7", treeoflife_id("inat21", "7"), "train/02912_x/7.jpg", "inat21:2912",
        (("kingdom", "Animalia"), ("phylum", "Chordata"), ("class", "Actinopterygii"), ("order", "Siluriformes"),
         ("family", "Ictaluridae"), ("genus", "Ameiurus"), ("specific_epithet", "nebulosus"),
         ("common_name", "Brown Bullhead Catfish"), ("category_id", "2912"), ("supercategory", "Ray-finned Fishes")),
        license="Attribution License", rights_holder="Ken-ichi Ueda",
        provenance=(("file_name", "train/02912_x/7.jpg"), ("date", "2010-07-14 20:19:00+00:00"),
                    ("latitude", "43.83486"), ("longitude", "-71.22231")))


def test_images_without_annotation_or_category_are_malformed():
    doc = document([image(1), image(2), image(3)],
                   annotations=[{"id": 0, "image_id": 1, "category_id": 2912}, {"id": 1, "image_id": 2, "category_id": 9}])
    record, bad_category, no_annotation = parse_inat21_json(doc, "train.json")
    assert isinstance(record, SourceRecord) and record.native_id == "1"
    for failure, native_id, words in ((bad_category, "2", "category 9"), (no_annotation, "3", "no annotation")):
        assert (failure.reason, failure.stage, failure.native_id, failure.file) == (
            Reason.MALFORMED_ROW, Stage.READ, native_id, "train.json")
        assert failure.treeoflife_id == treeoflife_id("inat21", native_id) and words in failure.detail


def test_duplicate_and_idless_images_are_malformed():
    items = list(parse_inat21_json(document([image(1), image(1), {"file_name": "train/a.jpg"}]), "t.json"))
    assert isinstance(items[0], SourceRecord)
    assert [(f.reason, f.native_id) for f in items[1:]] == [(Reason.MALFORMED_ROW, ""), (Reason.MALFORMED_ROW, "")]
    assert "duplicate image id 1, first at images[0]" in items[1].detail and "images[2] has no id" in items[2].detail


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/x.jpg", "train/../../x.jpg", "C:\\x.jpg", "..\\x.jpg", ""])
def test_unsafe_names_are_refused(name):
    assert not is_safe_member(name)
    if name:
        [failure] = parse_inat21_json(document([image(5, name)]), "t.json")
        assert failure.reason == Reason.UNSAFE_PATH and failure.native_id == "5"


def test_missing_licenses_list_gives_empty_license():
    doc = document([image(1)])
    del doc["licenses"]
    [record] = parse_inat21_json(doc)
    assert record.license == "" and record.rights_holder == "Ken-ichi Ueda"


@pytest.mark.parametrize("name, count, top", [("tfds_dummy_train.json", 3, "train/"), ("tfds_dummy_val.json", 2, "val/")])
def test_real_tfds_rows_parse_with_seven_ranks(shared_data, name, count, top):
    doc = json.loads((shared_data / "inat21" / name).read_text())
    records = list(parse_inat21_json(doc, name))
    assert len(records) == count and all(isinstance(r, SourceRecord) for r in records)
    categories = {c["id"]: c for c in doc["categories"]}
    by_image = {a["image_id"]: categories[a["category_id"]] for a in doc["annotations"]}
    for record in records:
        category, label = by_image[int(record.native_id)], record.label_dict()
        assert [label[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")] == [
            category[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")]
        assert label["common_name"] == category["common_name"] and record.image_ref.startswith(top)


def test_tar_stream_refuses_escaping_members_and_writes_nothing(tmp_path):
    archive = write_tar(tmp_path / "train.tar.gz", {"./train/a.jpg": b"A", "../evil.jpg": b"E", "/etc/x.jpg": b"X"},
                        links={"train/link.jpg": "/etc/passwd"})
    before = snapshot(tmp_path.parent)
    items = list(iter_tar_images(str(archive)))
    assert items[0] == ("train/a.jpg", b"A")
    assert [(f.reason, f.file) for f in items[1:]] == [(Reason.UNSAFE_PATH, str(archive))] * 2
    assert "'../evil.jpg'" in items[1].detail and "'/etc/x.jpg'" in items[2].detail
    assert snapshot(tmp_path.parent) == before and not Path("/etc/x.jpg").exists()


# ---- the Beam reader ----

@pytest.fixture(scope="module")
def kit_inat(kit: Path) -> tuple[list, dict[str, SourceRecord], dict]:
    """(records with their tree bytes, records whose file is absent by native id, EXPECTED.json)."""
    expected = json.loads((kit / "EXPECTED.json").read_text())
    parsed = list(parse_inat21_json((kit / "inat21" / "train.json").read_text()))
    assert all(isinstance(r, SourceRecord) for r in parsed)
    present = [(r, (kit / "inat21" / r.image_ref).read_bytes()) for r in parsed if (kit / "inat21" / r.image_ref).exists()]
    absent = {r.native_id: r for r in parsed if not (kit / "inat21" / r.image_ref).exists()}
    return present, absent, expected


@pytest.mark.parametrize("images", ["train.tar.gz", ".", "train"])
def test_kit_tree_and_tar_give_the_same_records(kit, kit_inat, images):
    present, absent, expected = kit_inat
    read_defects = [d for d in expected["defects"] if d["source"] == "inat21" and d["expected"].get("stage") == "read"]
    assert read_defects and set(absent) == {d["native_id"] for d in read_defects}
    assert len(present) == expected["counts"]["inat21"]["records"] - len(read_defects)
    assert all(r.treeoflife_id == treeoflife_id("inat21", r.native_id) for r, _ in present)
    root = kit / "inat21"
    path = str(root / images) if images != "." else str(root)
    failures = [(Reason(d["expected"]["reason"]), d["native_id"], treeoflife_id("inat21", d["native_id"]),
                 str(root / images) if images.endswith(".gz") else str(kit / d["where"]["file"]))
                for d in read_defects]
    run_reader(ReadInat21(str(root / "train.json"), path), present, failures,
               lambda f: (f.reason, f.native_id, f.treeoflife_id, f.file))


def test_archive_join_names_missing_and_unsafe_members(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(document([image(1, "train/a.jpg"), image(2, "train/b.jpg")])))
    archive = write_tar(tmp_path / "train.tar.gz", {"train/a.jpg": b"A", "../evil.jpg": b"E", "/etc/x.jpg": b"X",
                                                    "train/unlisted.jpg": b"U"})
    records = {r.native_id: r for r in parse_inat21_json((tmp_path / "train.json").read_text())}
    before = snapshot(tmp_path.parent)
    run_reader(ReadInat21(str(tmp_path / "train.json"), str(archive)), [(records["1"], b"A")],
               [(Reason.UNSAFE_PATH, "", str(archive)), (Reason.UNSAFE_PATH, "", str(archive)),
                (Reason.MISSING_IMAGE, "2", str(archive))],
               lambda f: (f.reason, f.native_id, f.file))
    assert snapshot(tmp_path.parent) == before


def test_empty_input_gives_nothing(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(document([])))
    archive = write_tar(tmp_path / "train.tar.gz", {})
    with TestPipeline(runner="FnApiRunner") as p:
        for label, images in (("tar", archive), ("tree", tmp_path)):
            out = p | label >> ReadInat21(str(tmp_path / "train.json"), str(images))
            assert_that(out["records"], equal_to([]), label=f"{label} records")
            assert_that(out["failures"], equal_to([]), label=f"{label} failures")


def test_configuration_is_checked_before_any_work():
    with pytest.raises(ValueError, match="images=''"):
        ReadInat21("train.json", "")
