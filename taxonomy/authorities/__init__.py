"""Taxonomic authority dumps (GBIF, ITIS, iNaturalist, EOL) loaded into one DuckDB database for the resolver.

    from taxonomy.authorities import load_authorities
    report = load_authorities(Path("/tmp/taxkit"), Path("out/taxonomy/authorities.duckdb"))

`schema.py` defines the tables; `reader.py` streams a dump into DuckDB keeping every malformed row as a problem;
`gbif.py`, `itis.py`, `inat.py`, `eol.py` map each format onto the schema; `clean.py` cleans names and ranks with
taxonomy.names; `load.py` finds the files and writes the database.
"""

from taxonomy.authorities.load import AuthorityFiles, FileLoad, LoadReport, load_authorities
from taxonomy.authorities.reader import MissingColumnError

__all__ = ["AuthorityFiles", "FileLoad", "LoadReport", "MissingColumnError", "load_authorities"]
