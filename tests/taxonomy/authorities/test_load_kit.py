"""The sample kit's authority dumps load into one database with the hard cases intact."""

import csv
import gzip
import json
from pathlib import Path

import duckdb

from taxonomy.authorities import load_authorities

KIT_FILES = {  # relative path -> (authority, EXPECTED.json count)
    "authorities/gbif/Taxon.tsv": ("gbif", "gbif_taxa"),
    "authorities/gbif/VernacularName.tsv": ("gbif", "gbif_vernaculars"),
    "authorities/itis/species_level_taxonomy_chains.csv": ("itis", "itis_chains"),
    "authorities/inat/taxa.csv": ("inat", "inat_taxa"),
    "authorities/inat/VernacularNames-english.csv": ("inat", "inat_vernaculars"),
    "eol/dh/taxon.tab": ("eol", "eol_dh_nodes"),
    "eol/provider_ids.csv.gz": ("eol", "eol_provider_ids"),
    "eol/vernacularnames.csv": ("eol", "eol_vernaculars"),
}


def data_rows(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) - 1


def test_every_kit_dump_loads_with_its_row_count(kit, kit_load, kit_db):
    expected = json.loads((kit / "EXPECTED.json").read_text())["counts"]["authorities"]
    assert kit_load.authorities == ("gbif", "itis", "inat", "eol")
    assert kit_load.missing == ("eol_resource_taxon", "eol_resource_vernacular")
    loads = {Path(file).relative_to(kit).as_posix(): (authority, loaded, rejected, sha)
             for authority, file, loaded, rejected, sha in kit_db.execute("SELECT * FROM loads").fetchall()}
    assert set(loads) == set(KIT_FILES)
    for relative, (authority, count_key) in KIT_FILES.items():
        got_authority, loaded, rejected, sha = loads[relative]
        assert got_authority == authority
        assert loaded == data_rows(kit / relative) - rejected == expected[count_key], relative
        assert len(sha) == 64


def test_table_rows_match_the_files(kit_load, kit_db):
    count = {a: n for a, n in kit_db.execute("SELECT authority, count(*) FROM names GROUP BY 1").fetchall()}
    loaded = {Path(f).name: n for f, n in kit_db.execute("SELECT file, rows_loaded FROM loads").fetchall()}
    assert count["gbif"] == loaded["Taxon.tsv"]
    assert count["inat"] == loaded["taxa.csv"]
    assert count["eol"] == loaded["taxon.tab"]
    assert kit_db.execute("SELECT count(*) FROM eol_provider_ids").fetchone()[0] == loaded["provider_ids.csv.gz"]
    assert kit_load.names == sum(count.values())
    # Nothing in the kit is malformed.
    assert kit_db.execute("SELECT authority, reason, count(*) FROM load_problems GROUP BY ALL").fetchall() == []


def test_both_morus_genera_keep_their_kingdoms(kit_db):
    for authority in ("gbif", "eol", "inat"):
        rows = kit_db.execute("""SELECT kingdom, class, family FROM names
                                 WHERE authority = ? AND name_norm = 'morus' AND rank = 'genus' ORDER BY 1""",
                              [authority]).fetchall()
        if authority == "inat" and not rows:
            continue  # the kit's iNat pool need not hold them
        assert rows == [("Animalia", "Aves", "Sulidae"), ("Plantae", "Magnoliopsida", "Moraceae")], authority


def test_felis_concolor_is_a_synonym_of_puma_concolor(kit_db):
    felis = kit_db.execute("""SELECT status, accepted_id, genus FROM names
                              WHERE authority = 'gbif' AND name_norm = 'felis concolor'""").fetchone()
    status, accepted_id, genus = felis
    assert (status, genus) == ("synonym", "Puma")
    accepted = kit_db.execute("SELECT name, status, accepted_id FROM names WHERE authority = 'gbif' AND taxon_id = ?",
                              [accepted_id]).fetchone()
    assert accepted == ("Puma concolor", "accepted", accepted_id)


