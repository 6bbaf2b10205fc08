"""The bulk cleaner's SQL shortcut gives exactly what taxonomy.names gives, name by name."""

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from taxonomy.authorities.clean import finish_names, vocabulary_tokens
from taxonomy.authorities.schema import NAMES_DDL, STAGE_DDL, TABLES_DDL
from taxonomy.names import canonicalise, normalise_kingdom, rank_name

VOCAB = sorted(vocabulary_tokens())
lower_word = st.from_regex(r"[a-z]{1,9}(-[a-z]{1,4})?", fullmatch=True) | st.sampled_from(VOCAB)
title_word = (st.from_regex(r"[A-Z][a-z]{0,9}", fullmatch=True) | st.sampled_from(VOCAB).map(str.capitalize)
              | st.sampled_from(["Metazoa", "COLEOPTERA", "×Agropogon", "Felis", "X", "x"]))
binomial = st.builds(lambda g, e: f"{g} {e}", title_word, lower_word)
trinomial = st.builds(lambda g, e, i: f"{g} {e} {i}", title_word, lower_word, lower_word)
messy = st.sampled_from(["Puma concolor (Linnaeus, 1771)", "<i>Pica hudsonia</i>", "Quercus × alba", "Aus sp.",
                         "Aus cf. bus", "GADUS MORHUA", "Homo sapiens sapiens", "", "Carex var. nigra"])


def clean_in_duckdb(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(name, epithet, phylum) per staged (rank, name, phylum), through finish_names."""
    with duckdb.connect() as con:
        for ddl in (*TABLES_DDL, NAMES_DDL, STAGE_DDL):
            con.execute(ddl)
        con.executemany("INSERT INTO stage_names VALUES ('gbif', ?, ?, ?, 'accepted', '', ?, '', ?, ?, '', '', '', '', "
                        "'', NULL, '', 'f', ?)",
                        [(str(i), name, rank, str(i), phylum, phylum, i)
                         for i, (rank, name, phylum) in enumerate(rows)])
        finish_names(con)
        return con.execute("SELECT name, epithet, kingdom, phylum FROM names ORDER BY source_line").fetchall()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["species", "subspecies", "genus", "kingdom"]),
                          binomial | trinomial | title_word | messy, title_word | messy), min_size=1, max_size=40))
def test_shortcut_matches_taxonomy_names(rows):
    got = clean_in_duckdb(rows)
    for (rank, name, phylum), (clean, epithet, kingdom, phylum_clean) in zip(rows, got, strict=True):
        if rank in ("species", "subspecies"):
            expected = canonicalise(name)
            assert clean == expected.canonical, name
            assert epithet == (expected.epithet if rank == "species" else ""), name
        else:
            assert clean == (normalise_kingdom(name) if rank == "kingdom" else rank_name(name)), name
        assert kingdom == normalise_kingdom(phylum) and phylum_clean == rank_name(phylum), phylum
