"""open_clip models for training, evaluation and prediction, built offline from local files only.

    loaded = load_model("ViT-B-16", pretrained=Path("ViT-B-16.pt"))        # OpenAI's checkpoint, downloaded by you
    loaded = load_model("local-dir:data_manifests/training/models/tiny-cpu")  # random init from a config
    loaded = load_model(checkpoint=Path("runs/demo/checkpoints/latest.pt"))   # one of our training checkpoints

A model is named as open_clip names it (`ViT-B-16`) or as a `local-dir:PATH` holding `open_clip_config.json`
(`{"model_cfg": ..., "preprocess_cfg": ...}`, plus weights if any). Weights come from a local file or nowhere: a
pretrained *tag* would make open_clip download, so only paths are accepted. Our checkpoints carry the model's
`open_clip_config.json` inside them, so a checkpoint alone rebuilds its model anywhere; `export_local_dir` writes
the final model as a `local-dir:` folder that plain open_clip loads.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from taxonomy.build import write_atomic

LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
CHECKPOINT_FORMAT = "treeoflife-checkpoint-v1"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth")  # what open_clip loads from a local-dir folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A CLIP model with its train/eval image transforms, its tokenizer and the config that rebuilds it."""

    model: torch.nn.Module
    train_transform: Callable
    eval_transform: Callable
    tokenizer: Callable
    config: dict[str, Any]  # {"model_cfg": ..., "preprocess_cfg": ...}, as open_clip_config.json holds it


def check_model_name(name: str) -> str:
    """The model name if open_clip knows it or it is a `local-dir:` folder with a config; else a clear error."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        if not (folder / CONFIG_FILE).is_file():
            raise ValueError(f"model {name!r}: no {CONFIG_FILE} in {folder} (a local-dir: model needs one)")
        return name
    if name not in open_clip.list_models():
        raise ValueError(f"model {name!r} is not an open_clip model name nor local-dir:PATH "
                         f"(e.g. ViT-B-16; see open_clip.list_models())")
    return name


def check_pretrained(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ValueError(f"--pretrained {path}: no such file (weights are read from local files only)")
    return path


def model_config(name: str) -> dict[str, Any]:
    """The `open_clip_config.json` content of a model name or `local-dir:` folder."""
    if name.startswith(LOCAL_DIR):
        return json.loads((Path(name[len(LOCAL_DIR):]) / CONFIG_FILE).read_text(encoding="utf-8"))
    return {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": {}}


def _create(name: str, pretrained: Path | None, device: str | torch.device,
            aug_cfg: dict[str, Any] | None) -> LoadedModel:
    logging.disable(logging.WARNING)  # open_clip narrates every step on the root logger; we say what matters
    try:
        model, train_transform, eval_transform = open_clip.create_model_and_transforms(
            name, pretrained=str(pretrained) if pretrained else None, device=device, aug_cfg=aug_cfg,
            pretrained_text=False, pretrained_image=False, output_dict=True)
        tokenizer = open_clip.get_tokenizer(name)
    finally:
        logging.disable(logging.NOTSET)
    config = model_config(name)
    config["preprocess_cfg"] = {**open_clip.get_model_preprocess_cfg(model), **config.get("preprocess_cfg", {})}
    return LoadedModel(model, train_transform, eval_transform, tokenizer, config)


def weights_source(name: str, pretrained: Path | None) -> str:
    """Where a model's initial weights come from, in words (a local-dir folder may hold its own)."""
    if pretrained:
        return f"weights from {pretrained}"
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        found = sorted(path.name for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern))
        if found:
            return f"weights from {folder / found[0]}"
    return "random initialisation"


def create_model(name: str, pretrained: Path | None = None, device: str | torch.device = "cpu",
                 aug_cfg: dict[str, Any] | None = None) -> LoadedModel:
    """A model by name or `local-dir:`, with weights from `pretrained` (a local file) or random init."""
    name, pretrained = check_model_name(name), check_pretrained(pretrained)
    log.info("model %s: %s", name, weights_source(name, pretrained))
    if name.startswith(LOCAL_DIR) and pretrained:
        # open_clip ignores `pretrained` for local-dir models; load the file ourselves instead of dropping it.
        loaded = _create(name, None, device, aug_cfg)
        open_clip.load_checkpoint(loaded.model, str(pretrained))
        return loaded
    return _create(name, pretrained, device, aug_cfg)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint's content; a clear error for a missing file or a file that is not one of ours."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file (for plain open_clip weights use "
                         "--model NAME --pretrained PATH)")
    return content


def model_from_checkpoint(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The model a training checkpoint holds, rebuilt from the config inside it."""
    content = read_checkpoint(path)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, CONFIG_FILE).write_text(json.dumps(content["open_clip_config"]), encoding="utf-8")
        loaded = _create(f"{LOCAL_DIR}{folder}", None, device, None)
    loaded.model.load_state_dict(content["model"])
    log.info("model from checkpoint %s (step %d)", path, content["step"])
    return loaded


def load_model(name: str | None = None, pretrained: Path | None = None, checkpoint: Path | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """The model for evaluation or prediction: from our checkpoint, or by name with optional local weights."""
    if (checkpoint is None) == (name is None):
        raise ValueError("give either --checkpoint PATH or --model NAME (with optional --pretrained PATH)")
    loaded = model_from_checkpoint(checkpoint, device) if checkpoint else create_model(name, pretrained, device)
    loaded.model.eval()
    return loaded


def export_local_dir(model: torch.nn.Module, config: dict[str, Any], folder: Path) -> Path:
    """Write `model` as a `local-dir:` folder (config + weights) that plain open_clip loads; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / WEIGHTS_FILE, lambda path: torch.save(model.state_dict(), path))
    write_atomic(folder / CONFIG_FILE, lambda path: path.write_text(json.dumps(config, indent=1), encoding="utf-8"))
    return folder
