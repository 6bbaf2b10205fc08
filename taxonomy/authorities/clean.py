"""Names and ranks of staged rows cleaned in bulk with taxonomy.names, then written to the `names` table.

Every distinct raw value is cleaned once. Plain binomials, trinomials and single capitalised words that contain no
token of the name vocabularies (data_manifests/taxonomy/) are already canonical, so SQL passes them through; only
the rest (authorship, HTML, hybrids, upper case, placeholders...) go through `canonicalise` / `rank_name` in Python.
tests/taxonomy/authorities/test_clean.py checks that shortcut against the Python functions.
"""

from __future__ import annotations

import csv
import functools
import logging

import duckdb
import pyarrow as pa

import data_manifests
from taxonomy.authorities.schema import HIGHER_RANKS, LANGUAGES, SPECIES_RANKS, STATUS
from taxonomy.names import canonicalise, normalise_kingdom, rank_name

log = logging.getLogger(__name__)

BINOMIAL = r"[A-Z][a-z]+ [a-z]{2,}(?:-[a-z]+)*"
TRINOMIAL = r"[A-Z][a-z]+ [a-z]{2,}(?:-[a-z]+)* [a-z]{2,}(?:-[a-z]+)*"
WORD = r"[A-Z][a-z]+"
_BATCH = 50_000


@functools.cache
def vocabulary_tokens() -> frozenset[str]:
    """Every token and phrase of the name vocabularies, lower-case: names containing one need the full cleaner."""
    tokens = set()
    for table in ("taxonomy/name_markers.csv", "taxonomy/placeholders.csv"):
        with open(data_manifests.path(table), newline="", encoding="utf-8") as f:
            tokens.update(row["token"].lower() for row in csv.DictReader(f))
    return frozenset(tokens)


def rank_kind_sql(rank: str) -> str:
    """SQL: which cleaner a row's own name takes, by its rank."""
    species = ", ".join(f"'{r}'" for r in SPECIES_RANKS)
    return f"CASE WHEN {rank} IN ({species}) THEN 'species' WHEN {rank} = 'kingdom' THEN 'kingdom' ELSE 'rank' END"


def status_sql(raw: str) -> str:
    """SQL: an authority's taxonomic status mapped to accepted / synonym / doubtful (unknown -> doubtful)."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in STATUS.items())
    return f"CASE lower(trim({raw})) {cases} ELSE 'doubtful' END"


def language_sql(raw: str) -> str:
    """SQL: a vernacular's language as ISO 639-1 where known ('English', 'eng' -> 'en'), else lower-cased as given."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in LANGUAGES.items())
    return f"CASE lower(trim({raw})) {cases} ELSE lower(trim({raw})) END"


def _clean_one(kind: str, raw: str) -> tuple[str, str]:
    """(name, epithet) of one raw value by taxonomy.names."""
    if kind == "species":
        name = canonicalise(raw)
        return name.canonical, name.epithet
    return (normalise_kingdom(raw) if kind == "kingdom" else rank_name(raw)), ""


