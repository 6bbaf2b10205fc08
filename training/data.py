"""The training data pipeline: webdataset shards of `tol build` -> batches of (images, tokens, skipped count).

    spec = DataSpec(expand_sources(["out/shards/train/shard-{000000..000039}.tar"]), (1.0,), resampled=False,
                    text_type="mixed", mix="per-batch", sample_shuffle=1000, shard_shuffle=True, batch_size=256,
                    workers=8, seed=0)
    data = ShardBatches(spec, transform, tokenizer, batches=1000)   # micro-batches per epoch and rank
    data.set_position(epoch=0)
    for images, tokens, skipped in make_loader(data, workers=8): ...

Every random choice is seeded by (seed, epoch, rank, worker) or by the sample key, never by process state, so a
run resumed at micro-batch b of an epoch sees exactly the batches an uninterrupted run saw (as long as the worker
count is the same): each worker skips its share of the first b batches as raw samples, before decoding, and
worker ids are rotated so that the DataLoader's round-robin starts with the worker that owns batch b.

Shards are read with webdataset's tar iterators (suffixes come lower-cased: `taxonTag.txt` is `taxontag.txt`),
only the members a batch needs are read, captions are tokenized once per distinct text, and a sample that cannot
be decoded is skipped and counted (the count travels with the next batch).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import tarfile_samples

from taxonomy.captions import TEXT_TYPES

MIX_TYPES = ("sci", "com", "taxon", "sci_com", "taxon_com")  # BioCLIP's mixed-text set
SINGLE_TYPES = (*TEXT_TYPES, "txt")
MIX_MODES = ("per-batch", "per-sample")
IMAGE_MEMBER = "jpg"
MAX_FAILING_IN_A_ROW = 10_000  # corrupt samples are skipped; this many in a row means the data is not what we read

Batch = tuple[torch.Tensor, torch.Tensor, int]  # images [B,3,H,W]; tokens [B,L] or [B,len(MIX_TYPES),L]; skipped

log = logging.getLogger(__name__)


def member(text_type: str) -> str:
    """The key webdataset gives a text member: `taxonTag` -> `taxontag.txt`, `txt` -> `txt`."""
    return "txt" if text_type == "txt" else f"{text_type}.txt".lower()


def expand_sources(patterns: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Each source's shard URLs (brace patterns; `::` joins several in one source); missing local files fail."""
    sources = []
    for pattern in patterns:
        urls = tuple(expand_urls(pattern))
        missing = [url for url in urls if "://" not in url and not os.path.isfile(url)]
        if missing:
            raise ValueError(f"--train-data {pattern!r}: {len(missing)} of {len(urls)} shards do not exist "
                             f"(first: {missing[0]})")
        sources.append(urls)
    return tuple(sources)


def count_samples(urls: Iterable[str]) -> int:
    """Samples in `urls`, from the `sizes.json` beside each shard (as `tol build` and open_clip write it)."""
    sizes: dict[str, dict[str, int]] = {}
    total = 0
    for url in urls:
        folder, name = os.path.split(url)
        if folder not in sizes:
            path = os.path.join(folder, "sizes.json")
            if not os.path.isfile(path):
                raise ValueError(f"no sizes.json beside {url}; pass --train-num-samples")
            with open(path, encoding="utf-8") as f:
                sizes[folder] = json.load(f)
        if name not in sizes[folder]:
            raise ValueError(f"{name} is not listed in {folder}/sizes.json; pass --train-num-samples")
        total += sizes[folder][name]
    return total


