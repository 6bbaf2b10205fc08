"""Malformed dumps never stop a load: each bad row is a problem with its file and line, and the rest loads."""

import gzip
from pathlib import Path

import duckdb
import pytest

from taxonomy.authorities import AuthorityFiles, MissingColumnError, load_authorities
from taxonomy.authorities.gbif import TAXON

HEADER = ("taxonID\tdatasetID\tparentNameUsageID\tacceptedNameUsageID\toriginalNameUsageID\tscientificName\t"
          "scientificNameAuthorship\tcanonicalName\tgenericName\tspecificEpithet\tinfraspecificEpithet\ttaxonRank\t"
          "nameAccordingTo\tnamePublishedIn\ttaxonomicStatus\tnomenclaturalStatus\ttaxonRemarks\tkingdom\tphylum\t"
          "class\torder\tfamily\tgenus")


def gbif_row(taxon_id: str, name: str, rank: str = "species", parent: str = "", status: str = "accepted",
             accepted: str = "", canonical: str | None = None) -> str:
    canonical = name if canonical is None else canonical
    return "\t".join([taxon_id, "d7dddbf4", parent, accepted, "", name, "", canonical, "", "", "", rank, "", "", status,
                      "", "", "Animalia", "Chordata", "Aves", "Gruiformes", "Gruidae", "Grus"])


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def problems(db: duckdb.DuckDBPyConnection) -> list[tuple]:
    return db.execute("SELECT file, line, reason, rejected FROM load_problems ORDER BY file, line, reason").fetchall()


def test_bad_taxon_rows_are_counted_with_their_lines(tmp_path):
    taxon = write(tmp_path / "Taxon.tsv", b"\n".join([
        HEADER.encode(),
        gbif_row("1", "Grus", "genus").encode(),                                 # 2
        gbif_row("2", "Grus grus").rsplit("\t", 1)[0].encode(),                 # 3: a field short
        (gbif_row("3", "Grus americana") + "\textra").encode(),                 # 4: a field too many
        gbif_row("4", 'Grus "japonensis" (Muller, 1776)', "species", "1", canonical="Grus japonensis").encode(),  # 5
        b"",                                                                     # 6: blank, not a row
        gbif_row("x7", "Grus antigone").encode(),                                # 7: taxonID not an integer
        gbif_row("8", "Grus vipio").encode().replace(b"vipio", b"vip\xffio", 1),  # 8: not UTF-8
        gbif_row("9", "Grus nigricollis", parent="1").encode(),                  # 9
        gbif_row("10", '"Grus monacha', parent="1", canonical="").encode(),      # 10: an unclosed quote is data
        gbif_row("1", "Grus again", "genus").encode(),                           # 11: taxonID repeated
        gbif_row("12", "Grus rubicunda", status="synonym", accepted="99").encode(),  # 12: accepted not in file
    ]) + b"\n")
    report = load_authorities(AuthorityFiles(gbif_taxon=taxon), tmp_path / "a.duckdb")
    assert report.files[0].rows_loaded == 5 and report.files[0].rows_rejected == 5
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert problems(db) == [(str(taxon), 3, "field_count", True), (str(taxon), 4, "field_count", True),
                                (str(taxon), 7, "bad_id", True), (str(taxon), 8, "unreadable_line", True),
                                (str(taxon), 11, "duplicate_id", True), (str(taxon), 12, "accepted_not_found", False)]
        assert "expected 23 fields, found 22" in db.execute(
            "SELECT detail FROM load_problems WHERE line = 3").fetchone()[0]
        rows = db.execute("SELECT taxon_id, name, scientific_name, source_line FROM names ORDER BY source_line")
        assert rows.fetchall() == [("1", "Grus", "Grus", 2),
                                   ("4", "Grus japonensis", 'Grus "japonensis" (Muller, 1776)', 5),  # `"` is data
                                   ("9", "Grus nigricollis", "Grus nigricollis", 9),
                                   ("10", "", '"Grus monacha', 10),  # kept as data; canonicalise finds no genus
                                   ("12", "Grus rubicunda", "Grus rubicunda", 12)]
        assert db.execute("SELECT status, accepted_id FROM names WHERE taxon_id = '12'").fetchone() == ("synonym", "99")


