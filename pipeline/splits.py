"""Deterministic train / val / train_small assignment from a hash of the treeoflife_id.

    samples | AssignSplits(seed=0)     # -> (split, sample); a train_small sample comes out twice

`split_of` maps blake2b(seed, treeoflife_id) to [0, 1): below `val_fraction` (5%) is `val`, the rest `train`. The
hash is per id, not per source, so every source gets the same expected fraction (per source, 5% within sampling
noise: about +-0.2 points for 10,000 records); no cross-source ordering is involved, so adding a source never moves
another's samples. `train_small` is 10% of `train`, from an independent hash of the same id; a train_small sample is
ALSO in `train`, as in BioCLIP's catalog, which lists it under both. Python's `hash()` is never used (it is salted
per process).
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.process import Sample

TRAIN, VAL, TRAIN_SMALL = "train", "val", "train_small"
SPLITS = (TRAIN, VAL, TRAIN_SMALL)
VAL_FRACTION = 0.05
TRAIN_SMALL_FRACTION = 0.10
Tagged = tuple[str, Sample]  # (split, sample)


def unit_hash(treeoflife_id: str, seed: int, purpose: str) -> float:
    """A uniform value in [0, 1) from blake2b of the seed, the purpose and the id; stable across runs and machines."""
    digest = hashlib.blake2b(f"{seed}:{purpose}:{treeoflife_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(treeoflife_id: str, seed: int = 0, val_fraction: float = VAL_FRACTION) -> str:
    """`val` for a `val_fraction` of ids, `train` for the rest."""
    return VAL if unit_hash(treeoflife_id, seed, VAL) < val_fraction else TRAIN


def in_train_small(treeoflife_id: str, seed: int = 0, val_fraction: float = VAL_FRACTION,
                   train_small_fraction: float = TRAIN_SMALL_FRACTION) -> bool:
    """Whether a train sample is also in train_small (a `train_small_fraction` of train)."""
    return (split_of(treeoflife_id, seed, val_fraction) == TRAIN
            and unit_hash(treeoflife_id, seed, TRAIN_SMALL) < train_small_fraction)


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be a fraction in [0, 1]")


class AssignSplitFn(beam.DoFn):
    """sample -> (split, sample), and also (train_small, sample) for a train_small one; a counter per split."""

    def __init__(self, seed: int, val_fraction: float, train_small_fraction: float) -> None:
        self._seed, self._val, self._small = seed, val_fraction, train_small_fraction

    def process(self, sample: Sample):
        record = sample[0]
        split = split_of(record.treeoflife_id, self._seed, self._val)
        Metrics.counter("splits", split).inc()
        Metrics.counter("splits", f"{record.source}.{split}").inc()
        yield split, sample
        if split == TRAIN and unit_hash(record.treeoflife_id, self._seed, TRAIN_SMALL) < self._small:
            Metrics.counter("splits", TRAIN_SMALL).inc()
            yield TRAIN_SMALL, sample


class AssignSplits(beam.PTransform):
    """Samples -> (split, sample) elements; train_small samples appear under both `train` and `train_small`."""

    def __init__(self, seed: int = 0, val_fraction: float = VAL_FRACTION,
                 train_small_fraction: float = TRAIN_SMALL_FRACTION) -> None:
        super().__init__()
        check_fraction("val_fraction", val_fraction)
        check_fraction("train_small_fraction", train_small_fraction)
        self._args = (seed, val_fraction, train_small_fraction)

    def expand(self, samples):
        return samples | "AssignSplit" >> beam.ParDo(AssignSplitFn(*self._args))  # (split, sample)
