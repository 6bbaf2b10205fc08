"""Tests for `tol build` on a sample kit: defects end where EXPECTED.json says, nothing is lost, shards read back
with webdataset, FnApiRunner and multi-process DirectRunner give the same bytes, reruns skip done shards, and an
excluded species and leaked eval images are dropped."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image

from pipeline import build, cli, download
from pipeline.front import SourcePaths
from pipeline.manifests import BIOCLIP_CATALOG_COLUMNS, check_accounting
from pipeline.records import treeoflife_id
from pipeline.samplekit.kit import KitConfig, build_kit
from pipeline.serve_kit import KitServer
from pipeline.shards import MEMBERS
from taxonomy.build import TaxonomyConfig, build_taxonomy

SCALE = 200
DOWNLOAD_FLAGS = ["--rate", "200", "--burst", "8", "--read-timeout", "0.25", "--connect-timeout", "1",
                  "--max-attempts", "2", "--backoff-base", "0.02", "--backoff-cap", "0.1", "--contact", "t@localhost"]
DIRECT = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def file_digests(out: Path) -> dict[str, str]:
    """sha256 of every file the build writes (shards and manifests), by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("shards", "manifests") for p in sorted((out / folder).rglob("*")) if p.is_file()}


def rows(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / "manifests" / f"{name}.parquet").to_pylist()