def test_bad_eol_page_ids_and_gzip_rows(tmp_path):
    dh = write(tmp_path / "taxon.tab", "\n".join([
        ("taxonID\tsource\tfurtherInformationURL\tacceptedNameUsageID\tparentNameUsageID\tscientificName\t"
         "higherClassification\ttaxonRank\ttaxonomicStatus\ttaxonRemarks\tdatasetID\tcanonicalName\tEOLid\t"
         "EOLidAnnotations\tLandmark"),
        "EOL-1\t\t\t\t\tMetazoa\t\tkingdom\taccepted\t\t\tMetazoa\t1\t\t",
        "EOL-2\t\t\t\tEOL-1\tChordata\tMetazoa\tphylum\taccepted\t\t\tChordata\tpage-2\t\t",   # 3: bad EOLid
        "EOL-3\t\t\t\tEOL-2\tAves\tMetazoa|Chordata\tclass\taccepted\t\t\tAves\t695\t\t",     # 4: orphaned
        "EOL-4\t\t\t\tEOL-1\tArthropoda\tMetazoa\tphylum\taccepted\t\t\tArthropoda\t\t\t",    # 5: no page
        "EOL-5\t\t\t\tEOL-6\tAus\t\tgenus\taccepted\t\t\tAus\t5\t\t",                         # 6: a loop
        "EOL-6\t\t\t\tEOL-5\tBus\t\tgenus\taccepted\t\t\tBus\t6\t\t",                         # 7: a loop
    ]) + "\n")
    providers = tmp_path / "provider_ids.csv.gz"
    providers.write_bytes(gzip.compress(b"node_id,resource_pk,resource_id,page_id,preferred_canonical_for_page\n"
                                        b"1,EOL-1,724,1,Metazoa\n2,EOL-2,724,two,Chordata\n3,EOL-3,724,695,Aves\n"))
    report = load_authorities(AuthorityFiles(eol_dh_taxon=dh, eol_provider_ids=providers), tmp_path / "e.duckdb")
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert problems(db) == [(str(providers), 3, "bad_page_id", True), (str(dh), 3, "bad_page_id", True),
                                (str(dh), 4, "parent_not_found", False), (str(dh), 6, "parent_cycle", False),
                                (str(dh), 7, "parent_cycle", False)]
        assert db.execute("SELECT taxon_id, page_id, kingdom, phylum, genus FROM names ORDER BY 1").fetchall() == [
            ("EOL-1", 1, "Animalia", "", ""), ("EOL-3", 695, "", "", ""), ("EOL-4", None, "Animalia", "Arthropoda", ""),
            ("EOL-5", 5, "", "", ""), ("EOL-6", 6, "", "", "")]
        providers = db.execute("SELECT node_id, page_id FROM eol_provider_ids ORDER BY 1").fetchall()
        assert providers == [("1", 1), ("3", 695)]


def test_empty_and_header_only_files_are_problems_not_errors(tmp_path):
    empty = write(tmp_path / "VernacularName.tsv", "")
    header_only = write(tmp_path / "taxa.csv", "id,taxonID,identifier,parentNameUsageID,kingdom,phylum,class,order,"
                                               "family,genus,specificEpithet,infraspecificEpithet,modified,"
                                               "scientificName,taxonRank,references\n")
    report = load_authorities(AuthorityFiles(gbif_vernacular=empty, inat_taxa=header_only), tmp_path / "x.duckdb")
    assert report.authorities == ("gbif", "inat") and report.names == 0
    assert {(f.rows_loaded, f.rows_rejected) for f in report.files} == {(0, 0)}
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert problems(db) == sorted([(str(empty), 1, "empty_file", False),
                                       (str(header_only), 1, "no_data_rows", False)])


