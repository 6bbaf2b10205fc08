"""The authorities database: table definitions, and the small vocabularies every loader shares.

Tables (DuckDB):
- `names`: one row per authority name usage (accepted, synonym or doubtful), ranks cleaned by taxonomy.names.
- `vernaculars`: common names per authority, keyed by taxon_id (EOL: by page_id).
- `eol_provider_ids`: EOL provider_ids.csv (DH node -> EOL page).
- `load_problems`: every malformed row (file, line, reason); `rejected` says whether the row was left out.
- `loads`: one row per file read, with row counts and the file's sha256.
Columns after the first block of each table (`scientific_name` in names, `source_file`/`source_line` in
vernaculars, `rejected` in load_problems) are additions to the agreed schema; consumers may ignore them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

AUTHORITIES = ("gbif", "itis", "inat", "eol", "eol_resource")

NAMES_DDL = """
CREATE TABLE names (
    authority VARCHAR, taxon_id VARCHAR, name VARCHAR, name_norm VARCHAR, rank VARCHAR, status VARCHAR,
    accepted_id VARCHAR, parent_id VARCHAR,
    kingdom VARCHAR, phylum VARCHAR, class VARCHAR, "order" VARCHAR, family VARCHAR, genus VARCHAR,
    epithet VARCHAR, authorship VARCHAR, page_id BIGINT, source_file VARCHAR, source_line BIGINT,
    scientific_name VARCHAR)"""
VERNACULARS_DDL = """
CREATE TABLE vernaculars (
    authority VARCHAR, taxon_id VARCHAR, page_id BIGINT, name VARCHAR, language VARCHAR, preferred BOOLEAN,
    source VARCHAR, source_file VARCHAR, source_line BIGINT)"""
PROVIDER_IDS_DDL = """
CREATE TABLE eol_provider_ids (
    node_id VARCHAR, resource_pk VARCHAR, resource_id VARCHAR, page_id BIGINT, preferred_canonical VARCHAR)"""
PROBLEMS_DDL = """
CREATE TABLE load_problems (
    authority VARCHAR, file VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR, rejected BOOLEAN)"""
LOADS_DDL = """
CREATE TABLE loads (
    authority VARCHAR, file VARCHAR, rows_loaded BIGINT, rows_rejected BIGINT, sha256 VARCHAR)"""
TABLES_DDL = (VERNACULARS_DDL, PROVIDER_IDS_DDL, PROBLEMS_DDL, LOADS_DDL)

# The staging table every loader fills; `finish_names` cleans its names and ranks into `names`.
STAGE_DDL = """
CREATE TEMP TABLE stage_names (
    authority VARCHAR, taxon_id VARCHAR, raw_name VARCHAR, rank VARCHAR, status VARCHAR, raw_status VARCHAR,
    accepted_id VARCHAR,
    parent_id VARCHAR, kingdom VARCHAR, phylum VARCHAR, class VARCHAR, "order" VARCHAR, family VARCHAR,
    genus VARCHAR, authorship VARCHAR, page_id BIGINT, scientific_name VARCHAR, source_file VARCHAR,
    source_line BIGINT)"""


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the empty tables of an authorities database (`names` and TABLES_DDL) on `con`."""
    for ddl in (NAMES_DDL, *TABLES_DDL):
        con.execute(ddl)


HIGHER_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
# Ranks whose names are binomials (or longer): cleaned by canonicalise, not rank_name.
SPECIES_RANKS = ("species", "subspecies", "variety", "varietas", "form", "forma", "subvariety", "subform",
                 "infraspecies", "infraspecific name", "infrasubspecific name", "hybrid", "infrahybrid", "race",
                 "morph", "aberration", "natio", "proles", "convariety", "cultivar", "strain")

# Authority status (lower-case, as given) -> our status. Unknown statuses load as 'doubtful' with a problem row.
STATUS = {
    "": "accepted", "accepted": "accepted", "valid": "accepted",
    "doubtful": "doubtful", "provisionally accepted": "doubtful",
    "synonym": "synonym", "heterotypic synonym": "synonym", "homotypic synonym": "synonym",
    "proparte synonym": "synonym", "pro parte synonym": "synonym", "homotypic_synonym": "synonym",
    "heterotypic_synonym": "synonym", "proparte_synonym": "synonym", "ambiguous synonym": "synonym",
    "misapplied": "synonym", "misapplied name": "synonym", "invalid": "synonym", "not accepted": "synonym",
}

# Vernacular language as given (lower-case) -> ISO 639-1. Unlisted values load lower-cased as given.
# TODO(taxonomy): move to data_manifests/taxonomy/languages.csv once the registry owner adds it.
LANGUAGES = {
    "en": "en", "eng": "en", "english": "en", "fr": "fr", "fra": "fr", "fre": "fr", "french": "fr",
    "de": "de", "deu": "de", "ger": "de", "german": "de", "es": "es", "spa": "es", "spanish": "es",
    "pt": "pt", "por": "pt", "portuguese": "pt", "it": "it", "ita": "it", "italian": "it",
    "nl": "nl", "nld": "nl", "dut": "nl", "dutch": "nl", "ru": "ru", "rus": "ru", "russian": "ru",
    "zh": "zh", "zho": "zh", "chi": "zh", "chinese": "zh", "ja": "ja", "jpn": "ja", "japanese": "ja",
    "sv": "sv", "swe": "sv", "swedish": "sv", "da": "da", "dan": "da", "danish": "da",
    "hi": "hi", "hin": "hi", "hindi": "hi", "ta": "ta", "tam": "ta", "tamil": "ta", "ml": "ml", "mal": "ml",
    "malayalam": "ml", "kn": "kn", "kan": "kn", "kannada": "kn", "mr": "mr", "mar": "mr", "marathi": "mr",
    "te": "te", "tel": "te", "telugu": "te", "bn": "bn", "ben": "bn", "bengali": "bn", "gu": "gu", "guj": "gu",
    "gujarati": "gu", "or": "or", "ori": "or", "ory": "or", "oriya": "or", "sa": "sa", "san": "sa", "sanskrit": "sa",
    "ko": "ko", "kor": "ko", "korean": "ko", "pl": "pl", "pol": "pl", "polish": "pl", "fi": "fi", "fin": "fi",
    "finnish": "fi", "no": "no", "nor": "no", "norwegian": "no", "ar": "ar", "ara": "ar", "arabic": "ar",
    "la": "la", "lat": "la", "latin": "la",
}
