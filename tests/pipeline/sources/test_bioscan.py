"""BIOSCAN-1M reader: both TSV variants and the JSON-LD, the zip and the extracted folders, unsafe members refused."""

import json
import zipfile
from pathlib import Path

import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_support import run_reader

from pipeline.records import Reason, Stage, treeoflife_id
from pipeline.sources.bioscan import ReadBioscan, parse_bioscan_jsonld, parse_bioscan_tsv

TSV = "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv"
HEADER = ("sampleid\tprocessid\turi\tname\tphylum\tclass\torder\tfamily\tsubfamily\ttribe\tgenus\tspecies\tsubspecies\t"
          "nucraw\timage_file\tlarge_diptera_family\tmedium_diptera_family\tsmall_diptera_family\tlarge_insect_order\t"
          "medium_insect_order\tsmall_insect_order\tchunk_number\tcopyright_license\tcopyright_holder\t"
          "copyright_institution\tcopyright_contact\tphotographer\tauthor")


def row(image_file: str = "BIOUG1-A01.jpg", chunk: str = "2", **ranks: str) -> str:
    values = {"sampleid": "BIOUG1-A01", "processid": "BIOSCAN1-22", "uri": "BOLD:AAA0001", "name": "x",
              "phylum": "Arthropoda", "class": "Insecta", "order": "Diptera", "family": "Cecidomyiidae",
              "subfamily": "Cecidomyiinae", "tribe": "no_data", "genus": "not_classified", "species": "",
              "subspecies": "not_classified", "nucraw": "ACGT", "image_file": image_file, "chunk_number": chunk,
              "copyright_license": "CreativeCommons - Attribution", "copyright_holder": "CBG Photography Group",
              **ranks}
    return "\t".join(values.get(column, "train") for column in HEADER.split("\t")) + "\n"


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- pure parsing ----

def test_missing_ranks_and_provenance():
    [(record, line)] = parse_bioscan_tsv([HEADER + "\n", row()], "meta.tsv")
    assert line == 2 and record.native_id == "BIOUG1-A01.jpg" and record.image_ref == "part2/BIOUG1-A01.jpg"
    assert record.treeoflife_id == treeoflife_id("bioscan", "BIOUG1-A01.jpg")
    assert record.label == (("phylum", "Arthropoda"), ("class", "Insecta"), ("order", "Diptera"),
                            ("family", "Cecidomyiidae"), ("genus", ""), ("species", ""))
    assert record.label_key == "bioscan:Diptera|Cecidomyiidae||"
    assert dict(record.provenance) == {"processid": "BIOSCAN1-22", "sampleid": "BIOUG1-A01", "uri": "BOLD:AAA0001",
                                       "chunk_number": "2", "subfamily": "Cecidomyiinae", "tribe": "", "subspecies": ""}
    assert (record.license, record.rights_holder) == ("CreativeCommons - Attribution", "CBG Photography Group")


def test_repeated_headers_blank_lines_and_malformed_rows():
    lines = [HEADER + "\n", row("a.jpg"), HEADER + "\n", "\n", "BIOUG\tcut\tshort\n", row("", chunk="1"),
             row("b.jpg", species="Aedes vexans", genus="Aedes"), row("a.jpg")]
    items = list(parse_bioscan_tsv(lines, "meta.tsv"))
    assert [(r.native_id, line) for r, line in (i for i in items if isinstance(i, tuple))] == [("a.jpg", 2), ("b.jpg", 7)]
    failures = [i for i in items if not isinstance(i, tuple)]
    assert [(f.reason, f.stage, f.file, f.line) for f in failures] == [
        (Reason.MALFORMED_ROW, Stage.READ, "meta.tsv", 5), (Reason.MALFORMED_ROW, Stage.READ, "meta.tsv", 6),
        (Reason.MALFORMED_ROW, Stage.READ, "meta.tsv", 8)]
    assert "expected 28 tab-separated fields, got 3" in failures[0].detail
    assert "image_file is empty" in failures[1].detail and "first at meta.tsv:2" in failures[2].detail


