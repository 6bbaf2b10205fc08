"""BioCLIP's caption files for one label, and the class texts its zero-shot evaluation builds.

    >>> magpie = Label(("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia"),
    ...                "black-billed magpie")
    >>> captions(magpie)["taxon_com.txt"]
    'a photo of Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia with common name black-billed magpie.'

The texts follow BioCLIP's `make_txt` (scripts/evobio10m/make_wds.py) and `naming_eval.to_classes`, with two
documented departures (DESIGN.md, "Shard format"): missing ranks are omitted rather than leaving double spaces,
and where there is no genus the most specific known rank is the scientific name (BioCLIP wrote `a photo of .`).
Case follows BioCLIP too: higher ranks and genus capitalised, the specific epithet lowercase.

The `txt` member is the caption open_clip's own trainer reads. BioCLIP trained with `--text_type random`
(train.sh), drawing one of sci, com, taxon, sci_com and taxon_com per sample; its single-type default
(`--text_type`, src/training/params.py) is `taxon`. One fixed `txt` cannot mix, so it defaults to `taxon_com`,
the one text of that pool that carries all the others (the seven ranks, the binomial inside them, and the common
name); `default_text_type` picks any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")  # species = specific epithet
Ranks = tuple[str, str, str, str, str, str, str]
CAPTION_MEMBERS = ("scientific_name.txt", "taxonomic_name.txt", "common_name.txt", "sci.txt", "com.txt",
                   "taxon.txt", "taxonTag.txt", "sci_com.txt", "taxon_com.txt", "taxonTag_com.txt")
SHARD_TEXT_MEMBERS = (*CAPTION_MEMBERS, "txt")
TEXT_TYPES = ("sci", "com", "taxon", "taxonTag", "sci_com", "taxon_com", "taxonTag_com")
DEFAULT_TEXT_TYPE = "taxon_com"
EVAL_TEXT_TYPES = ("asis", "sci", "com", "taxon", "sci_com", "taxon_com")
PHOTO = "a photo of {}."
WITH_COMMON = "{} with common name {}"


@dataclass(frozen=True, slots=True)
class Label:
    """Seven ranks in RANKS order ("" when missing; the last is the specific epithet) and a common name."""

    ranks: Ranks
    common_name: str = ""

    def __post_init__(self) -> None:
        if len(self.ranks) != len(RANKS) or not all(isinstance(r, str) for r in self.ranks):
            raise ValueError(f"a Label needs seven str ranks ({', '.join(RANKS)}), got {self.ranks!r}")


@dataclass(frozen=True, slots=True)
class Names:
    """The four names every caption is built from, after case rules and fallbacks."""

    scientific: str
    taxonomic: str
    tagged: str
    common: str  # the common name, else the scientific name, else the taxonomic string
    has_common: bool  # whether `common` is a real common name rather than a fallback


def label_from_mapping(row: Mapping[str, object]) -> Label:
    """A Label from a `json` member or a BioCLIP metadata row; `species` or `specific_epithet` is the epithet.

    BioCLIP's files name the class rank `cls` because their `class` column is the dataset's class name (for
    Rare Species, "Genus epithet"), so `cls` wins where both are present.
    """
    aliases = {"class": ("cls", "class"), "species": ("species", "specific_epithet")}

    def text(rank: str) -> str:
        value = next((row[k] for k in aliases.get(rank, (rank,)) if k in row), "")
        return value if isinstance(value, str) else ""  # None and pandas' NaN mean missing

    common = row.get("common_name", "")
    ranks: Ranks = tuple(text(rank) for rank in RANKS)  # type: ignore[assignment]  # seven by construction
    return Label(ranks, common if isinstance(common, str) else "")


def _tidy(text: str) -> str:
    return " ".join(text.split())


def _cased(label: Label) -> tuple[str, ...]:
    """BioCLIP's case rule (higher ranks and genus capitalised, epithet lowercase); no epithet without a genus."""
    *higher, genus, epithet = (_tidy(r) for r in label.ranks)
    return (*(r.capitalize() for r in higher), genus.capitalize(), epithet.lower() if genus else "")


