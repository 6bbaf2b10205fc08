"""Common names: precedence by profile, cleaning, the language filter, fallbacks and batching."""

import dataclasses

import duckdb
import pytest

from taxonomy.authorities.schema import create_tables
from taxonomy.common_names import (
    CommonName,
    CommonNameRequest,
    choose_common_name,
    clean_common_name,
    common_names,
    fallback_name,
    is_english,
)
from taxonomy.profiles import get_profile

MAGPIE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia")
MULBERRY = ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba")
GANNET = ("Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus")


def insert(con: duckdb.DuckDBPyConnection, table: str, rows) -> None:
    """Insert rows that give the leading columns of `table`; the columns after them (additions) stay NULL."""
    columns = [c[0] for c in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
    names = ", ".join(f'"{c}"' for c in columns[:len(rows[0])])
    con.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['?'] * len(rows[0]))})", list(rows))


def name_row(authority, taxon, ranks, rank="species", page=None, status="accepted"):
    name = f"{ranks[5]} {ranks[6]}" if rank == "species" else ranks[5]
    return (authority, taxon, name, name.lower(), rank, status, taxon, "", *ranks[:6],
            ranks[6] if rank == "species" else "", "", page, "fixture", 1)


@pytest.fixture(scope="module")
def con():
    """Every source has a name for the magpie; the mulberry has only GBIF's; the gannet's genus is a homonym."""
    db = duckdb.connect()
    create_tables(db)
    rows = [name_row("itis", "i1", MAGPIE), name_row("inat", "n1", MAGPIE), name_row("gbif", "g1", MAGPIE),
            name_row("eol", "EOL-1", MAGPIE, page=45511401), name_row("gbif", "g2", MULBERRY),
            name_row("gbif", "g3", MULBERRY, rank="genus"), name_row("gbif", "g4", GANNET, rank="genus")]
    insert(db, "names", rows)
    insert(db, "vernaculars", [
        ("itis", "i1", None, "Black-billed Magpie, American Magpie", "English", False, "itis"),
        ("inat", "n1", None, "Black-billed magpie", "en", True, "inat"),
        ("gbif", "g1", None, "American magpie", "en", False, "gbif"),
        ("eol", "", 45511401, "Pie d'Amérique", "fr", True, "EOL"),
        ("eol", "", 45511401, "black-billed magpie &amp; kin.", "eng", True, "EOL"),
        ("eol", "", 45511401, "magpie", "en", False, "Wikipedia"),
        ("gbif", "g2", None, "Weißer Maulbeerbaum", "de", False, "gbif"),
        ("gbif", "g2", None, "  white   mulberry ", "EN", False, "gbif"),
        ("gbif", "g3", None, "mulberries", "en", False, "gbif"),  # the genus, not the species
        ("gbif", "g4", None, "gannets", "en", False, "gbif"),
    ])
    yield db
    db.close()


def only(*keys: str):
    return dataclasses.replace(get_profile("bioclip-v1"), common_name_precedence=keys)


@pytest.mark.parametrize(("raw", "clean"), [
    ("black-billed magpie &amp; kin.", "black-billed magpie & kin"),
    ("  Cougar ,", "Cougar"),
    ("<i>Northern</i>  Gannet", "Northern Gannet"),
    ("&amp;amp;", ""),
    ('"Oma\'o"', "Oma'o"),
    ("'Oma'o", "'Oma'o"),
    ("Van der Decken's Sifaka", "Van der Decken's Sifaka"),
    (None, ""),
])
def test_clean_common_name(raw, clean):
    assert clean_common_name(raw) == clean


@pytest.mark.parametrize(("code", "english"), [("en", True), ("eng", True), ("English", True), ("en-GB", True),
                                               ("en_US", True), ("fr", False), ("", False), (None, False),
                                               ("enm", False)])
def test_is_english(code, english):
    assert is_english(code) is english


def test_precedence_follows_the_profile(con):
    request = CommonNameRequest("t", MAGPIE)
    expected = {"itis": "Black-billed Magpie", "inat": "Black-billed magpie", "gbif": "American magpie",
                "eol_preferred": "black-billed magpie & kin", "eol_english": "black-billed magpie & kin"}
    for key, name in expected.items():
        assert common_names(con, [request], only(key))["t"] == CommonName(name, key)
    assert common_names(con, [request], get_profile("bioclip-v1"))["t"].source == "itis"
    assert common_names(con, [request], get_profile("gbif-first"))["t"] == CommonName("American magpie", "gbif")


def test_only_english_rows_are_candidates_and_names_are_cleaned(con):
    [name] = common_names(con, [CommonNameRequest("m", MULBERRY)], get_profile("bioclip-v1")).values()
    assert name == CommonName("white mulberry", "gbif")


def test_a_given_name_wins_where_the_profile_says_so_but_not_in_another_script(con):
    given = CommonNameRequest("t", MAGPIE, given=(("inat21", "Magpie (black-billed)"),))
    assert common_names(con, [given], get_profile("bioclip-v1"))["t"] == CommonName("Magpie (black-billed)",
                                                                                   "given:inat21")
    assert common_names(con, [given], get_profile("gbif-first"))["t"].source == "gbif"
    russian = CommonNameRequest("t", MAGPIE, given=(("inat21", "Паук-оса"), ("inat21", "")))
    assert common_names(con, [russian], get_profile("bioclip-v1"))["t"].source == "itis"


def test_ids_from_the_resolver_are_used_when_the_name_is_not_the_authority_one(con):
    # A DH page that carries an old name: only its page id leads to its vernaculars.
    renamed = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica")
    request = CommonNameRequest("p", renamed, page_ids=(45511401,), ids=(("gbif", "g1"),))
    assert common_names(con, [request], only("eol_english"))["p"].name == "black-billed magpie & kin"
    assert common_names(con, [request], only("gbif"))["p"].name == "American magpie"
    assert common_names(con, [CommonNameRequest("p", renamed)], only("gbif"))["p"].source == "fallback:scientific"


def test_genus_names_are_looked_up_at_genus_rank_and_within_the_kingdom(con):
    mulberries = CommonNameRequest("g", (*MULBERRY[:6], ""))
    assert common_names(con, [mulberries], only("gbif"))["g"] == CommonName("mulberries", "gbif")
    # The gannets' Morus must not take the mulberries' name (g3 is Plantae), and vice versa.
    gannets = CommonNameRequest("b", (*GANNET[:6], ""))
    assert common_names(con, [gannets], only("gbif"))["b"] == CommonName("gannets", "gbif")


def test_fallbacks():
    assert fallback_name(MAGPIE) == CommonName("Pica hudsonia", "fallback:scientific")
    assert fallback_name(("Animalia", "Arthropoda", "Insecta", "Diptera", "", "", "")) == \
        CommonName("Diptera", "fallback:scientific")
    assert fallback_name(("",) * 7) == CommonName("", "fallback:taxonomic")
    assert choose_common_name(CommonNameRequest("x", MAGPIE), {"itis": [" , "]}, get_profile("bioclip-v1")) == \
        CommonName("Pica hudsonia", "fallback:scientific")


def test_batching_and_empty_input(con):
    requests = [CommonNameRequest(str(i), ranks) for i, ranks in enumerate([MAGPIE, MULBERRY, GANNET] * 3)]
    profile = get_profile("bioclip-v1")
    assert common_names(con, requests, profile, batch_size=2) == common_names(con, requests, profile)
    assert common_names(con, [], profile) == {}
    with pytest.raises(ValueError, match="batch_size"):
        common_names(con, requests, profile, batch_size=0)
