"""EOL: the Dynamic Hierarchy `taxon.tab`, `provider_ids.csv.gz`, `vernacularnames.csv`; and partner resources.

The DH gives no rank columns: each node's kingdom..genus are the names of its nearest ancestors (itself included)
of that rank, found by walking parentNameUsageID down from the roots in one recursive query. A chain without a
class node leaves class "" (no rank is shifted up). DH kingdoms (Metazoa, Chloroplastida) are normalised later
with the other kingdoms. A synonym without a parent hangs from its accepted name's parent.

A harvested partner resource (a DwC-A `taxon.tab` with kingdom..genus columns and no EOLid, such as the India
Biodiversity Portal rows in shared/data/eol/carn_names_*.tab) is not DH-shaped, so it has its own small path and
loads as authority 'eol_resource'. Such resources point a synonym at its accepted name through parentNameUsageID
when they have no acceptedNameUsageID column.
"""

from __future__ import annotations

from pathlib import Path

from taxonomy.authorities.clean import language_sql, status_sql
from taxonomy.authorities.reader import DumpFormat, LoadSession
from taxonomy.authorities.schema import HIGHER_RANKS

DH_TAXON = DumpFormat(
    "EOL Dynamic Hierarchy taxon.tab", "\t", quoted=False,
    required=("taxonID", "parentNameUsageID", "scientificName", "taxonRank", "EOLid"),
    optional=("acceptedNameUsageID", "taxonomicStatus", "canonicalName"))
PROVIDER_IDS = DumpFormat("EOL provider_ids.csv", ",", quoted=True,
                          required=("node_id", "resource_pk", "resource_id", "page_id"),
                          optional=("preferred_canonical_for_page",))
VERNACULAR = DumpFormat(
    "EOL vernacularnames.csv", ",", quoted=True, required=("page_id", "vernacular_string", "language_code"),
    optional=("resource_name", "is_preferred_by_eol"))
RESOURCE_TAXON = DumpFormat(
    "EOL resource (DwC-A) taxon.tab", "\t", quoted=False,
    required=("taxonID", "parentNameUsageID", "scientificName", "taxonRank"),
    optional=("acceptedNameUsageID", "taxonomicStatus", "scientificNameAuthorship", *HIGHER_RANKS))
RESOURCE_VERNACULAR = DumpFormat("EOL resource (DwC-A) vernacular_name.tab", "\t", quoted=False,
                                 required=("taxonID", "vernacularName"),
                                 optional=("language", "isPreferredName", "source"))
_TRUE = "('1', 'true', 't', 'yes')"
_MAX_DEPTH = 10_000


def _reject_bad_page_ids(session: LoadSession, path: Path, rows: str, column: str) -> None:
    """Reject rows whose page id is set but not an integer (an empty one loads as NULL)."""
    col = f'"{column}"'
    session.reject("eol", path, rows, f"trim({col}) <> '' AND TRY_CAST(trim({col}) AS BIGINT) IS NULL", "bad_page_id",
                   f"'{column} is not an integer: ' || left({col}, 200)")


