"""Samples/s of our training data pipeline vs open_clip's own webdataset pipeline, on the same shards.

    python benchmarks/bench_loader.py --samples 6000 --workers 2 --batch-size 128 --repeats 3

Both read the same synthetic shards (the build's exact format, 224 px JPEGs, written once into --shards-dir), use
the same image transform (open_clip's training transform for 224 px: random resized crop, bicubic, normalise)
and tokenizer, the same worker count and batch size, and the same sample shuffle buffer. open_clip's pipeline is
`open_clip_train.data.get_wds_dataset` reading the default `txt` caption; ours is `training.data.ShardBatches`
reading `txt` and, second, the five mixed caption types per sample that BioCLIP's per-batch mixing needs. Each
pipeline runs one full epoch per repeat, alternating; the rate counts every sample after the first batch (so
worker start-up is excluded alike). Prints a table and appends nothing: copy the figures to RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import open_clip
from open_clip_train.data import get_wds_dataset

from training.data import DataSpec, ShardBatches, count_samples, expand_sources, make_loader
from training.synthetic import write_synthetic_shards

log = logging.getLogger("bench_loader")


def epoch_rate(batches: Iterable) -> tuple[float, int]:
    """(samples/s after the first batch, samples) of one pass over `batches`."""
    iterator = iter(batches)
    first = next(iterator)
    started, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch[0])
    return count / (time.perf_counter() - started), count + len(first[0])


def open_clip_epoch(pattern: str, samples: int, args: argparse.Namespace, transform, tokenizer) -> Iterable:
    options = argparse.Namespace(train_data=pattern, val_data=None, dataset_resampled=False,
                                 train_num_samples=samples, train_data_upsampling_factors=None,
                                 batch_size=args.batch_size, workers=args.workers, world_size=1, seed=0)
    return get_wds_dataset(options, transform, is_train=True, epoch=0, tokenizer=tokenizer).dataloader


def our_epoch(pattern: str, samples: int, args: argparse.Namespace, transform, tokenizer, text_type: str) -> Iterable:
    spec = DataSpec(expand_sources([pattern]), (1.0,), resampled=False, text_type=text_type, mix="per-batch",
                    sample_shuffle=5000, shard_shuffle=True, batch_size=args.batch_size, workers=args.workers,
                    seed=0)
    data = ShardBatches(spec, transform, tokenizer, batches=samples // args.batch_size)
    data.set_position(0)
    return make_loader(data, args.workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards-dir", type=Path, default=Path("/tmp/bench-loader-shards"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    if not (args.shards_dir / "train/sizes.json").is_file():
        write_synthetic_shards(args.shards_dir, args.samples, species=100, shards=args.shards)
    pattern = f"{args.shards_dir}/train/shard-{{000000..{args.shards - 1:06d}}}.tar"
    train_samples = count_samples(expand_sources([pattern])[0])
    transform = open_clip.image_transform(224, is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    pipelines: dict[str, Callable[[], Iterable]] = {
        "open_clip get_wds_dataset (txt)": lambda: open_clip_epoch(pattern, train_samples, args, transform, tokenizer),
        "treeoflife ShardBatches (txt)": lambda: our_epoch(pattern, train_samples, args, transform, tokenizer, "txt"),
        "treeoflife ShardBatches (mixed, 5 types)": lambda: our_epoch(pattern, train_samples, args, transform,
                                                                      tokenizer, "mixed"),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for repeat in range(args.repeats):
        for name, make in pipelines.items():
            rate, seen = epoch_rate(make())
            rates[name].append(rate)
            log.info("repeat %d %-42s %8.1f samples/s (%d samples)", repeat, name, rate, seen)
    baseline = statistics.median(rates["open_clip get_wds_dataset (txt)"])
    print(f"\n{train_samples} samples, {args.shards} shards, batch {args.batch_size}, {args.workers} workers, "
          f"median of {args.repeats}:")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:42s} {median:8.1f} samples/s  {median / baseline:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
