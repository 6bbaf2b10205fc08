"""What a build records of its inputs and settings: sizes, checksums, code version, command."""

import hashlib
import sys
from pathlib import Path

import pytest

from pipeline import provenance


def test_a_small_file_is_hashed_and_other_inputs_are_described_by_kind(tmp_path: Path) -> None:
    data = tmp_path / "train.json"
    data.write_bytes(b'{"images": []}')
    assert provenance.describe_input("inat21_json", str(data)) == {
        "input": "inat21_json", "path": str(data), "kind": "file", "bytes": 14,
        "sha256": hashlib.sha256(b'{"images": []}').hexdigest()}
    assert provenance.describe_input("eol_downloads", str(tmp_path))["kind"] == "folder"
    assert provenance.describe_input("gone", str(tmp_path / "gone.tsv"))["kind"] == "missing"
    assert provenance.describe_input("remote", "gs://bucket/train.json")["kind"] == "url"


def test_a_file_above_the_hash_limit_keeps_its_size_but_no_checksum(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "train.tar.gz"
    archive.write_bytes(b"x" * 100)
    monkeypatch.setattr(provenance, "HASH_LIMIT", 99)
    described = provenance.describe_input("inat21_images", str(archive))
    assert (described["bytes"], described["sha256"]) == (100, None)


def test_settings_start_with_the_command_and_code_version_and_keep_every_value_as_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/tol", "build", "out dir", "--seed", "3"])
    rows = provenance.settings({"seed": 3, "runner": "FnApiRunner"})
    assert [row["setting"] for row in rows] == ["command", "code_version", "seed", "runner"]
    assert rows[0]["value"] == "tol build 'out dir' --seed 3"
    assert rows[1]["value"].startswith("treeoflife ")
    assert rows[2]["value"] == "3"
