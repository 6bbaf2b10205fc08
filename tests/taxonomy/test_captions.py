"""Caption files and evaluation class texts, checked against DESIGN.md and BioCLIP's code on the Rare Species labels."""

import tomllib
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import data_manifests
from taxonomy.captions import (
    CAPTION_MEMBERS,
    DEFAULT_TEXT_TYPE,
    EVAL_TEXT_TYPES,
    SHARD_TEXT_MEMBERS,
    TEXT_TYPES,
    Label,
    captions,
    class_text,
    class_texts,
    default_caption,
    label_from_mapping,
    names,
)

MAGPIE = Label(("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia"), "black-billed magpie")
TAXON = "Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia"
TAG = ("kingdom Animalia phylum Chordata class Aves order Passeriformes family Corvidae genus Pica "
       "species hudsonia")


def test_magpie_matches_design_exactly() -> None:
    assert captions(MAGPIE) == {
        "scientific_name.txt": "Pica hudsonia",
        "taxonomic_name.txt": TAXON,
        "common_name.txt": "black-billed magpie",
        "sci.txt": "a photo of Pica hudsonia.",
        "com.txt": "a photo of black-billed magpie.",
        "taxon.txt": f"a photo of {TAXON}.",
        "taxonTag.txt": f"a photo of {TAG}.",
        "sci_com.txt": "a photo of Pica hudsonia with common name black-billed magpie.",
        "taxon_com.txt": f"a photo of {TAXON} with common name black-billed magpie.",
        "taxonTag_com.txt": f"a photo of {TAG} with common name black-billed magpie.",
        "txt": f"a photo of {TAXON} with common name black-billed magpie.",
    }
    assert tuple(captions(MAGPIE)) == SHARD_TEXT_MEMBERS == (*CAPTION_MEMBERS, "txt")


def test_family_only_label_uses_the_family_as_scientific_name() -> None:
    texts = captions(Label(("Animalia", "Arthropoda", "Insecta", "Diptera", "Cecidomyiidae", "", "")))
    assert texts["taxon.txt"] == "a photo of Animalia Arthropoda Insecta Diptera Cecidomyiidae."
    assert texts["sci.txt"] == "a photo of Cecidomyiidae."
    assert texts["scientific_name.txt"] == texts["common_name.txt"] == "Cecidomyiidae"
    assert texts["sci_com.txt"] == "a photo of Cecidomyiidae with common name Cecidomyiidae."
    assert texts["taxonTag.txt"] == ("a photo of kingdom Animalia phylum Arthropoda class Insecta order Diptera "
                                     "family Cecidomyiidae.")


def test_genus_only_label_uses_the_genus() -> None:
    texts = captions(Label(("Animalia", "Arthropoda", "Insecta", "Diptera", "Tachinidae", "Medina", "")))
    assert texts["scientific_name.txt"] == "Medina"
    assert texts["sci.txt"] == "a photo of Medina."
    assert texts["com.txt"] == "a photo of Medina."
    assert texts["taxonTag.txt"].endswith("family Tachinidae genus Medina.")


def test_missing_interior_rank_leaves_no_double_space() -> None:
    cod = Label(("Animalia", "Chordata", "", "Gadiformes", "Gadidae", "Gadus", "morhua"), "Atlantic cod")
    texts = captions(cod)
    assert texts["taxon.txt"] == "a photo of Animalia Chordata Gadiformes Gadidae Gadus morhua."
    assert texts["taxonTag.txt"] == ("a photo of kingdom Animalia phylum Chordata order Gadiformes family Gadidae "
                                     "genus Gadus species morhua.")
    assert class_text(cod, "taxon") == "Animalia Chordata Gadiformes Gadidae Gadus morhua"
    assert all("  " not in text for text in texts.values())


