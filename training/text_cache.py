"""Class-text embeddings cached on disk, keyed by everything that determines them.

    entry = cached_classifier(cache_dir, identity, "taxon_com", templates, texts, compute)

The key is the sha256 of the model's identity (`model_identity`: the checkpoint or weight files' resolved path,
size and mtime, plus the model name and config), the text type, the templates (as rendered strings) and the class
texts in order. An entry is two files in the cache folder: `KEY.npy` (float32 [embed_dim, classes]) and the
sidecar `KEY.json` (the key's inputs, without the texts, and the shape); each is written to a temp file and renamed,
the sidecar last, so an entry without a sidecar was never finished and is recomputed. A randomly initialised model
(no weights file) differs on every load, so it has no identity and its embeddings are never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taxonomy.build import write_atomic
from training.model import LOCAL_DIR, WEIGHT_PATTERNS

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/treeoflife/text-embeddings, else ~/.cache/treeoflife/text-embeddings."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "treeoflife" / "text-embeddings"


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(name: str | None, pretrained: Path | None, checkpoint: Path | None,
                   config: dict[str, Any]) -> dict[str, Any] | None:
    """What fixes a model's weights, or None when it has no weights file (random init: nothing to cache against)."""
    if checkpoint is not None:
        return {"checkpoint": _file_identity(checkpoint), "config": config}
    weights = [pretrained] if pretrained is not None else []
    if name and name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        weights += sorted(path for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern))
    if not weights:
        return None
    return {"model": name, "config": config, "weights": [_file_identity(path) for path in weights]}


def cache_key(identity: dict[str, Any], text_type: str, templates: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 over the model identity, text type, templates and class texts (canonical JSON)."""
    payload = {"identity": identity, "text_type": text_type, "templates": list(templates), "texts": list(texts)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read_entry(folder: Path, key: str) -> np.ndarray | None:
    """The cached array of `key`, or None when absent, unfinished or not matching its sidecar."""
    array_path, sidecar_path = folder / f"{key}.npy", folder / f"{key}.json"
    if not sidecar_path.is_file():
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        array = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        log.warning("text-embedding cache entry %s is unreadable (%s); recomputing it", array_path, error)
        return None
    if sidecar.get("key") != key or list(array.shape) != sidecar.get("shape"):
        log.warning("text-embedding cache entry %s does not match its sidecar; recomputing it", array_path)
        return None
    return array


def _write_entry(folder: Path, key: str, array: np.ndarray, sidecar: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{key}.npy", lambda path: _save_npy(path, array))
    text = json.dumps({**sidecar, "key": key, "shape": list(array.shape)}, indent=1, sort_keys=True)
    write_atomic(folder / f"{key}.json", lambda path: path.write_text(text + "\n", encoding="utf-8"))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as file:  # a file object: np.save would append ".npy" to the temp file's name
        np.save(file, array, allow_pickle=False)


def cached_classifier(folder: Path, identity: dict[str, Any] | None, text_type: str, templates: Sequence[str],
                      texts: Sequence[str], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The [embed_dim, classes] class-text embeddings: read from `folder` if cached, else computed and stored."""
    if identity is None:
        log.info("model has no weights file (random init): class-text embeddings are computed, not cached")
        return compute()
    key = cache_key(identity, text_type, templates, texts)
    cached = _read_entry(folder, key)
    if cached is not None:
        log.info("class-text embeddings of %d classes read from cache %s", len(texts), folder / f"{key}.npy")
        return cached
    array = np.ascontiguousarray(compute(), dtype=np.float32)
    try:
        _write_entry(folder, key, array, {"identity": identity, "text_type": text_type, "templates": len(templates),
                                          "classes": len(texts)})
    except OSError as error:  # a cache that cannot be written costs time on the next run, not this run's result
        log.warning("could not cache class-text embeddings in %s (%s); use --cache-dir to choose another folder",
                    folder, error)
        return array
    log.info("class-text embeddings of %d classes cached as %s", len(texts), folder / f"{key}.npy")
    return array
