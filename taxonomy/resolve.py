"""Every distinct source label to one seven-rank taxon with a common name, or to `unresolved` with a reason.

    tol taxonomy demo-out/kit demo-out/taxonomy     # labels of the kit's sources -> taxa.parquet, label_map.parquet

Rules (DESIGN.md "Taxonomy"), applied per label to candidate rows fetched in batches:
- Labels of a source the profile takes as given (bioclip-v1: iNat21) are only cleaned.
- Other labels are looked up by their most specific name (an EOL page's name comes from its Dynamic Hierarchy node,
  whose chain gives the source's ranks); synonyms lead to the accepted name. The first authority in the profile's
  precedence that has the name gives the ranks; with `fill_missing`, a rank it lacks comes from the next
  authority whose ranks agree. A species no authority has may match a close epithet of its genus (`fuzzy`), else
  its genus; what no authority has stays as the source gave it.
- Homonyms are decided by the ranks the source gives: a candidate contradicting them at the profile's
  `homonym_ranks` is another taxon, and candidates one authority cannot tell apart are narrowed by all given ranks.
  What stays ambiguous (one authority's taxa, or genera in two kingdoms) is a conflict, never a guess.
- Ranks are positional: an interior rank no one gives stays "" (nothing shifts up).
- Every rank records the authority (or label source) that gave it and how it matched (`Match`).
- A `fallback` (taxonomy.gbif_online) may replace, per batch, the decisions of labels no dump has.
Data problems give `Unresolved` with a `UnresolvedReason`; only programmer or configuration errors raise.
Queries: per batch one on the EOL pages, one on the names (synonyms joined to their accepted rows) and, for the
species nothing matched, one on the species of their genera; never one per label.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import duckdb
import pyarrow as pa

from taxonomy.captions import RANKS, Label, names
from taxonomy.common_names import CommonNameRequest, common_names
from taxonomy.names import canonicalise, normalise_kingdom, rank_name
from taxonomy.profiles import Profile
from taxonomy.records import (
    AuthorityId,
    Candidate,
    Conflict,
    Decision,
    LabelMapping,
    Match,
    Outcome,
    Prepared,
    Ranks,
    Resolution,
    SourceLabel,
    Taxon,
    Unresolved,
    UnresolvedReason,
    by_label,
    join_notes,
    most_specific_match,
    rank_level,
    ranks_agree,
    taxon_id,
    taxon_status,
)

log = logging.getLogger(__name__)
GENUS, SPECIES = 5, 6
LEVELS = {**{rank: i for i, rank in enumerate(RANKS[:6])}, "species": SPECIES}
DH_SPECIES_RANKS = frozenset({"species", "subspecies", "variety", "form", "forma", "infraspecies"})
_rank = functools.lru_cache(maxsize=1 << 16)(rank_name)
_kingdom = functools.lru_cache(maxsize=1 << 10)(normalise_kingdom)
Fallback = Callable[[Sequence[SourceLabel], list[Decision]], list[Decision]]  # labels, decisions -> new decisions


def edit_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), or limit + 1 as soon as it must exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, previous = [], list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, before[j - 2] + 1)
            current[j] = value
        if min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return previous[-1]


# --- preparing labels (pure) -------------------------------------------------------------------------------------

def _placeholder_note(changes: Sequence[str]) -> str:
    return next((c for c in changes if c.startswith("placeholder")), "")


def _renamed(changes: Sequence[str]) -> bool:
    return any(c != "whitespace" and not c.startswith("placeholder") for c in changes)


def _prepared(label: SourceLabel, ranks: list[str], given_by: str, renamed: bool, note: str,
              species_name: tuple[str, str] | None = None, page: Candidate | None = None) -> Prepared | None:
    """A Prepared label down to its most specific rank; `species_name` is the (genus, epithet) to look up."""
    level = rank_level(ranks)
    if level < 0:
        return None
    given: Ranks = tuple(r if i <= level else "" for i, r in enumerate(ranks))  # type: ignore[assignment]
    genus, epithet = species_name or (given[GENUS], given[SPECIES])
    lookup = f"{genus} {epithet}".lower() if level == SPECIES else given[level].lower()
    return Prepared(label, given, given_by, level, lookup, genus.lower() if level == SPECIES else "", renamed, note,
                    page)


def _prepare_given(label: SourceLabel, profile: Profile) -> Prepared | Unresolved:
    """The ranks an iNat21 or BIOSCAN label gives, cleaned, with the profile's implied ranks filled in."""
    implied = profile.implied_ranks(label.source)
    raw = [r.strip() for r in label.ranks]
    raw[: len(implied)] = [r or i for r, i in zip(raw, implied)]
    ranks = [_kingdom(raw[0]), *(_rank(r) for r in raw[1:6]), ""]
    name = " ".join(label.name.split())
    # The name carries the epithet (BIOSCAN's species string); a one-word name is a higher rank already given.
    species_text = name if len(name.split()) > 1 else (f"{raw[GENUS]} {raw[SPECIES]}" if raw[SPECIES] else "")
    note, renamed = "", False
    if species_text:
        canon = canonicalise(species_text)
        note, renamed = _placeholder_note(canon.changes), _renamed(canon.changes)
        ranks[GENUS] = ranks[GENUS] or canon.genus
        if canon.genus == ranks[GENUS]:
            ranks[SPECIES] = canon.epithet
        elif canon.epithet:
            note = f"species {species_text!r} names another genus than {ranks[GENUS]!r}; epithet dropped"
    prep = _prepared(label, ranks, label.source, renamed, note)
    if prep is None or prep.level < len(implied):
        reason = UnresolvedReason.PLACEHOLDER_ONLY if any([*raw[len(implied):], name]) else UnresolvedReason.NO_NAME
        return Unresolved(label.source, label.key, reason, note or f"ranks {label.ranks!r}, name {label.name!r}")
    return prep


