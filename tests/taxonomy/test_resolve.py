"""The resolver on hand-built authority databases: every hard case of the sample kit, precedence, and edge cases."""

import dataclasses
import random
import tomllib

import duckdb
import pandas as pd
import pytest

import data_manifests
from taxonomy.authorities.schema import create_tables
from taxonomy.profiles import get_profile
from taxonomy.records import Match, Resolution, SourceLabel, UnresolvedReason, taxon_id
from taxonomy.resolve import edit_distance, resolve_labels

BIRD = ("Animalia", "Chordata", "Aves", "Suliformes", "Sulidae")
MULBERRY = ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae")
MOTH = ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Erebidae")
ORCHID = ("Plantae", "Tracheophyta", "Liliopsida", "Asparagales", "Orchidaceae")
CAT = ("Animalia", "Chordata", "Mammalia", "Carnivora", "Felidae")
MAGPIE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae")
METAZOA_MAGPIE = ("Metazoa", *MAGPIE[1:])
METAZOA_COD = ("Metazoa", "Chordata", "", "Gadiformes", "Gadidae")  # no class-rank node in the DH chain
ANT = ("Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Formicidae")
TACHINID = ("Animalia", "Arthropoda", "Insecta", "Diptera", "Tachinidae")
NO_CHAIN = ("", "", "", "", "")


def name_row(authority, taxon, name, rank, higher, genus="", *, status="accepted", accepted="", page=None):
    """One `names` row as the loaders write it (epithet from the name for a species)."""
    words = name.split()
    epithet = words[1] if rank == "species" and len(words) > 1 else ""
    if rank == "species" and not genus:
        genus = words[0]
    return (authority, taxon, name, name.lower(), rank, status, accepted or taxon, "", *higher, genus, epithet, "",
            page, "fixture", 1)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows) -> None:
    """Insert rows that give the leading columns of `table`; the columns after them (additions) stay NULL."""
    columns = [c[0] for c in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
    names = ", ".join(f'"{c}"' for c in columns[:len(rows[0])])
    con.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join(['?'] * len(rows[0]))})", list(rows))


def authority_db(names, vernaculars=()) -> duckdb.DuckDBPyConnection:
    """An in-memory authorities.duckdb with the loaders' schema and the given rows."""
    con = duckdb.connect()
    create_tables(con)
    if names:
        insert(con, "names", names)
    if vernaculars:
        insert(con, "vernaculars", vernaculars)
    return con


