"""`tol train` end to end with the tiny-cpu preset on synthetic shards: learning, logs, checkpoints, exact resume,
settings that may not change, text types, exact gradient accumulation, and two ranks under torchrun (gloo)."""

import copy
import json
import math
import os
import socket
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path

import pytest
import torch
from open_clip import ClipLoss

import data_manifests
from pipeline.cli import main as tol
from training import checkpoints
from training.config import configure, resolve
from training.distributed import Distributed
from training.model import LoadedModel, load_model
from training.step import Stepper
from training.train import build_optimizer
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
TINY = "local-dir:" + str(data_manifests.path("training/models/tiny-cpu/open_clip_config.json").parent)
# 152 training samples in batches of 32: 5 steps an epoch, 25 in all; two loader workers, so that resuming mid-epoch
# exercises the worker rotation.
BASE = ["--epochs", "5", "--workers", "2", "--log-every", "1", "--val-every", "5", "--save-every", "10"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One compute thread: the loader's worker processes share this machine's CPUs, and OpenMP threads spinning
    against them make a step many times slower (and on a many-core machine one thread is plenty for this model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(shards: Path, runs: Path, name: str, *flags: str) -> int:
    return train_main(["--shards", str(shards), "--runs-dir", str(runs), "--name", name, "--device", "cpu", *flags])


def read_log(run: Path) -> tuple[list[dict], list[dict]]:
    """(training lines, validation lines) of a run's log.jsonl."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if "loss" in line], [line for line in lines if "val_loss" in line]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def baseline(synthetic_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 25-step run of the tiny-cpu preset; tests must not modify it."""
    runs = tmp_path_factory.mktemp("runs")
    assert train(synthetic_shards, runs, "base", *BASE) == 0
    return runs / "base"


def test_the_loss_decreases(baseline: Path):
    steps, vals = read_log(baseline)
    losses = [line["loss"] for line in steps]
    assert len(losses) == 25 and losses[0] == pytest.approx(math.log(32), abs=0.2)  # chance at the start
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.25, losses
    assert vals[-1]["val_loss"] < vals[0]["val_loss"] - 0.1, vals


def test_log_lines_say_loss_lr_speed_logit_scale_skipped_and_validation_loss(baseline: Path):
    steps, vals = read_log(baseline)
    assert [line["step"] for line in steps] == list(range(1, 26))
    assert [line["epoch"] for line in steps] == [step // 5 for step in range(25)]
    for line in steps:
        assert set(line) == {"step", "epoch", "loss", "lr", "samples_per_s", "logit_scale", "skipped_samples"}
        assert math.isfinite(line["loss"]) and line["samples_per_s"] > 0 and line["skipped_samples"] == 0
        assert 1 <= line["logit_scale"] <= 100
    lrs = [line["lr"] for line in steps]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # warmup of 10 steps to --lr
    assert lrs[10:] == sorted(lrs[10:], reverse=True)  # then cosine decay
    assert [(line["step"], line["epoch"]) for line in vals] == [(5, 0), (10, 1), (15, 2), (20, 3), (25, 4)]
    assert all(set(line) == {"step", "epoch", "val_loss"} and math.isfinite(line["val_loss"]) for line in vals)
    config = json.loads((baseline / "config.json").read_text(encoding="utf-8"))
    assert config["text_type"] == "mixed" and config["mix"] == "per-batch" and config["batch_size"] == 32


def test_checkpoints_and_the_exported_model_rebuild_the_same_weights(baseline: Path):
    folder = baseline / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == [
        "latest.pt", "step-00000010.pt", "step-00000020.pt", "step-00000025.pt"]
    assert (folder / checkpoints.LATEST).samefile(folder / "step-00000025.pt")
    saved = torch.load(folder / "step-00000025.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 25 and saved["workers"] == 2 and json.loads(saved["config"])["name"] == "base"
    from_checkpoint = load_model(checkpoint=folder / checkpoints.LATEST)
    exported = load_model(f"local-dir:{baseline / 'model'}")
    assert same_weights(from_checkpoint.model.state_dict(), saved["model"])
    assert same_weights(exported.model.state_dict(), saved["model"])
    earlier = torch.load(folder / "step-00000010.pt", map_location="cpu", weights_only=True)["model"]
    assert not same_weights(earlier, saved["model"])  # it trained in between


def test_an_interrupted_run_resumes_at_its_step_with_the_uninterrupted_losses(synthetic_shards: Path, baseline: Path,
                                                                               tmp_path: Path):
    # Step 8 is micro-batch 3 of epoch 1: with two workers the loader must rotate them to resume exactly.
    assert train(synthetic_shards, tmp_path, "cut", *BASE, "--stop-at-step", "8") == 0
    run = tmp_path / "cut"
    assert [line["step"] for line in read_log(run)[0]] == list(range(1, 9))
    assert checkpoints.latest_step(run / "checkpoints").name == "step-00000008.pt"
    with open(run / "log.jsonl", "a", encoding="utf-8") as log:  # as if it had crashed after logging steps 9 and 10
        log.writelines(json.dumps({"step": step, "loss": 0.0}) + "\n" for step in (9, 10))
    assert train(synthetic_shards, tmp_path, "cut", *BASE, "--stop-at-step", "12") == 0  # the same command, later
    steps, vals = read_log(run)
    expected_steps, expected_vals = read_log(baseline)
    assert [line["step"] for line in steps] == list(range(1, 13))  # went on at step 9, logged each step once
    for line, expected in zip(steps, expected_steps[:12], strict=True):
        assert (line["loss"], line["lr"], line["logit_scale"]) == (
            expected["loss"], expected["lr"], expected["logit_scale"]), line["step"]
    val_losses = {line["step"]: line["val_loss"] for line in vals}
    assert set(val_losses) == {5, 8, 10, 12}  # every 5 steps, and where each part stopped
    assert [val_losses[5], val_losses[10]] == [line["val_loss"] for line in expected_vals[:2]]


def test_a_changed_setting_on_a_run_with_checkpoints_fails_naming_the_field(synthetic_shards: Path, baseline: Path,
                                                                             caplog):
    saved = (baseline / "config.json").read_text(encoding="utf-8")
    assert train(synthetic_shards, baseline.parent, "base", *BASE, "--lr", "5e-4") == 2
    assert "was started with other settings (lr: 0.001 -> 0.0005); use another --name" in caplog.text
    assert (baseline / "config.json").read_text(encoding="utf-8") == saved


@pytest.mark.parametrize("flags", [["--text-type", "taxonTag"], ["--mix", "per-sample"]])
def test_other_text_types_train_end_to_end_through_the_cli(flags, synthetic_shards: Path, tmp_path: Path):
    assert tol(["train", "--shards", str(synthetic_shards), "--runs-dir", str(tmp_path), "--name", "run",
                "--device", "cpu", "--epochs", "1", "--train-num-samples", "64", "--workers", "0",
                "--log-every", "1", *flags]) == 0
    run = tmp_path / "run"
    steps, vals = read_log(run)
    assert [line["step"] for line in steps] == [1, 2]
    assert all(line["skipped_samples"] == 0 for line in steps)  # the members were found, every one
    assert len(vals) == 1 and math.isfinite(vals[0]["val_loss"])
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert (config["text_type"], config["mix"]) == {"--text-type": ("taxonTag", "per-batch"),
                                                    "--mix": ("mixed", "per-sample")}[flags[0]]
    assert (run / "checkpoints" / "step-00000002.pt").is_file() and (run / "model" / "open_clip_config.json").is_file()


def test_accumulating_two_micro_batches_of_n_equals_one_batch_of_2n(tiny_model: LoadedModel):
    parser = ArgumentParser()
    configure(parser)
    config = resolve(parser.parse_args(["--train-data", "unused", "--accum-freq", "2", "--precision", "fp32"]), False)
    assert config.accum_freq == 2 and config.precision == "fp32"
    cpu = Distributed(0, 1, torch.device("cpu"))
    models = [copy.deepcopy(tiny_model.model) for _ in range(2)]  # the fixture's own model stays untouched
    whole, accumulated = (Stepper(model, build_optimizer(model, config), config, cpu, ClipLoss()) for model in models)
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = tiny_model.tokenizer([f"a photo of species number {i}." for i in range(8)])
    loss = whole.step([(images, tokens)])
    assert accumulated.step([(images[:4], tokens[:4]), (images[4:], tokens[4:])]) == pytest.approx(loss, rel=1e-6)
    grads = {name: param.grad for name, param in models[0].named_parameters()}
    for name, param in models[1].named_parameters():
        # As in open_clip, each micro-batch's loss reaches the logit scale: its gradient is accum_freq times the
        # whole batch's, which AdamW's per-parameter normalisation cancels (the weights stay equal).
        factor = 2 if name == "logit_scale" else 1
        expected = factor * grads[name]
        assert (param.grad - expected).norm() <= 1e-5 * expected.norm(), name  # float summation order only
    # AdamW moves every weight by about lr (1e-3), even where the gradient is float noise (a key bias's is zero in
    # theory), so such weights may differ a little: by 1% of the step.
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
    assert not torch.equal(models[0].visual.conv1.weight, tiny_model.model.visual.conv1.weight)  # it did train


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_under_torchrun_train_with_local_loss_and_write_one_checkpoint(synthetic_shards: Path,
                                                                                 tmp_path: Path):
    # The BioCLIP preset (local loss, features gathered with gradients) scaled down to the tiny model: 2 CPU ranks
    # (gloo on loopback) x 8 samples, 3 steps. torchrun's exit status is 0 only when every rank's is.
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "training.train",
               "--preset", "bioclip-vit-b-16", "--model", TINY,
               "--precision", "fp32", "--global-batch-size", "16", "--train-num-samples", "48", "--epochs", "1",
               "--warmup", "1", "--workers", "1", "--sample-shuffle", "20", "--log-every", "1",
               "--shards", str(synthetic_shards), "--runs-dir", str(tmp_path), "--name", "ddp", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform == "linux":  # gloo on the loopback device, whatever the host name resolves to
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("micro-batch 8 x 2 device(s)") == 2, result.stderr[-4000:]  # both ranks, one world
    run = tmp_path / "ddp"
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["local_loss"] and config["gather_with_grad"] and config["global_batch_size"] == 16
    steps, vals = read_log(run)
    assert [line["step"] for line in steps] == [1, 2, 3] and all(math.isfinite(line["loss"]) for line in steps)
    assert len(vals) == 1 and math.isfinite(vals[0]["val_loss"])
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["latest.pt", "step-00000003.pt"]
    loaded = load_model(checkpoint=run / "checkpoints" / checkpoints.LATEST)
    assert same_weights(loaded.model.state_dict(), load_model(f"local-dir:{run / 'model'}").model.state_dict())
