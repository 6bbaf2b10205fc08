"""The training loader on synthetic shards in the build's format: mixed and single text types, corrupt samples,
exact resume, epoch coverage across ranks and workers, weighted resampling, and its errors."""

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from open_clip.tokenizer import decode
from PIL import Image

from pipeline.shards import finish_split, write_shard
from training import data
from training.data import (
    MIX_TYPES,
    DataSpec,
    ShardBatches,
    batch_text_type,
    count_samples,
    expand_sources,
    make_loader,
    member,
    micro_batches_per_epoch,
    resampled_shards,
)
from training.model import LoadedModel

TRAIN_SAMPLES = 152  # conftest's synthetic_shards: 160 samples, 8 of them in val/


def train_shards(root: Path) -> tuple[str, ...]:
    return tuple(sorted(str(path) for path in (root / "train").glob("shard-*.tar")))


def make_spec(shards, **changes) -> DataSpec:
    """A plain spec: one source, per-batch mixed text, no shuffling, batches of 8, no worker processes."""
    values = dict(sources=(tuple(shards),), weights=(1.0,), resampled=False, text_type="mixed", mix="per-batch",
                  sample_shuffle=0, shard_shuffle=False, batch_size=8, workers=0, seed=0)
    return DataSpec(**{**values, **changes})


def read_batches(dataset: ShardBatches, workers: int = 0, epoch: int = 0, start: int = 0) -> list:
    dataset.set_position(epoch, start)
    return list(make_loader(dataset, workers))


def raw_samples(url: str) -> list[dict[str, bytes]]:
    """A shard's samples in tar order, as {member name as written: bytes} plus `__key__`."""
    samples: list[dict[str, bytes]] = []
    with tarfile.open(url) as tar:
        for info in tar:
            key, name = info.name.split(".", 1)
            if not samples or samples[-1]["__key__"] != key:
                samples.append({"__key__": key})
            samples[-1][name] = tar.extractfile(info).read()
    return samples


def caption(sample: dict[str, bytes], text_type: str) -> str:
    return sample[f"{text_type}.txt"].decode("utf-8").strip()


def token_rows(tokenizer, texts) -> torch.Tensor:
    return tokenizer(list(texts))


def decoded(tokens: torch.Tensor) -> str:
    """The text of one token row, as open_clip decodes it (lower case), without markers, padding or spaces."""
    text = decode(tokens).removeprefix("<start_of_text>").split("<end_of_text>")[0]
    return "".join(text.split())


@pytest.fixture(scope="module")
def shards(synthetic_shards: Path) -> tuple[str, ...]:
    return train_shards(synthetic_shards)


@pytest.fixture(scope="module")
def samples_in_order(shards) -> list[dict[str, bytes]]:
    """Every training sample in the order an unshuffled single-process pass reads them (sorted shards, tar order)."""
    return [sample for url in shards for sample in raw_samples(url)]


# Mixed text types -------------------------------------------------------------------------------------------------


def test_per_batch_mixing_gives_the_five_captions_of_each_sample_in_mix_order(shards, samples_in_order,
                                                                            tiny_model: LoadedModel):
    dataset = ShardBatches(make_spec(shards), tiny_model.eval_transform, tiny_model.tokenizer, None)
    batches = read_batches(dataset)
    assert [len(images) for images, _, _ in batches] == [8] * 19  # 152 samples; a single pass keeps all
    images = torch.cat([b[0] for b in batches])
    tokens = torch.cat([b[1] for b in batches])
    assert images.shape == (TRAIN_SAMPLES, 3, 64, 64)
    assert tokens.shape == (TRAIN_SAMPLES, len(MIX_TYPES), 77) and tokens.dtype == torch.long
    assert MIX_TYPES == ("sci", "com", "taxon", "sci_com", "taxon_com")
    for index, sample in enumerate(samples_in_order):
        texts = [caption(sample, kind) for kind in MIX_TYPES]
        assert len(set(texts)) == len(MIX_TYPES)  # five different captions, so the order is checked
        assert torch.equal(tokens[index], token_rows(tiny_model.tokenizer, texts)), sample["__key__"]
        with Image.open(io.BytesIO(sample["jpg"])) as opened:
            assert torch.equal(images[index], tiny_model.eval_transform(opened.convert("RGB")))  # its own image
        assert [decoded(row) for row in tokens[index]] == ["".join(text.lower().split()) for text in texts]


