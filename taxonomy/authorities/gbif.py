"""GBIF backbone (backbone.zip): `Taxon.tsv` name usages and `VernacularName.tsv`, both tab-separated, unquoted.

Every GBIF synonym kind (synonym, heterotypic/homotypic/proparte synonym, misapplied) loads as 'synonym' pointing at
acceptedNameUsageID; kingdom..genus are the backbone's own columns (for a synonym, its accepted name's classification).
"""

from __future__ import annotations

from pathlib import Path

from taxonomy.authorities.clean import language_sql, status_sql
from taxonomy.authorities.reader import DumpFormat, LoadSession

TAXON = DumpFormat(
    "GBIF backbone Taxon.tsv", "\t", quoted=False,
    required=("taxonID", "parentNameUsageID", "acceptedNameUsageID", "scientificName", "taxonRank",
              "taxonomicStatus", "kingdom", "phylum", "class", "order", "family", "genus"),
    optional=("canonicalName", "scientificNameAuthorship"))
VERNACULAR = DumpFormat("GBIF backbone VernacularName.tsv", "\t", quoted=False,
                        required=("taxonID", "vernacularName", "language"), optional=("source",))


def load_taxa(session: LoadSession, path: Path) -> None:
    """Stage the backbone's name usages (rows with a bad taxonID, parent or accepted id are rejected)."""
    rows = session.read("gbif", path, TAXON)
    session.reject_bad_ids("gbif", path, rows, ("taxonID", "parentNameUsageID", "acceptedNameUsageID"), "taxonID")
    session.reject_duplicates("gbif", path, rows, "taxonID")
    status = status_sql('"taxonomicStatus"')
    session.con.execute(f"""
        INSERT INTO stage_names
        SELECT 'gbif', "taxonID", CASE WHEN "canonicalName" <> '' THEN "canonicalName" ELSE "scientificName" END,
               lower(trim("taxonRank")), {status}, "taxonomicStatus",
               CASE WHEN {status} = 'synonym' THEN "acceptedNameUsageID" ELSE "taxonID" END, "parentNameUsageID",
               "kingdom", "phylum", "class", "order", "family", "genus", "scientificNameAuthorship", NULL,
               "scientificName", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)


def load_vernaculars(session: LoadSession, path: Path) -> None:
    """Load the backbone's vernacular names (the file marks none as preferred)."""
    rows = session.read("gbif", path, VERNACULAR)
    session.reject_bad_ids("gbif", path, rows, ("taxonID",), "taxonID")
    session.reject("gbif", path, rows, "trim(\"vernacularName\") = ''", "missing_name",
                   "'vernacularName is empty'")
    session.con.execute(f"""
        INSERT INTO vernaculars
        SELECT 'gbif', "taxonID", NULL, "vernacularName", {language_sql('"language"')}, false, "source",
               ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)