def test_csv_quoting_is_parsed_and_broken_quoting_counted(tmp_path):
    names = write(tmp_path / "VernacularNames-english.csv", "\n".join([
        "id,vernacularName,language,locality,countryCode,source,lexicon,contributor,created",
        '7,"Crane, Whooping",en,"","","The ""big"" list",English,,2008-03-13T02:35:09Z',
        '8,"Sora,en,,,,English,,2008',                 # 3: quote never closed
        '9,"Limpkin"x,en,,,,English,,2008',            # 4: text after a closing quote
        "ten,Sunbittern,en,,,,English,,2008",          # 5: id not an integer
        "11,,en,,,,English,,2008",                     # 6: no name
        "12,Sandhill Crane,,,,,English,,2008",         # 7: language from the lexicon
        ',Sora,en,"","",,English,,"2008"',             # 8: no id (a leading empty field still counts)
    ]) + "\n")
    report = load_authorities(AuthorityFiles(inat_vernacular=names), tmp_path / "q.duckdb")
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert [(line, reason) for _, line, reason, _ in problems(db)] == [
            (3, "bad_quoting"), (4, "bad_quoting"), (5, "bad_id"), (6, "missing_name"), (8, "missing_id")]
        rows = db.execute("SELECT taxon_id, name, language, source, source_line FROM vernaculars ORDER BY 1")
        assert rows.fetchall() == [("12", "Sandhill Crane", "en", "", 7),
                                   ("7", "Crane, Whooping", "en", 'The "big" list', 2)]


def test_bad_itis_chains_are_rejected(tmp_path):
    head = ("hierarchy_string_tsn,hierarchy_string_names,terminal_tsn,terminal_scientific_name,terminal_vernacular,"
            "terminal_vernacular_lang,hierarchy_string_ranks")
    chains = write(tmp_path / "species_level_taxonomy_chains.csv", "\n".join([
        head,
        ('1-2-3,Animalia->Chordata->Grus grus,3,Grus grus,"Common Crane, Eurasian Crane",English,'
         "Kingdom->Phylum->Species"),
        "1-2,Animalia->Chordata->Grus vipio,4,Grus vipio,,,Kingdom->Phylum->Species",       # 3: lengths differ
        "1-x-5,Animalia->Chordata->Grus antigone,5,Grus antigone,,,Kingdom->Phylum->Species",  # 4: bad tsn
        "1-2-6,Animalia->Chordata->Grus japonensis,7,Grus japonensis,,,Kingdom->Phylum->Species",  # 5: terminal
    ]) + "\n")
    report = load_authorities(AuthorityFiles(itis_chains=chains), tmp_path / "i.duckdb")
    assert (report.files[0].rows_loaded, report.files[0].rows_rejected) == (1, 3)
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert [(line, reason) for _, line, reason, _ in problems(db)] == [
            (3, "chain_mismatch"), (4, "bad_id"), (5, "chain_mismatch")]
        assert db.execute("SELECT taxon_id, name, parent_id, kingdom, phylum FROM names ORDER BY 1").fetchall() == [
            ("1", "Animalia", "", "Animalia", ""), ("2", "Chordata", "1", "Animalia", "Chordata"),
            ("3", "Grus grus", "2", "Animalia", "Chordata")]
        assert db.execute("SELECT name, language, preferred FROM vernaculars ORDER BY 1").fetchall() == [
            ("Common Crane", "en", True), ("Eurasian Crane", "en", False)]


def test_missing_required_column_names_file_and_column(tmp_path):
    taxon = write(tmp_path / "Taxon.tsv", HEADER.replace("\ttaxonomicStatus", "") + "\n")
    with pytest.raises(MissingColumnError, match=r"Taxon\.tsv: required column 'taxonomicStatus'"):
        load_authorities(AuthorityFiles(gbif_taxon=taxon), tmp_path / "m.duckdb")
    assert not (tmp_path / "m.duckdb").exists()
    assert "taxonomicStatus" in TAXON.required


def test_a_root_without_dumps_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no authority dump found"):
        load_authorities(tmp_path, tmp_path / "none.duckdb")


def test_crlf_line_ends_are_not_data(tmp_path):
    rows = [HEADER, gbif_row("1", "Grus", "genus"), gbif_row("2", "Grus grus", parent="1")]
    taxon = write(tmp_path / "Taxon.tsv", "\r\n".join(rows) + "\r\n")
    report = load_authorities(AuthorityFiles(gbif_taxon=taxon), tmp_path / "c.duckdb")
    with duckdb.connect(str(report.db_path), read_only=True) as db:
        assert db.execute("SELECT taxon_id, genus, source_line FROM names ORDER BY 1").fetchall() == [
            ("1", "Grus", 2), ("2", "Grus", 3)]
        assert problems(db) == []
