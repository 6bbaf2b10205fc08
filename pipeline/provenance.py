"""What a build was made from and how, for build_summary.json and the data card: settings, inputs, code version.

Settings are (setting, value) string pairs; inputs are the source paths with their size and, for files up to
HASH_LIMIT bytes (metadata, manifests), their sha256. Image archives of hundreds of GB are not hashed here: their
checksums belong to fetching them, and their size is recorded.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HASH_LIMIT = 1 << 30
CHUNK = 1 << 20


def code_version() -> str:
    """`treeoflife VERSION`, plus the git commit (and `-dirty`) when the code runs from a git checkout."""
    try:
        version = f"treeoflife {metadata.version('treeoflife')}"
    except metadata.PackageNotFoundError:
        version = "treeoflife (not installed)"
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}, git {commit}{'-dirty' if dirty else ''}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_input(name: str, location: str) -> dict[str, object]:
    """One input: its path, kind (file, folder, url), size in bytes and sha256 (files up to HASH_LIMIT)."""
    row: dict[str, object] = {"input": name, "path": location, "kind": "url", "bytes": None, "sha256": None}
    if "://" in location:
        return row
    path = Path(location)
    if path.is_dir():
        return {**row, "kind": "folder"}
    if not path.is_file():
        return {**row, "kind": "missing"}
    size = path.stat().st_size
    return {**row, "kind": "file", "bytes": size, "sha256": sha256_of(path) if size <= HASH_LIMIT else None}


def settings(pairs: dict[str, object]) -> list[dict[str, str]]:
    """(setting, value) rows: the process's command line and code version first, then `pairs` as given."""
    command = shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    rows = {"command": command, "code_version": code_version(), **pairs}
    return [{"setting": key, "value": str(value)} for key, value in rows.items()]
