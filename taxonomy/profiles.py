"""Resolution profiles: which authority wins for ranks and for common names, as data.

    >>> get_profile("bioclip-v1").rank_precedence
    ('itis', 'gbif', 'inat', 'eol')

Profiles live in data_manifests/taxonomy/profiles/<name>.toml (each key is described in bioclip-v1.toml).
`list_profiles` names them, `get_profile` loads one by name and `load_profile` reads any file of that format;
a profile that names an unknown authority, source, rank or key is refused before any work starts.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import data_manifests

PROFILE_DIR = "taxonomy/profiles"
AUTHORITIES = ("itis", "gbif", "inat", "eol")
SOURCES = ("inat21", "bioscan", "eol")
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
COMMON_NAME_SOURCES = ("given", "itis", "inat", "eol_preferred", "eol_english", "gbif")
_KEYS = {"": {"name", "description", "labels", "ranks", "common_names", "fuzzy"},
         "labels": {"as_given", "keep_partial", "implied"},
         "ranks": {"precedence", "homonym_ranks", "fill_missing"},
         "common_names": {"precedence"},
         "fuzzy": {"enabled", "max_distance", "max_relative", "same_first_letter"}}


@dataclass(frozen=True, slots=True)
class FuzzyRule:
    """When a misspelt epithet may match another epithet of its genus."""

    enabled: bool
    max_distance: int  # Damerau-Levenshtein (optimal string alignment) edits
    max_relative: float  # edits / length of the longer epithet
    same_first_letter: bool


@dataclass(frozen=True, slots=True)
class Profile:
    """One resolution policy; tuples are in precedence order, first wins."""

    name: str
    description: str
    as_given: tuple[str, ...]  # sources whose labels are taken as given, only cleaned
    keep_partial: tuple[str, ...]  # sources whose labels may stop above species
    implied: tuple[tuple[str, tuple[str, ...]], ...]  # (source, leading ranks it leaves implicit)
    rank_precedence: tuple[str, ...]
    homonym_ranks: tuple[str, ...]  # ranks where a candidate contradicting the source is another taxon
    fill_missing: bool  # fill a rank the chosen authority lacks from the next consistent one
    common_name_precedence: tuple[str, ...]
    fuzzy: FuzzyRule

    def implied_ranks(self, source: str) -> tuple[str, ...]:
        """The leading ranks a source leaves implicit (BIOSCAN: Animalia, Arthropoda, Insecta), else ()."""
        return dict(self.implied).get(source, ())


def _check_names(where: str, values: object, allowed: tuple[str, ...], *, unique: bool = True) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where} must be a list of strings, got {values!r}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"{where} names {', '.join(map(repr, unknown))}; expected some of {', '.join(allowed)}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{where} lists a value twice: {values!r}")
    return tuple(values)


def _typed(where: str, value: object, kind: type | tuple[type, ...]) -> object:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{where} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _check_keys(where: str, table: object, section: str) -> dict:
    _typed(f"{where}: [{section or 'top level'}]", table, dict)
    expected = _KEYS[section]
    if unknown := set(table) - expected:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} in [{section or 'top level'}]; "
                         f"expected {sorted(expected)}")
    if missing := expected - set(table) - {"implied"}:
        raise ValueError(f"{where}: missing key(s) {sorted(missing)} in [{section or 'top level'}]")
    return table


def profile_from_dict(data: dict, where: str = "profile") -> Profile:
    """A validated Profile from a parsed TOML document; raises ValueError naming the key and allowed values."""
    _check_keys(where, data, "")
    labels = _check_keys(where, data["labels"], "labels")
    ranks = _check_keys(where, data["ranks"], "ranks")
    names = _check_keys(where, data["common_names"], "common_names")
    fuzzy = _check_keys(where, data["fuzzy"], "fuzzy")
    implied = _typed(f"{where}: labels.implied", labels.get("implied", {}), dict)
    _check_names(f"{where}: labels.implied", list(implied), SOURCES)
    for source, names_given in implied.items():
        _typed(f"{where}: labels.implied.{source}", names_given, list)
        if len(names_given) > 5 or not all(isinstance(n, str) and n for n in names_given):
            raise ValueError(f"{where}: labels.implied.{source} must list at most 5 non-empty rank names from "
                             f"the kingdom down, got {names_given!r}")
    precedence = _check_names(f"{where}: ranks.precedence", ranks["precedence"], AUTHORITIES)
    if not precedence:
        raise ValueError(f"{where}: ranks.precedence is empty; list some of {', '.join(AUTHORITIES)}")
    rule = FuzzyRule(bool(_typed(f"{where}: fuzzy.enabled", fuzzy["enabled"], bool)),
                     int(_typed(f"{where}: fuzzy.max_distance", fuzzy["max_distance"], int)),
                     float(_typed(f"{where}: fuzzy.max_relative", fuzzy["max_relative"], (int, float))),
                     bool(_typed(f"{where}: fuzzy.same_first_letter", fuzzy["same_first_letter"], bool)))
    if rule.max_distance < 0 or not 0 <= rule.max_relative <= 1:
        raise ValueError(f"{where}: fuzzy.max_distance must be >= 0 and max_relative in [0, 1], got {rule!r}")
    return Profile(
        name=str(_typed(f"{where}: name", data["name"], str)),
        description=str(_typed(f"{where}: description", data["description"], str)),
        as_given=_check_names(f"{where}: labels.as_given", labels["as_given"], SOURCES),
        keep_partial=_check_names(f"{where}: labels.keep_partial", labels["keep_partial"], SOURCES),
        implied=tuple(sorted((source, tuple(v)) for source, v in implied.items())),
        rank_precedence=precedence,
        homonym_ranks=_check_names(f"{where}: ranks.homonym_ranks", ranks["homonym_ranks"], RANKS[:5]),
        fill_missing=bool(_typed(f"{where}: ranks.fill_missing", ranks["fill_missing"], bool)),
        common_name_precedence=_check_names(f"{where}: common_names.precedence", names["precedence"],
                                            COMMON_NAME_SOURCES),
        fuzzy=rule)


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile file."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"profile {path} is not valid TOML: {error}") from error
    return profile_from_dict(data, str(path))


def list_profiles() -> list[str]:
    """The names of the bundled profiles, sorted."""
    folder = resources.files(data_manifests.__name__).joinpath(PROFILE_DIR)
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


@functools.cache
def get_profile(name: str) -> Profile:
    """A bundled profile by name; raises ValueError naming the known ones if there is no such profile."""
    known = list_profiles()
    if name not in known:
        raise ValueError(f"unknown taxonomy profile {name!r}; known profiles: {', '.join(known)}")
    profile = load_profile(data_manifests.path(f"{PROFILE_DIR}/{name}.toml"))
    if profile.name != name:
        raise ValueError(f"profile file {name}.toml declares name {profile.name!r}; the two must agree")
    return profile
