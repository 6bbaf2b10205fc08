"""ITIS `species_level_taxonomy_chains.csv` (BioCLIP's derived file): one row per species with its whole chain.

`hierarchy_string_tsn` ("202422-846491-...-5550"), `hierarchy_string_names` ("Plantae->Biliphyta->...") and
`hierarchy_string_ranks` ("Kingdom->Subkingdom->...") are aligned lists. Each chain yields its species row and every
higher node, deduplicated by tsn (the first chain that names a tsn wins; a tsn named or placed differently by a
later chain is a problem row). kingdom..genus of a node come from the nodes above it in its chain. The terminal
vernaculars (comma-separated) go to `vernaculars`, one row each; the first listed is ITIS's own and loads as
preferred. Every ITIS name in this file is valid, so all load 'accepted'.
"""

from __future__ import annotations

from pathlib import Path

from taxonomy.authorities.clean import language_sql
from taxonomy.authorities.reader import DumpFormat, LoadSession
from taxonomy.authorities.schema import HIGHER_RANKS

CHAINS = DumpFormat(
    "ITIS species_level_taxonomy_chains.csv", ",", quoted=True,
    required=("hierarchy_string_tsn", "hierarchy_string_names", "hierarchy_string_ranks", "terminal_tsn",
              "terminal_scientific_name"),
    optional=("terminal_vernacular", "terminal_vernacular_lang"))


def _stage_chains(session: LoadSession, path: Path, rows: str) -> None:
    """Split the hierarchy strings into aligned lists; reject chains whose lists disagree or hold a non-integer tsn."""
    session.con.execute(f"""
        CREATE TEMP TABLE _chains AS
        SELECT line_no, terminal_tsn, terminal_scientific_name, terminal_vernacular, terminal_vernacular_lang,
               list_transform(string_split(hierarchy_string_tsn, '-'), x -> trim(x)) AS tsns,
               list_transform(string_split(hierarchy_string_names, '->'), x -> trim(x)) AS names,
               list_transform(string_split(hierarchy_string_ranks, '->'), x -> lower(trim(x))) AS ranks
        FROM {rows}""")
    session.reject_bad_ids("itis", path, "_chains", ("terminal_tsn",), "terminal_tsn")
    session.reject("itis", path, "_chains",
                   "len(tsns) <> len(names) OR len(tsns) <> len(ranks)",
                   "chain_mismatch",
                   "'hierarchy strings differ in length: ' || len(tsns) || ' tsns, ' || len(names) || ' names, ' "
                   "|| len(ranks) || ' ranks'")
    session.reject("itis", path, "_chains", "list_bool_or(list_transform(tsns, x -> TRY_CAST(x AS BIGINT) IS NULL))",
                   "bad_id", "'hierarchy_string_tsn holds a non-integer tsn: ' || array_to_string(tsns, '-')")
    session.reject("itis", path, "_chains", "tsns[-1] <> terminal_tsn", "chain_mismatch",
                   "'terminal_tsn ' || terminal_tsn || ' does not end the chain ' || array_to_string(tsns, '-')")


def load_chains(session: LoadSession, path: Path) -> None:
    """Stage every node of every chain once, and the terminal vernaculars."""
    rows = session.read("itis", path, CHAINS)
    _stage_chains(session, path, rows)
    session.drop(rows)
    rank_at = ", ".join(
        f"CASE WHEN list_position(ranks, '{r}') BETWEEN 1 AND i THEN names[list_position(ranks, '{r}')] ELSE '' END "
        f"AS \"{r}\"" for r in HIGHER_RANKS)
    session.con.execute(f"""
        CREATE TEMP TABLE _nodes AS
        SELECT line_no, i, tsns[i] AS tsn,
               CASE WHEN i = len(tsns) THEN terminal_scientific_name ELSE names[i] END AS name, ranks[i] AS rank,
               CASE WHEN i > 1 THEN tsns[i - 1] ELSE '' END AS parent, {rank_at}
        FROM (SELECT *, unnest(range(1, len(tsns) + 1)) AS i FROM _chains)""")
    session.con.execute("""
        INSERT INTO load_problems
        SELECT 'itis', ?, n.line_no, 'inconsistent_node',
               'tsn ' || n.tsn || ' is ' || n.name || ' under ' || n.parent || ' here but ' || f.name || ' under '
               || f.parent || ' on line ' || f.line_no, false
        FROM _nodes n JOIN (SELECT * FROM _nodes QUALIFY row_number() OVER (PARTITION BY tsn ORDER BY line_no, i) = 1) f
             ON f.tsn = n.tsn AND (f.name <> n.name OR f.parent <> n.parent)""", [str(path)])
    session.con.execute("""
        INSERT INTO stage_names
        SELECT 'itis', tsn, name, rank, 'accepted', '', tsn, parent, kingdom, phylum, class, "order", family, genus,
               '', NULL, name, ?, line_no
        FROM _nodes QUALIFY row_number() OVER (PARTITION BY tsn ORDER BY line_no, i) = 1""", [str(path)])
    language = language_sql("CASE WHEN len(langs) = len(names) THEN langs[j] ELSE langs[1] END")
    session.con.execute(f"""
        INSERT INTO vernaculars
        SELECT 'itis', terminal_tsn, NULL, trim(names[j]), {language}, j = 1, 'ITIS', ?, line_no
        FROM (SELECT *, unnest(range(1, len(names) + 1)) AS j
              FROM (SELECT line_no, terminal_tsn, string_split(terminal_vernacular, ',') AS names,
                           string_split(coalesce(terminal_vernacular_lang, ''), ',') AS langs
                    FROM _chains WHERE trim(terminal_vernacular) <> ''))
        WHERE trim(names[j]) <> ''""", [str(path)])
    session.drop("_nodes")
    session.drop("_chains")
