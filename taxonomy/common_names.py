"""English common names for resolved taxa, by the profile's precedence, cleaned, with their source.

    >>> clean_common_name("black-billed magpie &amp; kin.")
    'black-billed magpie & kin'

Sources (profile key `common_names.precedence`): `given` (the label's own name, e.g. iNat21's; kept only in Latin
script, since the source does not say its language), `itis` (the first of ITIS's comma-separated
`terminal_vernacular`), `inat`, `eol_preferred` (EOL's preferred English name), `eol_english` (any English EOL
name), `gbif`. Only English vernacular rows are candidates. Without any, the name falls back to the scientific name,
then the taxonomic string (sources `fallback:scientific`, `fallback:taxonomic`), as the captions do.
`common_names` looks names up in batches: one query on `names` (to find each authority's id for the scientific
name) and one on `vernaculars` per batch, never one per taxon.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

import duckdb
import pyarrow as pa

from taxonomy.captions import RANKS, Label, names
from taxonomy.profiles import Profile

log = logging.getLogger(__name__)
Ranks = tuple[str, str, str, str, str, str, str]
AuthorityId = tuple[str, str]  # (authority, taxon_id)
ENGLISH = ("en", "eng", "english")
FALLBACK_SCIENTIFIC, FALLBACK_TAXONOMIC = "fallback:scientific", "fallback:taxonomic"
_TAG = re.compile(r"<[^<>]*>")
_EDGE = " \t.,;:/&|-_*"


@dataclass(frozen=True, slots=True)
class CommonNameRequest:
    """What is known of one taxon: its ranks, names its labels gave, and authority ids the resolver matched."""

    taxon_id: str
    ranks: Ranks
    given: tuple[tuple[str, str], ...] = ()  # (label source, common name), best first
    ids: tuple[AuthorityId, ...] = ()
    page_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CommonName:
    name: str
    source: str  # a common_names.precedence key (`given:<source>` for a label's own), or a fallback


def is_english(language: str | None) -> bool:
    """Whether a vernacular row's language code means English (`en`, `eng`, `English`, `en-GB`)."""
    code = (language or "").strip().lower().replace("_", "-")
    return code in ENGLISH or code.startswith("en-")


def clean_common_name(text: str | None) -> str:
    """Decode HTML entities, drop tags, collapse whitespace and strip stray punctuation at the ends."""
    out = _TAG.sub(" ", html.unescape(html.unescape(text or "")))
    out = " ".join(out.split()).strip(_EDGE)
    if len(out) > 1 and out[0] == out[-1] == '"':
        out = out[1:-1].strip(_EDGE)
    return out


def _latin_script(name: str) -> bool:
    return all(not c.isalpha() or c.isascii() or unicodedata.name(c, "").startswith("LATIN") for c in name)


def fallback_name(ranks: Ranks) -> CommonName:
    """The scientific name (binomial or most specific rank), else the taxonomic string, as the captions fall back."""
    if not any(ranks[:6]):
        return CommonName("", FALLBACK_TAXONOMIC)
    found = names(Label(ranks))
    if found.scientific:
        return CommonName(found.scientific, FALLBACK_SCIENTIFIC)
    return CommonName(found.taxonomic, FALLBACK_TAXONOMIC)


def choose_common_name(request: CommonNameRequest, found: Mapping[str, list[str]], profile: Profile) -> CommonName:
    """The first usable name by the profile's precedence (pure); `found` maps a precedence key to raw names."""
    for key in profile.common_name_precedence:
        if key == "given":
            for source, raw in request.given:
                if (name := clean_common_name(raw)) and _latin_script(name):
                    return CommonName(name, f"given:{source}")
            continue
        for raw in found.get(key, ()):
            # ITIS's terminal_vernacular may list several names; the first is its own preferred one.
            name = clean_common_name(raw.split(",")[0] if key == "itis" else raw)
            if name:
                return CommonName(name, key)
    return fallback_name(request.ranks)


def _level(ranks: Ranks) -> tuple[str, str]:
    """(lower-case name to look up, its rank) for the most specific rank of a taxon."""
    if ranks[5] and ranks[6]:
        return f"{ranks[5]} {ranks[6]}".lower(), "species"
    index = max((i for i, r in enumerate(ranks[:6]) if r), default=-1)
    return (ranks[index].lower(), RANKS[index]) if index >= 0 else ("", "")