def _prepare_page(label: SourceLabel, nodes: Sequence[tuple]) -> Prepared | Unresolved:
    """The ranks of an EOL page from its Dynamic Hierarchy node (accepted first, then the most specific)."""
    if not nodes:
        return Unresolved(label.source, label.key, UnresolvedReason.EOL_PAGE_UNKNOWN,
                          f"page {_page_id(label)} is on no Dynamic Hierarchy node")
    def preference(node: tuple) -> tuple:
        return node[3] != "accepted", -LEVELS.get("species" if node[2] in DH_SPECIES_RANKS else node[2], -1), node[0]

    node_id, name, rank, _, *chain = min(nodes, key=preference)
    ranks = [_kingdom(chain[0]), *(_rank(r) for r in chain[1:6]), ""]
    canon = canonicalise(name)
    note, renamed = _placeholder_note(canon.changes), _renamed(canon.changes)
    species_name = None
    if rank in DH_SPECIES_RANKS:
        ranks[GENUS] = ranks[GENUS] or canon.genus
        ranks[SPECIES] = canon.epithet
        # The page's binomial is looked up, even where the chain puts it under another genus (a synonym kept).
        species_name = (canon.genus, canon.epithet)
    elif rank in LEVELS:
        ranks[LEVELS[rank]] = _kingdom(name) if rank == "kingdom" else canon.genus or _rank(name)
    prep = _prepared(label, ranks, "eol", renamed, note, species_name)
    if prep is None:
        return Unresolved(label.source, label.key, UnresolvedReason.NO_NAME, f"DH node {node_id} {name!r} has no rank")
    page = Candidate("eol", str(node_id), prep.given, Match.CANONICAL if renamed else Match.EXACT)
    return Prepared(label, prep.given, "eol", prep.level, prep.lookup, prep.genus_lookup, renamed, note, page)


# --- deciding (pure) ---------------------------------------------------------------------------------------------

