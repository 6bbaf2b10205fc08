"""GBIF's online name matching (pygbif) as the fallback for labels no authority dump has; off unless `--online`.

    tol taxonomy demo-out/kit demo-out/taxonomy --online --gbif-cache ~/.cache/tol/gbif

Asked about: labels of a source the profile does not take as given whose decision is `unresolved/no_match`, or
whose most specific rank no dump confirmed (its match is `given`). Each becomes one
`pygbif.species.name_backbone(scientificName=..., kingdom=..., ...)` query, the label's ranks above its name as
hints; identical queries are asked once. GBIF's answer, by its matchType:
- EXACT / FUZZY: GBIF's classification down to the matched rank, every rank from authority `gbif_online` with
  match `exact` (`synonym` where GBIF matched a synonym) or `fuzzy`.
- HIGHERRANK: GBIF knows only a higher rank: its classification down to that rank, a `partial` taxon.
- NONE: the label keeps the ranks a dump confirmed (partial), else it is `unresolved/no_match`.
An answer whose kingdom or phylum (the profile's `homonym_ranks`) contradicts the label's is about a homonym and
counts as NONE; with `fill_missing`, a rank GBIF lacks comes from the label's earlier decision where it agrees.
Answers (v1 flat or v2 nested JSON) are cached on disk, one JSON file per query written atomically, so a rerun
asks GBIF nothing it asked before. Requests are paced by `pipeline.politeness.HostLimiter`; 429/503 slow it down
and are retried after a backoff (or their Retry-After). A request that still fails leaves the decision as it
was, noted, and is not cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pipeline.politeness import THROTTLE_STATUSES, HostLimiter, backoff_delay, parse_retry_after
from taxonomy.captions import RANKS
from taxonomy.names import canonicalise, normalise_kingdom, rank_name
from taxonomy.profiles import Profile
from taxonomy.records import (
    Decision,
    Match,
    Outcome,
    Ranks,
    SourceLabel,
    Unresolved,
    UnresolvedReason,
    join_notes,
    rank_level,
    ranks_agree,
)

log = logging.getLogger(__name__)
AUTHORITY = "gbif_online"
SPECIES_RANKS = frozenset({"species", "subspecies", "variety", "form", "infraspecific_name", "infraspecies"})
Lookup = Callable[[dict[str, str]], Mapping]  # name_backbone's keyword arguments -> GBIF's JSON answer


@dataclass(frozen=True, slots=True)
class Query:
    """One name to match, with the ranks above it as hints (from the kingdom down)."""

    name: str
    hints: tuple[tuple[str, str], ...] = ()

    def params(self) -> dict[str, str]:
        """Keyword arguments of `pygbif.species.name_backbone`."""
        return {"scientificName": self.name, **{("class_" if r == "class" else r): v for r, v in self.hints}}


@dataclass(frozen=True, slots=True)
class Answer:
    """GBIF's match of one query, reduced to the seven ranks."""

    match_type: str  # EXACT, FUZZY, HIGHERRANK or NONE
    ranks: Ranks  # GBIF's classification down to the matched rank ("" below it; all "" for NONE)
    synonym: bool
    usage_key: str


@dataclass(slots=True)
class OnlineStats:
    labels: int = 0  # labels asked about
    queries: int = 0  # distinct queries
    cached: int = 0
    fetched: int = 0
    errors: int = 0
    match_types: Counter = field(default_factory=Counter)


def parse_answer(response: Mapping) -> Answer:
    """An Answer from a species/match response: API v1 (flat, as recorded by pygbif 0.6) or v2 (pygbif 0.7)."""
    if "usage" in response or "diagnostics" in response:
        usage = response.get("acceptedUsage") or response.get("usage") or {}
        named = {str(t.get("rank", "")).lower(): str(t.get("name") or "")
                 for t in response.get("classification") or [] if isinstance(t, Mapping)}
        rank, match_type = str(usage.get("rank", "")).lower(), (response.get("diagnostics") or {}).get("matchType")
        named.setdefault(rank, str(usage.get("canonicalName") or usage.get("name") or ""))
        key = usage.get("key", "")
    else:
        named = {r: str(response.get(r) or "") for r in RANKS}
        rank, match_type = str(response.get("rank", "")).lower(), response.get("matchType")
        key = response.get("acceptedUsageKey") or response.get("usageKey") or ""
    species = canonicalise(named.get("species") or (named.get(rank, "") if rank in SPECIES_RANKS else ""))
    ranks = [normalise_kingdom(named.get("kingdom")), *(rank_name(named.get(r)) for r in RANKS[1:6]), ""]
    ranks[5] = ranks[5] or species.genus
    ranks[6] = species.epithet if species.genus == ranks[5] else ""
    level = 6 if rank in SPECIES_RANKS else RANKS.index(rank) if rank in RANKS[:6] else rank_level(ranks)
    match_type = str(match_type or "NONE").upper()
    if match_type not in ("EXACT", "FUZZY", "HIGHERRANK") or level < 0:
        return Answer("NONE", ("",) * 7, False, str(key))
    kept = tuple(r if i <= level else "" for i, r in enumerate(ranks))
    return Answer(match_type, kept, bool(response.get("synonym")), str(key))  # type: ignore[arg-type]