def test_dh_ranks_come_from_the_parent_chain(kit_db):
    row = kit_db.execute("""SELECT kingdom, phylum, class, "order", family, genus, epithet, page_id, authorship
                            FROM names WHERE authority = 'eol' AND name_norm = 'gadus morhua'""").fetchone()
    assert row == ("Animalia", "Chordata", "", "Gadiformes", "Gadidae", "Gadus", "morhua", 90000006, "Linnaeus, 1758")
    magpie = kit_db.execute("SELECT name, class FROM names WHERE authority = 'eol' AND page_id = 90000005").fetchone()
    assert magpie == ("Pica hudsonia", "Aves")  # `<i>Pica hudsonia</i> (Sabine, 1823)` in the DH


def test_dh_kingdoms_are_normalised(kit_db):
    kingdoms = kit_db.execute("""SELECT scientific_name, name, kingdom FROM names
                                 WHERE authority = 'eol' AND rank = 'kingdom' ORDER BY 1""").fetchall()
    assert ("Metazoa", "Animalia", "Animalia") in kingdoms
    assert ("Chloroplastida", "Plantae", "Plantae") in kingdoms
    below = {k for (k,) in kit_db.execute("SELECT DISTINCT kingdom FROM names WHERE authority = 'eol'").fetchall()}
    assert below <= {"", "Animalia", "Plantae", "Fungi"} and "Animalia" in below
    # Nodes above the kingdom (Life, Eukaryota, Opisthokonta) have no kingdom.
    eukaryota = kit_db.execute("SELECT kingdom FROM names WHERE authority = 'eol' AND name = 'Eukaryota'").fetchone()
    assert eukaryota == ("",)


def test_itis_chains_give_every_node_once_with_its_parent(kit, kit_db):
    nodes = {tsn: (name, rank, parent) for tsn, name, rank, parent in kit_db.execute(
        "SELECT taxon_id, name, rank, parent_id FROM names WHERE authority = 'itis'").fetchall()}
    with open(kit / "authorities/itis/species_level_taxonomy_chains.csv", newline="", encoding="utf-8") as f:
        chains = list(csv.DictReader(f))
    for chain in chains:
        tsns = chain["hierarchy_string_tsn"].split("-")
        names = chain["hierarchy_string_names"].split("->")
        assert nodes[chain["terminal_tsn"]][:2] == (chain["terminal_scientific_name"], "species")
        for i, tsn in enumerate(tsns):
            assert nodes[tsn][0] == names[i]
            assert nodes[tsn][2] == (tsns[i - 1] if i else "")
        # The ranks derived from the hierarchy strings agree with the file's own per-rank columns.
        ranks = kit_db.execute("""SELECT kingdom, phylum, class, "order", family, genus, epithet FROM names
                                  WHERE authority = 'itis' AND taxon_id = ?""", [chain["terminal_tsn"]]).fetchone()
        assert ranks == (*(chain[r] for r in ("Kingdom", "Phylum", "Class", "Order", "Family", "Genus")),
                         chain["Species"].split()[1])
    assert kit_db.execute("SELECT count(*) FROM vernaculars WHERE authority = 'itis'").fetchone()[0] == sum(
        1 for c in chains if c["terminal_vernacular"])


def test_vernaculars_carry_iso_languages_and_eol_preference(kit_db):
    assert {lang for (lang,) in kit_db.execute("SELECT DISTINCT language FROM vernaculars").fetchall()} == {"en"}
    gannet = kit_db.execute("""SELECT name, preferred, source FROM vernaculars
                               WHERE authority = 'eol' AND page_id = 90000001 ORDER BY preferred DESC""").fetchall()
    assert gannet == [("Northern Gannet", True, "EOL Dynamic Hierarchy"), ("northern gannet", False, "Wikipedia")]


def test_reloading_gives_identical_tables(kit, kit_load, tmp_path):
    again = load_authorities(kit, tmp_path / "again.duckdb")
    with (duckdb.connect(str(kit_load.db_path), read_only=True) as a,
          duckdb.connect(str(again.db_path), read_only=True) as b):
        for table in ("names", "vernaculars", "eol_provider_ids", "load_problems", "loads"):
            query = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), table
