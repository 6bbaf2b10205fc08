"""Real authority rows from ../shared/data: iNat DwC-A, EOL-harvested DwC rows, GBIF backbone usages."""

import json
from pathlib import Path

import duckdb
import pytest

from taxonomy.authorities import AuthorityFiles, load_authorities

GBIF_COLUMNS = (
    "taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID", "scientificName",
    "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet", "infraspecificEpithet", "taxonRank",
    "nameAccordingTo", "namePublishedIn", "taxonomicStatus", "nomenclaturalStatus", "taxonRemarks", "kingdom",
    "phylum", "class", "order", "family", "genus")


def load(tmp_path: Path, **files: Path) -> duckdb.DuckDBPyConnection:
    report = load_authorities(AuthorityFiles(**files), tmp_path / "authorities.duckdb")
    return duckdb.connect(str(report.db_path), read_only=True)


def test_real_inat_dwca_rows(shared_data, tmp_path):
    folder = shared_data / "inat/pyinaturalist-convert"
    files = {"inat_taxa": folder / "dwca_taxa.csv", "inat_vernacular": folder / "dwca_VernacularNames-english.csv"}
    with load(tmp_path, **files) as db:
        assert db.execute("SELECT rows_loaded, rows_rejected FROM loads ORDER BY file").fetchall() == [(20, 0), (20, 0)]
        assert db.execute("""SELECT name, rank, parent_id, kingdom, class, "order", family, genus, epithet
                             FROM names WHERE taxon_id = '7'""").fetchone() == (
            "Aramus guarauna", "species", "6", "Animalia", "Aves", "Gruiformes", "Aramidae", "Aramus", "guarauna")
        assert db.execute("SELECT name, parent_id FROM names WHERE taxon_id = '1'").fetchone() == ("Animalia", "48460")
        assert db.execute("SELECT DISTINCT status FROM names").fetchall() == [("accepted",)]
        limpkin = db.execute("SELECT name, language FROM vernaculars WHERE taxon_id = '7'").fetchall()
        assert limpkin == [("Limpkin", "en")]
        # The sample is a subset: parents outside it are reported, never rejected.
        reasons = db.execute("SELECT DISTINCT reason, rejected FROM load_problems").fetchall()
        assert reasons in ([], [("parent_not_found", False)])


def test_real_eol_resource_rows(shared_data, tmp_path):
    """A harvested resource taxon.tab is not the DH (no EOLid, has kingdom..genus): it loads as 'eol_resource'."""
    folder = shared_data / "eol"
    with load(tmp_path, eol_resource_taxon=folder / "carn_names_taxon.tab",
              eol_resource_vernacular=folder / "carn_names_vernacular_name.tab") as db:
        rows = db.execute("""SELECT taxon_id, name, rank, status, accepted_id, parent_id, kingdom, family, genus
                             FROM names WHERE authority = 'eol_resource' ORDER BY taxon_id""").fetchall()
        assert len(rows) == 5
        assert ("accepted_22668", "Martes gwatkinsi", "species", "accepted", "accepted_22668", "", "Animalia",
                "Mustelidae", "Martes") in rows
        # The synonym names its accepted taxon in parentNameUsageID; a trinomial reduces to its binomial.
        assert ("synonym_22671", "Martes flavigula", "species", "synonym", "accepted_22668", "", "", "", "") in rows
        assert db.execute("SELECT count(*) FROM load_problems").fetchone()[0] == 0
        assert db.execute("SELECT taxon_id, name, language FROM vernaculars ORDER BY 1").fetchall() == [
            ("accepted_22668", "Nilgiri Marten", "en"), ("accepted_22676", "Malabar Civet", "en"),
            ("accepted_22682", "Brown Palm Civet", "en")]


def test_messy_real_vernaculars_load_every_row(shared_data, tmp_path):
    path = shared_data / "eol/carn_names_orig_vernacular_name.tab"
    with load(tmp_path, eol_resource_vernacular=path) as db:
        lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) - 1
        loaded, rejected = db.execute("SELECT rows_loaded, rows_rejected FROM loads").fetchone()
        assert loaded + rejected == lines and loaded == db.execute("SELECT count(*) FROM vernaculars").fetchone()[0]
        assert rejected == db.execute("SELECT count(*) FROM load_problems WHERE rejected").fetchone()[0]
        languages = {lang for (lang,) in db.execute("SELECT DISTINCT language FROM vernaculars").fetchall()}
        assert {"en", "ta", "hi"} <= languages and all(lang == lang.lower() for lang in languages)


def gbif_usage_row(usage: dict) -> list[str]:
    """A backbone usage from the GBIF species API, as the row backbone.zip's Taxon.tsv holds for it."""
    def text(key: str) -> str:
        value = usage.get(key)
        return "" if value is None else str(value)
    return [text("key"), text("datasetKey"), text("parentKey"), text("acceptedKey"), "", text("scientificName"),
            text("authorship"), text("canonicalName"), "", "", "", text("rank").lower(), "", text("publishedIn"),
            text("taxonomicStatus").lower().replace("_", " "), "", text("remarks"),
            *(text(rank) for rank in ("kingdom", "phylum", "class", "order", "family", "genus"))]


def test_real_gbif_backbone_usages(shared_data, tmp_path):
    yaml = pytest.importorskip("yaml")
    cassette = yaml.safe_load((shared_data / "gbif/pygbif_cassettes/test_name_usage_datasetkey.yaml").read_text())
    usages = json.loads(cassette["interactions"][0]["response"]["body"]["string"])["results"]
    taxon = tmp_path / "Taxon.tsv"
    taxon.write_text("\n".join("\t".join(row) for row in [GBIF_COLUMNS, *map(gbif_usage_row, usages)]) + "\n",
                     encoding="utf-8")
    with load(tmp_path, gbif_taxon=taxon) as db:
        assert db.execute("SELECT rows_loaded, rows_rejected FROM loads").fetchone() == (100, 0)
        assert dict(db.execute("SELECT status, count(*) FROM names GROUP BY 1").fetchall()) == {
            "accepted": 71, "synonym": 28, "doubtful": 1}
        assert db.execute("""SELECT name, rank, status, accepted_id, parent_id, kingdom, phylum
                             FROM names WHERE taxon_id = '25'""").fetchone() == (
            "Acidobacteria", "phylum", "synonym", "10841181", "3", "Bacteria", "Acidobacteriota")
        # `incertae sedis` is GBIF's placeholder kingdom: no name, and no kingdom for what it holds.
        placeholder = db.execute("SELECT name, kingdom, status FROM names WHERE taxon_id = '0'").fetchone()
        assert placeholder == ("", "", "doubtful")
        assert db.execute("SELECT name, kingdom FROM names WHERE taxon_id = '1'").fetchone() == ("Animalia", "Animalia")
        # Accepted names and parents outside this page of 100 are reported, never rejected.
        assert db.execute("SELECT DISTINCT reason, rejected FROM load_problems ORDER BY 1").fetchall() == [
            ("accepted_not_found", False), ("parent_not_found", False)]