def test_batch_text_type_is_a_deterministic_per_step_draw_of_all_five_types():
    draws = [batch_text_type(0, step) for step in range(200)]
    assert draws == [batch_text_type(0, step) for step in range(200)]
    assert set(draws) == set(range(len(MIX_TYPES)))
    assert all(count > 20 for count in Counter(draws).values())  # ~40 each; none starved
    assert draws != [batch_text_type(1, step) for step in range(200)]  # the seed matters
    # Another process (another rank, another hash salt) draws the same types: nothing depends on process state.
    code = "from training.data import batch_text_type; print([batch_text_type(0, s) for s in range(200)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                           cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert json.loads(other.stdout.strip().splitlines()[-1]) == draws


def test_per_sample_mixing_gives_one_of_the_five_captions_chosen_by_the_key(shards, samples_in_order,
                                                                             tiny_model: LoadedModel):
    def chosen_types(seed: int) -> list[str]:
        dataset = ShardBatches(make_spec(shards, mix="per-sample", seed=seed), tiny_model.eval_transform,
                               tiny_model.tokenizer, None)
        tokens = torch.cat([b[1] for b in read_batches(dataset)])
        assert tokens.shape == (TRAIN_SAMPLES, 77)
        found = []
        for row, sample in zip(tokens, samples_in_order, strict=True):
            options = token_rows(tiny_model.tokenizer, [caption(sample, kind) for kind in MIX_TYPES])
            matches = [kind for kind, option in zip(MIX_TYPES, options) if torch.equal(row, option)]
            assert len(matches) == 1, (sample["__key__"], matches)
            found.append(matches[0])
        return found

    first = chosen_types(seed=0)
    assert chosen_types(seed=0) == first  # the same draw every time
    assert set(first) == set(MIX_TYPES)  # different keys, a spread of types
    assert max(Counter(first).values()) < TRAIN_SAMPLES / 2
    assert sum(a != b for a, b in zip(first, chosen_types(seed=1))) > TRAIN_SAMPLES / 2  # the seed matters


# Single text types and member names --------------------------------------------------------------------------------


def test_member_names_are_what_webdataset_gives_lower_cased():
    assert member("taxonTag") == "taxontag.txt"
    assert member("taxonTag_com") == "taxontag_com.txt"
    assert member("sci_com") == "sci_com.txt"
    assert member("txt") == "txt"


@pytest.mark.parametrize("text_type", ["taxonTag", "taxonTag_com", "txt"])
def test_a_single_text_type_is_read_although_webdataset_lower_cases_suffixes(text_type, shards, samples_in_order,
                                                                             tiny_model: LoadedModel):
    dataset = ShardBatches(make_spec(shards, text_type=text_type), tiny_model.eval_transform, tiny_model.tokenizer,
                           None)
    batches = read_batches(dataset)
    tokens = torch.cat([b[1] for b in batches])
    assert sum(b[2] for b in batches) == 0  # nothing skipped for a missing member
    name = "txt" if text_type == "txt" else f"{text_type}.txt"  # as written in the shard, camel case and all
    expected = token_rows(tiny_model.tokenizer, [s[name].decode("utf-8") for s in samples_in_order])
    assert torch.equal(tokens, expected)


# Corrupt data --------------------------------------------------------------------------------------------------------