HARD_NAMES = [
    # GBIF: both Morus and both Laelia, the synonym, and what BIOSCAN's labels need.
    name_row("gbif", "g-morus-bird", "Morus", "genus", BIRD, "Morus"),
    name_row("gbif", "g-morus-plant", "Morus", "genus", MULBERRY, "Morus"),
    name_row("gbif", "g-morus-bassanus", "Morus bassanus", "species", BIRD),
    name_row("gbif", "g-morus-alba", "Morus alba", "species", MULBERRY),
    name_row("gbif", "g-laelia-moth", "Laelia", "genus", MOTH, "Laelia"),
    name_row("gbif", "g-laelia-orchid", "Laelia", "genus", ORCHID, "Laelia"),
    name_row("gbif", "g-laelia-anceps", "Laelia anceps", "species", ORCHID),
    name_row("gbif", "g-puma", "Puma concolor", "species", CAT),
    name_row("gbif", "g-felis", "Felis concolor", "species", CAT, "Puma", status="synonym", accepted="g-puma"),
    name_row("gbif", "g-pica", "Pica hudsonia", "species", MAGPIE),
    name_row("gbif", "g-procryptocerus", "Procryptocerus", "genus", ANT, "Procryptocerus"),
    name_row("gbif", "g-scabriusculus", "Procryptocerus scabriusculus", "species", ANT),
    name_row("gbif", "g-striatus", "Procryptocerus striatus", "species", ANT),
    name_row("gbif", "g-medina", "Medina", "genus", TACHINID, "Medina"),
    name_row("gbif", "g-cecidomyiidae", "Cecidomyiidae", "family", (*ANT[:3], "Diptera", "")),
    # ITIS: species only, as in species_level_taxonomy_chains.csv.
    name_row("itis", "i-morus-alba", "Morus alba", "species", MULBERRY),
    name_row("itis", "i-pica", "Pica hudsonia", "species", MAGPIE),
    name_row("itis", "i-laelia-anceps", "Laelia anceps", "species", ORCHID),
    name_row("inat", "n-pica", "Pica hudsonia", "species", MAGPIE),
    # The EOL Dynamic Hierarchy: the pages of hard_cases.toml (names as the DH spells them), and two genus pages.
    name_row("eol", "EOL-1", "Morus bassanus", "species", BIRD, "Morus", page=90000001),
    name_row("eol", "EOL-2", "Morus alba", "species", MULBERRY, "Morus", page=90000002),
    name_row("eol", "EOL-3", "Laelia anceps", "species", ORCHID, "Laelia", page=90000003),
    name_row("eol", "EOL-4", "Felis concolor", "species", CAT, "Puma", page=90000004),
    name_row("eol", "EOL-5", "<i>Pica hudsonia</i> (Sabine, 1823)", "species", METAZOA_MAGPIE, "Pica", page=90000005),
    name_row("eol", "EOL-6", "Gadus morhua", "species", METAZOA_COD, "Gadus", page=90000006),
    name_row("eol", "EOL-7", "Morus", "genus", BIRD, "Morus", page=90000007),
    name_row("eol", "EOL-8", "Morus", "genus", NO_CHAIN, "", page=90000008),
]
HARD_VERNACULARS = [
    ("gbif", "g-morus-bassanus", None, "Northern Gannet", "en", False, "Catalogue of Life"),
    ("itis", "i-morus-alba", None, "white mulberry", "en", False, "itis"),
    ("itis", "i-pica", None, "Black-billed Magpie, American Magpie", "en", False, "itis"),
    ("inat", "n-pica", None, "Black-billed magpie", "en", False, "inat"),
    ("eol", "", 90000005, "Pie d'Amérique", "fr", True, "EOL"),
    ("eol", "", 90000005, "black-billed magpie &amp; kin.", "en", True, "EOL Dynamic Hierarchy"),
    ("eol", "", 90000004, "Cougar", "en", True, "EOL"),
    ("gbif", "g-puma", None, "Mountain Lion", "en", False, "gbif"),
    ("eol", "", 90000006, "Atlantic cod", "en", False, "Wikipedia"),
]


def eol(page: int) -> SourceLabel:
    return SourceLabel("eol", f"eol:{page}", page_id=page)


def bioscan(order: str, family: str, genus: str, species: str) -> SourceLabel:
    return SourceLabel("bioscan", f"bioscan:{order}|{family}|{genus}|{species}",
                       ("", "", "", order, family, genus, ""), species or genus or family or order)


HARD_LABELS = [
    *(eol(p) for p in range(90000001, 90000009)),
    bioscan("Lepidoptera", "Erebidae", "Laelia", "Laelia coenosa"),
    bioscan("Diptera", "Cecidomyiidae", "", ""),
    bioscan("Diptera", "Tachinidae", "Medina", "Medina Malaise6902"),
    bioscan("Hymenoptera", "Formicidae", "Procryptocerus", "Procryptocerus scabriuscula"),
]


@pytest.fixture(scope="module")
def hard_db():
    con = authority_db(HARD_NAMES, HARD_VERNACULARS)
    yield con
    con.close()


@pytest.fixture(scope="module")
def hard(hard_db) -> Resolution:
    return resolve_labels(hard_db, HARD_LABELS, get_profile("bioclip-v1"))


def outcome(resolution: Resolution, key: str):
    """(mapping, taxon or None) of one label."""
    mapping = next(m for m in resolution.mappings if m.key == key)
    return mapping, next((t for t in resolution.taxa if t.taxon_id == mapping.taxon_id), None)


def kit_key(case: dict) -> str:
    if case["source"] == "eol":
        return f"eol:{case['page_id']}"
    b = case["bioscan"]
    return f"bioscan:{b['order']}|{b['family']}|{b['genus']}|{b['species']}"


def test_every_hard_case_of_the_kit_reaches_its_expected_ranks(hard):
    with open(data_manifests.path("sample_kit/hard_cases.toml"), "rb") as f:
        cases = tomllib.load(f)["case"]
    assert len(cases) == 10
    for case in cases:
        mapping, taxon = outcome(hard, kit_key(case))
        assert taxon is not None, (case["id"], mapping)
        assert taxon.ranks == tuple(case["expected"]), case["id"]
        assert taxon.taxon_id == taxon_id(tuple(case["expected"]))