def test_common_name_fallbacks() -> None:
    unnamed = Label(MAGPIE.ranks, "")
    texts = captions(unnamed)
    assert texts["common_name.txt"] == "Pica hudsonia"
    assert texts["com.txt"] == "a photo of Pica hudsonia."
    assert texts["taxon_com.txt"] == f"a photo of {TAXON} with common name Pica hudsonia."
    assert captions(Label(("Animalia", "", "", "", "", "", ""), "  "))["common_name.txt"] == "Animalia"
    # Evaluation appends a common name only when there is one.
    assert class_text(unnamed, "sci_com") == "Pica hudsonia"
    assert class_text(unnamed, "taxon_com") == TAXON
    assert class_text(unnamed, "com") == "Pica hudsonia"


@pytest.mark.parametrize("common", ["'Oma'o", "Van der Decken's Sifaka", "purple wartyback", "L'Hoest's Monkey"])
def test_common_names_are_kept_as_given(common: str) -> None:
    label = Label(MAGPIE.ranks, common)
    assert captions(label)["common_name.txt"] == common
    assert captions(label)["com.txt"] == f"a photo of {common}."
    assert class_text(label, "sci_com") == f"Pica hudsonia with common name {common}"


def test_case_rule_and_orphan_epithet() -> None:
    shouting = Label(("ANIMALIA", "chordata", "Aves", "passeriformes", "CORVIDAE", "pica", "Hudsonia"), "Magpie")
    assert names(shouting).taxonomic == TAXON
    orphan = Label(("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "", "hudsonia"))
    assert names(orphan).scientific == "Corvidae"
    assert "hudsonia" not in " ".join(captions(orphan).values())


def test_default_caption_is_a_parameter() -> None:
    assert DEFAULT_TEXT_TYPE == "taxon_com"
    assert default_caption(MAGPIE) == captions(MAGPIE)["taxon_com.txt"]
    for text_type in TEXT_TYPES:
        assert captions(MAGPIE, text_type)["txt"] == captions(MAGPIE)[f"{text_type}.txt"]
        assert default_caption(MAGPIE, text_type) == captions(MAGPIE)[f"{text_type}.txt"]


def test_programmer_errors_raise_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="taxonTag_com"):
        captions(MAGPIE, "random")
    with pytest.raises(ValueError, match="asis"):
        class_text(MAGPIE, "taxonTag")
    with pytest.raises(ValueError, match="no usable rank"):
        captions(Label(("",) * 7, "magpie"))
    with pytest.raises(ValueError, match="seven"):
        Label(("Animalia", "Chordata"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one per label"):
        class_texts([MAGPIE], "asis", asis=[])


def test_label_from_json_member_or_rare_species_row() -> None:
    member = {"kingdom": "Animalia", "phylum": "Chordata", "class": "Aves", "order": "Passeriformes",
              "family": "Corvidae", "genus": "Pica", "species": "hudsonia", "common_name": "black-billed magpie"}
    assert label_from_mapping(member) == MAGPIE
    row = {**member, "cls": "Aves", "class": "Pica hudsonia"}  # BioCLIP: `class` is the dataset class name
    assert label_from_mapping(row) == MAGPIE
    assert label_from_mapping({"kingdom": "Animalia", "genus": float("nan"), "common_name": None}) == Label(
        ("Animalia", "", "", "", "", "", ""), "")


def test_sample_kit_hard_cases_render() -> None:
    cases = tomllib.loads(data_manifests.path("sample_kit/hard_cases.toml").read_text(encoding="utf-8"))["case"]
    for case in cases:
        texts = captions(Label(tuple(case["expected"]), case["common_name"]))
        assert all(text and "  " not in text and " ." not in text for text in texts.values()), case["id"]
        assert texts["sci.txt"] != "a photo of ."


# BioCLIP's own rules, transcribed for full seven-rank labels from Imageomics/bioclip @ 4ea3247:
# src/imageomics/naming_eval.py (Taxon, to_classes) and scripts/evobio10m/make_wds.py (make_txt).
def bioclip_eval(row: pd.Series, text_type: str) -> str:
    ranks = [row[r].capitalize() for r in ("kingdom", "phylum", "cls", "order", "family", "genus")]
    sci = row["genus"].capitalize() + " " + row["species"].lower()
    taxon = " ".join([*ranks, row["species"].lower()])
    common = row["common_name"]
    return {"asis": row["class"], "sci": sci, "taxon": taxon, "com": common,
            "sci_com": sci + " with common name " + common if common else sci,
            "taxon_com": taxon + " with common name " + common if common else taxon}[text_type]


def bioclip_train(row: pd.Series) -> dict[str, str]:
    sci = bioclip_eval(row, "sci")
    taxon = bioclip_eval(row, "taxon")
    tags = zip(("kingdom", "phylum", "class", "order", "family", "genus", "species"), taxon.split())
    tagged = " ".join(f"{tier} {value}" for tier, value in tags)
    common = row["common_name"] or sci
    return {"scientific_name.txt": sci, "taxonomic_name.txt": taxon, "common_name.txt": common,
            "sci.txt": f"a photo of {sci}.", "com.txt": f"a photo of {common}.", "taxon.txt": f"a photo of {taxon}.",
            "taxonTag.txt": f"a photo of {tagged}.", "sci_com.txt": f"a photo of {sci} with common name {common}.",
            "taxon_com.txt": f"a photo of {taxon} with common name {common}.",
            "taxonTag_com.txt": f"a photo of {tagged} with common name {common}."}


@pytest.fixture(scope="module")
def rare_species(shared_data: Path) -> pd.DataFrame:
    table = pd.read_csv(shared_data / "bioclip/data/annotation/rare_species/metadata.csv", index_col=0, dtype=str,
                        keep_default_na=False)
    return table.drop(columns="filepath").drop_duplicates().reset_index(drop=True)


def test_rare_species_class_texts_equal_bioclip_evaluation(rare_species: pd.DataFrame) -> None:
    assert len(rare_species) == 400 and rare_species["class"].is_unique
    labels = [label_from_mapping(row) for row in rare_species.to_dict("records")]
    for text_type in EVAL_TEXT_TYPES:
        asis = list(rare_species["class"]) if text_type == "asis" else None
        expected = [bioclip_eval(row, text_type) for _, row in rare_species.iterrows()]
        assert class_texts(labels, text_type, asis) == expected, text_type
    assert class_texts(labels, "asis") == list(rare_species["class"])  # without asis: the scientific name


def test_rare_species_captions_equal_bioclip_training_files(rare_species: pd.DataFrame) -> None:
    for _, row in rare_species.iterrows():
        texts = captions(label_from_mapping(row.to_dict()))
        assert {m: texts[m] for m in CAPTION_MEMBERS} == bioclip_train(row), row["class"]
    apostrophes = rare_species[rare_species["common_name"].str.contains("'")]
    assert {"'Oma'o", "Van der Decken's Sifaka"} <= set(apostrophes["common_name"])


RANK_TEXT = st.one_of(st.just(""), st.from_regex(r"[A-Za-z][a-z]{1,10}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(st.tuples(*[RANK_TEXT] * 7), st.text(max_size=20))
def test_every_caption_is_well_formed(ranks: tuple[str, ...], common: str) -> None:
    label = Label(ranks, common)  # type: ignore[arg-type]
    if not any(ranks[:6]):
        with pytest.raises(ValueError, match="no usable rank"):
            captions(label)
        return
    texts = captions(label)
    assert list(texts) == list(SHARD_TEXT_MEMBERS)
    for member, text in texts.items():
        assert text and text == " ".join(text.split()), member
        if member in ("scientific_name.txt", "taxonomic_name.txt", "common_name.txt"):
            continue
        assert text.startswith("a photo of ") and text.endswith(".") and not text.endswith(" ."), member
    assert texts["taxon.txt"].endswith(f"{names(label).scientific}.") or not ranks[5]
