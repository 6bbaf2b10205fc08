"""The records the taxonomy stage reads and writes: source labels in; taxa, label mappings, conflicts and
unresolved labels out (DESIGN.md "Taxonomy"); and the resolver's intermediate candidates and outcomes.

    >>> taxon_id(("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia"))
    'fb0c1c9deca3caaf'

`taxon_id` is a hash of the seven ranks, so the same ranks get the same id in every run and every build.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from taxonomy.captions import RANKS

SOURCES = ("inat21", "bioscan", "eol")
Ranks = tuple[str, str, str, str, str, str, str]
NO_RANKS: Ranks = ("",) * 7
AuthorityId = tuple[str, str]  # (authority, taxon_id)
RESOLVED, PARTIAL, UNRESOLVED = "resolved", "partial", "unresolved"  # the statuses of a label mapping


class Match(enum.StrEnum):
    """How a rank was matched."""

    EXACT = "exact"
    CANONICAL = "canonical"  # matched after canonicalise changed the name (authorship, HTML, case, ...)
    SYNONYM = "synonym"  # the name is a synonym; the ranks are the accepted taxon's
    FUZZY = "fuzzy"  # a close epithet within the genus (profile `fuzzy`)
    GIVEN = "given"  # as the source gave it (or implies it)


class UnresolvedReason(enum.StrEnum):
    """Why a label has no taxon: the closed set."""

    NO_NAME = "no_name"  # no name at any rank
    PLACEHOLDER_ONLY = "placeholder_only"  # only placeholders (`sp.`, BOLD interim names, `not_classified`)
    NO_MATCH = "no_match"  # a bare name no authority has, with no higher rank to keep
    EOL_PAGE_UNKNOWN = "eol_page_unknown"  # no Dynamic Hierarchy node has the page id
    AMBIGUOUS_HOMONYM = "ambiguous_homonym"  # taxa the source's ranks cannot tell apart (see `conflicts`)
    PARTIAL_NOT_KEPT = "partial_not_kept"  # stops above species, and the profile keeps no such labels of its source


@dataclass(frozen=True, slots=True)
class SourceLabel:
    """One distinct label as its source gives it.

    Keys: `inat21:<category_id>`, `bioscan:<order>|<family>|<genus>|<species>`, `eol:<page_id>`.
    """

    source: str
    key: str
    ranks: Ranks = NO_RANKS  # as given, "" missing (BIOSCAN leaves the profile's implied ranks empty)
    name: str = ""  # the most specific name as given (BIOSCAN: the species string, placeholders included)
    page_id: int | None = None  # EOL only
    common_name: str = ""  # the source's own common name (iNat21), "" if none

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown label source {self.source!r} (key {self.key!r}); expected one of {SOURCES}")
        if len(self.ranks) != 7 or not all(isinstance(r, str) for r in self.ranks):
            raise ValueError(f"label {self.key!r} needs seven str ranks ({', '.join(RANKS)}), got {self.ranks!r}")


@dataclass(frozen=True, slots=True)
class Taxon:
    """One seven-rank taxon some labels map to, with per-rank provenance (a row of taxa.parquet)."""

    taxon_id: str  # sha1 of the seven ranks joined by "|", 16 hex digits
    ranks: Ranks
    scientific_name: str  # binomial, else the most specific rank
    common_name: str
    common_name_source: str
    authorities: tuple[str, ...]  # per rank: the authority (or gbif_online, or the label's source) that gave it
    matches: tuple[str, ...]  # per rank: a Match ("" where missing)
    match: str  # the match of the most specific rank
    status: str  # "resolved" (to species) or "partial"


@dataclass(frozen=True, slots=True)
class LabelMapping:
    """Where one label went (a row of label_map.parquet)."""

    source: str
    key: str
    taxon_id: str | None
    status: str  # resolved | partial | unresolved
    reason: str = ""  # the UnresolvedReason, or a note (a dropped placeholder, a failed fuzzy match)
    match: str = ""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A label whose candidates the source's ranks cannot tell apart (a row of conflicts.parquet)."""

    source: str
    key: str
    candidates: tuple[tuple[str, Ranks], ...]  # (authority, ranks), by precedence
    why: str


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A label with no taxon, and why (a row of unresolved.parquet)."""

    source: str
    key: str
    reason: UnresolvedReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Resolution:
    """Everything sorted: taxa by taxon_id, the rest by (source, key)."""

    taxa: tuple[Taxon, ...]
    mappings: tuple[LabelMapping, ...]
    conflicts: tuple[Conflict, ...]
    unresolved: tuple[Unresolved, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One authority taxon a label's name may mean (the accepted taxon, where the name is a synonym)."""

    authority: str
    taxon_id: str
    ranks: Ranks  # down to the level looked up
    match: Match  # EXACT, SYNONYM, FUZZY (EXACT reads CANONICAL for a label whose name canonicalise changed)
    preference: int = 0  # within one authority: 0 accepted, 1 doubtful, 2 reached through a synonym


@dataclass(frozen=True, slots=True)
class Prepared:
    """A label cleaned: the ranks its source gives, the name to look up, and what cleaning changed."""

    label: SourceLabel
    given: Ranks
    given_by: str  # the label's source, or "eol" for the ranks of a Dynamic Hierarchy page
    level: int  # index into RANKS of the most specific given rank (6 = species)
    lookup: str  # the most specific name, lower case
    genus_lookup: str  # the genus of a species name, lower case ("" above species)
    renamed: bool  # canonicalise changed the name looked up
    note: str
    page: Candidate | None = None  # the Dynamic Hierarchy node of an EOL page


@dataclass(frozen=True, slots=True)
class Outcome:
    """A label's resolved ranks, before its taxon is assembled."""

    ranks: Ranks
    authorities: tuple[str, ...]
    matches: tuple[str, ...]
    note: str
    ids: tuple[AuthorityId, ...]  # the matched taxa, for their vernacular names
    page_ids: tuple[int, ...]


Decision = Outcome | Unresolved | tuple[Unresolved, Conflict]


def taxon_id(ranks: Ranks) -> str:
    """The stable id of a seven-rank taxon."""
    return hashlib.sha1("|".join(ranks).encode()).hexdigest()[:16]


def taxon_status(ranks: Ranks) -> str:
    """`resolved` for a taxon down to its specific epithet, else `partial`."""
    return RESOLVED if ranks[6] else PARTIAL


def most_specific_match(matches: Sequence[str]) -> str:
    """The match of the most specific rank that has one."""
    return next((m for m in reversed(matches) if m), "")


def by_label(record: LabelMapping | Conflict | Unresolved) -> tuple[str, str]:
    """Sort key of the per-label records: (source, key)."""
    return record.source, record.key


def rank_level(ranks: Sequence[str]) -> int:
    """Index of the most specific non-empty rank (an epithet counts only with its genus), -1 if none."""
    if ranks[5] and ranks[6]:
        return 6
    return max((i for i in range(6) if ranks[i]), default=-1)


def ranks_agree(a: Sequence[str], b: Sequence[str], indices: Iterable[int]) -> bool:
    """Whether two rank tuples agree (ignoring case) at every index where both have a name."""
    return all(not a[i] or not b[i] or a[i].lower() == b[i].lower() for i in indices)


def join_notes(*notes: str) -> str:
    """The non-empty notes, joined by "; "."""
    return "; ".join(n for n in notes if n)