def build_args(root: Path, out: Path | str, *extra: str) -> list[str]:
    return [str(out), "--kit", str(root / "kit"), "--downloads", str(root / "downloads"), "--taxonomy",
            str(root / "taxonomy"), "--shard-samples", "40", *extra]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scale-200 kit, its EOL images downloaded from a loopback server, and its taxonomy."""
    root = tmp_path_factory.mktemp("build")
    port = free_port()
    build_kit(KitConfig(root / "kit", seed=0, scale=SCALE, eol_base_url=f"http://127.0.0.1:{port}", workers=2))
    with KitServer(root / "kit/eol/images", port=port, hang_seconds=1):
        assert download.run([str(root / "kit/eol/media_manifest.tgz"), str(root / "downloads"), *DOWNLOAD_FLAGS]) == 0
    build_taxonomy(TaxonomyConfig.for_raw(root / "kit", root / "taxonomy"))
    return root


@pytest.fixture(scope="module")
def expected(root: Path) -> dict:
    return json.loads((root / "kit/EXPECTED.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def first(root: Path) -> tuple[Path, dict[str, str]]:
    """A FnApiRunner build and the digests of what it wrote (before any later test reruns it)."""
    out = root / "out-fnapi"
    assert build.run(build_args(root, out)) == 0
    return out, file_digests(out)


def test_every_defect_ends_where_expected(first, expected) -> None:
    out, _ = first
    failures = {(r["source"], r["native_id"]): r for r in rows(out, "failures") if r["native_id"]}
    kept = {(r["source"], r["native_id"]) for r in rows(out, "catalog")}
    for defect in (d for d in expected["defects"] if d["native_id"]):
        key, fate = (defect["source"], defect["native_id"]), defect["expected"]
        if "copy_of" in defect:
            # The survivor rule (most complete taxon, source priority, smallest treeoflife_id) decides which of
            # the pair stays; EXPECTED.json names the copy. One is kept, the other dropped as a duplicate of it.
            copy = (defect["copy_of"]["source"], defect["copy_of"]["native_id"])
            dropped, survivor = (key, copy) if key in failures else (copy, key)
            assert survivor in kept and dropped in failures, defect
            assert (failures[dropped]["stage"], failures[dropped]["reason"]) == (fate["stage"], fate["reason"])
            assert failures[dropped]["detail"] == treeoflife_id(*survivor)
        elif fate["fate"] == "kept":
            assert key in kept, f"{defect['kind']} {key} should be kept; failure: {failures.get(key)}"
        else:
            assert key in failures, f"{defect['kind']} {key} should be dropped at {fate['stage']}"
            assert (failures[key]["stage"], failures[key]["reason"]) == (fate["stage"], fate["reason"]), defect
    rowless = Counter((r["source"], r["reason"]) for r in rows(out, "failures") if not r["native_id"])
    wanted = Counter((d["source"], d["expected"]["reason"]) for d in expected["defects"]
                     if not d["native_id"] and d["expected"]["fate"] == "dropped")
    assert rowless == wanted


def test_catalog_and_failures_hold_every_input_exactly_once(first, expected) -> None:
    out, _ = first
    inputs = rows(out, "inputs")
    catalog, failures = rows(out, "catalog"), rows(out, "failures")
    assert check_accounting([r["treeoflife_id"] for r in inputs], catalog, failures).ok
    per_source = Counter(r["source"] for r in inputs)
    assert per_source == {s: expected["counts"][s]["records"] for s in ("inat21", "bioscan", "eol")}
    main = [r["treeoflife_id"] for r in catalog if r["split"] != "train_small"]
    assert len(main) == len(set(main)) == len(inputs) - sum(1 for r in failures if r["treeoflife_id"])
    small = {r["treeoflife_id"] for r in catalog if r["split"] == "train_small"}
    assert small and small <= {r["treeoflife_id"] for r in catalog if r["split"] == "train"}
    licenses = rows(out, "licenses")
    assert sorted(r["treeoflife_id"] for r in licenses) == sorted(main)
    header = (out / "manifests/catalog.csv").read_text(encoding="utf-8").splitlines()[0]
    assert tuple(header.split(",")) == BIOCLIP_CATALOG_COLUMNS


def test_a_broken_accounting_is_reported() -> None:
    accounting = check_accounting(["a", "b", "c"], [{"split": "train", "treeoflife_id": "a"}],
                                  [{"treeoflife_id": "a"}, {"treeoflife_id": ""}])
    assert not accounting.ok
    assert accounting.missing == ("b", "c") and accounting.both == ("a",) and accounting.rowless_failures == 1
    assert "NOT accounted for" in accounting.message()


def test_shards_read_back_with_webdataset(first) -> None:
    out, _ = first
    catalog = rows(out, "catalog")
    shards = rows(out, "shards")
    assert sum(r["count"] for r in shards) == len(catalog)
    for split in ("train", "val", "train_small"):
        urls = sorted(str(p) for p in (out / "shards" / split).glob("shard-*.tar"))
        assert urls, split
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        want = {r["treeoflife_id"]: r for r in catalog if r["split"] == split}
        assert sorted(s["__key__"] for s in samples) == sorted(want)
        sizes = json.loads((out / "shards" / split / "sizes.json").read_text())
        assert sum(sizes.values()) == len(want)
        for sample in samples:
            assert set(sample) - {"__key__", "__url__", "__local_path__"} == {m.lower() for m in MEMBERS}
            image = Image.open(io.BytesIO(sample["jpg"]))
            assert image.format == "JPEG" and image.size == (224, 224)
            meta = json.loads(sample["json"])
            row = want[sample["__key__"]]
            assert (meta["kingdom"], meta["species"], meta["md5"]) == (row["kingdom"], row["species"], row["md5"])
            assert row["shard"] == f"{split}/{Path(sample['__url__']).name}"
            assert sample["txt"].decode().startswith("a photo of ")


def test_direct_runner_multiprocess_gives_identical_bytes(root: Path, first) -> None:
    _, digests = first
    other = root / "out-direct"
    assert build.run(build_args(root, other, "--beam", *DIRECT)) == 0
    assert file_digests(other) == digests


def test_rerun_skips_done_shards_with_identical_bytes(first, capsys: pytest.CaptureFixture) -> None:
    out, digests = first
    root = out.parent
    assert build.run(build_args(root, out)) == 0
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["shards"].get("written", 0) == 0 and summary["shards"]["skipped"] > 0
    assert "0 written" in capsys.readouterr().out
    assert file_digests(out) == digests


def test_excluded_species_and_leaked_eval_images_are_dropped(root: Path, first, tmp_path: Path) -> None:
    out, _ = first
    catalog = rows(out, "catalog")
    eol_species = sorted({(r["genus"], r["species"]) for r in catalog if r["source"] == "eol" and r["species"]})
    genus, epithet = eol_species[0]
    exclusions = tmp_path / "exclusions.parquet"
    pq.write_table(pa.table({"binomial": [f"{genus} {epithet}"]}), exclusions)
    # Two kept iNat21 images of another species, copied as an eval set: they must leave the build as leaks.
    leaked = [r for r in catalog if r["source"] == "inat21" and r["split"] == "train" and r["genus"] != genus][:2]
    eval_dir = tmp_path / "eval" / "rare_species"
    eval_dir.mkdir(parents=True)
    for row in leaked:
        member = next((root / "kit/inat21/train").rglob(row["inat21_filename"]))
        shutil.copy(member, eval_dir / member.name)
    excluded = root / "out-excluded"
    code = cli.main(["build", *build_args(root, excluded, "--exclude-species", str(exclusions),
                                          "--eval-images", str(eval_dir / "*.jpg"))])
    assert code == 0
    after = rows(excluded, "catalog")
    assert not [r for r in after if (r["genus"], r["species"]) == (genus, epithet)]
    failures = {r["treeoflife_id"]: r for r in rows(excluded, "failures")}
    dropped = [r for r in catalog if (r["genus"], r["species"]) == (genus, epithet) and r["split"] != "train_small"]
    assert dropped and all(failures[r["treeoflife_id"]]["reason"] == "rare_species_excluded" for r in dropped)
    for row in leaked:
        assert failures[row["treeoflife_id"]]["reason"] == "leaks"
        assert failures[row["treeoflife_id"]]["detail"] == "rare_species"


def test_bad_configuration_is_refused_before_work(root: Path, tmp_path: Path, caplog) -> None:
    assert build.run(build_args(root, tmp_path / "x", "--val-fraction", "2")) == 2
    assert build.run([str(tmp_path / "y"), "--kit", str(root / "kit"), "--taxonomy", str(tmp_path)]) == 2
    assert "no taxa.parquet" in caplog.text


def test_build_options_share_beams_parser_with_the_download_options() -> None:
    # Beam parses every PipelineOptions subclass of the process with one parser: a clash would break both commands.
    options = PipelineOptions(["--shard-samples", "7", "--rate", "5", "--resize-mode", "center-crop"])
    assert options.get_all_options()["shard_samples"] == 7
    assert options.view_as(build.BuildOptions).shard_samples == 7
    assert options.view_as(download.DownloadOptions).rate == 5
    assert not build.build_option_names() & download.download_option_names()
    args = build.parse_args(["out", "--kit", "k", "--shard-samples", "3", "--runner=DirectRunner"])
    assert args.beam == ["--runner=DirectRunner"]
    config = build.config_from_options(args.out, build.pipeline_options(args))
    assert (config.shard_samples, config.paths, config.taxonomy) == (
        3, SourcePaths.from_kit(Path("k"), Path("downloads")), Path("out/taxonomy"))


def test_remote_out_and_bad_values_are_refused_naming_the_flag(root: Path, caplog) -> None:
    assert build.run(build_args(root, "gs://bucket/out")) == 2
    assert "OUT gs://bucket/out must be a local" in caplog.text
    config = build.BuildConfig(root / "x", SourcePaths(), root / "taxonomy", shard_samples=0)
    with pytest.raises(ValueError, match="--shard-samples 0 must be an integer >= 1"):
        config.check()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_job_service(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Beam's local job service (`local_job_service_main`) on a free port; skip the test, quoting it, if it fails."""
    port_file, log_file = tmp_path / "job_service.port", tmp_path / "job_service.log"
    with log_file.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                    "--port", "0", "--port_file", str(port_file)], stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not port_file.is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.skip(f"Beam's local job service did not start: {log_file.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def test_portable_runner_gives_identical_bytes(root: Path, first, tmp_path: Path) -> None:
    _, digests = first
    service, port = start_job_service(tmp_path)
    try:
        other = root / "out-portable"
        assert build.run(build_args(root, other, "--beam", "--runner=PortableRunner", f"--job_endpoint=localhost:{port}",
                                    "--environment_type=LOOPBACK")) == 0
    finally:
        stop(service)
    assert file_digests(other) == digests


def tar_is_complete(path: Path) -> bool:
    """Every member of the tar reads back in full (a truncated file raises or comes up short)."""
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and len(archive.extractfile(member).read()) != member.size:
                    return False
    except (tarfile.TarError, OSError, EOFError):
        return False
    return True


def test_sigkill_leaves_no_finished_looking_partial_and_a_rerun_resumes(root: Path, tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    small = ["--shard-samples", "10"]  # many small shards: the write stage takes long enough to be caught in it
    command = [sys.executable, "-m", "pipeline.cli", "build", *build_args(root, killed, *small)]
    process = subprocess.Popen(command, cwd=Path(__file__).parents[2], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((killed / "shards").glob("*/shard-*.stats.json")):
            assert process.poll() is None, f"the build ended (code {process.returncode}) before a shard was done"
            assert time.monotonic() < deadline, "no shard was done within 120 s"
            time.sleep(0.005)
        assert process.poll() is None, "the build ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        stop(process)
    assert process.returncode == -signal.SIGKILL
    tars = sorted((killed / "shards").glob("*/shard-*.tar"))
    stats = sorted((killed / "shards").glob("*/shard-*.stats.json"))
    assert stats and all(s.with_name(s.name.replace(".stats.json", ".tar")) in tars for s in stats)
    assert all(tar_is_complete(tar) for tar in tars), "a shard-*.tar under its final name is not a complete tar"
    finals = [p for p in killed.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert not [p for p in finals if ".tmp" in p.name], "a temp file carries a final name"
    for table in (killed / "manifests").glob("*.parquet"):
        pq.read_table(table)  # a manifest under its final name is whole
    assert build.run(build_args(root, killed, *small)) == 0  # the rerun resumes: done shards are kept
    summary = json.loads((killed / build.SUMMARY_FILE).read_text())
    assert summary["shards"]["skipped"] >= len(stats)
    assert build.run(build_args(root, reference, *small)) == 0
    assert file_digests(killed) == file_digests(reference)