def _pick(candidates: list[Candidate], prep: Prepared, profile: Profile, level: int, name: str
          ) -> list[Candidate] | tuple[str, list[Candidate]] | None:
    """One candidate per authority in precedence order; (why, candidates) if ambiguous; None if none fits."""
    deciding = [RANKS.index(r) for r in profile.homonym_ranks]
    alive = [c for c in candidates if ranks_agree(c.ranks, prep.given, deciding)]
    if not alive:
        return None
    by_authority: dict[str, list[Candidate]] = defaultdict(list)
    for c in alive:
        by_authority[c.authority].append(c)
    order = {a: i for i, a in enumerate(profile.rank_precedence)}
    picked: list[Candidate] = []
    for authority in sorted(by_authority, key=lambda a: (order.get(a, len(order)), a)):
        group = by_authority[authority]
        group = [c for c in group if c.preference == min(g.preference for g in group)]
        if len({c.ranks for c in group}) > 1:
            group = [c for c in group if ranks_agree(c.ranks, prep.given, range(5))] or group
        if len({c.ranks for c in group}) > 1:
            if not picked:
                group.sort(key=lambda c: (c.ranks, c.taxon_id))
                why = f"{authority} has {len(group)} taxa named {name!r} that the source's ranks do not tell apart"
                return why, group
            continue  # a lower authority's own ambiguity only keeps it out
        picked.append(min(group, key=lambda c: c.taxon_id))
    kingdoms = sorted({c.ranks[0] for c in picked if c.ranks[0]})
    if level < SPECIES and len(kingdoms) > 1:
        return f"{RANKS[level]} {name!r} is in kingdoms {', '.join(kingdoms)} and the source gives none", picked
    return picked


def _fuzzy(prep: Prepared, rows: list[tuple[str, Candidate]], profile: Profile) -> tuple[list[Candidate], str]:
    """Candidates of the one closest epithet within the genus (within the profile's limits), and a note."""
    rule, epithet = profile.fuzzy, prep.given[SPECIES].lower()
    deciding = [RANKS.index(r) for r in profile.homonym_ranks]
    usable = [(e, c) for e, c in rows if ranks_agree(c.ranks, prep.given, deciding)]
    scored: dict[str, int] = {}
    for other in {e for e, _ in usable}:
        if rule.same_first_letter and other[:1] != epithet[:1]:
            continue
        distance = edit_distance(epithet, other, rule.max_distance)
        if distance <= rule.max_distance and distance <= rule.max_relative * max(len(other), len(epithet)):
            scored[other] = distance
    if not scored:
        return [], ""
    best = min(scored.values())
    winners = sorted(e for e, d in scored.items() if d == best)
    if len(winners) > 1:
        return [], f"fuzzy: {epithet!r} is as close to {', '.join(winners)}; not guessed"
    return [c for e, c in usable if e == winners[0]], f"fuzzy: {epithet!r} read as {winners[0]!r}"


def _outcome(prep: Prepared, picked: list[Candidate], level: int, profile: Profile, note: str) -> Outcome:
    """Ranks from the first candidate (down to `level`), gaps filled from consistent later ones, the rest given."""
    chosen = picked[0]
    ranks = list(chosen.ranks[: level + 1]) + [""] * (SPECIES - level)
    sources = [chosen.authority if r else "" for r in ranks]

    def match_of(c: Candidate) -> str:
        return str(Match.CANONICAL if c.match is Match.EXACT and prep.renamed else c.match)

    matches = [match_of(chosen) if r else "" for r in ranks]
    given = Candidate(prep.given_by, "", prep.given, Match.GIVEN)
    fillers = picked[1:] + ([given] if prep.page is None else [])
    consistent = [c for c in fillers if ranks_agree(c.ranks, chosen.ranks, range(level + 1))]
    if profile.fill_missing:
        for filler in consistent:
            for i in range(level):
                if not ranks[i] and filler.ranks[i]:
                    ranks[i], sources[i], matches[i] = filler.ranks[i], filler.authority, match_of(filler)
    if level < prep.level:  # matched the genus only: the epithet stays as given
        ranks[SPECIES], sources[SPECIES], matches[SPECIES] = prep.given[SPECIES], prep.given_by, str(Match.GIVEN)
    ids = tuple((c.authority, c.taxon_id) for c in [chosen, *consistent] if c.taxon_id) if level == prep.level else ()
    pages = (prep.label.page_id,) if prep.page is not None and prep.label.page_id is not None else ()
    return Outcome(tuple(ranks), tuple(sources), tuple(matches), note, ids, pages)  # type: ignore[arg-type]


def _stages(prep: Prepared, named: list[Candidate], genus: list[Candidate], fuzzy_rows: list[tuple[str, Candidate]],
            profile: Profile) -> Iterator[tuple[list[Candidate], int, str, str]]:
    """(candidates, level, name, note) to try in turn; each is computed only if the ones before found nothing."""
    yield named + ([prep.page] if prep.page else []), prep.level, prep.lookup.capitalize(), ""
    if prep.level == SPECIES and fuzzy_rows:
        fuzzy, note = _fuzzy(prep, fuzzy_rows, profile)
        yield fuzzy, SPECIES, prep.lookup.capitalize(), note
    if prep.level == SPECIES:
        yield genus, GENUS, prep.genus_lookup.capitalize(), ""