def test_homonym_genus_is_decided_by_the_kingdom_the_source_gives(hard):
    _, bird = outcome(hard, "eol:90000001")
    _, plant = outcome(hard, "eol:90000002")
    assert bird.ranks[0] == "Animalia" and plant.ranks[0] == "Plantae"
    assert plant.authorities == ("itis",) * 7  # bioclip-v1: ITIS first
    _, genus_page = outcome(hard, "eol:90000007")  # a genus page: both GBIF Morus genera are candidates
    assert genus_page.ranks == (*BIRD, "Morus", "")
    assert genus_page.authorities[:6] == ("gbif",) * 6 and genus_page.status == "partial"


def test_bioscan_laelia_takes_the_moth_genus_and_keeps_its_epithet(hard):
    _, moth = outcome(hard, "bioscan:Lepidoptera|Erebidae|Laelia|Laelia coenosa")
    assert moth.ranks == (*MOTH, "Laelia", "coenosa")
    assert moth.authorities == ("gbif",) * 6 + ("bioscan",)
    assert moth.matches == ("exact",) * 6 + ("given",)
    _, orchid = outcome(hard, "eol:90000003")
    assert orchid.ranks == (*ORCHID, "Laelia", "anceps") and orchid.authorities[0] == "itis"


def test_a_genus_in_two_kingdoms_without_deciding_ranks_is_a_conflict_not_a_guess(hard):
    mapping, taxon = outcome(hard, "eol:90000008")
    assert taxon is None and mapping.status == "unresolved" and mapping.reason == "ambiguous_homonym"
    [conflict] = [c for c in hard.conflicts if c.key == "eol:90000008"]
    assert {ranks[0] for _, ranks in conflict.candidates} == {"Animalia", "Plantae"}
    assert "'Morus'" in conflict.why
    assert [u.reason for u in hard.unresolved] == [UnresolvedReason.AMBIGUOUS_HOMONYM]


def test_a_source_that_gives_no_ranks_is_ambiguous_too():
    con = authority_db(HARD_NAMES)
    label = SourceLabel("inat21", "inat21:1", ("", "", "", "", "", "Morus", ""), "Morus")
    result = resolve_labels(con, [label], get_profile("gbif-first"))
    assert result.unresolved[0].reason == UnresolvedReason.AMBIGUOUS_HOMONYM and len(result.conflicts) == 1
    assert result.taxa == ()


def test_synonym_resolves_to_the_accepted_name(hard):
    mapping, cougar = outcome(hard, "eol:90000004")
    assert cougar.ranks == (*CAT, "Puma", "concolor")
    assert cougar.authorities == ("gbif",) * 7 and cougar.match == Match.SYNONYM and mapping.match == "synonym"
    assert (cougar.common_name, cougar.common_name_source) == ("Cougar", "eol_preferred")  # the page's own name


def test_html_and_authorship_in_the_dh_name_match_canonically_and_metazoa_is_animalia(hard):
    _, magpie = outcome(hard, "eol:90000005")
    assert magpie.ranks == (*MAGPIE, "Pica", "hudsonia")
    assert magpie.authorities == ("itis",) * 7 and magpie.matches == ("canonical",) * 7
    assert (magpie.common_name, magpie.common_name_source) == ("Black-billed Magpie", "itis")


def test_fish_without_class_keeps_class_empty(hard):
    _, cod = outcome(hard, "eol:90000006")
    assert cod.ranks == ("Animalia", "Chordata", "", "Gadiformes", "Gadidae", "Gadus", "morhua")
    assert cod.authorities == ("eol", "eol", "", "eol", "eol", "eol", "eol")
    assert cod.matches[2] == "" and cod.common_name == "Atlantic cod" and cod.common_name_source == "eol_english"


def test_bioscan_family_only_and_placeholder_labels_are_partial(hard):
    mapping, gall = outcome(hard, "bioscan:Diptera|Cecidomyiidae||")
    assert gall.ranks == ("Animalia", "Arthropoda", "Insecta", "Diptera", "Cecidomyiidae", "", "")
    assert gall.status == "partial" and mapping.status == "partial" and gall.authorities[4] == "gbif"
    assert (gall.common_name, gall.common_name_source) == ("Cecidomyiidae", "fallback:scientific")
    mapping, medina = outcome(hard, "bioscan:Diptera|Tachinidae|Medina|Medina Malaise6902")
    assert medina.ranks == (*TACHINID, "Medina", "")
    assert "BOLD interim name" in mapping.reason and medina.common_name == "Medina"