_IDS_SQL = """
SELECT q.req, n.authority, n.taxon_id, n.page_id
FROM _tol_cn_q q JOIN names n ON n.name_norm = q.qname AND n.rank = q.qrank
WHERE n.status <> 'synonym' AND (q.kingdom = '' OR coalesce(n.kingdom, '') IN ('', q.kingdom))
"""
_VERNACULAR_SQL = """
SELECT i.req, v.authority, v.name, v.language, coalesce(v.preferred, false), i.ord
FROM _tol_cn_ids i JOIN vernaculars v ON v.authority = i.authority AND v.taxon_id = i.taxon_id
WHERE v.authority <> 'eol' AND coalesce(v.name, '') <> '' AND {english}
UNION ALL
SELECT p.req, 'eol', v.name, v.language, coalesce(v.preferred, false), p.ord
FROM _tol_cn_pages p JOIN vernaculars v ON v.authority = 'eol' AND v.page_id = p.page_id
WHERE coalesce(v.name, '') <> '' AND {english}
"""
_ENGLISH_SQL = ("(lower(replace(v.language, '_', '-')) IN ('en', 'eng', 'english') "
                "OR lower(replace(v.language, '_', '-')) LIKE 'en-%')")


def _fetch(con: duckdb.DuckDBPyConnection, batch: list[CommonNameRequest]) -> list[dict[str, list[str]]]:
    """Vernacular candidates of each request of a batch: one query on names, one on vernaculars."""
    levels = [_level(r.ranks) for r in batch]
    query = pa.table({"req": pa.array(range(len(batch)), pa.int64()), "qname": [q for q, _ in levels],
                      "qrank": [r for _, r in levels], "kingdom": [r.ranks[0] for r in batch]})
    con.register("_tol_cn_q", query)
    try:
        looked_up = con.execute(_IDS_SQL).fetchall()
    finally:
        con.unregister("_tol_cn_q")
    ids: dict[tuple[int, str, str], int] = {}
    pages: dict[tuple[int, int], int] = {}
    for req, request in enumerate(batch):  # the resolver's own matches rank before name look-ups
        ids.update(((req, a, t), 0) for a, t in request.ids if (req, a, t) not in ids)
        pages.update(((req, p), 0) for p in request.page_ids if (req, p) not in pages)
    for req, authority, taxon_id, page_id in looked_up:
        ids.setdefault((req, authority, taxon_id), 1)
        if authority == "eol" and page_id is not None:
            pages.setdefault((req, page_id), 1)
    id_table = pa.table({"req": pa.array([k[0] for k in ids], pa.int64()), "authority": [k[1] for k in ids],
                         "taxon_id": [k[2] for k in ids], "ord": pa.array(list(ids.values()), pa.int8())})
    page_table = pa.table({"req": pa.array([k[0] for k in pages], pa.int64()),
                           "page_id": pa.array([k[1] for k in pages], pa.int64()),
                           "ord": pa.array(list(pages.values()), pa.int8())})
    con.register("_tol_cn_ids", id_table)
    con.register("_tol_cn_pages", page_table)
    try:
        rows = con.execute(_VERNACULAR_SQL.format(english=_ENGLISH_SQL)).fetchall()
    finally:
        con.unregister("_tol_cn_ids")
        con.unregister("_tol_cn_pages")
    found: list[dict[str, list[str]]] = [defaultdict(list) for _ in batch]
    for req, authority, name, language, preferred, _ in sorted(rows, key=lambda r: (r[0], r[5], not r[4], r[2])):
        if not is_english(language):
            continue
        by_source = found[req]
        if authority == "eol":
            if preferred:
                by_source["eol_preferred"].append(name)
            by_source["eol_english"].append(name)
        else:
            by_source[authority].append(name)
    return found


def common_names(con: duckdb.DuckDBPyConnection, requests: Iterable[CommonNameRequest], profile: Profile,
                 batch_size: int = 50_000) -> dict[str, CommonName]:
    """taxon_id -> its common name for every request, by the profile's precedence, in batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: dict[str, CommonName] = {}
    iterator = iter(requests)
    while batch := list(islice(iterator, batch_size)):
        for request, found in zip(batch, _fetch(con, batch)):
            out[request.taxon_id] = choose_common_name(request, found, profile)
        log.info("common names: %d taxa named", len(out))
    return out
