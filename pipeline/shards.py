"""Write kept samples as byte-reproducible webdataset shards, one directory per split (DESIGN.md "Shard format").

    samples | WriteShards("out/shards", {"train": 40, "val": 2})   # -> one summary dict per split

Each sample goes to shard `shard_of(key, n)` of its split (a blake2b hash of the treeoflife_id, so any runner
makes the same assignment). A shard's members are sorted by key, then member name, with a fixed mtime, owner and
mode, so the same samples give the same bytes. Every file goes to a temp name and is renamed; the per-shard
`shard-NNNNNN.stats.json`, written last, marks a shard done, and a rerun skips done shards. Once all shards of a
split are done, `sizes.json` (open_clip) and `{split}.wids.json` (webdataset's wids) are written beside them.
Paths go through Beam FileSystems, so `out_dir` may be local or a `gs://` / `s3://` URL.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import tarfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.images import Processed
from pipeline.records import SourceRecord
from pipeline.samplekit.archives import FIXED_MTIME
from taxonomy.captions import DEFAULT_TEXT_TYPE, RANKS, SHARD_TEXT_MEMBERS, Label, captions
from taxonomy.records import Taxon

IMAGE_MEMBER, JSON_MEMBER = "jpg", "json"
MEMBERS = tuple(sorted((IMAGE_MEMBER, JSON_MEMBER, *SHARD_TEXT_MEMBERS)))  # the exact member set, in tar order
TAR_FORMAT = tarfile.PAX_FORMAT  # ASCII names below 100 bytes add no pax headers, so this is plain ustar bytes
TARGET_SAMPLES, TARGET_BYTES = 10_000, 500_000_000
SIZES_FILE = "sizes.json"
WIDS_KIND = "wids-shard-index-v1"  # as webdataset's `widsindex create` writes it

ShardKey = tuple[str, int]  # (split, shard index)


@dataclass(frozen=True, slots=True)
class ShardSample:
    """One sample as a shard holds it: key (treeoflife_id), split, JPEG, text members, and the `json` member."""

    key: str
    split: str
    jpeg: bytes
    texts: dict[str, str]  # SHARD_TEXT_MEMBERS -> caption
    meta: dict[str, object]

    def members(self) -> list[tuple[str, bytes]]:
        """(member, bytes) in MEMBERS order; raises if the text members are not exactly SHARD_TEXT_MEMBERS."""
        if set(self.texts) != set(SHARD_TEXT_MEMBERS):
            raise ValueError(f"sample {self.key!r} has text members {sorted(self.texts)}; "
                             f"expected exactly {sorted(SHARD_TEXT_MEMBERS)} (use taxonomy.captions.captions)")
        data = {name: text.encode("utf-8") for name, text in self.texts.items()}
        data[IMAGE_MEMBER] = self.jpeg
        data[JSON_MEMBER] = json.dumps(self.meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return [(name, data[name]) for name in MEMBERS]


@dataclass(frozen=True, slots=True)
class ShardStats:
    """What `shard-NNNNNN.stats.json` says of a finished shard."""

    split: str
    index: int
    name: str
    count: int
    bytes: int
    sha256: str
    md5: str
    first_key: str
    last_key: str


def shard_sample(record: SourceRecord, processed: Processed, label: Taxon | Label, split: str,
                 default_text_type: str = DEFAULT_TEXT_TYPE) -> ShardSample:
    """The sample of one kept record: its processed image, the captions of its label, and its provenance."""
    if isinstance(label, Taxon):
        label, taxon_id = Label(label.ranks, label.common_name), label.taxon_id
    else:
        taxon_id = ""
    meta: dict[str, object] = {
        "treeoflife_id": record.treeoflife_id, "source": record.source, "native_id": record.native_id,
        "source_url": record.source_url, "license": record.license, "rights_holder": record.rights_holder,
        "provenance": dict(record.provenance), "md5": processed.md5, "phash": f"{processed.phash:016x}",
        "original_width": processed.original_width, "original_height": processed.original_height,
        "width": processed.width, "height": processed.height, "taxon_id": taxon_id,
        **dict(zip(RANKS, label.ranks, strict=True)), "common_name": label.common_name,
    }
    return ShardSample(record.treeoflife_id, split, processed.jpeg, captions(label, default_text_type), meta)


def shard_of(key: str, num_shards: int) -> int:
    """The shard a key belongs to: blake2b of the key modulo the shard count (stable across runs and runners)."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards!r} must be at least 1")
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % num_shards


