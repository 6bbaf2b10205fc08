"""Synthetic shards in the build's exact format, for the GPU check, the loader benchmark and the training tests.

    python -m training.synthetic OUT --samples 20000 --species 200

Pictures are the sample kit's (`pipeline.samplekit.drawing`: each rank adds a visual trait, so captions and
pixels agree) of real taxa from the kit's iNat21 pool; samples are written with the build's own shard writer
(`pipeline.shards.write_split`), so the members, captions, `sizes.json` and wids index are what `tol build`
writes. The same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipeline.argtypes import int_at_least
from pipeline.records import TREEOFLIFE_NAMESPACE
from pipeline.samplekit.drawing import draw_specimen
from pipeline.samplekit.taxa import Taxon, inat21_pool
from pipeline.shards import ShardSample, write_split
from taxonomy.captions import RANKS, Label, captions

log = logging.getLogger(__name__)


def synthetic_samples(split: str, count: int, taxa: Sequence[Taxon], side: int, seed: int) -> Iterator:
    """`count` ShardSamples of `split`, cycling through `taxa`, each a fresh drawing of its taxon.

    Keys are uuid5 of `synthetic:SPLIT-INDEX` in the build's namespace; the `json` member says source `synthetic`.
    """
    rng = np.random.default_rng([seed, len(split)])
    for index in range(count):
        taxon = taxa[index % len(taxa)]
        buffer = io.BytesIO()
        draw_specimen(taxon.ranks, (side, side), rng).save(buffer, format="JPEG", quality=90)
        jpeg = buffer.getvalue()
        label = Label(taxon.ranks, taxon.common_name)
        key = str(uuid.uuid5(TREEOFLIFE_NAMESPACE, f"synthetic:{split}-{index}"))
        meta = {"treeoflife_id": key, "source": "synthetic", "native_id": f"{split}-{index}", "license": "cc0-1.0",
                **dict(zip(RANKS, label.ranks, strict=True)), "common_name": label.common_name}
        yield ShardSample(key, split, jpeg, captions(label), meta)


def write_synthetic_shards(out: Path, samples: int, species: int, shards: int, side: int = 224,
                           val_fraction: float = 0.05, seed: int = 0) -> dict[str, dict]:
    """Write `train` and `val` splits of synthetic samples under `out`; returns each split's summary."""
    pool = inat21_pool()
    if not 1 <= species <= len(pool):
        raise ValueError(f"--species {species}: the kit's iNat21 pool holds 1..{len(pool)} species")
    taxa = pool[:species]
    val = max(1, round(samples * val_fraction))
    summaries = {}
    for split, count, split_shards in (("train", samples - val, shards), ("val", val, 1)):
        log.info("writing %d synthetic %s samples into %d shards under %s", count, split, split_shards, out)
        summaries[split] = write_split(synthetic_samples(split, count, taxa, side, seed), str(out), split,
                                       split_shards)
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for the train/ and val/ shard folders")
    parser.add_argument("--samples", type=int_at_least(1), default=2000, help="samples in all (default 2000)")
    parser.add_argument("--species", type=int_at_least(1), default=100, help="distinct species (default 100)")
    parser.add_argument("--shards", type=int_at_least(1), default=8, help="train shards (default 8)")
    parser.add_argument("--side", type=int_at_least(1), default=224, help="image side in pixels (default 224)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        write_synthetic_shards(args.out, args.samples, args.species, args.shards, args.side)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