def stable_int(*parts: object) -> int:
    """A 63-bit integer from `parts`, the same in every process (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def worker_batches(worker: int, batches: int, workers: int) -> int:
    """How many of global batches 0..batches-1 worker `worker` owns when batch j belongs to worker j % workers."""
    return max(0, (batches - worker + workers - 1) // workers)


@dataclass(frozen=True)
class DataSpec:
    """What the loader reads and how: shards per source, sampling, text type, batch size, workers, seed, rank."""

    sources: tuple[tuple[str, ...], ...]
    weights: tuple[float, ...]
    resampled: bool
    text_type: str  # one of SINGLE_TYPES, or "mixed"
    mix: str  # per-batch | per-sample (used when text_type is "mixed")
    sample_shuffle: int  # shuffle buffer in samples; 0 = none
    shard_shuffle: bool  # shuffle the shard order each epoch (epoch mode)
    batch_size: int  # per rank
    workers: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.text_type not in (*SINGLE_TYPES, "mixed"):
            raise ValueError(f"--text-type {self.text_type!r}: expected one of {', '.join(SINGLE_TYPES)}, mixed")
        if self.mix not in MIX_MODES:
            raise ValueError(f"--mix {self.mix!r}: expected one of {', '.join(MIX_MODES)}")
        if len(self.weights) != len(self.sources) or any(w <= 0 for w in self.weights):
            raise ValueError(f"--train-data-weights {self.weights}: need one positive weight per source "
                             f"({len(self.sources)})")
        if len(set(self.weights)) > 1 and not self.resampled:
            raise ValueError("--train-data-weights need --dataset-resampled (epoch mode reads every shard once)")
        shards = sum(map(len, self.sources))
        if not self.resampled and shards < self.world_size * max(1, self.workers):
            raise ValueError(f"{shards} shards cannot feed {self.world_size} rank(s) x {max(1, self.workers)} "
                             "worker(s) in epoch mode; use fewer --workers or --dataset-resampled")

    @property
    def per_batch_mix(self) -> bool:
        return self.text_type == "mixed" and self.mix == "per-batch"

    @property
    def wanted_members(self) -> frozenset[str]:
        types = MIX_TYPES if self.text_type == "mixed" else (self.text_type,)
        return frozenset((IMAGE_MEMBER, *map(member, types)))


def shard_rounds(spec: DataSpec, epoch: int, worker: int, workers: int, cycle: bool) -> Iterator[Iterable[str]]:
    """Shard URLs for one worker, by pass: this rank's and worker's slice of the shuffled list, once per pass (again
    and again if `cycle`); or one endless pass of weighted resampling."""
    if spec.resampled:
        yield resampled_shards(spec, epoch, worker)
        return
    shards = sorted(url for source in spec.sources for url in source)
    for round_ in itertools.count() if cycle else (0,):
        order = list(shards)
        if spec.shard_shuffle:
            random.Random(stable_int(spec.seed, epoch, round_, "order")).shuffle(order)
        yield order[spec.rank::spec.world_size][worker::workers]


def resampled_shards(spec: DataSpec, epoch: int, worker: int) -> Iterator[str]:
    """Endless shard URLs for one worker: a source drawn by weight, then one of its shards, seeded per worker."""
    rng = random.Random(stable_int(spec.seed, epoch, spec.rank, worker, "shards"))
    while True:
        source = rng.choices(spec.sources, weights=spec.weights)[0]
        yield rng.choice(source)


def shuffled(samples: Iterable[dict], buffer: int, rng: random.Random) -> Iterator[dict]:
    """Samples in a seeded order, drawn from a buffer of up to `buffer` (webdataset's shuffle, seeded here)."""
    if buffer <= 1:
        yield from samples
        return
    pool: list[dict] = []
    for sample in samples:
        if len(pool) < buffer:
            pool.append(sample)
            continue
        index = rng.randrange(buffer)
        pool[index], sample = sample, pool[index]
        yield sample
    rng.shuffle(pool)
    yield from pool


class ShardBatches(IterableDataset):
    """Batches from shards for one epoch (or part of one): set the position, then iterate via a DataLoader."""

    def __init__(self, spec: DataSpec, transform: Callable, tokenizer: Callable, batches: int | None) -> None:
        self.spec, self.transform, self.tokenizer, self.batches = spec, transform, tokenizer, batches
        self.tokens: dict[str, torch.Tensor] = {}  # a plain dict, not a cached lambda: spawned workers get a pickle
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Read `epoch` from its micro-batch `start_batch` on (set before iterating; workers copy it)."""
        self.epoch, self.start = epoch, start_batch

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        workers = info.num_workers if info else 1
        worker = ((info.id if info else 0) + self.start) % workers  # rotated: the first batch is batch `start`'s
        skip = worker_batches(worker, self.start, workers)
        quota = None if self.batches is None else worker_batches(worker, self.batches, workers) - skip
        if quota is not None and quota <= 0:
            return
        skipped = [0]

        def on_error(error: Exception) -> bool:
            skipped[0] += 1
            log.warning("skipping unreadable shard data: %s", error)
            return True

        rng = random.Random(stable_int(self.spec.seed, self.epoch, self.spec.rank, worker, "samples"))
        # The shuffle buffer empties at the end of each pass over the worker's shards, so that a pass (an epoch when
        # the shards divide evenly) yields its own samples only, each once.
        samples = itertools.chain.from_iterable(
            self._pass(urls, on_error, rng)
            for urls in shard_rounds(self.spec, self.epoch, worker, workers, cycle=self.batches is not None))
        for _ in range(skip * self.spec.batch_size):
            if next(samples, None) is None:
                return
        yield from self._batched(samples, quota, skipped)

    def _pass(self, urls: Iterable[str], on_error: Callable, rng: random.Random) -> Iterator[dict]:
        """One pass over `urls`, shuffled; a pass with no sample at all is an error (cycling it would never end)."""
        count = 0
        for sample in shuffled(tarfile_samples(({"url": url} for url in urls), handler=on_error,
                                               select_files=self._wanted), self.spec.sample_shuffle, rng):
            count += 1
            yield sample
        if count == 0:
            raise ValueError(f"no sample with members {sorted(self.spec.wanted_members)} in shards {list(urls)[:3]}")

    def tokenize(self, text: str) -> torch.Tensor:
        """The tokens of one caption, computed once per distinct text (up to 65,536 kept)."""
        tokens = self.tokens.get(text)
        if tokens is None:
            if len(self.tokens) >= 1 << 16:
                self.tokens.clear()
            tokens = self.tokens[text] = self.tokenizer([text])[0]
        return tokens

    def _wanted(self, name: str) -> bool:
        return name.split(".", 1)[-1].lower() in self.spec.wanted_members

    def _batched(self, samples: Iterator[dict], quota: int | None, skipped: list[int]) -> Iterator[Batch]:
        images, tokens, made, failing = [], [], 0, 0
        for sample in samples:
            try:
                image, text = self.decode(sample)
            except (OSError, ValueError, KeyError, UnicodeDecodeError) as error:
                skipped[0], failing = skipped[0] + 1, failing + 1
                log.warning("skipping sample %s: %s", sample.get("__key__"), error)
                if failing == MAX_FAILING_IN_A_ROW:
                    raise ValueError(f"{failing} samples in a row could not be decoded (last: {error}); are these "
                                     f"shards from `tol build`, with the {self.spec.text_type} captions?") from error
                continue
            failing = 0
            images.append(image)
            tokens.append(text)
            if len(images) == self.spec.batch_size:
                yield torch.stack(images), torch.stack(tokens), skipped[0]
                images, tokens, skipped[0], made = [], [], 0, made + 1
                if quota is not None and made == quota:
                    return
        if images and quota is None:  # a single pass (validation) keeps its last, smaller batch
            yield torch.stack(images), torch.stack(tokens), skipped[0]

    def decode(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(image tensor, tokens) of one raw sample; augmentation randomness is seeded by the sample key."""
        key = sample["__key__"]
        with Image.open(io.BytesIO(sample[IMAGE_MEMBER])) as opened:
            image = opened.convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_int(self.spec.seed, self.epoch, key))
            pixels = self.transform(image)
        if self.spec.per_batch_mix:
            texts = [self._text(sample, kind) for kind in MIX_TYPES]
            return pixels, torch.stack([self.tokenize(text) for text in texts])
        kind = self.spec.text_type
        if kind == "mixed":  # per-sample: the paper's draw, seeded by the key so that it repeats exactly
            kind = MIX_TYPES[stable_int(self.spec.seed, self.epoch, key, "text") % len(MIX_TYPES)]
        return pixels, self.tokenize(self._text(sample, kind))

    @staticmethod
    def _text(sample: dict, text_type: str) -> str:
        name = member(text_type)
        if name not in sample:
            raise KeyError(f"no {name} member")
        return sample[name].decode("utf-8").strip()


def batch_text_type(seed: int, step: int) -> int:
    """The per-batch mixed text type of optimiser step `step` (an index into MIX_TYPES), the same on every rank."""
    return stable_int(seed, step, "batch-text") % len(MIX_TYPES)


def micro_batches_per_epoch(num_samples: int, batch_size: int, world_size: int, accum_freq: int) -> int:
    """Micro-batches per rank per epoch: whole optimiser steps covering `num_samples` (at least one)."""
    steps = max(1, math.ceil(num_samples / (batch_size * world_size * accum_freq)))
    return steps * accum_freq


def make_loader(dataset: ShardBatches, workers: int) -> DataLoader:
    """A DataLoader over already-batched data; worker processes keep the batch order (in_order)."""
    return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=False,
                      pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None)