def num_shards(count: int, total_bytes: int, target_samples: int = TARGET_SAMPLES,
               target_bytes: int = TARGET_BYTES) -> int:
    """How many shards hold `count` samples of `total_bytes`: enough for both targets, at least one."""
    if min(target_samples, target_bytes) < 1:
        raise ValueError(f"target_samples={target_samples!r} and target_bytes={target_bytes!r} must be positive")
    if min(count, total_bytes) < 0:
        raise ValueError(f"count={count!r} and total_bytes={total_bytes!r} must not be negative")
    return max(1, math.ceil(count / target_samples), math.ceil(total_bytes / target_bytes))


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def stats_name(index: int) -> str:
    return f"shard-{index:06d}.stats.json"


def split_dir(out_dir: str, split: str) -> str:
    return FileSystems.join(out_dir, split)


def is_done(directory: str, index: int) -> bool:
    """Whether shard `index` in `directory` is finished (its stats file, written last, exists)."""
    return FileSystems.exists(FileSystems.join(directory, stats_name(index)))


def read_stats(directory: str, index: int) -> ShardStats:
    path = FileSystems.join(directory, stats_name(index))
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return ShardStats(**json.load(f))


class _HashingWriter(io.RawIOBase):
    """A write-only stream that passes bytes on while counting them and hashing them (sha256, md5)."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink, self.size, self.sha256, self.md5 = sink, 0, hashlib.sha256(), hashlib.md5()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink.write(data)
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)
        return len(data)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, FIXED_MTIME, 0o644, tarfile.REGTYPE
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    return info


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _write_atomically(path: str, write) -> None:
    """Call `write(stream)` on a fresh temp sibling of `path`, then rename it to `path`; remove it on error."""
    name = path.rpartition("/")[2]
    tmp = f"{path[:len(path) - len(name)]}.{name}.{uuid.uuid4().hex}.tmp"  # unique: retried bundles never share one
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            write(stream)
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise


def _write_json(path: str, value: object) -> None:
    text = json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    _write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def write_shard(samples: Iterable[ShardSample], directory: str, split: str, index: int) -> ShardStats:
    """Write `shard-NNNNNN.tar` (members sorted by key, then name), then its stats file; raise on duplicate keys."""
    ordered = sorted(samples, key=lambda s: s.key)
    duplicates = sorted({a.key for a, b in itertools.pairwise(ordered) if a.key == b.key})
    if duplicates:
        raise ValueError(f"shard {index} of split {split!r} got duplicate keys {duplicates[:5]}; "
                         "dedup must run before shards")
    hashed: list[_HashingWriter] = []

    def write(stream: BinaryIO) -> None:
        hashed.append(sink := _HashingWriter(stream))
        with tarfile.open(fileobj=sink, mode="w|", format=TAR_FORMAT) as tar:
            for sample in ordered:
                for member, data in sample.members():
                    _add_member(tar, f"{sample.key}.{member}", data)

    _write_atomically(FileSystems.join(directory, shard_name(index)), write)
    sink = hashed[0]
    stats = ShardStats(split, index, shard_name(index), len(ordered), sink.size, sink.sha256.hexdigest(),
                       sink.md5.hexdigest(), ordered[0].key if ordered else "", ordered[-1].key if ordered else "")
    _write_json(FileSystems.join(directory, stats_name(index)), asdict(stats))
    return stats


def ensure_shard(samples: Iterable[ShardSample], directory: str, split: str, index: int) -> tuple[ShardStats, bool]:
    """The stats of shard `index`, writing it unless it is done; the flag says whether it was written."""
    if is_done(directory, index):
        return read_stats(directory, index), False
    return write_shard(samples, directory, split, index), True


def finish_split(directory: str, split: str, num_shards: int, stats: Iterable[ShardStats]) -> dict[str, object]:
    """Fill any empty shard of a split that has samples, then write `sizes.json` and `{split}.wids.json`.

    A split with samples gets every shard 0..num_shards-1 (empty ones included), so brace patterns such as
    `shard-{000000..000009}.tar` name real files; a split with no samples gets no shard and empty indexes.
    """
    by_index = {s.index: s for s in stats}
    if by_index:
        for index in range(num_shards):
            if index not in by_index:
                by_index[index] = ensure_shard([], directory, split, index)[0]
    ordered = [by_index[i] for i in sorted(by_index)]
    _write_json(FileSystems.join(directory, SIZES_FILE), {s.name: s.count for s in ordered})
    shardlist = [{"url": s.name, "nsamples": s.count, "filesize": s.bytes, "md5sum": s.md5} for s in ordered]
    _write_json(FileSystems.join(directory, f"{split}.wids.json"),
                {"__kind__": WIDS_KIND, "wids_version": 1, "name": split, "shardlist": shardlist})
    return {"split": split, "shards": len(ordered), "samples": sum(s.count for s in ordered)}


def write_split(samples: Iterable[ShardSample], out_dir: str, split: str, num_shards: int) -> dict[str, object]:
    """Write one split without Beam (same bytes as WriteShards): assign, write the shards not done, finish."""
    groups: dict[int, list[ShardSample]] = {}
    for sample in samples:
        if sample.split != split:
            raise ValueError(f"sample {sample.key!r} belongs to split {sample.split!r}, not {split!r}")
        groups.setdefault(shard_of(sample.key, num_shards), []).append(sample)
    directory = split_dir(out_dir, split)
    stats = [ensure_shard(group, directory, split, index)[0] for index, group in sorted(groups.items())]
    return finish_split(directory, split, num_shards, stats)


def check_num_shards(num_shards_per_split: Mapping[str, int]) -> dict[str, int]:
    """Validate the split -> shard count mapping before any work."""
    for split, count in num_shards_per_split.items():
        if not isinstance(split, str) or not split or "/" in split or split.startswith("."):
            raise ValueError(f"split name {split!r} must be a non-empty directory name")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"num_shards_per_split[{split!r}]={count!r} must be an int >= 1")
    return dict(num_shards_per_split)


class KeyByShardFn(beam.DoFn):
    """ShardSample -> ((split, shard), ShardSample); a split not asked for is a configuration error."""

    def __init__(self, num_shards_per_split: Mapping[str, int]) -> None:
        self._counts = dict(num_shards_per_split)

    def process(self, sample: ShardSample):
        if sample.split not in self._counts:
            raise ValueError(f"sample {sample.key!r} has split {sample.split!r}; "
                             f"WriteShards was given {', '.join(sorted(self._counts))}")
        yield (sample.split, shard_of(sample.key, self._counts[sample.split])), sample


class WriteShardFn(beam.DoFn):
    """((split, shard), samples) -> ShardStats, skipping shards already done."""

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir
        self._written, self._skipped = Metrics.counter("shards", "written"), Metrics.counter("shards", "skipped")
        self._samples = Metrics.counter("shards", "samples")

    def process(self, element: tuple[ShardKey, Iterable[ShardSample]]):
        (split, index), samples = element
        stats, written = ensure_shard(samples, split_dir(self._out_dir, split), split, index)
        (self._written if written else self._skipped).inc()
        self._samples.inc(stats.count)
        yield split, stats


class FinishSplitFn(beam.DoFn):
    """(split, (stats, ...)) -> the split's summary, after writing its sizes.json and wids index."""

    def __init__(self, out_dir: str, num_shards_per_split: Mapping[str, int]) -> None:
        self._out_dir, self._counts = out_dir, dict(num_shards_per_split)

    def process(self, element: tuple[str, dict[str, Iterable]]):
        split, grouped = element
        yield finish_split(split_dir(self._out_dir, split), split, self._counts[split], grouped["stats"])


class WriteShards(beam.PTransform):
    """ShardSamples -> one summary dict per requested split ({"split", "shards", "samples"})."""

    def __init__(self, out_dir: str, num_shards_per_split: Mapping[str, int]) -> None:
        super().__init__()
        self._out_dir, self._counts = out_dir, check_num_shards(num_shards_per_split)

    def expand(self, samples):
        stats = (samples
                 | "KeyByShard" >> beam.ParDo(KeyByShardFn(self._counts))  # ((split, shard), ShardSample)
                 | "GroupByShard" >> beam.GroupByKey()  # ((split, shard), [ShardSample, ...])
                 | "WriteShard" >> beam.ParDo(WriteShardFn(self._out_dir)))  # (split, ShardStats)
        splits = samples.pipeline | "Splits" >> beam.Create([(split, None) for split in sorted(self._counts)])
        return ({"stats": stats, "split": splits}
                | "GroupBySplit" >> beam.CoGroupByKey()  # (split, {"stats": [ShardStats...], "split": [None]})
                | "FinishSplit" >> beam.ParDo(FinishSplitFn(self._out_dir, self._counts)))  # summary dict