def online_query(label: SourceLabel, decision: Decision, profile: Profile) -> Query | None:
    """The query for a label no dump resolved, or None if the dumps did (or there is no name to ask about)."""
    if label.source in profile.as_given:
        return None
    if isinstance(decision, Outcome):
        ranks, level = decision.ranks, rank_level(decision.ranks)
        if level < 0 or decision.matches[level] != Match.GIVEN:
            return None
    elif isinstance(decision, Unresolved) and decision.reason == UnresolvedReason.NO_MATCH:
        implied = profile.implied_ranks(label.source)
        ranks = tuple((r.strip() or (implied[i] if i < len(implied) else "")) for i, r in enumerate(label.ranks))
        if len(label.name.split()) > 1:  # a binomial; a one-word name is a rank the label already gives
            canon = canonicalise(label.name)
            ranks = (*ranks[:5], canon.genus or ranks[5], canon.epithet if canon.genus else ranks[6])
        level = rank_level(ranks)
        if level < 0:
            return None
    else:
        return None
    name = f"{ranks[5]} {ranks[6]}" if level == 6 else ranks[level]
    return Query(name, tuple((RANKS[i], ranks[i]) for i in range(min(level, 6)) if ranks[i]))


def online_decision(label: SourceLabel, decision: Decision, query: Query, answer: Answer,
                    profile: Profile) -> Decision:
    """The label's decision once GBIF has answered its query (pure)."""
    before = decision if isinstance(decision, Outcome) else None
    known = before.ranks if before else tuple(dict(query.hints).get(r, "") for r in RANKS)
    deciding = [RANKS.index(r) for r in profile.homonym_ranks]
    said = f"gbif_online: {answer.match_type} {answer.usage_key}".rstrip()
    if answer.match_type != "NONE" and ranks_agree(answer.ranks, known, deciding):
        match = Match.FUZZY if answer.match_type == "FUZZY" else Match.SYNONYM if answer.synonym else Match.EXACT
        ranks, level = list(answer.ranks), rank_level(answer.ranks)
        sources = [AUTHORITY if r else "" for r in ranks]
        matches = [str(match) if r else "" for r in ranks]
        if profile.fill_missing and before and ranks_agree(before.ranks, ranks, range(level + 1)):
            for i in range(level):
                if not ranks[i] and before.ranks[i]:
                    ranks[i], sources[i], matches[i] = before.ranks[i], before.authorities[i], before.matches[i]
        note = join_notes(before.note if before else "", said)
        return Outcome(tuple(ranks), tuple(sources), tuple(matches), note, (), ())  # type: ignore[arg-type]
    if answer.match_type != "NONE":
        said = f"gbif_online: {answer.match_type} {answer.usage_key} is in {answer.ranks[0]}/{answer.ranks[1]}, " \
               f"a homonym of {query.name!r}; counted as NONE"
    confirmed = max((i for i, m in enumerate(before.matches) if m and m != Match.GIVEN), default=-1) if before else -1
    if before and confirmed >= 0:
        keep = [i <= confirmed for i in range(7)]
        return Outcome(*(tuple(v if k else "" for v, k in zip(values, keep))  # type: ignore[arg-type]
                         for values in (before.ranks, before.authorities, before.matches)),
                       join_notes(before.note, said, f"kept the ranks down to {RANKS[confirmed]} a dump confirmed"),
                       before.ids, before.page_ids)
    detail = decision.detail if isinstance(decision, Unresolved) else f"no authority has {query.name!r}"
    return Unresolved(label.source, label.key, UnresolvedReason.NO_MATCH, join_notes(detail, said))


def _with_note(decision: Decision, note: str) -> Decision:
    if isinstance(decision, Outcome):
        return dataclasses.replace(decision, note=join_notes(decision.note, note))
    if isinstance(decision, Unresolved):
        return dataclasses.replace(decision, detail=join_notes(decision.detail, note))
    return decision