def test_unsafe_image_file_and_unknown_header():
    [failure] = parse_bioscan_tsv([HEADER, row("../evil.jpg")], "m.tsv")
    assert (failure.reason, failure.native_id, failure.line) == (Reason.UNSAFE_PATH, "../evil.jpg", 2)
    with pytest.raises(ValueError, match="no column image_file"):
        list(parse_bioscan_tsv(["a\tb\n", "1\t2\n"], "other.tsv"))


def test_jsonld_array_and_graph_match_the_tsv(kit):
    lines = (kit / TSV).read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in lines[1:] if len(line.split("\t")) == len(header)]
    tsv_records = [r for r, _ in (i for i in parse_bioscan_tsv(lines, "m.tsv") if isinstance(i, tuple))]
    values = [{k: {"@value": v} if k == "order" else v for k, v in r.items()} for r in rows]
    for document in (rows, {"@context": {"@vocab": "http://example.org/"}, "@graph": values}):
        items = list(parse_bioscan_jsonld(json.dumps(document), "m.jsonld"))
        assert [r for r, _ in items] == tsv_records and [line for _, line in items] == list(range(1, len(rows) + 1))
    [failure] = parse_bioscan_jsonld([{**rows[0], "image_file": ""}], "m.jsonld")
    assert (failure.reason, failure.line) == (Reason.MALFORMED_ROW, 1)
    with pytest.raises(ValueError, match="'@graph'"):
        list(parse_bioscan_jsonld({"records": []}, "m.jsonld"))


def test_real_pre_release_rows(shared_data):
    path = shared_data / "bioscan" / "small_dataset_validation_metadata.tsv"
    lines = path.read_text().splitlines(keepends=True)
    items = list(parse_bioscan_tsv(lines, str(path)))
    records = [r for r, _ in items]
    assert len(records) == len(lines) - 1 == 8273
    header = lines[0].rstrip("\n").split("\t")
    raw = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in lines[1:]]
    family_only = [r for r, x in zip(records, raw) if x["family"] and not x["genus"] and not x["species"]]
    assert len(family_only) > 1000
    for record, fields in zip(records, raw):
        assert record.native_id == fields["image_file"] and record.image_ref == fields["image_file"]
        assert record.label_dict() == {k: fields[k] for k in ("phylum", "class", "order", "family", "genus", "species")}
        assert record.label_key == "bioscan:" + "|".join(fields[k] for k in ("order", "family", "genus", "species"))
        assert (record.license, record.rights_holder) == (fields["licence"], fields["licence_holder"])
        assert dict(record.provenance)["subfamily"] == fields["subfamily"] and "subfamily" not in record.label_dict()
    first = family_only[0].label_dict()
    assert first["genus"] == first["species"] == "" and first["family"]


# ---- the Beam reader ----

