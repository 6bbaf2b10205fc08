"""Shard writing: round trip through webdataset and wids, byte determinism, atomicity and resume, empty input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import types
from pathlib import Path

import apache_beam as beam
import pytest
import webdataset as wds
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline import shards
from pipeline.images import ResizeSpec, process
from pipeline.records import SourceRecord
from pipeline.shards import ShardSample, WriteShards, num_shards, shard_of, shard_sample, write_split
from taxonomy.captions import RANKS, SHARD_TEXT_MEMBERS, Label, captions
from taxonomy.records import Taxon

MAGPIE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia")
SPLITS = {"train": 3, "val": 1}


def tiny_jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8 + seed % 5, 6), ((seed * 40) % 256, (seed * 90) % 256, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def make_sample(n: int, split: str = "train") -> ShardSample:
    record = SourceRecord.create("inat21", str(1000 + n), image_ref=f"train/{n}.jpg", label_key="inat21:1",
                                 label=(("name", "Pica hudsonia"),), license="CC-BY", rights_holder="someone",
                                 source_url=f"https://example.org/{n}.jpg", provenance=(("file_name", f"{n}.jpg"),))
    processed = process(tiny_jpeg(n), ResizeSpec(size=16))
    taxon = Taxon("fb0c1c9deca3caaf", MAGPIE, "Pica hudsonia", "black-billed magpie", "itis", ("itis",) * 7,
                  ("exact",) * 7, "exact", "resolved")
    return shard_sample(record, processed, taxon if n % 2 else Label(MAGPIE, "black-billed magpie"), split)


SAMPLES = [make_sample(n, "val" if n % 4 == 0 else "train") for n in range(12)]


def tar_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("shard-*.tar"))}


def write_plain(samples: list[ShardSample], out: Path) -> None:
    for split, count in SPLITS.items():
        write_split([s for s in samples if s.split == split], str(out), split, count)


def run_composite(samples: list[ShardSample], out: Path, splits: dict[str, int] = SPLITS, expected=None) -> None:
    with TestPipeline(runner="FnApiRunner") as p:
        summaries = p | beam.Create(samples, reshuffle=False) | WriteShards(str(out), splits)
        if expected is not None:
            assert_that(summaries, equal_to(expected))


def test_shard_of_is_stable_and_num_shards_takes_the_larger_ceiling():
    assert [shard_of(k, 7) for k in ("a", "b", "c")] == [2, 5, 1]
    assert [shard_of(s.key, 1000) for s in SAMPLES[:3]] == [571, 785, 279]  # real treeoflife_ids
    assert num_shards(0, 0) == 1
    assert num_shards(25_000, 1_000) == 3
    assert num_shards(10, 1_200_000_000) == 3
    assert num_shards(100, 100, target_samples=10, target_bytes=50) == 10
    with pytest.raises(ValueError, match="num_shards=0"):
        shard_of("a", 0)
    with pytest.raises(ValueError, match="target_samples=0"):
        num_shards(1, 1, target_samples=0)


def test_shard_sample_carries_captions_and_provenance():
    sample = make_sample(1)
    assert sample.key == SAMPLES[1].key and sample.split == "train"
    assert sample.texts == captions(Label(MAGPIE, "black-billed magpie"))
    assert {rank: sample.meta[rank] for rank in RANKS} == dict(zip(RANKS, MAGPIE, strict=True))
    assert sample.meta["common_name"] == "black-billed magpie" and sample.meta["taxon_id"] == "fb0c1c9deca3caaf"
    assert len(sample.meta["phash"]) == 16 and int(sample.meta["phash"], 16) >= 0
    assert sample.meta["source"] == "inat21" and sample.meta["native_id"] == "1001"
    assert sample.meta["provenance"] == {"file_name": "1.jpg"} and sample.meta["original_width"] == 9


def test_round_trip_through_webdataset(tmp_path):
    write_plain(SAMPLES, tmp_path)
    by_key = {s.key: s for s in SAMPLES}
    for split, count in SPLITS.items():
        directory = tmp_path / split
        urls = [str(directory / shards.shard_name(i)) for i in range(count)]
        assert sorted(p.name for p in directory.glob("shard-*.tar")) == [Path(u).name for u in urls]
        sizes = json.loads((directory / "sizes.json").read_text())
        expected = [s for s in SAMPLES if s.split == split]
        assert sum(sizes.values()) == len(expected)
        read = list(wds.WebDataset(urls, shardshuffle=False))
        assert sorted(r["__key__"] for r in read) == sorted(s.key for s in expected)
        for row in read:
            sample = by_key[row["__key__"]]
            suffixes = {k for k in row if not k.startswith("__")}
            # webdataset lower-cases member suffixes by default: taxonTag.txt is read back as taxontag.txt
            assert suffixes == {m.lower() for m in shards.MEMBERS}
            assert {"jpg", "txt"} <= suffixes  # what open_clip's trainer reads
            assert Image.open(io.BytesIO(row["jpg"])).size == (16, 16)
            assert {m: row[m.lower()].decode() for m in SHARD_TEXT_MEMBERS} == sample.texts
            meta = json.loads(row["json"])
            assert meta == sample.meta and list(meta) == sorted(meta)
        for i, url in enumerate(urls):
            assert sizes[shards.shard_name(i)] == sum(1 for _ in wds.WebDataset(url, shardshuffle=False))


def test_tar_members_are_sorted_with_fixed_metadata(tmp_path):
    write_plain(SAMPLES, tmp_path)
    with tarfile.open(tmp_path / "train" / "shard-000000.tar") as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    keys = sorted({n.split(".", 1)[0] for n in names})
    assert names == [f"{k}.{m}" for k in keys for m in shards.MEMBERS]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
        (shards.FIXED_MTIME, 0, 0, "", "", 0o644)}
    stats = json.loads((tmp_path / "train" / "shard-000000.stats.json").read_text())
    data = (tmp_path / "train" / "shard-000000.tar").read_bytes()
    assert stats["count"] == len(keys) and stats["bytes"] == len(data)
    assert stats["sha256"] == hashlib.sha256(data).hexdigest()
    assert (stats["first_key"], stats["last_key"]) == (keys[0], keys[-1])


def test_wids_index_loads_with_shard_list_dataset(tmp_path):
    import wids

    write_plain(SAMPLES, tmp_path)
    index = tmp_path / "train" / "train.wids.json"
    desc = json.loads(index.read_text())
    assert desc["__kind__"] == "wids-shard-index-v1" and desc["wids_version"] == 1
    dataset = wids.ShardListDataset(str(index), cache_dir=str(tmp_path / "cache"), transformations=[])
    expected = {s.key: s for s in SAMPLES if s.split == "train"}
    assert len(dataset) == len(expected)
    for i in range(len(dataset)):
        row = dataset[i]
        assert row[".txt"].read().decode() == expected[row["__key__"]].texts["txt"]
        assert row[".taxonTag.txt"].read().decode() == expected[row["__key__"]].texts["taxonTag.txt"]  # case kept
    dataset.close()


def test_same_bytes_whatever_the_order_and_runner(tmp_path):
    write_plain(SAMPLES, tmp_path / "plain")
    write_plain(list(reversed(SAMPLES)), tmp_path / "reversed")
    summaries = [{"split": "train", "shards": 3, "samples": 9}, {"split": "val", "shards": 1, "samples": 3}]
    run_composite(SAMPLES[5:] + SAMPLES[:5], tmp_path / "beam", expected=summaries)
    plain = tar_bytes(tmp_path / "plain")
    assert len(plain) == 4
    assert plain == tar_bytes(tmp_path / "reversed") == tar_bytes(tmp_path / "beam")
    for name in ("train/sizes.json", "train/train.wids.json", "val/sizes.json", "val/val.wids.json"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes()


def test_rerun_rewrites_unfinished_shards_and_skips_done_ones(tmp_path):
    run_composite(SAMPLES, tmp_path)
    train = tmp_path / "train"
    original = tar_bytes(tmp_path)
    done, unfinished = train / "shard-000000.tar", train / "shard-000001.tar"
    os.utime(done, (1, 1))
    unfinished.write_bytes(b"half a tar")  # a crash after the rename but before the stats file
    (train / "shard-000001.stats.json").unlink()
    run_composite(SAMPLES, tmp_path)
    assert done.stat().st_mtime == 1  # skipped
    assert tar_bytes(tmp_path) == original  # rewritten
    assert (train / "shard-000001.stats.json").exists()


def test_a_crash_mid_write_leaves_no_finished_looking_file(tmp_path, monkeypatch):
    calls = []
    add_member = shards._add_member

    def crashing(tar, name, data):
        assert not list(tmp_path.rglob("shard-*.tar"))  # nothing has the final name while writing
        calls.append(name)
        if len(calls) == 20:
            raise OSError("disk gone")
        add_member(tar, name, data)

    monkeypatch.setattr(shards, "_add_member", crashing)
    with pytest.raises(OSError, match="disk gone"):
        shards.write_shard(SAMPLES[:4], str(tmp_path), "train", 0)
    assert list(tmp_path.iterdir()) == []  # no tar, no stats, no temp file
    assert not shards.is_done(str(tmp_path), 0)


def test_duplicate_keys_and_unknown_splits_are_errors(tmp_path):
    with pytest.raises(ValueError, match="duplicate keys"):
        shards.write_shard([SAMPLES[1], SAMPLES[1]], str(tmp_path), "train", 0)
    with pytest.raises(ValueError, match="num_shards_per_split\\['train'\\]=0"):
        WriteShards(str(tmp_path), {"train": 0})
    with pytest.raises(Exception, match="has split 'val'"):
        run_composite(SAMPLES, tmp_path, splits={"train": 2})


def test_empty_input_writes_no_shard_and_empty_indexes(tmp_path):
    run_composite([], tmp_path, expected=[{"split": "train", "shards": 0, "samples": 0},
                                           {"split": "val", "shards": 0, "samples": 0}])
    assert not list(tmp_path.rglob("shard-*"))
    assert json.loads((tmp_path / "train" / "sizes.json").read_text()) == {}
    assert json.loads((tmp_path / "val" / "val.wids.json").read_text())["shardlist"] == []


def test_a_split_with_samples_gets_every_shard_even_empty_ones(tmp_path):
    summary = write_split(SAMPLES[1:2], str(tmp_path), "train", 4)
    assert summary == {"split": "train", "shards": 4, "samples": 1}
    sizes = json.loads((tmp_path / "train" / "sizes.json").read_text())
    assert sorted(sizes) == [shards.shard_name(i) for i in range(4)] and sum(sizes.values()) == 1
    assert len(list(wds.WebDataset(str(tmp_path / "train" / "shard-{000000..000003}.tar"), shardshuffle=False))) == 1


def test_open_clips_own_webdataset_loader_reads_the_shards(tmp_path):
    """open_clip's trainer reads the shards unchanged: `jpg` + `txt` members and the split's sizes.json."""
    open_clip = pytest.importorskip("open_clip")
    open_clip_data = pytest.importorskip("open_clip_train.data")
    write_plain(SAMPLES, tmp_path)
    train = tmp_path / "train"
    shard_names = sorted(p.name for p in train.glob("shard-*.tar"))
    pattern = str(train / f"shard-{{{shard_names[0][6:12]}..{shard_names[-1][6:12]}}}.tar")
    args = types.SimpleNamespace(train_data=pattern, val_data=None, train_num_samples=None, dataset_resampled=False,
                                 train_data_upsampling_factors=None, seed=0, batch_size=1, workers=0, world_size=1)
    preprocess = open_clip.image_transform(32, is_train=False)
    data = open_clip_data.get_wds_dataset(args, preprocess, is_train=True, tokenizer=open_clip.tokenize)
    expected = json.loads((train / "sizes.json").read_text())
    assert data.dataloader.num_samples == sum(expected.values())
    seen = 0
    for images, texts in data.dataloader:
        assert images.shape[1:] == (3, 32, 32) and texts.shape[0] == images.shape[0]
        seen += images.shape[0]
    assert seen == sum(expected.values())

