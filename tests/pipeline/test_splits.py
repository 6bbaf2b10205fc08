"""Splits come from a blake2b hash of the id: stable, in proportion, per source, and moved by the seed."""

from collections import Counter

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.images import Processed
from pipeline.records import SourceRecord, treeoflife_id
from pipeline.splits import AssignSplits, in_train_small, split_of


def ids(source: str, count: int) -> list[str]:
    return [treeoflife_id(source, str(n)) for n in range(count)]


def sample(source: str, native_id: str):
    record = SourceRecord.create(source, native_id, image_ref="x", label_key="k", label=())
    return record, Processed(b"", 1, 1, 1, 1, "JPEG", "RGB", "0" * 32, 0)


def test_assignment_is_stable_for_known_ids() -> None:
    assert (split_of(treeoflife_id("inat21", "1")), in_train_small(treeoflife_id("inat21", "1"))) == ("train", False)
    assert split_of(treeoflife_id("inat21", "22")) == "val"
    assert (split_of(treeoflife_id("inat21", "20")), in_train_small(treeoflife_id("inat21", "20"))) == ("train", True)


def test_proportions_per_source_within_tolerance() -> None:
    for source in ("inat21", "bioscan", "eol"):
        source_ids = ids(source, 20_000)
        splits = Counter(split_of(i) for i in source_ids)
        assert abs(splits["val"] / 20_000 - 0.05) < 0.006, (source, splits)
        small = sum(in_train_small(i) for i in source_ids)
        assert abs(small / splits["train"] - 0.10) < 0.008, (source, small)


def test_seed_changes_the_assignment() -> None:
    source_ids = ids("eol", 2_000)
    base = [split_of(i, seed=0) for i in source_ids]
    assert base != [split_of(i, seed=1) for i in source_ids]
    assert base == [split_of(i, seed=0) for i in source_ids]


def test_composite_tags_each_sample_and_puts_train_small_in_train_too() -> None:
    inputs = [sample("inat21", n) for n in ("1", "22", "20")]
    with TestPipeline(runner="FnApiRunner") as p:
        tagged = p | beam.Create(inputs) | AssignSplits() | beam.Map(lambda t: (t[0], t[1][0].native_id))
        assert_that(tagged, equal_to([("train", "1"), ("val", "22"), ("train", "20"), ("train_small", "20")]))


def test_composite_with_empty_input() -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        assert_that(p | beam.Create([]) | AssignSplits(), equal_to([]))