def extract(zip_path: Path, out: Path, flatten: bool) -> Path:
    """The zip's members as files, under bioscan/images/cropped_256/partN (as zipped) or straight under partN."""
    with zipfile.ZipFile(zip_path) as archive:
        for name in archive.namelist():
            target = out / (name.split("cropped_256/", 1)[1] if flatten else name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    return out


def jsonld_from_tsv(tsv: Path, out: Path) -> tuple[Path, dict[str, int]]:
    """The TSV's well-formed rows as a JSON-LD `@graph`, and each image_file's 1-based record index."""
    header, *lines = tsv.read_text().splitlines()
    columns = header.split("\t")
    rows = [dict(zip(columns, line.split("\t"))) for line in lines if len(line.split("\t")) == len(columns)]
    out.write_text(json.dumps({"@context": {"@vocab": "https://example.org/bioscan#"}, "@graph": rows}))
    return out, {r["image_file"]: index for index, r in enumerate(rows, start=1)}


@pytest.fixture(scope="module")
def kit_bioscan(kit: Path) -> tuple[list, dict]:
    """(the TSV's records with their zip bytes, EXPECTED.json)."""
    expected = json.loads((kit / "EXPECTED.json").read_text())
    items = parse_bioscan_tsv((kit / TSV).read_text().splitlines(keepends=True), "m.tsv")
    with zipfile.ZipFile(kit / "bioscan" / "cropped_256.zip") as archive:
        names = set(archive.namelist())
        present = [(r, archive.read(f"bioscan/images/cropped_256/{r.image_ref}")) for r, _ in
                   (i for i in items if isinstance(i, tuple)) if f"bioscan/images/cropped_256/{r.image_ref}" in names]
    return present, expected


@pytest.mark.parametrize("layout", ["zip", "zip-jsonld", "nested", "flat"])
def test_kit_zip_and_folders_give_the_same_records(kit, kit_bioscan, tmp_path, layout):
    present, expected = kit_bioscan
    read_defects = [d for d in expected["defects"] if d["source"] == "bioscan" and d["expected"].get("stage") == "read"]
    record_defects = [d for d in read_defects if d["native_id"]]
    assert record_defects and len(read_defects) > len(record_defects)
    assert len(present) == expected["counts"]["bioscan"]["records"] - len(record_defects)
    metadata, zip_path = kit / TSV, kit / "bioscan" / "cropped_256.zip"
    images = str(zip_path) if layout.startswith("zip") else str(extract(zip_path, tmp_path, layout == "flat"))
    failures = [(Reason(d["expected"]["reason"]), d["native_id"] or "", str(kit / d["where"]["file"]), d["where"]["line"])
                for d in read_defects]
    if layout == "zip-jsonld":
        metadata, position = jsonld_from_tsv(metadata, tmp_path / "BIOSCAN_Insect_Dataset_metadata.jsonld")
        failures = [(Reason.MISSING_IMAGE, d["native_id"], str(metadata), position[d["native_id"]]) for d in record_defects]
    run_reader(ReadBioscan(str(metadata), images), present, failures, lambda f: (f.reason, f.native_id, f.file, f.line))


def test_zip_members_that_escape_are_refused(tmp_path):
    (tmp_path / "meta.tsv").write_text(HEADER + "\n" + row("evil.jpg", "1") + row("x.jpg", "1") + row("ok.jpg", "1"))
    with zipfile.ZipFile(tmp_path / "cropped_256.zip", "w") as archive:
        archive.writestr(zipfile.ZipInfo("../evil.jpg"), b"E")
        archive.writestr(zipfile.ZipInfo("/etc/x.jpg"), b"X")
        archive.writestr("bioscan/images/cropped_256/part1/ok.jpg", b"OK")
    [(ok, _)] = [i for i in parse_bioscan_tsv([HEADER, row("ok.jpg", "1")], str(tmp_path / "meta.tsv"))]
    before = snapshot(tmp_path.parent)
    run_reader(ReadBioscan(str(tmp_path / "meta.tsv"), str(tmp_path / "cropped_256.zip")), [(ok, b"OK")],
               [(Reason.UNSAFE_PATH, "evil.jpg", 2), (Reason.UNSAFE_PATH, "x.jpg", 3)],
               lambda f: (f.reason, f.native_id, f.line))
    assert snapshot(tmp_path.parent) == before and not Path("/etc/x.jpg").exists()


def test_empty_input_gives_nothing(tmp_path):
    (tmp_path / "meta.tsv").write_text(HEADER + "\n")
    (tmp_path / "meta.jsonld").write_text("[]")
    zipfile.ZipFile(tmp_path / "cropped_256.zip", "w").close()
    variants = (("tsv-zip", "meta.tsv", "cropped_256.zip"), ("tsv-folder", "meta.tsv", "."),
                ("jsonld-zip", "meta.jsonld", "cropped_256.zip"))
    with TestPipeline(runner="FnApiRunner") as p:
        for label, metadata, images in variants:
            out = p | label >> ReadBioscan(str(tmp_path / metadata), str((tmp_path / images).resolve()))
            assert_that(out["records"], equal_to([]), label=f"{label} records")
            assert_that(out["failures"], equal_to([]), label=f"{label} failures")
