"""The kit's authority dumps and IUCN export have the real formats and carry the taxonomic hard cases."""

import csv
from pathlib import Path

import pandas as pd
import pytest

GBIF_COLUMNS = [
    "taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID", "scientificName",
    "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet", "infraspecificEpithet", "taxonRank",
    "nameAccordingTo", "namePublishedIn", "taxonomicStatus", "nomenclaturalStatus", "taxonRemarks", "kingdom",
    "phylum", "class", "order", "family", "genus",
]


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


@pytest.fixture(scope="module")
def gbif(kit: Path) -> pd.DataFrame:
    return read_tsv(kit / "authorities/gbif/Taxon.tsv")


def test_gbif_taxon_tsv_has_the_23_backbone_columns_unquoted(kit: Path, gbif: pd.DataFrame) -> None:
    assert list(gbif.columns) == GBIF_COLUMNS
    lines = (kit / "authorities/gbif/Taxon.tsv").read_text().splitlines()
    assert all(line.count("\t") == 22 for line in lines) and not any('"' in line for line in lines)
    assert gbif["taxonID"].is_unique
    assert set(gbif["parentNameUsageID"]) - {""} <= set(gbif["taxonID"])
    vernacular = read_tsv(kit / "authorities/gbif/VernacularName.tsv")
    assert list(vernacular.columns) == ["taxonID", "vernacularName", "language", "country", "countryCode", "sex",
                                        "lifeStage", "source"]
    assert set(vernacular["taxonID"]) <= set(gbif["taxonID"])


def test_gbif_holds_both_morus_and_both_laelia_genera(gbif: pd.DataFrame) -> None:
    genera = gbif[gbif["taxonRank"] == "genus"]
    assert set(genera[genera["canonicalName"] == "Morus"]["kingdom"]) == {"Animalia", "Plantae"}
    assert set(genera[genera["canonicalName"] == "Laelia"]["family"]) == {"Erebidae", "Orchidaceae"}


def test_gbif_lists_felis_concolor_as_a_synonym_of_puma_concolor(gbif: pd.DataFrame) -> None:
    synonym = gbif[gbif["canonicalName"] == "Felis concolor"].iloc[0]
    assert synonym["taxonomicStatus"] == "synonym"
    accepted = gbif[gbif["taxonID"] == synonym["acceptedNameUsageID"]].iloc[0]
    assert accepted["canonicalName"] == "Puma concolor" and accepted["taxonomicStatus"] == "accepted"


def test_the_fish_without_class_is_in_no_authority_but_the_dh(kit: Path, gbif: pd.DataFrame) -> None:
    assert "Gadus morhua" not in set(gbif["canonicalName"])
    chains = pd.read_csv(kit / "authorities/itis/species_level_taxonomy_chains.csv", dtype=str, keep_default_na=False)
    assert "Gadus morhua" not in set(chains["terminal_scientific_name"])
    dh = read_tsv(kit / "eol/dh/taxon.tab")
    cod = dh[dh["canonicalName"] == "Gadus morhua"].iloc[0]
    assert "Chordata" in cod["higherClassification"] and "Actinopterygii" not in cod["higherClassification"]


def test_itis_chains_are_consistent(kit: Path) -> None:
    chains = pd.read_csv(kit / "authorities/itis/species_level_taxonomy_chains.csv", dtype=str, keep_default_na=False)
    assert list(chains.columns[:7]) == ["hierarchy_string_tsn", "hierarchy_string_names", "terminal_tsn",
                                        "terminal_scientific_name", "terminal_vernacular", "terminal_vernacular_lang",
                                        "hierarchy_string_ranks"]
    for row in chains.itertuples():
        names, tsns, ranks = (row.hierarchy_string_names.split("->"), row.hierarchy_string_tsn.split("-"),
                              row.hierarchy_string_ranks.split("->"))
        assert len(names) == len(tsns) == len(ranks)
        assert names[-1] == row.terminal_scientific_name and tsns[-1] == row.terminal_tsn
        assert all(getattr(row, rank) == name for rank, name in zip(ranks, names))
    assert not any(chains["Kingdom"] == "Fungi")


def test_inat_dwca_files_have_the_real_headers(kit: Path, shared_data: Path) -> None:
    for name, real in (("taxa.csv", "dwca_taxa.csv"), ("VernacularNames-english.csv", "dwca_VernacularNames-english.csv")):
        with open(kit / "authorities/inat" / name, newline="") as ours, \
                open(shared_data / "inat/pyinaturalist-convert" / real, newline="") as theirs:
            assert next(csv.reader(ours)) == next(csv.reader(theirs))


def test_iucn_export_has_threatened_legacy_and_misspelt_categories(kit: Path) -> None:
    table = pd.read_csv(kit / "iucn/assessments.csv", dtype=str, keep_default_na=False)
    assert list(table.columns[:4]) == ["assessmentId", "internalTaxonId", "scientificName", "redlistCategory"]
    categories = set(table["redlistCategory"])
    assert "Lower Risk/near threatened" in categories and "Vulnerabel" in categories and "Least Concern" in categories
    assert categories & {"Near Threatened", "Vulnerable", "Endangered", "Critically Endangered", "Extinct in the Wild"}