def decide(prep: Prepared, named: list[Candidate], genus: list[Candidate], fuzzy_rows: list[tuple[str, Candidate]],
           profile: Profile) -> Decision:
    """The decision for one label: its name (exact, canonical or synonym), then fuzzy, then its genus, then as given."""
    label, as_given = prep.label, prep.page or Candidate(prep.given_by, "", prep.given, Match.GIVEN)
    if label.source in profile.as_given:
        return _outcome(prep, [as_given], prep.level, profile, prep.note)
    notes = [prep.note]
    for candidates, level, name, note in _stages(prep, named, genus, fuzzy_rows, profile):
        picked = _pick(candidates, prep, profile, level, name) if candidates else None
        if isinstance(picked, tuple):
            why, ambiguous = picked
            conflict = Conflict(label.source, label.key, tuple((c.authority, c.ranks) for c in ambiguous), why)
            return Unresolved(label.source, label.key, UnresolvedReason.AMBIGUOUS_HOMONYM, why), conflict
        if picked:
            return _outcome(prep, picked, level, profile, join_notes(*notes, note))
        notes.append(note)
    if not any(prep.given[:GENUS]):
        return Unresolved(label.source, label.key, UnresolvedReason.NO_MATCH, f"no authority has {prep.lookup!r}")
    return _outcome(prep, [as_given], prep.level, profile, join_notes(*notes))


# --- fetching candidates (one query per table per batch) ---------------------------------------------------------

_COLUMNS = """n.rank, n.status, a.taxon_id, coalesce(a.name, ''), a.status, coalesce(a.kingdom, ''),
    coalesce(a.phylum, ''), coalesce(a.class, ''), coalesce(a."order", ''), coalesce(a.family, ''),
    coalesce(a.genus, ''), coalesce(a.epithet, '')"""
_ACCEPTED = """JOIN names a ON a.authority = n.authority
    AND a.taxon_id = CASE WHEN n.status = 'synonym' THEN n.accepted_id ELSE n.taxon_id END"""
_NAMES_SQL = f"""SELECT q.qname, n.authority, {_COLUMNS} FROM _tol_names q JOIN names n ON n.name_norm = q.qname
    {_ACCEPTED} WHERE n.authority IN ({{authorities}})"""
_GENERA_SQL = f"""SELECT q.qname, n.authority, {_COLUMNS}, split_part(n.name_norm, ' ', 2) FROM _tol_names q
    JOIN names n ON n.rank = 'species' AND split_part(n.name_norm, ' ', 1) = q.qname
    {_ACCEPTED} WHERE n.authority IN ({{authorities}})"""
_PAGES_SQL = """SELECT p.page_id, n.taxon_id, coalesce(n.name, ''), coalesce(n.rank, ''), coalesce(n.status, ''),
    coalesce(n.kingdom, ''), coalesce(n.phylum, ''), coalesce(n.class, ''), coalesce(n."order", ''),
    coalesce(n.family, ''), coalesce(n.genus, '')
    FROM _tol_pages p JOIN names n ON n.page_id = p.page_id WHERE n.authority = 'eol'"""


def _names_table(names_: Iterable[str]) -> pa.Table:
    return pa.table({"qname": pa.array(sorted(names_), pa.string())})


def _query(con: duckdb.DuckDBPyConnection, sql: str, view: str, table: pa.Table) -> list[tuple]:
    """The rows of `sql` with `table` registered as `view`; no query for an empty table."""
    if not table.num_rows:
        return []
    con.register(view, table)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.unregister(view)


def _candidate(authority: str, row: Sequence, level: int, match: Match | None = None) -> Candidate | None:
    """A candidate from one joined row (`_COLUMNS`), or None where a synonym leads to another synonym."""
    _, status, taxon, name, accepted_status, *chain = row[:12]
    if accepted_status == "synonym":
        return None
    ranks = [_kingdom(chain[0]), *(_rank(r) for r in chain[1:5]), "", ""]
    if level == SPECIES:
        words = name.split()
        ranks[GENUS] = _rank(chain[5]) or (words[0] if words else "")
        ranks[SPECIES] = (chain[6] or (words[1] if len(words) > 1 else "")).lower()
    else:
        ranks[level] = _kingdom(name) if level == 0 else _rank(name)
        ranks[level + 1:] = [""] * (SPECIES - level)
    preference = 2 if status == "synonym" else int(status == "doubtful")
    kind = match or (Match.SYNONYM if status == "synonym" else Match.EXACT)
    return Candidate(authority, str(taxon), tuple(ranks), kind, preference)  # type: ignore[arg-type]


