"""iNaturalist taxonomy DwC-A: `taxa.csv` and `VernacularNames-english.csv` (quoted CSV).

taxa.csv holds active taxa only, so every row loads 'accepted'; parentNameUsageID is a URL
(`https://www.inaturalist.org/taxa/N`) whose last path segment is the parent's id.
"""

from __future__ import annotations

from pathlib import Path

from taxonomy.authorities.clean import language_sql
from taxonomy.authorities.reader import DumpFormat, LoadSession

TAXA = DumpFormat(
    "iNaturalist DwC-A taxa.csv", ",", quoted=True,
    required=("id", "parentNameUsageID", "scientificName", "taxonRank", "kingdom", "phylum", "class", "order",
              "family", "genus"))
VERNACULAR = DumpFormat("iNaturalist DwC-A VernacularNames-english.csv", ",", quoted=True,
                        required=("id", "vernacularName"), optional=("language", "source", "lexicon"))
_PARENT_ID = r"^(?:https?://[^/]+/taxa/)?([0-9]+)/?$"


def load_taxa(session: LoadSession, path: Path) -> None:
    """Stage the iNat taxa, parent ids taken from the parent URLs."""
    rows = session.read("inat", path, TAXA)
    session.reject_bad_ids("inat", path, rows, ("id",), "id")
    parent = 'trim("parentNameUsageID")'
    session.reject("inat", path, rows, f"{parent} <> '' AND NOT regexp_matches({parent}, '{_PARENT_ID}')", "bad_id",
                   "'parentNameUsageID is not a taxon URL or id: ' || left(\"parentNameUsageID\", 200)")
    session.reject_duplicates("inat", path, rows, "id")
    session.con.execute(f"""
        INSERT INTO stage_names
        SELECT 'inat', "id", "scientificName", lower(trim("taxonRank")), 'accepted', '', "id",
               regexp_extract(trim("parentNameUsageID"), '{_PARENT_ID}', 1),
               "kingdom", "phylum", "class", "order", "family", "genus", '', NULL, "scientificName", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)


def load_vernaculars(session: LoadSession, path: Path) -> None:
    """English names; `language` is 'en' in the real file, and the lexicon ('English') stands in when it is empty."""
    rows = session.read("inat", path, VERNACULAR)
    session.reject_bad_ids("inat", path, rows, ("id",), "id")
    session.reject("inat", path, rows, "trim(\"vernacularName\") = ''", "missing_name", "'vernacularName is empty'")
    language = language_sql("CASE WHEN trim(\"language\") <> '' THEN \"language\" ELSE \"lexicon\" END")
    session.con.execute(f"""
        INSERT INTO vernaculars
        SELECT 'inat', "id", NULL, "vernacularName", {language}, false, "source", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)