class AnswerCache:
    """GBIF's answers on disk: FOLDER/ab/abcdef....json, one per query, each written to a temp file and renamed."""

    def __init__(self, folder: Path, checklist: str | None) -> None:
        self.folder, self.checklist = Path(folder), checklist

    def key(self, query: Query) -> str:
        text = json.dumps({"call": "name_backbone", "checklistKey": self.checklist, "params": query.params()},
                          sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def _path(self, query: Query) -> Path:
        key = self.key(query)
        return self.folder / key[:2] / f"{key}.json"

    def get(self, query: Query) -> Mapping | None:
        path = self._path(query)
        try:
            return json.loads(path.read_text(encoding="utf-8"))["response"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            log.warning("gbif online: unreadable cache file %s (%s); asking again", path, error)
            return None

    def put(self, query: Query, response: Mapping) -> None:
        path = self._path(query)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        document = {"params": query.params(), "checklistKey": self.checklist, "response": response}
        tmp.write_text(json.dumps(document, sort_keys=True, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


def pygbif_lookup(checklist: str | None, timeout: float) -> Lookup:
    """`pygbif.species.name_backbone` against `checklist` (None: the GBIF Backbone, as the dumps)."""
    from pygbif import species  # a network client: imported only when online matching is asked for

    def lookup(params: dict[str, str]) -> Mapping:
        return species.name_backbone(**params, checklistKey=checklist, timeout=timeout)

    return lookup


class GbifOnline:
    """The resolver's fallback (`resolve_labels(..., fallback=GbifOnline(...))`): asks GBIF, through the cache."""

    def __init__(self, profile: Profile, cache_dir: Path, *, rate: float = 3.0, checklist: str | None = None,
                 batch_size: int = 100, max_attempts: int = 4, timeout: float = 30.0, lookup: Lookup | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or batch_size < 1 or max_attempts < 1:
            raise ValueError(f"rate must be > 0, batch_size and max_attempts >= 1; got {rate}, {batch_size}, "
                             f"{max_attempts}")
        self.profile, self.cache = profile, AnswerCache(cache_dir, checklist)
        self.batch_size, self.max_attempts, self.sleep = batch_size, max_attempts, sleep
        self.lookup = lookup or pygbif_lookup(checklist, timeout)
        self.limiter = HostLimiter(rate, 1.0)
        self.rng = random.Random(0)
        self.stats = OnlineStats()

    def __call__(self, labels: Sequence[SourceLabel], decisions: list[Decision]) -> list[Decision]:
        queries = [online_query(label, d, self.profile) for label, d in zip(labels, decisions)]
        wanted = list(dict.fromkeys(q for q in queries if q is not None))
        self.stats.labels += sum(q is not None for q in queries)
        answers: dict[Query, Answer | str] = {}
        iterator = iter(wanted)
        while batch := list(islice(iterator, self.batch_size)):
            answers.update((query, self.answer(query)) for query in batch)
            log.info("gbif online: %d/%d names asked (%d cached, %d fetched, %d errors)", len(answers),
                     len(wanted), self.stats.cached, self.stats.fetched, self.stats.errors)
        out = []
        for label, decision, query in zip(labels, decisions, queries):
            answer = answers.get(query) if query is not None else None
            if isinstance(answer, Answer):
                self.stats.match_types[answer.match_type] += 1
                decision = online_decision(label, decision, query, answer, self.profile)  # type: ignore[arg-type]
            elif answer is not None:
                decision = _with_note(decision, f"gbif_online: {answer}")
            out.append(decision)
        return out

    def answer(self, query: Query) -> Answer | str:
        """GBIF's answer (cached, else asked), or why there is none."""
        self.stats.queries += 1
        if (cached := self.cache.get(query)) is not None:
            self.stats.cached += 1
            return parse_answer(cached)
        response = self._ask(query)
        if isinstance(response, str):
            self.stats.errors += 1
            return response
        self.stats.fetched += 1
        self.cache.put(query, response)
        return parse_answer(response)

    def _ask(self, query: Query) -> Mapping | str:
        """GBIF's JSON answer, retrying 429/503 and connection failures with backoff; else the last error."""
        import requests
        from pygbif.gbifutils import NoResultException

        error, wait = "", 0.0
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.acquire()
            try:
                response = self.lookup(query.params())
            except requests.HTTPError as failure:
                status = failure.response.status_code if failure.response is not None else 0
                error, retry = f"HTTP {status} for {query.name!r}", status in THROTTLE_STATUSES
                if retry:
                    self.limiter.throttled()
                    wait = parse_retry_after(failure.response.headers.get("Retry-After"), time.time()) or 0.0
            except (requests.ConnectionError, requests.Timeout) as failure:
                error, retry = f"{type(failure).__name__} for {query.name!r}", True
            except (requests.RequestException, NoResultException, ValueError) as failure:
                error, retry = f"{type(failure).__name__} for {query.name!r}: {failure}", False
            else:
                if isinstance(response, Mapping):
                    self.limiter.succeeded()
                    return response
                error, retry = f"not a JSON object for {query.name!r}: {type(response).__name__}", False
            if not retry or attempt == self.max_attempts:
                break
            self.sleep(max(wait, backoff_delay(attempt, 1.0, 30.0, self.rng)))
        log.warning("gbif online: %s (after %d attempt(s))", error, attempt)
        return error
