"""The real taxa a sample kit draws from: iNat21 categories, BIOSCAN labels, EOL Rare Species, hard cases.

The pools live in data_manifests/sample_kit/ (see derive_taxa.py there for their provenance). `choose_taxa`
picks, for a seed and a scale, which taxa each source uses; the hard cases are always included.
"""

from __future__ import annotations

import csv
import random
import tomllib
from dataclasses import dataclass, field

import data_manifests
from taxonomy.names import canonicalise, rank_name

RANK_NAMES = ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")
Ranks = tuple[str, str, str, str, str, str, str]
BIOSCAN_HIGHER = ("Animalia", "Arthropoda", "Insecta")


@dataclass(frozen=True, slots=True)
class Taxon:
    """One real taxon as the kit writes it: the true seven ranks plus what each source needs."""

    ranks: Ranks
    common_name: str
    inat21_category_id: int | None = None
    eol_page_id: int | None = None
    eol_content_ids: tuple[int, ...] = ()
    dh_name: str = ""
    bioscan: dict[str, str] | None = field(default=None, hash=False, compare=False)
    hard_case: str = ""

    @property
    def binomial(self) -> str:
        genus, epithet = self.ranks[5], self.ranks[6]
        return f"{genus} {epithet}" if genus and epithet else genus

    @property
    def most_specific(self) -> str:
        """The most specific name the ranks give (binomial, else the lowest known rank)."""
        return self.binomial or next((name for name in reversed(self.ranks[:5]) if name), "")


@dataclass(frozen=True, slots=True)
class KitTaxa:
    """The taxa each source of one kit uses."""

    inat21: tuple[Taxon, ...]
    bioscan: tuple[Taxon, ...]
    eol: tuple[Taxon, ...]
    # Rare Species candidates among the EOL taxa (absent from iNat21 and BIOSCAN by construction).
    rare: tuple[Taxon, ...]


def read_csv(name: str) -> list[dict[str, str]]:
    with open(data_manifests.path(f"sample_kit/{name}"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def inat21_pool() -> list[Taxon]:
    return [Taxon(ranks=tuple(row[r] for r in RANK_NAMES), common_name=row["common_name"],
                  inat21_category_id=int(row["category_id"])) for row in read_csv("inat21_taxa.csv")]


def bioscan_label_ranks(label: dict[str, str]) -> Ranks:
    """The true ranks behind a BIOSCAN label: placeholder genera and epithets (BOLD interim names) are not ranks."""
    name = canonicalise(label["species"])
    genus = rank_name(label["genus"])
    epithet = name.epithet if genus and name.genus == genus else ""
    return (*BIOSCAN_HIGHER, label["order"], label["family"], genus, epithet)


def bioscan_pool() -> list[Taxon]:
    """The distinct real BIOSCAN labels (about a quarter are family-only, as in BIOSCAN-1M)."""
    labels = ({k: row[k] for k in ("order", "family", "subfamily", "genus", "species")} for row in read_csv("bioscan_labels.csv"))
    return list(dict.fromkeys(Taxon(ranks=bioscan_label_ranks(label), common_name="", bioscan=label) for label in labels))


def rare_pool() -> list[Taxon]:
    return [Taxon(ranks=tuple(row[r] for r in RANK_NAMES), common_name=row["common_name"],
                  eol_page_id=int(row["page_id"]),
                  eol_content_ids=tuple(int(c) for c in row["content_ids"].split(";"))) for row in read_csv("eol_taxa.csv")]


def hard_cases() -> list[dict]:
    with open(data_manifests.path("sample_kit/hard_cases.toml"), "rb") as f:
        return tomllib.load(f)["case"]


def hard_case_taxa() -> list[Taxon]:
    taxa = []
    for case in hard_cases():
        taxa.append(Taxon(ranks=tuple(case["ranks"]), common_name=case["common_name"], eol_page_id=case.get("page_id"),
                          dh_name=case.get("dh_name", ""), bioscan=case.get("bioscan"), hard_case=case["id"]))
    return taxa


def species_count(images: int, pool: int, minimum: int) -> int:
    """How many taxa a source uses for `images` images: about 10 images each, within [minimum, pool]."""
    return max(min(minimum, pool), min(pool, images // 10))


def choose_taxa(seed: int, shares: dict[str, int]) -> KitTaxa:
    """Pick each source's taxa for a kit with `shares[source]` images; the same seed gives the same choice."""
    rng = random.Random(f"sample-kit-taxa:{seed}")
    hard = hard_case_taxa()
    inat = inat21_pool()
    inat_taxa = rng.sample(inat, species_count(shares["inat21"], len(inat), 12))
    bioscan = bioscan_pool()
    # The misspelt hard case needs the correctly spelt species beside it.
    correct = [t for t in bioscan if t.binomial == "Procryptocerus scabriusculus"]
    sampled = rng.sample(bioscan, species_count(shares["bioscan"], len(bioscan), 10))
    bioscan_taxa = list(dict.fromkeys([t for t in hard if t.bioscan] + correct + sampled))
    rare = rare_pool()
    rare_taxa = rng.sample(rare, species_count(shares["eol"] * 2 // 3, len(rare), 10))
    # EOL also carries common species that iNat21 has, as the real EOL does (cross-source duplicates live there).
    shared_with_inat = rng.sample(inat_taxa, max(2, len(inat_taxa) // 4))
    eol_taxa = [t for t in hard if not t.bioscan] + rare_taxa + shared_with_inat
    return KitTaxa(inat21=tuple(inat_taxa), bioscan=tuple(bioscan_taxa), eol=tuple(eol_taxa), rare=tuple(rare_taxa))
