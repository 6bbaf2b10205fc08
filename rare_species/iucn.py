"""The IUCN Red List export (`assessments.csv` of the website's search export): species -> category code.

    from rare_species.iucn import read_assessments
    export = read_assessments("demo-out/kit/iucn/assessments.csv")   # export.categories, export.unknown

Category strings map to codes through data_manifests/rare_species/iucn_categories.csv (case-insensitive), which
also holds the legacy pre-2001 categories (`LR/nt`, `Lower Risk/near threatened`, `LR/cd` -> NT; `LR/lc` -> LC).
A string the table does not know (a misspelling such as `Vulnerabel`) is not guessed: it is counted in
`unknown` and the species is left out. Species are keyed by `pipeline.dedup.normalised_binomial`.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from dataclasses import dataclass, field

import data_manifests
from pipeline.dedup import normalised_binomial

CODES = ("LC", "NT", "VU", "EN", "CR", "EW", "EX", "DD")
DEFAULT_CATEGORIES = ("NT", "VU", "EN", "CR", "EW")


@dataclass(frozen=True, slots=True)
class Assessment:
    """One species' Red List assessment: the name as IUCN writes it, the category as given, and its code."""

    scientific_name: str
    category: str
    code: str


@dataclass(frozen=True, slots=True)
class IucnExport:
    """Assessed species by normalised binomial, and what could not be used, with counts."""

    assessments: dict[str, Assessment]
    unknown: Counter = field(default_factory=Counter)  # category string -> rows
    unusable_names: Counter = field(default_factory=Counter)  # why -> rows (no epithet, repeated species)
    rows: int = 0


@functools.cache
def category_table() -> dict[str, str]:
    """Category string (lower case) -> code, from data_manifests/rare_species/iucn_categories.csv."""
    with open(data_manifests.path("rare_species/iucn_categories.csv"), newline="", encoding="utf-8") as handle:
        return {row["name"].strip().lower(): row["code"] for row in csv.DictReader(handle)}


def category_code(text: str) -> str:
    """The code of a category string ("" when the table does not know it)."""
    return category_table().get(" ".join(text.split()).lower(), "")


def check_categories(codes: tuple[str, ...]) -> tuple[str, ...]:
    """The codes, validated against CODES; raises naming the bad value and the allowed set."""
    bad = [code for code in codes if code not in CODES]
    if bad or not codes:
        raise ValueError(f"--categories {','.join(codes)!r}: {', '.join(bad) or 'empty'} not among {', '.join(CODES)}")
    return codes


def read_assessments(path: str) -> IucnExport:
    """Every usable row of an IUCN export; the first assessment of a species wins."""
    assessments: dict[str, Assessment] = {}
    unknown, unusable, rows = Counter(), Counter(), 0
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"scientificName", "redlistCategory"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not an IUCN assessments export: no column {', '.join(sorted(missing))}")
        for row in reader:
            rows += 1
            name, category = (row["scientificName"] or "").strip(), (row["redlistCategory"] or "").strip()
            code, key = category_code(category), normalised_binomial(name)
            if not code:
                unknown[category] += 1
            elif not key:
                unusable["no_binomial"] += 1
            elif key in assessments:
                unusable["repeated_species"] += 1
            else:
                assessments[key] = Assessment(name, category, code)
    return IucnExport(assessments, unknown, unusable, rows)
