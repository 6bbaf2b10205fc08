"""`tol train` configuration: a preset (data_manifests/training/presets/*.json) overridden by flags, frozen.

The resolved configuration is written to `runs/NAME/config.json`; a resumed run must resolve to the same values
for every field that shapes the result (all but those in RESUMABLE_CHANGES).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import data_manifests
from pipeline.argtypes import int_at_least, number_in
from training.data import MIX_MODES, SINGLE_TYPES

PRESETS = ("bioclip-vit-b-16", "tiny-cpu")
PRECISIONS = ("fp32", "bf16", "fp16")
# Fields a resumed run may change: they do not change what is computed, only how often it is saved or shown.
RESUMABLE_CHANGES = frozenset({"stop_at_step", "save_every", "val_every", "log_every", "device", "workers"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `runs/NAME/config.json` holds it."""

    name: str
    runs_dir: str
    model: str
    pretrained: str | None
    train_data: tuple[str, ...]
    train_data_weights: tuple[float, ...]
    val_data: str | None
    train_num_samples: int | None
    text_type: str
    mix: str
    val_text_type: str
    dataset_resampled: bool
    sample_shuffle: int
    batch_size: int
    global_batch_size: int | None
    accum_freq: int
    epochs: int
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    warmup: int
    precision: str
    grad_checkpointing: bool
    local_loss: bool
    gather_with_grad: bool
    workers: int
    seed: int
    save_every: int
    val_every: int
    log_every: int
    stop_at_step: int | None
    device: str

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def per_device_batch(self, world_size: int) -> int:
        """The micro-batch per device: `batch_size`, or `global_batch_size` split over devices and accumulation."""
        if self.global_batch_size is None:
            return self.batch_size
        parts = world_size * self.accum_freq
        if self.global_batch_size % parts:
            raise ValueError(f"--global-batch-size {self.global_batch_size} is not divisible by {world_size} "
                             f"device(s) x --accum-freq {self.accum_freq}")
        return self.global_batch_size // parts

    def changes_from(self, saved: dict) -> dict[str, tuple]:
        """Fields that differ from a saved config.json and may not change on resume: {field: (saved, now)}."""
        now = json.loads(json.dumps(asdict(self)))
        return {key: (saved.get(key), value) for key, value in now.items()
                if key not in RESUMABLE_CHANGES and saved.get(key) != value}


def read_preset(name: str) -> dict:
    """A preset's values, with `{data_manifests}` in paths replaced by the installed reference-data folder."""
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    text = data_manifests.path(f"training/presets/{name}.json").read_text(encoding="utf-8")
    root = str(data_manifests.path("training/presets/tiny-cpu.json").parents[2])
    values = json.loads(text.replace("{data_manifests}", root.replace("\\", "/")))
    values.pop("about")
    return values


def shards_of(folder: Path) -> str:
    """A `::`-joined list of the shards a split folder's sizes.json names (what `--shards OUT/shards` reads)."""
    sizes = folder / "sizes.json"
    if not sizes.is_file():
        raise ValueError(f"--shards: no sizes.json in {folder} (is it a `tol build` shards folder?)")
    return "::".join(str(folder / name) for name in sorted(json.loads(sizes.read_text(encoding="utf-8"))))