def _fetch_names(con: duckdb.DuckDBPyConnection, lookups: set[str], authorities: str
                 ) -> dict[str, list[tuple[int, Candidate]]]:
    """Lower-case name -> (level, candidate) for every authority row of that name."""
    rows = _query(con, _NAMES_SQL.format(authorities=authorities), "_tol_names", _names_table(lookups))
    found: dict[str, list[tuple[int, Candidate]]] = defaultdict(list)
    for qname, authority, *row in rows:
        level = LEVELS.get(row[0], -1)
        if level >= 0 and (c := _candidate(authority, row, level)):
            found[qname].append((level, c))
    return found


def _fetch_genera(con: duckdb.DuckDBPyConnection, genera: set[str], authorities: str
                  ) -> dict[str, list[tuple[str, Candidate]]]:
    """Lower-case genus -> (epithet, fuzzy candidate) for every species row of that genus."""
    rows = _query(con, _GENERA_SQL.format(authorities=authorities), "_tol_names", _names_table(genera))
    found: dict[str, list[tuple[str, Candidate]]] = defaultdict(list)
    for qname, authority, *row in rows:
        if row[-1] and (c := _candidate(authority, row, SPECIES, Match.FUZZY)):
            found[qname].append((row[-1], c))
    return found


def _fetch_pages(con: duckdb.DuckDBPyConnection, pages: set[int]) -> dict[int, list[tuple]]:
    """Page id -> its Dynamic Hierarchy nodes as (taxon_id, name, rank, status, kingdom, ..., genus)."""
    rows = _query(con, _PAGES_SQL, "_tol_pages", pa.table({"page_id": pa.array(sorted(pages), pa.int64())}))
    found: dict[int, list[tuple]] = defaultdict(list)
    for page_id, *node in rows:
        found[page_id].append(tuple(node))
    return found


def _page_id(label: SourceLabel) -> int | None:
    if label.page_id is not None:
        return label.page_id
    digits = label.key.removeprefix("eol:")
    return int(digits) if re.fullmatch(r"[0-9]{1,18}", digits) else None


def resolve_batch(con: duckdb.DuckDBPyConnection, batch: Sequence[SourceLabel], profile: Profile) -> list[Decision]:
    """The decision for each label of a batch, in order: three queries for the whole batch, then pure rules."""
    authorities = ", ".join(f"'{a}'" for a in profile.rank_precedence)  # validated names, safe to inline
    nodes = _fetch_pages(con, {p for label in batch if label.source == "eol" and (p := _page_id(label)) is not None})
    preps = [_prepare_page(label, nodes.get(_page_id(label), [])) if label.source == "eol"  # type: ignore[arg-type]
             else _prepare_given(label, profile) for label in batch]
    active = [p for p in preps if isinstance(p, Prepared) and p.label.source not in profile.as_given]
    # An EOL page is its own last candidate, so only other labels may need their genus.
    genera = {p.genus_lookup for p in active if p.genus_lookup and p.page is None}
    by_name = _fetch_names(con, {p.lookup for p in active} | genera, authorities)

    def named(p: Prepared) -> list[Candidate]:
        own_page = p.page is not None  # an EOL label's Dynamic Hierarchy candidate is its page, not a namesake
        return [c for level, c in by_name.get(p.lookup, ())
                if level == p.level and not (own_page and c.authority == "eol")]

    candidates = {id(p): named(p) for p in active}
    deciding = [RANKS.index(r) for r in profile.homonym_ranks]
    need = {p.genus_lookup for p in active if profile.fuzzy.enabled and p.level == SPECIES and p.page is None
            and not any(ranks_agree(c.ranks, p.given, deciding) for c in candidates[id(p)])}
    by_genus = _fetch_genera(con, need, authorities)
    decisions: list[Decision] = []
    for p in preps:
        if not isinstance(p, Prepared):
            decisions.append(p)
            continue
        genus = [c for level, c in by_name.get(p.genus_lookup, ()) if level == GENUS] if p.page is None else []
        decisions.append(decide(p, candidates.get(id(p), []), genus, by_genus.get(p.genus_lookup, []), profile))
    return decisions