def test_misspelt_epithet_matches_fuzzily_within_its_genus(hard):
    mapping, ant = outcome(hard, "bioscan:Hymenoptera|Formicidae|Procryptocerus|Procryptocerus scabriuscula")
    assert ant.ranks == (*ANT, "Procryptocerus", "scabriusculus")
    assert ant.matches == ("fuzzy",) * 7 and ant.authorities == ("gbif",) * 7 and mapping.match == "fuzzy"
    assert "scabriusculus" in mapping.reason


def test_fuzzy_off_keeps_the_epithet_as_given(hard_db):
    profile = dataclasses.replace(get_profile("bioclip-v1"),
                                  fuzzy=dataclasses.replace(get_profile("bioclip-v1").fuzzy, enabled=False))
    label = bioscan("Hymenoptera", "Formicidae", "Procryptocerus", "Procryptocerus scabriuscula")
    [taxon] = resolve_labels(hard_db, [label], profile).taxa
    assert taxon.ranks[5:] == ("Procryptocerus", "scabriuscula") and taxon.matches[6] == "given"


def test_fuzzy_does_not_guess_between_equally_close_epithets():
    rows = [name_row("gbif", "a", "Aus alba", "species", ANT), name_row("gbif", "b", "Aus alva", "species", ANT)]
    label = SourceLabel("bioscan", "bioscan:x", ("", "", "", "Hymenoptera", "Formicidae", "Aus", ""), "Aus alna")
    result = resolve_labels(authority_db(rows), [label], get_profile("bioclip-v1"))
    assert result.taxa[0].ranks[6] == "alna" and "not guessed" in result.mappings[0].reason


@pytest.mark.parametrize(("a", "b", "distance"), [("scabriuscula", "scabriusculus", 2), ("abc", "acb", 1),
                                                  ("", "abc", 3), ("kitten", "sitting", 3), ("same", "same", 0)])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b, 5) == distance
    assert edit_distance(a, b, 1) == min(distance, 2)


PRECEDENCE_NAMES = [
    name_row("itis", "i-t", "Testudo graeca", "species", ("Animalia", "Chordata", "Reptilia", "", "Testudinidae")),
    name_row("gbif", "g-t", "Testudo graeca", "species",
             ("Animalia", "Chordata", "Testudines", "Testudines", "Testudinidae")),
    name_row("eol", "EOL-9", "Testudo graeca", "species",
             ("Animalia", "Chordata", "Reptilia", "Testudines", "Testudinidae"), "Testudo", page=90000009),
]


def test_profiles_take_ranks_from_different_authorities_when_they_disagree():
    con = authority_db(PRECEDENCE_NAMES)
    [itis_first] = resolve_labels(con, [eol(90000009)], get_profile("bioclip-v1")).taxa
    [gbif_first] = resolve_labels(con, [eol(90000009)], get_profile("gbif-first")).taxa
    assert itis_first.ranks == ("Animalia", "Chordata", "Reptilia", "Testudines", "Testudinidae", "Testudo", "graeca")
    # ITIS lacks the order; GBIF disagrees on the class, so the consistent DH chain fills it.
    assert itis_first.authorities == ("itis", "itis", "itis", "eol", "itis", "itis", "itis")
    assert gbif_first.ranks[2:4] == ("Testudines", "Testudines") and gbif_first.authorities == ("gbif",) * 7


def test_without_fill_missing_the_gap_stays():
    profile = dataclasses.replace(get_profile("bioclip-v1"), fill_missing=False)
    [taxon] = resolve_labels(authority_db(PRECEDENCE_NAMES), [eol(90000009)], profile).taxa
    assert taxon.ranks[3] == "" and taxon.authorities[3] == ""


def test_inat21_labels_are_taken_as_given_by_bioclip_v1(hard_db):
    label = SourceLabel("inat21", "inat21:7", ("ANIMALIA", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus",
                                               "Bassanus"), "Morus bassanus", common_name="Northern Gannet")
    [taxon] = resolve_labels(hard_db, [label], get_profile("bioclip-v1")).taxa
    assert taxon.ranks == (*BIRD, "Morus", "bassanus")
    assert taxon.authorities == ("inat21",) * 7 and taxon.matches == ("given",) * 7
    assert (taxon.common_name, taxon.common_name_source) == ("Northern Gannet", "given:inat21")
    [checked] = resolve_labels(hard_db, [label], get_profile("gbif-first")).taxa  # gbif-first looks it up
    assert checked.ranks == taxon.ranks and checked.authorities == ("gbif",) * 7


