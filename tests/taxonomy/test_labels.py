"""Source labels from metadata alone: keys equal the readers' label_key, ranks and names as each source gives them."""

import json
from pathlib import Path

import pytest

from pipeline.records import SourceRecord
from pipeline.sources.bioscan import iter_bioscan_metadata
from pipeline.sources.eol import ManifestRow, iter_manifest, manifest_record
from pipeline.sources.inat21 import parse_inat21_json
from taxonomy.labels import LabelInputs, bioscan_labels, collect_labels, eol_labels, inat21_labels
from taxonomy.records import SourceLabel


@pytest.fixture(scope="module")
def kit_labels(kit: Path) -> dict[str, list[SourceLabel]]:
    return collect_labels(LabelInputs.under(kit))


def reader_keys_inat21(path: Path) -> set[str]:
    return {r.label_key for r in parse_inat21_json(path.read_text()) if isinstance(r, SourceRecord)}


def reader_keys_bioscan(path: Path) -> set[str]:
    return {item[0].label_key for item in iter_bioscan_metadata(str(path)) if isinstance(item, tuple)}


def test_inputs_are_found_at_the_kit_layout(kit: Path, tmp_path: Path) -> None:
    inputs = LabelInputs.under(kit)
    assert inputs.by_source() == {"inat21": kit / "inat21/train.json",
                                  "bioscan": kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv",
                                  "eol": kit / "eol/media_manifest.tgz"}
    assert LabelInputs.under(tmp_path) == LabelInputs()
    assert collect_labels(LabelInputs()) == {}


def test_kit_label_keys_are_the_readers_label_keys(kit: Path, kit_labels) -> None:
    keys = {source: {label.key for label in labels} for source, labels in kit_labels.items()}
    assert keys["inat21"] == reader_keys_inat21(kit / "inat21/train.json")
    assert keys["bioscan"] == reader_keys_bioscan(kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv")
    manifest = [row for row in iter_manifest(str(kit / "eol/media_manifest.tgz")) if isinstance(row, ManifestRow)]
    assert keys["eol"] == {manifest_record(row).label_key for row in manifest}
    expected = json.loads((kit / "EXPECTED.json").read_text())["counts"]
    assert {source: len(labels) for source, labels in kit_labels.items()} == {
        source: expected[source]["taxa"] for source in ("inat21", "bioscan", "eol")}
    for labels in kit_labels.values():  # distinct within each source
        assert len({label.key for label in labels}) == len(labels)


def test_label_contents_are_as_each_source_gives_them(kit: Path, kit_labels) -> None:
    document = json.loads((kit / "inat21/train.json").read_text())
    category = document["categories"][0]
    [inat] = [label for label in kit_labels["inat21"] if label.key == f"inat21:{category['id']}"]
    assert inat.ranks == tuple(category[r] for r in ("kingdom", "phylum", "class", "order", "family", "genus",
                                                       "specific_epithet"))
    assert (inat.name, inat.common_name) == (category["name"], category["common_name"])
    bioscan = {label.key: label for label in kit_labels["bioscan"]}
    moth = bioscan["bioscan:Lepidoptera|Erebidae|Laelia|Laelia coenosa"]
    assert moth.ranks == ("", "", "", "Lepidoptera", "Erebidae", "Laelia", "") and moth.name == "Laelia coenosa"
    family_only = bioscan["bioscan:Diptera|Cecidomyiidae||"]  # genus and species not_classified in the TSV
    assert family_only.ranks[3:] == ("Diptera", "Cecidomyiidae", "", "") and family_only.name == "Cecidomyiidae"
    page = next(label for label in kit_labels["eol"] if label.key == "eol:90000001")
    assert page.page_id == 90000001 and page.ranks == ("",) * 7


def test_bioscan_jsonld_gives_the_same_labels_as_the_tsv(tmp_path: Path) -> None:
    rows = [{"image_file": "a.jpg", "order": "Diptera", "family": {"@value": "Sciaridae"}, "genus": "no_data",
             "species": "not_classified", "chunk_number": 1.0},
            {"image_file": "b.jpg", "order": "Diptera", "family": "Sciaridae", "genus": "", "species": ""},
            {"image_file": "", "order": "Coleoptera", "family": "", "genus": "", "species": ""}]  # rejected row
    path = tmp_path / "meta.jsonld"
    path.write_text(json.dumps({"@graph": rows}))
    [label] = bioscan_labels(path)
    assert label.key == "bioscan:Diptera|Sciaridae||" == next(iter(reader_keys_bioscan(path)))
    assert label.name == "Sciaridae"


def test_eol_labels_from_a_csv_manifest_skip_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("EOL content ID,EOL page ID,Medium Source URL,EOL Full-Size Copy URL,License Name,Copyright Owner\n"
                    "1,328672.0,http://a,http://b,cc-by,me\n2,328672,http://a,http://b,cc-by,me\n"
                    "3,not-a-page,http://a,http://b,cc-by,me\n4,45511401,http://a,http://b,cc-by,\"x, y\"\n")
    assert [label.key for label in eol_labels(path)] == ["eol:328672", "eol:45511401"]


def test_a_json_without_categories_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'categories' list"):
        list(inat21_labels(path))


def test_real_inat21_and_bioscan_rows_give_labels(shared_data: Path) -> None:
    inat_path = shared_data / "inat21/tfds_dummy_train.json"
    inat = list(inat21_labels(inat_path))
    assert {label.key for label in inat} == reader_keys_inat21(inat_path) and len(inat) == 3
    assert all(all(label.ranks) and label.common_name for label in inat)
    bioscan_path = shared_data / "bioscan/small_dataset_validation_metadata.tsv"  # the pre-release header
    bioscan = list(bioscan_labels(bioscan_path))
    assert {label.key for label in bioscan} == reader_keys_bioscan(bioscan_path)
    assert len(bioscan) == len({label.key for label in bioscan}) > 1000
    assert all(label.ranks[:3] == ("", "", "") and label.name for label in bioscan)