def configure(parser: argparse.ArgumentParser) -> None:
    """The flags; each defaults to None so that only what the user gave overrides the preset."""
    add = parser.add_argument
    add("--preset", default="tiny-cpu", help=f"starting values: {', '.join(PRESETS)} (default tiny-cpu)")
    add("--name", default="default", help="run name: outputs go to RUNS_DIR/NAME (default 'default')")
    add("--runs-dir", default="runs", help="folder of runs (default runs)")
    add("--shards", type=Path, help="a `tol build` shards folder: trains on its train/ split, validates on val/")
    add("--train-data", action="append", help="shard pattern(s) of one source, e.g. 'shards/train/shard-"
        "{000000..000039}.tar'; repeat for several sources")
    add("--train-data-weights", type=float, nargs="+", help="sampling weight per source (needs "
        "--dataset-resampled)")
    add("--val-data", help="shard pattern of the validation split")
    add("--train-num-samples", type=int_at_least(1), help="samples per epoch (default: from sizes.json)")
    add("--model", help="open_clip model name (ViT-B-16) or local-dir:PATH")
    add("--pretrained", help="initial weights: a local file (nothing is downloaded)")
    add("--text-type", choices=(*SINGLE_TYPES, "mixed"), help="caption member to train on, or mixed")
    add("--mix", choices=MIX_MODES, help="mixed text: one type per global batch (BioCLIP's code) or per sample "
        "(the paper's description)")
    add("--val-text-type", choices=SINGLE_TYPES, help="caption for validation loss (default taxon_com)")
    add("--dataset-resampled", action=argparse.BooleanOptionalAction, default=None,
        help="sample shards with replacement (weighted) instead of reading each once per epoch")
    add("--sample-shuffle", type=int_at_least(0), help="sample shuffle buffer")
    add("--batch-size", type=int_at_least(1), help="micro-batch per device")
    add("--global-batch-size", type=int_at_least(1), help="global batch; sets the per-device batch")
    add("--accum-freq", type=int_at_least(1), help="micro-batches per optimiser step (default 1)")
    add("--epochs", type=int_at_least(1), help="passes over --train-num-samples (or the shards' sizes.json)")
    add("--lr", type=number_in(0, 10, "learning rate"), help="peak learning rate after warmup")
    add("--beta1", type=number_in(0, 1, "Adam beta1"), help="AdamW beta1")
    add("--beta2", type=number_in(0, 1, "Adam beta2"), help="AdamW beta2")
    add("--eps", type=number_in(0, 1, "Adam epsilon"), help="AdamW epsilon")
    add("--weight-decay", type=number_in(0, 10, "weight decay"), help="AdamW weight decay (not on gains, biases)")
    add("--warmup", type=int_at_least(0), help="warmup steps before the cosine schedule")
    add("--precision", choices=PRECISIONS, help="fp32, or automatic mixed precision in bf16/fp16")
    add("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    add("--local-loss", action=argparse.BooleanOptionalAction, default=None,
        help="under DDP, each rank scores its own images against all texts (open_clip's --local-loss)")
    add("--gather-with-grad", action=argparse.BooleanOptionalAction, default=None,
        help="under DDP, gather features with their gradients (open_clip's --gather-with-grad)")
    add("--workers", type=int_at_least(0), help="data loader worker processes per device")
    add("--seed", type=int_at_least(0), help="seed of every random choice (default 0)")
    add("--save-every", type=int_at_least(1), help="checkpoint every N steps (and at the end)")
    add("--val-every", type=int_at_least(1), help="validation loss every N steps (and at the end)")
    add("--log-every", type=int_at_least(1), help="log.jsonl line every N steps")
    add("--stop-at-step", type=int_at_least(1), help="stop (with a checkpoint) at this step; resume later")
    add("--device", help="cpu, cuda (default: cuda if available)")


def resolve(args: argparse.Namespace, cuda_available: bool) -> TrainConfig:
    """The frozen config: preset values, then every flag the user gave; validated."""
    values = {"pretrained": None, "val_data": None, "train_num_samples": None, "global_batch_size": None,
              "accum_freq": 1, "seed": 0, "stop_at_step": None, "val_text_type": "taxon_com",
              "train_data_weights": None, "batch_size": None, **read_preset(args.preset)}
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    values.update(given)
    if args.shards is not None:
        values["train_data"] = values.get("train_data") or [shards_of(args.shards / "train")]
        if "val_data" not in given and (args.shards / "val/sizes.json").is_file():
            values["val_data"] = shards_of(args.shards / "val")
    if not values.get("train_data"):
        raise ValueError("no training data: give --shards OUT/shards or --train-data PATTERN")
    values["train_data"] = tuple(values["train_data"])
    values["train_data_weights"] = tuple(values["train_data_weights"] or [1.0] * len(values["train_data"]))
    if values["batch_size"] is None and values["global_batch_size"] is None:
        raise ValueError("give --batch-size or --global-batch-size")
    values["batch_size"] = values["batch_size"] or 0
    values["device"] = values.get("device") or ("cuda" if cuda_available else "cpu")
    values["runs_dir"] = os.fspath(values["runs_dir"])
    config = TrainConfig(**{f.name: values[f.name] for f in fields(TrainConfig)})
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision {config.precision!r}: expected one of {', '.join(PRECISIONS)}")
    return config
