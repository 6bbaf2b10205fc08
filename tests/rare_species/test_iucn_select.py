"""Tests for rare_species.iucn (category table, unknown strings counted) and the pure rules of rare_species.select."""

from __future__ import annotations

from pathlib import Path

import pytest

from rare_species import select
from rare_species.iucn import Assessment, category_code, check_categories, read_assessments


def test_legacy_categories_map_and_unknown_strings_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "assessments.csv"
    path.write_text("scientificName,redlistCategory\nPica pica,LR/nt\nAa bb,Lower Risk/near threatened\n"
                    "Cc dd,Vulnerabel\nEe ff,Vulnerabel\nGg,Endangered\nAa bb (Linnaeus 1758),Endangered\n"
                    "Hh ii,lower risk/least concern\n", encoding="utf-8")
    export = read_assessments(str(path))
    assert {k: a.code for k, a in export.assessments.items()} == {"pica pica": "NT", "aa bb": "NT", "hh ii": "LC"}
    assert export.unknown == {"Vulnerabel": 2}
    assert export.unusable_names == {"no_binomial": 1, "repeated_species": 1}
    assert (category_code("LR/cd"), category_code(" critically  endangered ")) == ("NT", "CR")


def test_bad_category_flag_names_the_value() -> None:
    with pytest.raises(ValueError, match="XX not among"):
        check_categories(("NT", "XX"))


def image(content_id: int, md5: str, phash: int) -> select.Image:
    return select.Image(content_id, 1, b"", md5, phash, "", "", "")


def test_unique_images_drops_md5_and_near_duplicates_keeping_smallest_id() -> None:
    images = [image(5, "a", 0), image(3, "a", 0), image(7, "b", 0b111), image(9, "c", (1 << 63) | 0xFFFF)]
    kept, why = select.unique_images(images)
    assert [i.content_id for i in kept] == [3, 9]
    assert why == {"md5_duplicate": 1, "near_duplicate": 1}


def species(key: str, cls: str) -> select.Species:
    return select.Species(key, key, ("A", "B", cls, "D", "E", *key.split()), "", Assessment(key, "Endangered", "EN"),
                          (1,))


def test_seeded_choice_is_stable_and_stratified_round_robin() -> None:
    pool = [species(f"genus{i} sp{i}", "Aves" if i < 8 else "Mammalia") for i in range(10)]
    first = select.choose_species(pool, 4, 0, None)
    assert first == select.choose_species(list(reversed(pool)), 4, 0, None)
    assert first == sorted(pool, key=lambda s: select.order_key(0, s.key))[:4]
    assert any(select.choose_species(pool, 4, seed, None) != first for seed in range(1, 6))
    stratified = select.choose_species(pool, 4, 0, "class")
    assert sorted(s.ranks[2] for s in stratified) == ["Aves", "Aves", "Mammalia", "Mammalia"]