def write_tar(path: Path, samples: list[dict[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for name, data in sample.items():
                if name != "__key__":
                    info = tarfile.TarInfo(f"{sample['__key__']}.{name}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_corrupt_samples_are_skipped_and_counted_in_the_next_batch(shards, tmp_path: Path, tiny_model: LoadedModel):
    good = raw_samples(shards[0])[:6]
    garbage_image = {**raw_samples(shards[1])[0], "jpg": b"\xff\xd8 not a jpeg at all"}
    no_text = {k: v for k, v in raw_samples(shards[1])[1].items() if k != "com.txt"}  # per-batch mix needs com
    url = write_tar(tmp_path / "shard-000000.tar", [*good[:2], garbage_image, good[2], no_text, *good[3:]])
    dataset = ShardBatches(make_spec([url], batch_size=2), tiny_model.eval_transform, tiny_model.tokenizer, None)
    batches = read_batches(dataset)
    assert [(len(images), skipped) for images, _, skipped in batches] == [(2, 0), (2, 2), (2, 0)]
    kept = torch.cat([b[1] for b in batches])
    expected = [token_rows(tiny_model.tokenizer, [caption(s, k) for k in MIX_TYPES]) for s in good]
    assert torch.equal(kept, torch.stack(expected))  # the good ones, in order, none lost

    # In a training epoch (a fixed number of batches, cycling the shards) the same samples are skipped and counted.
    dataset = ShardBatches(make_spec([url], batch_size=2), tiny_model.eval_transform, tiny_model.tokenizer, 5)
    assert [skipped for _, _, skipped in read_batches(dataset)] == [0, 2, 0, 0, 2]


def test_an_unreadable_shard_is_skipped_and_counted(shards, tmp_path: Path, tiny_model: LoadedModel):
    broken = tmp_path / "shard-000009.tar"
    broken.write_bytes(b"this is no tar file" * 100)
    dataset = ShardBatches(make_spec([str(broken), shards[0]], batch_size=5), tiny_model.eval_transform,
                           tiny_model.tokenizer, None)
    batches = read_batches(dataset)
    assert sum(len(images) for images, _, _ in batches) == len(raw_samples(shards[0]))
    assert sum(skipped for _, _, skipped in batches) >= 1


def test_shards_that_never_decode_are_an_error_not_an_endless_epoch(shards, tmp_path: Path, tiny_model: LoadedModel,
                                                                     monkeypatch: pytest.MonkeyPatch):
    json_only = [{k: v for k, v in sample.items() if k in ("__key__", "json")} for sample in raw_samples(shards[0])[:2]]
    url = write_tar(tmp_path / "shard-000000.tar", json_only)
    dataset = ShardBatches(make_spec([url], batch_size=2), tiny_model.eval_transform, tiny_model.tokenizer, 5)
    with pytest.raises(ValueError, match="no sample with members"):  # select_files leaves nothing of such a pass
        read_batches(dataset)
    no_text = [{k: v for k, v in sample.items() if k != "com.txt"} for sample in raw_samples(shards[0])[:2]]
    url = write_tar(tmp_path / "shard-000001.tar", no_text)
    monkeypatch.setattr(data, "MAX_FAILING_IN_A_ROW", 7)
    dataset = ShardBatches(make_spec([url], batch_size=2), tiny_model.eval_transform, tiny_model.tokenizer, 5)
    with pytest.raises(ValueError, match="7 samples in a row could not be decoded"):
        read_batches(dataset)


# Exact resume ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_resuming_at_micro_batch_b_gives_the_uninterrupted_batches_from_b_on(workers, shards,
                                                                              tiny_model: LoadedModel):
    spec = make_spec(shards, sample_shuffle=20, shard_shuffle=True, workers=workers, seed=3)
    batches = micro_batches_per_epoch(TRAIN_SAMPLES, spec.batch_size, 1, 1)
    assert batches == 19
    # The training transform (random crops) and shuffling: both must repeat exactly.
    dataset = ShardBatches(spec, tiny_model.train_transform, tiny_model.tokenizer, batches)
    full = read_batches(dataset, workers, epoch=1)
    assert len(full) == batches
    assert not torch.equal(full[0][1], read_batches(dataset, workers, epoch=2)[0][1])  # epochs differ
    for start in (3, 4, 18):
        resumed = read_batches(dataset, workers, epoch=1, start=start)
        assert len(resumed) == batches - start
        for (images, tokens, skipped), (images_b, tokens_b, skipped_b) in zip(resumed, full[start:], strict=True):
            assert torch.equal(images, images_b) and torch.equal(tokens, tokens_b) and skipped == skipped_b


def test_the_dataset_survives_pickling_for_spawned_workers(shards, tiny_model: LoadedModel):
    # Spawned DataLoader workers (macOS, Windows, Python 3.14's forkserver default) receive the dataset pickled.
    dataset = ShardBatches(make_spec(shards[:1]), tiny_model.eval_transform, tiny_model.tokenizer, 2)
    copy = pickle.loads(pickle.dumps(dataset))
    for (images, tokens, _), (images_b, tokens_b, _) in zip(read_batches(dataset), read_batches(copy), strict=True):
        assert torch.equal(images, images_b) and torch.equal(tokens, tokens_b)


# Epoch coverage and weighted resampling -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def even_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """4 shards of 8 samples, each sample a different species (so its `txt` caption names it)."""
    from pipeline.samplekit.taxa import inat21_pool
    from training.synthetic import synthetic_samples

    out = tmp_path_factory.mktemp("even")
    samples = list(synthetic_samples("train", 32, inat21_pool()[:32], 64, seed=0))
    stats = [write_shard(samples[i::4], str(out / "train"), "train", i) for i in range(4)]
    finish_split(str(out / "train"), "train", 4, stats)
    return train_shards(out)


def test_epoch_mode_reads_every_sample_once_per_epoch_across_ranks_and_workers(even_shards,
                                                                               tiny_model: LoadedModel):
    by_tokens = {}
    for url in even_shards:
        for sample in raw_samples(url):
            by_tokens[tuple(tiny_model.tokenizer([sample["txt"].decode("utf-8")])[0].tolist())] = sample["__key__"]
    assert len(by_tokens) == 32 and count_samples(even_shards) == 32
    batches = micro_batches_per_epoch(32, 4, world_size=2, accum_freq=1)
    assert batches == 4
    orders = []
    for epoch in (0, 1):
        keys = []
        for rank in (0, 1):
            spec = make_spec(even_shards, text_type="txt", batch_size=4, workers=2, rank=rank, world_size=2,
                             shard_shuffle=True, sample_shuffle=5)
            read = read_batches(ShardBatches(spec, tiny_model.eval_transform, tiny_model.tokenizer, batches), 2,
                                epoch=epoch)
            assert [len(images) for images, _, _ in read] == [4] * batches
            keys += [by_tokens[tuple(row.tolist())] for _, tokens, _ in read for row in tokens]
        assert sorted(keys) == sorted(by_tokens.values())  # each sample exactly once
        orders.append(keys)
    assert orders[0] != orders[1]  # and in another order the next epoch


def test_resampled_mode_draws_sources_in_proportion_to_their_weights(shards):
    # Source A is one shard with weight 3, source B three shards with weight 1: weights are per source, not shard.
    spec = make_spec([], sources=((shards[0],), tuple(shards[1:])), weights=(3.0, 1.0), resampled=True, workers=4)
    stream = resampled_shards(spec, epoch=0, worker=1)
    draws = Counter(next(stream) for _ in range(4000))
    assert draws[shards[0]] / 4000 == pytest.approx(0.75, abs=0.04)
    assert all(draws[url] / 4000 == pytest.approx(0.25 / 3, abs=0.03) for url in shards[1:])

    def first_draws(worker: int, epoch: int = 0) -> list[str]:
        stream = resampled_shards(spec, epoch=epoch, worker=worker)
        return [next(stream) for _ in range(50)]

    assert first_draws(1) == first_draws(1)  # seeded: the same draws again
    assert first_draws(1) != first_draws(2) and first_draws(1) != first_draws(1, epoch=1)  # per worker and epoch


def test_resampled_loader_yields_its_quota_from_both_sources(shards, tiny_model: LoadedModel):
    spec = make_spec([], sources=((shards[0],), tuple(shards[1:])), weights=(1.0, 2.0), resampled=True,
                     text_type="txt", batch_size=4, sample_shuffle=10)
    read = read_batches(ShardBatches(spec, tiny_model.eval_transform, tiny_model.tokenizer, 6))
    assert [len(images) for images, _, _ in read] == [4] * 6


# Validation and errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "flags"), [
    ({"text_type": "taxonomic"}, ["--text-type", "'taxonomic'", "taxonTag", "mixed"]),
    ({"mix": "per-epoch"}, ["--mix", "per-batch", "per-sample"]),
    ({"weights": (1.0, 2.0)}, ["--train-data-weights", "one positive weight per source"]),
    ({"weights": (0.0,)}, ["--train-data-weights"]),
    ({"sources": (("a.tar",), ("b.tar",)), "weights": (1.0, 2.0)}, ["--train-data-weights", "--dataset-resampled"]),
    ({"workers": 3, "world_size": 2}, ["4 shards", "2 rank(s) x 3 worker(s)", "--workers", "--dataset-resampled"]),
])
def test_spec_errors_name_the_flag(changes, flags, shards):
    with pytest.raises(ValueError) as raised:
        make_spec(shards, **changes)
    assert all(flag in str(raised.value) for flag in flags), str(raised.value)


def test_resampled_mode_needs_no_shard_per_worker(shards):
    assert make_spec(shards, workers=3, world_size=2, resampled=True).resampled
    assert make_spec(shards, workers=2, world_size=2).workers == 2  # 4 shards feed 2 x 2 in epoch mode


def test_expand_sources_expands_braces_and_joins_and_names_a_missing_shard(synthetic_shards: Path):
    train = synthetic_shards / "train"
    assert expand_sources([f"{train}/shard-{{000000..000003}}.tar", f"{train}/shard-000000.tar::{train}/"
                           "shard-000002.tar"]) == (
        tuple(f"{train}/shard-{i:06d}.tar" for i in range(4)), (f"{train}/shard-000000.tar", f"{train}/shard-000002.tar"))
    pattern = f"{train}/shard-{{000000..000005}}.tar"
    with pytest.raises(ValueError) as raised:
        expand_sources([pattern])
    message = str(raised.value)
    assert "--train-data" in message and pattern in message and "2 of 6" in message
    assert f"{train}/shard-000004.tar" in message


def test_count_samples_reads_sizes_json_and_errors_without_it(synthetic_shards: Path, shards, tmp_path: Path):
    sizes = json.loads((synthetic_shards / "train" / "sizes.json").read_text(encoding="utf-8"))
    assert count_samples(shards) == sum(sizes.values()) == TRAIN_SAMPLES
    assert count_samples(shards[:1]) == sizes["shard-000000.tar"]
    val = str(synthetic_shards / "val" / "shard-000000.tar")
    assert count_samples([*shards, val]) == 160  # sizes.json of each folder
    lonely = tmp_path / "shard-000000.tar"
    lonely.write_bytes(Path(shards[0]).read_bytes())
    with pytest.raises(ValueError, match="no sizes.json beside .*shard-000000.tar; pass --train-num-samples"):
        count_samples([str(lonely)])
    (tmp_path / "sizes.json").write_text('{"shard-000001.tar": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match="shard-000000.tar is not listed in .*sizes.json; pass --train-num-samples"):
        count_samples([str(lonely)])