# --- assembling the resolution -----------------------------------------------------------------------------------

@dataclass(slots=True)
class _Draft:
    """A taxon being assembled from the labels that map to it."""

    first: tuple[str, str]  # the (source, key) of the label whose provenance the taxon keeps
    outcome: Outcome
    given: list[tuple[tuple[str, str], str]]  # ((source, key), common name the label gave)
    ids: set[AuthorityId]
    pages: set[int]


def resolve_labels(con: duckdb.DuckDBPyConnection, labels: Iterable[SourceLabel], profile: Profile,
                   batch_size: int = 50_000, fallback: Fallback | None = None) -> Resolution:
    """Resolve every distinct label (by source and key; a repeated key keeps its first label), in batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    drafts: dict[str, _Draft] = {}
    mappings: list[LabelMapping] = []
    conflicts: list[Conflict] = []
    unresolved: list[Unresolved] = []
    seen: set[tuple[str, str]] = set()
    repeated, iterator = 0, iter(labels)
    while batch := list(islice(iterator, batch_size)):
        fresh = []
        for label in batch:
            if (label.source, label.key) in seen:
                repeated += 1
            else:
                seen.add((label.source, label.key))
                fresh.append(label)
        decisions = resolve_batch(con, fresh, profile)
        for label, decision in zip(fresh, fallback(fresh, decisions) if fallback else decisions):
            partial = isinstance(decision, Outcome) and not decision.ranks[SPECIES]
            if partial and label.source not in profile.keep_partial:
                decision = Unresolved(label.source, label.key, UnresolvedReason.PARTIAL_NOT_KEPT,
                                      "|".join(decision.ranks))
            if isinstance(decision, tuple):
                decision, conflict = decision
                conflicts.append(conflict)
            if isinstance(decision, Unresolved):
                unresolved.append(decision)
                mappings.append(LabelMapping(label.source, label.key, None, "unresolved", str(decision.reason)))
                continue
            tid = taxon_id(decision.ranks)
            mappings.append(LabelMapping(label.source, label.key, tid, taxon_status(decision.ranks), decision.note,
                                         most_specific_match(decision.matches)))
            draft = drafts.setdefault(tid, _Draft((label.source, label.key), decision, [], set(), set()))
            if (label.source, label.key) < draft.first:
                draft.first, draft.outcome = (label.source, label.key), decision
            if label.common_name.strip():
                draft.given.append(((label.source, label.key), label.common_name))
            draft.ids.update(decision.ids)
            draft.pages.update(decision.page_ids)
        log.info("taxonomy: %d labels, %d taxa, %d unresolved", len(mappings), len(drafts), len(unresolved))
    if repeated:
        log.warning("taxonomy: %d repeated label keys ignored (the first label of each key was kept)", repeated)
    return _assemble(con, drafts, mappings, conflicts, unresolved, profile, batch_size)


def _assemble(con: duckdb.DuckDBPyConnection, drafts: dict[str, _Draft], mappings: list[LabelMapping],
              conflicts: list[Conflict], unresolved: list[Unresolved], profile: Profile, batch_size: int) -> Resolution:
    """Name every taxon (batched) and sort everything, so that the result does not depend on input order."""
    ordered = sorted(drafts.items())
    requests = [CommonNameRequest(tid, d.outcome.ranks, tuple((key[0], name) for key, name in sorted(d.given)),
                                  tuple(sorted(d.ids)), tuple(sorted(d.pages))) for tid, d in ordered]
    named = common_names(con, requests, profile, batch_size)
    taxa = tuple(Taxon(tid, d.outcome.ranks, names(Label(d.outcome.ranks)).scientific, named[tid].name,
                       named[tid].source, d.outcome.authorities, d.outcome.matches,
                       most_specific_match(d.outcome.matches), taxon_status(d.outcome.ranks)) for tid, d in ordered)
    return Resolution(taxa, tuple(sorted(mappings, key=by_label)), tuple(sorted(conflicts, key=by_label)),
                      tuple(sorted(unresolved, key=by_label)))
