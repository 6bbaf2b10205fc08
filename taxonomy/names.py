"""Canonical scientific names: authorship, years, infraspecific parts, HTML, placeholders, hybrids and case.

    >>> canonicalise("<i>Pica hudsonia</i> (Sabine, 1823)").canonical
    'Pica hudsonia'

`canonicalise` reduces a name to `Genus epithet` and records every change; a placeholder epithet (`sp.`, `cf.`,
BOLD interim names such as `Medina Malaise6902`) keeps the genus and records why the epithet went. `rank_name`
cleans one higher-rank name; `normalise_kingdom` maps kingdom synonyms. The vocabularies are data, in
data_manifests/taxonomy/: placeholders.csv, name_markers.csv, kingdom_synonyms.csv.

Changes, in the order made: html, unicode (diacritics folded), underscores, whitespace, subgenus, authorship
(authors, years, parenthesised notes), hybrid, case, infraspecific, and `placeholder:<why>` (the whole text),
`placeholder_genus:<why>` (nothing kept) or `placeholder_epithet:<why>` (the genus kept).
Known limit: a lowercase author right after the genus (`Atlides hübner`) reads as an epithet, as in BioCLIP.
"""

from __future__ import annotations

import csv
import functools
import html
import re
import unicodedata
from dataclasses import dataclass

import data_manifests

HYBRID_MARK = "\u00d7"  # the multiplication sign of hybrid names; a lone "x" between names means the same
_TAG = re.compile(r"<[^<>]*>")
_SUBGENUS = re.compile(r"^(\S+)\s+\(([A-Z][a-z]+)\)(?=\s+[a-z])")
_PAREN_GROUP = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_YEAR = re.compile(r"[(\[]?(?:1[5-9]|20)[0-9]{2}[a-z]?[)\]]?")
_DIGIT = re.compile(r"[0-9]")
_EDGE_PUNCT = ",;:"
INTERIM = "BOLD interim name"


@dataclass(frozen=True, slots=True)
class CanonicalName:
    """A scientific name reduced to genus and specific epithet ("" when absent), with what was changed."""

    genus: str
    epithet: str
    infraspecific: str
    canonical: str
    hybrid: bool
    changes: tuple[str, ...]

    @property
    def placeholder(self) -> str:
        """Why a genus or epithet was dropped as a placeholder ("" when nothing was)."""
        return next((c.partition(":")[2] for c in self.changes if c.startswith("placeholder")), "")


@functools.cache
def _vocabulary() -> dict[str, tuple[str, str]]:
    """token -> (kind, reason) from placeholders.csv and name_markers.csv, tokens lowercase without dots."""
    vocab: dict[str, tuple[str, str]] = {}
    with open(data_manifests.path("taxonomy/name_markers.csv"), newline="", encoding="utf-8") as f:
        vocab.update((row["token"], (row["role"], "")) for row in csv.DictReader(f))
    with open(data_manifests.path("taxonomy/placeholders.csv"), newline="", encoding="utf-8") as f:
        vocab.update((row["token"], (row["kind"], row["reason"])) for row in csv.DictReader(f))
    return vocab


@functools.cache
def _kingdoms() -> dict[str, str]:
    with open(data_manifests.path("taxonomy/kingdom_synonyms.csv"), newline="", encoding="utf-8") as f:
        return {row["name"].lower(): row["kingdom"] for row in csv.DictReader(f)}


def _kind(token: str) -> tuple[str, str]:
    """(kind, reason) of a token in the vocabularies, ("", "") if it is none of them (`sp.1` counts as `sp`)."""
    key = token.strip(_EDGE_PUNCT).lower().rstrip(".")
    vocab = _vocabulary()
    return vocab.get(key) or vocab.get(re.sub(r"[.0-9]+$", "", key)) or ("", "")


def _shape(word: str) -> str:
    """'lower', 'upper', 'title' or 'mixed' (camelCase, as in BOLD interim names)."""
    letters = word.replace("-", "")
    if letters.islower():
        return "lower"
    if letters.isupper():
        return "upper" if len(letters) > 1 else "title"
    return "title" if letters[0].isupper() and letters[1:].islower() else "mixed"


def _is_word(token: str) -> bool:
    return len(token) > 1 and _WORD.fullmatch(token) is not None