def load_dh(session: LoadSession, path: Path) -> None:
    """Stage the DH nodes, then fill their rank columns from their ancestors."""
    rows = session.read("eol", path, DH_TAXON)
    session.reject("eol", path, rows, "trim(\"taxonID\") = ''", "missing_id", "'taxonID is empty'")
    _reject_bad_page_ids(session, path, rows, "EOLid")
    session.reject_duplicates("eol", path, rows, "taxonID")
    status = status_sql('"taxonomicStatus"')
    session.con.execute(f"""
        INSERT INTO stage_names
        SELECT 'eol', "taxonID", CASE WHEN "canonicalName" <> '' THEN "canonicalName" ELSE "scientificName" END,
               lower(trim("taxonRank")), {status}, "taxonomicStatus",
               CASE WHEN {status} = 'synonym' THEN "acceptedNameUsageID" ELSE "taxonID" END, "parentNameUsageID",
               '', '', '', '', '', '',
               CASE WHEN "canonicalName" <> '' AND starts_with("scientificName", "canonicalName" || ' ')
                    THEN trim("scientificName"[length("canonicalName") + 2:]) ELSE '' END,
               TRY_CAST(trim("EOLid") AS BIGINT), "scientificName", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)
    _fill_ranks_from_ancestors(session, path)


def _fill_ranks_from_ancestors(session: LoadSession, path: Path) -> None:
    """Set kingdom..genus of the staged DH rows of `path` from their ancestors; nodes in a parent loop stay ""."""
    con = session.con
    con.execute("""
        CREATE TEMP TABLE _dh AS
        WITH dh AS (SELECT taxon_id, rank, raw_name, status, accepted_id, parent_id FROM stage_names
                    WHERE authority = 'eol' AND source_file = ?)
        SELECT n.taxon_id, n.rank, n.raw_name,
               CASE WHEN n.parent_id <> '' OR n.status <> 'synonym' THEN n.parent_id
                    ELSE coalesce(a.parent_id, '') END AS up
        FROM dh n LEFT JOIN dh a ON a.taxon_id = n.accepted_id""", [str(path)])
    first = ", ".join(f"CASE WHEN d.rank = '{r}' THEN d.raw_name ELSE '' END" for r in HIGHER_RANKS)
    step = ", ".join(f"CASE WHEN c.rank = '{r}' THEN c.raw_name ELSE w.\"{r}\" END" for r in HIGHER_RANKS)
    ranks = ", ".join(f'"{r}"' for r in HIGHER_RANKS)
    con.execute(f"""
        CREATE TEMP TABLE _walk AS
        WITH RECURSIVE walk(taxon_id, depth, {ranks}) AS (
            SELECT d.taxon_id, 0, {first} FROM _dh d ANTI JOIN _dh p ON p.taxon_id = d.up
            UNION ALL
            SELECT c.taxon_id, w.depth + 1, {step} FROM walk w JOIN _dh c ON c.up = w.taxon_id
            WHERE w.depth < {_MAX_DEPTH})
        SELECT * FROM walk""")
    con.execute("""
        INSERT INTO load_problems
        SELECT 'eol', n.source_file, n.source_line, 'parent_cycle',
               'taxon ' || n.taxon_id || ' is not below any root (its parent chain loops); ranks left empty', false
        FROM stage_names n JOIN _dh d ON d.taxon_id = n.taxon_id ANTI JOIN _walk w ON w.taxon_id = d.taxon_id
        WHERE n.authority = 'eol' AND n.source_file = ?""", [str(path)])
    sets = ", ".join(f'"{r}" = w."{r}"' for r in HIGHER_RANKS)
    con.execute(f"""
        UPDATE stage_names SET {sets} FROM _walk w
        WHERE stage_names.authority = 'eol' AND stage_names.taxon_id = w.taxon_id AND stage_names.source_file = ?""",
                [str(path)])
    session.drop("_walk")
    session.drop("_dh")


def load_provider_ids(session: LoadSession, path: Path) -> None:
    """Load provider_ids.csv(.gz): which DH node (resource_pk) sits on which EOL page."""
    rows = session.read("eol", path, PROVIDER_IDS)
    _reject_bad_page_ids(session, path, rows, "page_id")
    session.con.execute(f"""
        INSERT INTO eol_provider_ids
        SELECT node_id, resource_pk, resource_id, TRY_CAST(trim(page_id) AS BIGINT), preferred_canonical_for_page
        FROM {rows} ORDER BY line_no""")
    session.drop(rows)


def load_vernaculars(session: LoadSession, path: Path) -> None:
    """Load vernacularnames.csv by page id; `preferred` is EOL's own preference (is_preferred_by_eol)."""
    rows = session.read("eol", path, VERNACULAR)
    session.reject("eol", path, rows, "trim(page_id) = ''", "missing_id", "'page_id is empty'")
    _reject_bad_page_ids(session, path, rows, "page_id")
    session.reject("eol", path, rows, "trim(vernacular_string) = ''", "missing_name", "'vernacular_string is empty'")
    session.con.execute(f"""
        INSERT INTO vernaculars
        SELECT 'eol', '', TRY_CAST(trim(page_id) AS BIGINT), vernacular_string, {language_sql('language_code')},
               lower(trim(is_preferred_by_eol)) IN {_TRUE}, resource_name, ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)


def load_resource_taxa(session: LoadSession, path: Path) -> None:
    """Stage a partner resource's taxa as 'eol_resource' rows, ranks as the resource gives them."""
    rows = session.read("eol_resource", path, RESOURCE_TAXON)
    session.reject("eol_resource", path, rows, "trim(\"taxonID\") = ''", "missing_id", "'taxonID is empty'")
    session.reject_duplicates("eol_resource", path, rows, "taxonID")
    status = status_sql('"taxonomicStatus"')
    # Without acceptedNameUsageID, a resource's synonym names its accepted taxon in parentNameUsageID.
    via_parent = f"{status} = 'synonym' AND trim(\"acceptedNameUsageID\") = ''"
    ranks = ", ".join(f'"{r}"' for r in HIGHER_RANKS)
    session.con.execute(f"""
        INSERT INTO stage_names
        SELECT 'eol_resource', "taxonID", "scientificName", lower(trim("taxonRank")), {status}, "taxonomicStatus",
               CASE WHEN {via_parent} THEN "parentNameUsageID" WHEN {status} = 'synonym' THEN "acceptedNameUsageID"
                    ELSE "taxonID" END,
               CASE WHEN {via_parent} THEN '' ELSE "parentNameUsageID" END,
               {ranks}, "scientificNameAuthorship", NULL, "scientificName", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)


def load_resource_vernaculars(session: LoadSession, path: Path) -> None:
    """Load a partner resource's vernacular_name.tab, keyed by the resource's taxonID."""
    rows = session.read("eol_resource", path, RESOURCE_VERNACULAR)
    session.reject("eol_resource", path, rows, "trim(\"taxonID\") = ''", "missing_id", "'taxonID is empty'")
    session.reject("eol_resource", path, rows, "trim(\"vernacularName\") = ''", "missing_name",
                   "'vernacularName is empty'")
    session.con.execute(f"""
        INSERT INTO vernaculars
        SELECT 'eol_resource', "taxonID", NULL, "vernacularName", {language_sql('"language"')},
               lower(trim("isPreferredName")) IN {_TRUE}, "source", ?, line_no
        FROM {rows}""", [str(path)])
    session.drop(rows)
