"""Training checkpoints: `runs/NAME/checkpoints/step-NNNNNNNN.pt` plus `latest.pt`, written atomically.

A checkpoint holds what resuming needs (model, optimiser, scaler, step, the data loader's worker count) and what
rebuilding the model anywhere needs (its `open_clip_config.json` content), in a file `torch.load(...,
weights_only=True)` reads: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taxonomy.build import write_atomic
from training.model import CHECKPOINT_FORMAT, read_checkpoint

STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")
LATEST = "latest.pt"


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run starts: the step done, and the worker count the data position assumed."""

    step: int
    workers: int


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def latest_step(folder: Path) -> Path | None:
    """The checkpoint with the highest step in `folder`, if any (temp files are ignored)."""
    found = sorted(path for path in folder.glob("step-*.pt") if STEP_FILE.match(path.name)) if folder.is_dir() else []
    return found[-1] if found else None


def save(folder: Path, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scaler: torch.amp.GradScaler | None, open_clip_config: dict, config: dict, workers: int) -> Path:
    """Write `step-NNNNNNNN.pt` (temp file, then rename) and point `latest.pt` at it; returns the step file."""
    content: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT, "step": step, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else {},
        "open_clip_config": open_clip_config, "config": json.dumps(config, sort_keys=True), "workers": workers,
    }
    path = step_path(folder, step)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda temporary: torch.save(content, temporary))
    link = folder / f".{LATEST}.tmp"
    link.unlink(missing_ok=True)
    os.link(path, link)  # a second name for the same file: no copy, and `latest.pt` is never half-written
    os.replace(link, folder / LATEST)
    return path


def restore(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None) -> Resumed:
    """Load a checkpoint's states into the given objects; returns the step to continue after."""
    content = read_checkpoint(path)
    model.load_state_dict(content["model"])
    optimizer.load_state_dict(content["optimizer"])
    if scaler is not None and content["scaler"]:
        scaler.load_state_dict(content["scaler"])
    return Resumed(int(content["step"]), int(content["workers"]))
