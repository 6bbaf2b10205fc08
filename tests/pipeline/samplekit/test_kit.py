"""`tol sample-kit` end to end: determinism, EXPECTED.json, hard cases, scale, and the command line."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.samplekit.kit import KitConfig, build_kit
from pipeline.samplekit.plan import DEFECTS, make_plan, source_sizes
from pipeline.samplekit.taxa import choose_taxa, hard_cases


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def kit_scale(kit: Path) -> int:
    return json.loads((kit / "EXPECTED.json").read_text())["kit"]["scale"]


def test_the_same_seed_gives_identical_bytes_whatever_the_workers(kit: Path, tmp_path: Path) -> None:
    build_kit(KitConfig(tmp_path / "again", seed=0, scale=kit_scale(kit), workers=1))
    assert tree_digest(tmp_path / "again") == tree_digest(kit)


def test_another_seed_gives_another_kit(kit: Path, tmp_path: Path) -> None:
    other = build_kit(KitConfig(tmp_path / "other", seed=1, scale=kit_scale(kit), workers=2))
    assert other["defects"] != json.loads((kit / "EXPECTED.json").read_text())["defects"]


def test_expected_lists_every_hard_case_with_records_that_carry_it(kit: Path) -> None:
    expected = json.loads((kit / "EXPECTED.json").read_text())
    cases = {case["id"]: case for case in expected["hard_cases"]}
    assert set(cases) == {case["id"] for case in hard_cases()}
    assert all(case["records"] for case in cases.values())
    assert cases["homonym-morus-bird"]["expected"]["class"] == "Aves"
    assert cases["homonym-morus-plant"]["expected"]["kingdom"] == "Plantae"
    assert cases["fish-without-class"]["expected"]["class"] == ""
    tsv = (kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv").read_text()
    assert "\tProcryptocerus scabriuscula\t" in tsv and "\tProcryptocerus scabriusculus\t" in tsv


def test_rare_species_candidates_are_absent_from_inat21_and_bioscan(kit: Path) -> None:
    expected = json.loads((kit / "EXPECTED.json").read_text())
    inat = {c["name"] for c in json.loads((kit / "inat21/train.json").read_text())["categories"]}
    tsv = (kit / "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv").read_text()
    candidates = expected["rare_species_candidates"]
    assert len(candidates) >= 10
    for candidate in candidates:
        assert candidate["scientific_name"] not in inat and f"\t{candidate['scientific_name']}\t" not in tsv


def test_counts_add_up(kit: Path) -> None:
    expected = json.loads((kit / "EXPECTED.json").read_text())
    counts = expected["counts"]
    assert sum(counts[s]["records"] for s in ("inat21", "bioscan", "eol")) == kit_scale(kit)
    assert len(json.loads((kit / "inat21/train.json").read_text())["images"]) == counts["inat21"]["records"]


@pytest.mark.parametrize("scale", [5_000, 100_000])
def test_larger_scales_plan_more_taxa_and_more_defects_without_rendering(scale: int) -> None:
    sizes = source_sizes(scale)
    taxa = choose_taxa(0, sizes)
    plan = make_plan(taxa, scale, 0)
    assert sum(len(records) for records in plan.values()) == scale
    defects = [r.defect for records in plan.values() for r in records if r.defect]
    assert len(defects) == len(DEFECTS) * (scale // 1000)
    assert len({r.native_id for r in plan["eol"]}) == len(plan["eol"])  # content ids stay unique
    assert len(taxa.inat21) > 100 and len(taxa.eol) > 100


def test_help_explains_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "sample-kit" in text and "serve-kit" in text
    with pytest.raises(SystemExit):
        main(["sample-kit", "--help"])
    text = capsys.readouterr().out
    for flag in ("--seed", "--scale", "--eol-base-url", "--workers", "--overwrite"):
        assert flag in text


@pytest.mark.parametrize("argv, named", [
    (["sample-kit", "x", "--scale", "10"], "--scale"),
    (["sample-kit", "x", "--seed", "minus"], "--seed"),
    (["sample-kit", "x", "--eol-base-url", "file:///tmp"], "--eol-base-url"),
    (["sample-kit", "x", "--bogus"], "--bogus"),
])
def test_bad_flags_give_one_line_naming_them(argv: list[str], named: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and named in error


def test_refuses_to_write_into_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["sample-kit", str(tmp_path), "--scale", "200", "--workers", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"


def test_tol_console_script_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "sample-kit", str(tmp_path / "k"), "--scale", "200"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "EXPECTED.json" in done.stderr and (tmp_path / "k/EXPECTED.json").is_file()