def test_malformed_and_empty_inputs_never_crash(hard_db):
    profile = get_profile("bioclip-v1")
    assert resolve_labels(hard_db, [], profile) == Resolution((), (), (), ())
    labels = [SourceLabel("inat21", "inat21:empty"), SourceLabel("bioscan", "bioscan:|||"),
              bioscan("", "", "", "sp."), eol(12345), SourceLabel("eol", "eol:"),
              SourceLabel("inat21", "inat21:bare", name="Nonexistus bogus")]
    result = resolve_labels(hard_db, labels, dataclasses.replace(profile, as_given=()))
    reasons = {u.key: u.reason for u in result.unresolved}
    assert reasons == {"inat21:empty": "no_name", "bioscan:|||": "no_name", "bioscan:|||sp.": "placeholder_only",
                       "eol:12345": "eol_page_unknown", "eol:": "eol_page_unknown", "inat21:bare": "no_match"}
    assert all(m.taxon_id is None and m.status == "unresolved" for m in result.mappings) and not result.taxa
    with pytest.raises(ValueError, match="unknown label source"):
        SourceLabel("gbif", "gbif:1")
    with pytest.raises(ValueError, match="seven str ranks"):
        SourceLabel("eol", "eol:1", ("Animalia",))
    with pytest.raises(ValueError, match="batch_size"):
        resolve_labels(hard_db, [], profile, batch_size=0)


def test_partial_labels_are_dropped_where_the_profile_keeps_none(hard_db):
    profile = dataclasses.replace(get_profile("bioclip-v1"), keep_partial=("eol",))
    result = resolve_labels(hard_db, [bioscan("Diptera", "Cecidomyiidae", "", "")], profile)
    assert result.unresolved[0].reason == UnresolvedReason.PARTIAL_NOT_KEPT and not result.taxa


def test_repeated_keys_keep_the_first_label(hard_db):
    first, again = eol(90000001), SourceLabel("eol", "eol:90000001", page_id=90000002)
    result = resolve_labels(hard_db, [first, again], get_profile("bioclip-v1"))
    assert len(result.mappings) == 1 and result.taxa[0].ranks[0] == "Animalia"


def test_deterministic_and_independent_of_batching_and_order(hard_db, hard):
    profile = get_profile("bioclip-v1")
    shuffled = list(HARD_LABELS)
    random.Random(7).shuffle(shuffled)
    assert resolve_labels(hard_db, HARD_LABELS, profile) == hard
    assert resolve_labels(hard_db, shuffled, profile, batch_size=2) == hard
    assert resolve_labels(hard_db, iter(HARD_LABELS), profile, batch_size=1) == hard
    assert [m.key for m in hard.mappings] == sorted(m.key for m in hard.mappings)
    assert [t.taxon_id for t in hard.taxa] == sorted(t.taxon_id for t in hard.taxa)


def test_rare_species_labels_pass_through_unchanged_with_their_common_names(shared_data):
    frame = pd.read_csv(shared_data / "bioclip/data/annotation/rare_species/metadata.csv", keep_default_na=False)
    columns = ["kingdom", "phylum", "cls", "order", "family", "genus", "species"]
    rows = frame[[*columns, "common_name"]].drop_duplicates().reset_index(drop=True)
    assert len(rows) == 400
    labels = [SourceLabel("inat21", f"inat21:rare{i}", tuple(row[c] for c in columns),
                          f"{row['genus']} {row['species']}", common_name=row["common_name"])
              for i, row in rows.iterrows()]
    result = resolve_labels(authority_db([]), labels, get_profile("bioclip-v1"))
    assert not result.unresolved and not result.conflicts and len(result.taxa) == 400
    taxa = {t.taxon_id: t for t in result.taxa}
    mappings = {m.key: m for m in result.mappings}
    for label in labels:
        taxon = taxa[mappings[label.key].taxon_id]
        assert taxon.ranks == label.ranks and taxon.status == "resolved"
        assert (taxon.common_name, taxon.common_name_source) == (label.common_name, "given:inat21")
