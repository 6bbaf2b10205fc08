"""Fresh Rare Species selection: IUCN category, seven ranks, unseen in iNat21/BIOSCAN, enough unique images.

Every step keeps a count and says why species fell out (`Report`). The order rule is documented and seeded:
`order_key(seed, key) = blake2b(f"{seed}:{key}", digest_size=8)`; species are sorted by it over their normalised
binomial and the first N taken (with `stratify_by`, round-robin over the groups, each in that order, groups visited
in order of their own first key); images of a species are sorted by it over the EOL content id. Dedup is
seed-independent: an md5 or pHash (Hamming <= threshold) cluster keeps its smallest content id.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.dedup import normalised_binomial
from pipeline.phash_index import DEFAULT_THRESHOLD, close_pairs, clusters
from rare_species.iucn import Assessment

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
UNSEEN_SOURCES = ("inat21", "bioscan")


@dataclass(frozen=True, slots=True)
class Species:
    """A candidate: normalised binomial, taxon (seven ranks, common name), IUCN assessment, EOL pages."""

    key: str
    taxon_id: str
    ranks: tuple[str, ...]
    common_name: str
    assessment: Assessment
    pages: tuple[int, ...]

    @property
    def binomial(self) -> str:
        return f"{self.ranks[5]} {self.ranks[6]}"


@dataclass(frozen=True, slots=True)
class Image:
    """One downloaded EOL image of a candidate species, with what the licenses file needs."""

    content_id: int
    page_id: int
    data: bytes
    md5: str
    phash: int
    source_url: str
    license_name: str
    owner: str


@dataclass
class Report:
    """Counts per step: how many species each kept, and why the rest fell out."""

    steps: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def step(self, name: str, kept: int, dropped: Mapping[str, int] | None = None, rule: str = "") -> None:
        self.steps.append({"step": name, "rule": rule, "kept": kept,
                           "dropped": dict(sorted((dropped or {}).items()))})

    def as_dict(self) -> dict:
        return {"steps": self.steps, **self.notes}

    def lines(self) -> list[str]:
        out = []
        for step in self.steps:
            why = ", ".join(f"{reason} {n}" for reason, n in step["dropped"].items() if n)
            out.append(f"  {step['step']:28s} kept {step['kept']:6d}" + (f"   dropped: {why}" if why else ""))
        return out


def order_key(seed: int, key: object) -> bytes:
    """The documented, seeded order: blake2b of "seed:key", 8 bytes."""
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def seen_keys(label_map: Iterable[dict], taxa: Mapping[str, dict],
              sources: Sequence[str] = UNSEEN_SOURCES) -> tuple[frozenset[str], frozenset[str]]:
    """(taxon ids, normalised binomials) of every label of `sources`: the accepted taxon each label resolved to, so
    a synonym used by a source counts under its accepted name."""
    ids, names = set(), set()
    for row in label_map:
        if row["source"] in sources and row["taxon_id"]:
            ids.add(row["taxon_id"])
            taxon = taxa.get(row["taxon_id"])
            if taxon and taxon["genus"] and taxon["species"]:
                names.add(normalised_binomial(f"{taxon['genus']} {taxon['species']}"))
    return frozenset(ids), frozenset(names - {""})


def eol_species(label_map: Iterable[dict], taxa: Mapping[str, dict]) -> tuple[dict[str, tuple[dict, list[int]]],
                                                                               Counter]:
    """Normalised binomial -> (taxon, EOL page ids) for pages resolved to all seven ranks; and why pages were not."""
    found: dict[str, tuple[dict, list[int]]] = {}
    why = Counter()
    for row in label_map:
        if row["source"] != "eol":
            continue
        taxon = taxa.get(row["taxon_id"] or "")
        if taxon is None:
            why["page_unresolved"] += 1
        elif not all(taxon[rank] for rank in RANKS):
            why["page_missing_ranks"] += 1
        else:
            key = normalised_binomial(f"{taxon['genus']} {taxon['species']}")
            found.setdefault(key, (taxon, []))[1].append(int(row["label_key"].split(":", 1)[1]))
    return found, why


def candidates(assessments: Mapping[str, Assessment], categories: Sequence[str], eol: Mapping[str, tuple],
               seen: tuple[frozenset[str], frozenset[str]], report: Report) -> list[Species]:
    """The species passing the category, seven-rank and unseen rules, each step recorded."""
    in_category = {k: a for k, a in assessments.items() if a.code in categories}
    report.step("iucn_category", len(in_category),
                Counter(f"category_{a.code}" for a in assessments.values() if a.code not in categories),
                f"category in {','.join(categories)}")
    resolved = {k: a for k, a in in_category.items() if k in eol}
    report.step("seven_ranks", len(resolved), {"no_eol_page_with_seven_ranks": len(in_category) - len(resolved)},
                "an EOL page resolves to all seven ranks")
    seen_ids, seen_names = seen
    out, dropped = [], Counter()
    for key, assessment in sorted(resolved.items()):
        taxon, pages = eol[key]
        if taxon["taxon_id"] in seen_ids or key in seen_names:
            dropped["in_inat21_or_bioscan"] += 1
            continue
        out.append(Species(key, taxon["taxon_id"], tuple(taxon[r] for r in RANKS), taxon["common_name"] or "",
                           assessment, tuple(sorted(pages))))
    report.step("unseen_in_training", len(out), dropped, "not in iNat21 or BIOSCAN (accepted names)")
    return out


def unique_images(images: Sequence[Image], threshold: int = DEFAULT_THRESHOLD) -> tuple[list[Image], Counter]:
    """One image per md5 and per pHash cluster (Hamming <= threshold), the smallest content id kept."""
    by_md5: dict[str, Image] = {}
    for image in sorted(images, key=lambda i: i.content_id):
        by_md5.setdefault(image.md5, image)
    exact = list(by_md5.values())
    ids = np.array([i.content_id for i in exact], dtype=np.int64)
    pairs = close_pairs(np.array([i.phash for i in exact], dtype=np.uint64), ids, threshold).pairs
    roots = clusters(map(tuple, pairs.tolist()))
    kept = [i for i in exact if roots.get(i.content_id, i.content_id) == i.content_id]
    return kept, Counter(md5_duplicate=len(images) - len(exact), near_duplicate=len(exact) - len(kept))


def enough_images(species: Sequence[Species], images_of: Callable[[Species], list[Image]], minimum: int,
                  report: Report) -> dict[str, list[Image]]:
    """Species with at least `minimum` unique images -> those images (content id order)."""
    kept, dropped, removed = {}, Counter(), Counter()
    for one in species:
        unique, why = unique_images(images_of(one))
        removed.update(why)
        if len(unique) >= minimum:
            kept[one.key] = unique
        else:
            dropped[f"fewer_than_{minimum}_unique_images"] += 1
    report.step("enough_images", len(kept), dropped, f">= {minimum} unique images after md5 and pHash dedup")
    report.notes["images_removed_by_dedup"] = dict(removed)
    return kept


def choose_species(species: Sequence[Species], count: int, seed: int, stratify_by: str | None) -> list[Species]:
    """The first `count` in seeded order; with `stratify_by` a rank, round-robin over its values."""
    ordered = sorted(species, key=lambda s: order_key(seed, s.key))
    if not stratify_by:
        return ordered[:count]
    groups: dict[str, list[Species]] = defaultdict(list)
    for one in ordered:  # dict order = order of each group's first member
        groups[one.ranks[RANKS.index(stratify_by)]].append(one)
    chosen, queues = [], [list(g) for g in groups.values()]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def choose_images(images: Sequence[Image], count: int, seed: int) -> list[Image]:
    """The first `count` images in seeded order of their content id."""
    return sorted(images, key=lambda i: order_key(seed, i.content_id))[:count]