def _build_clean_map(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table _clean(kind, raw, name, epithet) for every distinct raw name and rank value staged."""
    con.execute("CREATE OR REPLACE TEMP TABLE _vocab AS SELECT unnest(?::VARCHAR[]) AS token",
                [sorted(vocabulary_tokens())])
    ranks = " UNION ".join(f'SELECT DISTINCT \'rank\', "{r}" FROM stage_names' for r in HIGHER_RANKS[1:])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _clean_in AS
        SELECT DISTINCT {rank_kind_sql('rank')} AS kind, raw_name AS raw FROM stage_names
        UNION SELECT DISTINCT 'kingdom', kingdom FROM stage_names
        UNION {ranks}""")
    plain = "lower({0}) NOT IN (SELECT token FROM _vocab)"
    first, second, third = (f"split_part(raw, ' ', {i})" for i in (1, 2, 3))
    clean_words = " AND ".join(plain.format(w) for w in (first, second, third, "raw", f"{first} || ' ' || {second}"))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _clean AS
        SELECT kind, raw,
               CASE WHEN raw = '' THEN ''
                    WHEN kind = 'species' AND regexp_full_match(raw, '{BINOMIAL}') AND {clean_words} THEN raw
                    WHEN kind = 'species' AND regexp_full_match(raw, '{TRINOMIAL}') AND {clean_words}
                         THEN {first} || ' ' || {second}
                    WHEN kind = 'rank' AND regexp_full_match(raw, '{WORD}') AND {plain.format('raw')} THEN raw
               END AS name,
               CASE WHEN kind = 'species' THEN {second} ELSE '' END AS epithet
        FROM _clean_in""")
    con.execute("DROP TABLE _clean_in")
    # Distinct values only, and only those the SQL shortcut could not settle: small next to the dumps.
    slow = con.execute("SELECT kind, raw FROM _clean WHERE name IS NULL ORDER BY kind, raw").fetchall()
    con.execute("CREATE OR REPLACE TEMP TABLE _slow (kind VARCHAR, raw VARCHAR, name VARCHAR, epithet VARCHAR)")
    for start in range(0, len(slow), _BATCH):
        batch = slow[start:start + _BATCH]
        names, epithets = zip(*(_clean_one(kind, raw) for kind, raw in batch))
        con.register("_slow_batch", pa.table({"kind": [k for k, _ in batch], "raw": [r for _, r in batch],
                                              "name": list(names), "epithet": list(epithets)}))
        con.execute("INSERT INTO _slow SELECT * FROM _slow_batch")
        con.unregister("_slow_batch")
    log.info("cleaned %d distinct names with taxonomy.names", len(slow))
    con.execute("""UPDATE _clean SET name = s.name, epithet = s.epithet FROM _slow s
                   WHERE _clean.kind = s.kind AND _clean.raw = s.raw""")
    con.execute("DROP TABLE _slow")


def _note_link_problems(con: duckdb.DuckDBPyConnection) -> None:
    """Problems that do not drop a row: unknown status, parent or accepted name not in the same authority."""
    known = ", ".join(f"'{k}'" for k in STATUS)
    con.execute(f"""
        INSERT INTO load_problems
        SELECT authority, source_file, source_line, 'unknown_status',
               'taxonomicStatus ' || raw_status || ' loaded as doubtful', false
        FROM stage_names WHERE lower(trim(raw_status)) NOT IN ({known})""")
    con.execute("CREATE OR REPLACE TEMP TABLE _ids AS SELECT DISTINCT authority, taxon_id FROM stage_names")
    for column, reason in (("parent_id", "parent_not_found"), ("accepted_id", "accepted_not_found")):
        con.execute(f"""
            INSERT INTO load_problems
            SELECT s.authority, s.source_file, s.source_line, '{reason}',
                   '{column} ' || CASE WHEN s.{column} = '' THEN '(empty)' ELSE s.{column} END || ' of ' || s.taxon_id
                   || ' is not a taxon of this authority', false
            FROM stage_names s ANTI JOIN _ids i ON i.authority = s.authority AND i.taxon_id = s.{column}
            WHERE s.{column} <> '' OR (s.status = 'synonym' AND '{column}' = 'accepted_id')""")
    con.execute("DROP TABLE _ids")


def finish_names(con: duckdb.DuckDBPyConnection) -> int:
    """Clean every staged row's name and ranks and write them to `names`, sorted; return the row count."""
    _note_link_problems(con)
    _build_clean_map(con)
    joins = "\n".join(f"LEFT JOIN _clean c_{r} ON c_{r}.kind = '{'kingdom' if r == 'kingdom' else 'rank'}' "
                      f"AND c_{r}.raw = s.\"{r}\"" for r in HIGHER_RANKS)
    ranks = ", ".join(f"coalesce(c_{r}.name, '')" for r in HIGHER_RANKS)
    con.execute(f"""
        INSERT INTO names
        SELECT s.authority, s.taxon_id, coalesce(n.name, '') AS name, lower(coalesce(n.name, '')), s.rank, s.status,
               s.accepted_id, s.parent_id, {ranks},
               CASE WHEN s.rank = 'species' THEN coalesce(n.epithet, '') ELSE '' END, s.authorship, s.page_id,
               s.source_file, s.source_line, s.scientific_name
        FROM stage_names s
        LEFT JOIN _clean n ON n.kind = {rank_kind_sql('s.rank')} AND n.raw = s.raw_name
        {joins}
        ORDER BY s.authority, lower(coalesce(n.name, '')), s.taxon_id, s.source_file, s.source_line""")
    con.execute("DROP TABLE _clean")
    return con.execute("SELECT count(*) FROM names").fetchone()[0]
