"""Load the authority dumps into one DuckDB database (out/taxonomy/authorities.duckdb).

    python -m taxonomy.authorities /tmp/taxkit --db out/taxonomy/authorities.duckdb

Each root is searched for the dumps at their usual places (`authorities/gbif/Taxon.tsv`, `eol/dh/taxon.tab`, ...;
see `LAYOUT`); a missing file is skipped and reported, a file present but lacking a required column stops the load.
The database is written to a temporary file and renamed into place, so a failed load leaves no half database.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
from tqdm import tqdm

from taxonomy.authorities import eol, gbif, inat, itis
from taxonomy.authorities.clean import finish_names
from taxonomy.authorities.reader import LoadSession
from taxonomy.authorities.schema import NAMES_DDL, STAGE_DDL, TABLES_DDL

log = logging.getLogger(__name__)

# Where each dump sits under a root, most specific first.
LAYOUT: dict[str, tuple[str, ...]] = {
    "gbif_taxon": ("authorities/gbif/Taxon.tsv", "gbif/Taxon.tsv", "Taxon.tsv"),
    "gbif_vernacular": ("authorities/gbif/VernacularName.tsv", "gbif/VernacularName.tsv", "VernacularName.tsv"),
    "itis_chains": ("authorities/itis/species_level_taxonomy_chains.csv", "itis/species_level_taxonomy_chains.csv",
                    "species_level_taxonomy_chains.csv"),
    "inat_taxa": ("authorities/inat/taxa.csv", "inat/dwca/taxa.csv", "inat/taxa.csv", "taxa.csv"),
    "inat_vernacular": ("authorities/inat/VernacularNames-english.csv", "inat/dwca/VernacularNames-english.csv",
                        "inat/VernacularNames-english.csv", "VernacularNames-english.csv"),
    "eol_dh_taxon": ("eol/dh/taxon.tab", "authorities/eol/dh/taxon.tab", "dh/taxon.tab"),
    "eol_provider_ids": ("eol/provider_ids.csv.gz", "eol/provider_ids.csv", "authorities/eol/provider_ids.csv.gz",
                         "authorities/eol/provider_ids.csv", "provider_ids.csv.gz", "provider_ids.csv"),
    "eol_vernacular": ("eol/vernacularnames.csv", "authorities/eol/vernacularnames.csv", "vernacularnames.csv"),
}


@dataclass(frozen=True, slots=True)
class AuthorityFiles:
    """The dump files to load; None = not available. Resource files are EOL partner DwC-A exports (optional)."""

    gbif_taxon: Path | None = None
    gbif_vernacular: Path | None = None
    itis_chains: Path | None = None
    inat_taxa: Path | None = None
    inat_vernacular: Path | None = None
    eol_dh_taxon: Path | None = None
    eol_provider_ids: Path | None = None
    eol_vernacular: Path | None = None
    eol_resource_taxon: Path | None = None
    eol_resource_vernacular: Path | None = None

    @classmethod
    def discover(cls, *roots: Path) -> AuthorityFiles:
        """The first file found for each dump under the roots, in LAYOUT order."""
        found = {key: next((p for root in roots for c in candidates if (p := Path(root) / c).is_file()), None)
                 for key, candidates in LAYOUT.items()}
        return cls(**found)

    def present(self) -> dict[str, Path]:
        """Field name -> path of every dump given."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class FileLoad:
    """What was read from one file."""

    authority: str
    file: str
    rows_loaded: int
    rows_rejected: int
    sha256: str


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The outcome of a load: which authorities and files, row totals, and how many problems were recorded."""

    db_path: Path
    authorities: tuple[str, ...]
    missing: tuple[str, ...]
    files: tuple[FileLoad, ...]
    names: int
    vernaculars: int
    problems: int
    seconds: float


# (AuthorityFiles field, authority, loader), in load order: taxa before the vernaculars that refer to them.
_STEPS: tuple[tuple[str, str, Callable[[LoadSession, Path], None]], ...] = (
    ("gbif_taxon", "gbif", gbif.load_taxa),
    ("gbif_vernacular", "gbif", gbif.load_vernaculars),
    ("itis_chains", "itis", itis.load_chains),
    ("inat_taxa", "inat", inat.load_taxa),
    ("inat_vernacular", "inat", inat.load_vernaculars),
    ("eol_dh_taxon", "eol", eol.load_dh),
    ("eol_provider_ids", "eol", eol.load_provider_ids),
    ("eol_vernacular", "eol", eol.load_vernaculars),
    ("eol_resource_taxon", "eol_resource", eol.load_resource_taxa),
    ("eol_resource_vernacular", "eol_resource", eol.load_resource_vernaculars),
)


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 8 MiB blocks (run beside the load: hashlib releases the GIL)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _as_files(sources: AuthorityFiles | Path | str | Iterable[Path | str]) -> AuthorityFiles:
    """The files to load: given, or discovered under one or more root folders."""
    if isinstance(sources, AuthorityFiles):
        return sources
    roots = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    for root in roots:
        if not root.is_dir():
            raise NotADirectoryError(f"authority root {root} is not a directory; pass the folder holding the dumps")
    files = AuthorityFiles.discover(*roots)
    if not files.present():
        raise FileNotFoundError(f"no authority dump found under {[str(r) for r in roots]}; looked for {LAYOUT}")
    return files


def load_authorities(sources: AuthorityFiles | Path | str | Iterable[Path | str], db_path: Path | str) -> LoadReport:
    """Load every available dump into a fresh DuckDB database at db_path (replaced if present)."""
    started = time.monotonic()
    files = _as_files(sources)
    present = files.present()
    for key, path in present.items():
        if not path.is_file():
            raise FileNotFoundError(f"{key}: {path} does not exist")
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".tmp")
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    with ThreadPoolExecutor(max_workers=1) as hasher:
        digests = {str(path): hasher.submit(sha256_of, path) for path in dict.fromkeys(present.values())}
        with duckdb.connect(str(tmp)) as con:
            session = LoadSession(con)
            for ddl in (*TABLES_DDL, NAMES_DDL, STAGE_DDL):
                con.execute(ddl)
            steps = [(key, authority, loader) for key, authority, loader in _STEPS if key in present]
            for key, authority, loader in tqdm(steps, desc="authorities", unit="file", disable=None):
                step_start = time.monotonic()
                loader(session, present[key])
                log.info("%s: %s read in %.1f s", authority, present[key], time.monotonic() - step_start)
            names = finish_names(con)
            loads = [FileLoad(c.authority, str(c.path), c.loaded, c.rejected, digests[str(c.path)].result())
                     for c in session.counts.values()]
            con.executemany("INSERT INTO loads VALUES (?, ?, ?, ?, ?)",
                            [(f.authority, f.file, f.rows_loaded, f.rows_rejected, f.sha256) for f in loads])
            vernaculars = con.execute("SELECT count(*) FROM vernaculars").fetchone()[0]
            problems = con.execute("SELECT count(*) FROM load_problems").fetchone()[0]
            con.execute("CHECKPOINT")
    os.replace(tmp, db_path)
    authorities = tuple(dict.fromkeys(a for key, a, _ in _STEPS if key in present))
    missing = tuple(key for key, _, _ in _STEPS if key not in present)
    report = LoadReport(db_path, authorities, missing, tuple(loads), names, vernaculars, problems,
                        time.monotonic() - started)
    log.info("loaded %s into %s: %d names, %d vernaculars, %d problems; not found: %s", ", ".join(authorities),
             db_path, names, vernaculars, problems, ", ".join(missing) or "none")
    return report


def main(argv: list[str] | None = None) -> LoadReport:
    """`python -m taxonomy.authorities ROOT... --db PATH`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding the dumps (e.g. a sample kit)")
    parser.add_argument("--db", type=Path, default=Path("out/taxonomy/authorities.duckdb"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return load_authorities(args.roots, args.db)