def _clean_text(text: str, changes: list[str]) -> str:
    """Decode entities, drop tags, fold diacritics, turn underscores into spaces, collapse whitespace."""
    out = html.unescape(html.unescape(text))
    if _TAG.search(out) or out != text:
        out = _TAG.sub(" ", out)
        changes.append("html")
    folded = "".join(c for c in unicodedata.normalize("NFKD", out) if not unicodedata.combining(c))
    if folded != unicodedata.normalize("NFC", out):
        changes.append("unicode")
    if "_" in folded:
        folded = folded.replace("_", " ")
        changes.append("underscores")
    if " ".join(text.split()) != text:
        changes.append("whitespace")
    return " ".join(folded.split())


def _strip_parentheses(text: str, changes: list[str]) -> str:
    """Drop a subgenus `Genus (Subgenus) epithet` and every parenthesised part (authorship, notes)."""
    text, n = _SUBGENUS.subn(r"\1", text)
    if n:
        changes.append("subgenus")
    out = text
    while (stripped := _PAREN_GROUP.sub(" ", out)) != out:
        out = stripped
    out = re.split(r"[(\[]", out, maxsplit=1)[0]
    out = " ".join(out.replace(")", " ").replace("]", " ").split())
    if out != text:
        changes.append("authorship")
    return out


def _placeholder_phrase(text: str) -> str:
    """The reason when the whole text is a placeholder (`not_classified`, `(unidentified)`), else ""."""
    key = " ".join(re.sub(r"[()\[\]{}?.]", " ", text.lower().replace("_", " ")).split())
    kind, reason = _vocabulary().get(key, ("", ""))
    return reason if kind == "placeholder" else ""