def names(label: Label) -> Names:
    """The scientific, taxonomic, tagged and common names of a label; raises if it has no rank at all."""
    ranks = _cased(label)
    if not any(ranks):
        raise ValueError(f"label {label!r} has no usable rank (an epithet needs its genus); "
                         "the resolver must mark it unresolved, not caption it")
    genus, epithet = ranks[5], ranks[6]
    scientific = f"{genus} {epithet}".strip() if genus else next(r for r in reversed(ranks) if r)
    taxonomic = " ".join(r for r in ranks if r)
    tagged = " ".join(f"{rank} {name}" for rank, name in zip(RANKS, ranks) if name)
    common = _tidy(label.common_name)
    return Names(scientific, taxonomic, tagged, common or scientific or taxonomic, bool(common))


def _check(text_type: str, allowed: tuple[str, ...]) -> None:
    if text_type not in allowed:
        raise ValueError(f"unknown text type {text_type!r}; expected one of {', '.join(allowed)}")


def caption_texts(label: Label) -> dict[str, str]:
    """The seven "a photo of" captions of a label, keyed by text type in TEXT_TYPES order."""
    n = names(label)
    bare = {"sci": n.scientific, "com": n.common, "taxon": n.taxonomic, "taxonTag": n.tagged}
    for base in ("sci", "taxon", "taxonTag"):
        bare[f"{base}_com"] = WITH_COMMON.format(bare[base], n.common)
    return {text_type: PHOTO.format(bare[text_type]) for text_type in TEXT_TYPES}


def captions(label: Label, default_text_type: str = DEFAULT_TEXT_TYPE) -> dict[str, str]:
    """The shard's text members in SHARD_TEXT_MEMBERS order: the ten BioCLIP files, then `txt`."""
    _check(default_text_type, TEXT_TYPES)
    n = names(label)
    texts = caption_texts(label)
    members = {"scientific_name.txt": n.scientific, "taxonomic_name.txt": n.taxonomic, "common_name.txt": n.common}
    members.update((f"{text_type}.txt", texts[text_type]) for text_type in TEXT_TYPES)
    members["txt"] = texts[default_text_type]
    return {member: members[member] for member in SHARD_TEXT_MEMBERS}


def default_caption(label: Label, text_type: str = DEFAULT_TEXT_TYPE) -> str:
    """The `txt` member: the caption of one text type (taxon_com unless asked otherwise)."""
    _check(text_type, TEXT_TYPES)
    return caption_texts(label)[text_type]


def class_text(label: Label, text_type: str, asis: str | None = None) -> str:
    """One class text as BioCLIP's evaluation builds it (no "a photo of"); `asis` is the dataset's own class."""
    _check(text_type, EVAL_TEXT_TYPES)
    n = names(label)
    if text_type == "asis":
        return n.scientific if asis is None else asis
    # Evaluation appends a common name only when there is one (`sci_com` of an unnamed taxon is its `sci`);
    # `com` falls back like the captions do, where BioCLIP's evaluation would give an empty class text.
    texts = {"sci": n.scientific, "com": n.common, "taxon": n.taxonomic,
             "sci_com": WITH_COMMON.format(n.scientific, n.common) if n.has_common else n.scientific,
             "taxon_com": WITH_COMMON.format(n.taxonomic, n.common) if n.has_common else n.taxonomic}
    return texts[text_type]


def class_texts(labels: Iterable[Label], text_type: str, asis: Iterable[str] | None = None) -> list[str]:
    """The class texts of many labels, in order (`asis` gives each dataset class name, for text type asis)."""
    labels = list(labels)
    classes: list[str | None] = list(asis) if asis is not None else [None] * len(labels)
    if len(classes) != len(labels):
        raise ValueError(f"{len(classes)} asis class names for {len(labels)} labels; give one per label")
    return [class_text(label, text_type, name) for label, name in zip(labels, classes)]