def _split_hybrid(tokens: list[str], changes: list[str]) -> tuple[list[str], bool]:
    """Remove hybrid marks (`×domestica`, ` x `) before the epithet; a mark after it starts the other parent."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        lone = token == HYBRID_MARK or (token in ("x", "X") and i + 1 < len(tokens) and (i == 0 or out))
        if not lone and not token.startswith(HYBRID_MARK):
            out.append(token)
            continue
        if "hybrid" not in changes:
            changes.append("hybrid")
        if len(out) >= 2:
            break
        if not lone:
            out.append(token[1:])
    return [t for t in out if t], "hybrid" in changes


def _genus(tokens: list[str], changes: list[str]) -> tuple[str, int]:
    """The genus from the first tokens and how many tokens it used; "" with a recorded reason if none."""
    skip = 0
    if len(tokens) > 1 and _kind(tokens[0])[0] == "qualifier":
        changes.append(f"placeholder_epithet:{_kind(tokens[0])[1]}")
        skip = 1
    token = tokens[skip].strip(_EDGE_PUNCT)
    kind, reason = _kind(token)
    if kind in ("placeholder", "qualifier"):
        changes.append(f"placeholder_genus:{reason}")
        return "", skip + 1
    if not _is_word(token) or "-" in token or _shape(token) == "mixed":
        why = INTERIM if _DIGIT.search(token) or _is_word(token) else "abbreviated or not a name"
        changes.append(f"placeholder_genus:{why}")
        return "", skip + 1
    if token != token.capitalize():
        changes.append("case")
    return token.capitalize(), skip + 1


def _looks_like_author(token: str, following: list[str]) -> bool:
    """Whether a word after the genus starts the authorship rather than being the epithet."""
    bare = token.strip(_EDGE_PUNCT)
    if _YEAR.fullmatch(bare) or "." in bare or "&" in bare or _kind(bare)[0] == "author_particle":
        return True
    if not _is_word(bare) or _shape(bare) == "lower":
        return False
    # A capitalised word is an epithet written in the wrong case unless authorship clearly follows it.
    nxt = following[0] if following else ""
    return token.endswith(",") or bool(nxt) and (
        _looks_like_author(nxt, following[1:]) or _is_word(nxt) and _shape(nxt) == "title")


def _epithet(tokens: list[str], changes: list[str]) -> tuple[str, int]:
    """The specific epithet from the tokens after the genus, and how many tokens it used."""
    if not tokens:
        return "", 0
    token = tokens[0].strip(_EDGE_PUNCT)
    kind, reason = _kind(token)
    if kind in ("placeholder", "qualifier"):
        changes.append(f"placeholder_epithet:{reason}")
        return "", len(tokens)  # what follows `sp.` or `cf.` belongs to the placeholder
    if kind == "rank_marker":
        changes.append("placeholder_epithet:rank marker without a species")
        return "", 0
    if _looks_like_author(tokens[0], tokens[1:]):
        return "", 0
    if not _is_word(token) or _shape(token) == "mixed":
        why = INTERIM if _DIGIT.search(token) or _is_word(token) else "not a name"
        changes.append(f"placeholder_epithet:{why}")
        return "", len(tokens)
    if token != token.lower():
        changes.append("case")
    return token.lower(), 1


def _infraspecific(tokens: list[str], changes: list[str]) -> str:
    """The infraspecific epithet after the species (`var. rubrispinus`, a trinomial's third word), or ""."""
    start = 1 if tokens and _kind(tokens[0])[0] == "rank_marker" else 0
    word = tokens[start].strip(_EDGE_PUNCT) if len(tokens) > start else ""
    if not _is_word(word) or _shape(word) != "lower" or _kind(word)[0]:
        return ""
    changes.append("infraspecific")
    return word


def _result(genus: str, epithet: str, infra: str, hybrid: bool, changes: list[str]) -> CanonicalName:
    canonical = f"{genus} {epithet}".strip()
    if reason := _placeholder_phrase(canonical):  # e.g. `No data Smith` reduced to the phrase `No data`
        return CanonicalName("", "", "", "", hybrid, (*dict.fromkeys(changes), f"placeholder:{reason}"))
    return CanonicalName(genus, epithet, infra, canonical, hybrid, tuple(dict.fromkeys(changes)))


def canonicalise(text: str | None) -> CanonicalName:
    """Reduce a scientific name to `Genus epithet`, recording each change; never raises on data."""
    changes: list[str] = []
    cleaned = _clean_text(text or "", changes)
    if reason := _placeholder_phrase(cleaned):
        return _result("", "", "", False, [*changes, f"placeholder:{reason}"])
    tokens, hybrid = _split_hybrid(_strip_parentheses(cleaned, changes).split(), changes)
    if not tokens:
        return _result("", "", "", hybrid, [*changes, "placeholder:empty"])
    genus, used = _genus(tokens, changes)
    if not genus:
        return _result("", "", "", hybrid, changes)
    rest = tokens[used:]
    uncertain = next((_kind(t)[1] for t in tokens if _kind(t)[0] == "qualifier"), "")
    epithet, used = _epithet(rest, changes)
    if epithet and uncertain:
        changes.append(f"placeholder_epithet:{uncertain}")
        epithet = ""
    infra = _infraspecific(rest[used:], changes) if epithet else ""
    after = rest[used + (2 if infra and _kind(rest[used])[0] == "rank_marker" else bool(infra)):]
    if any(_kind(t)[0] != "qualifier" for t in after):
        changes.append("authorship")
    return _result(genus, epithet, infra, hybrid, changes)


def rank_name(text: str | None) -> str:
    """One higher-rank name, cleaned: `COLEOPTERA` -> `Coleoptera`; placeholders and non-names -> ""."""
    cleaned = _clean_text(text or "", [])
    tokens = _strip_parentheses(cleaned, []).split()
    if _placeholder_phrase(cleaned) or not tokens:
        return ""
    if any(_kind(t)[0] in ("placeholder", "qualifier") for t in tokens):
        return ""  # `unclassified Diptera`, `Cercozoa incertae sedis`: the rank itself is unknown
    if any(_is_word(w := t.strip(_EDGE_PUNCT)) and _shape(w) == "lower" and not _kind(w)[0] for t in tokens[1:]):
        return ""  # `Metopina group`, `Culex complex`: an informal group, not the named taxon
    name = tokens[0].strip(_EDGE_PUNCT).lstrip(HYBRID_MARK)
    return name.capitalize() if _is_word(name) and _shape(name) != "mixed" else ""


def normalise_kingdom(name: str | None) -> str:
    """The kingdom for a name or its synonym (`Metazoa` -> `Animalia`, `Viridiplantae` -> `Plantae`)."""
    cleaned = rank_name(name)
    return _kingdoms().get(cleaned.lower(), cleaned)
