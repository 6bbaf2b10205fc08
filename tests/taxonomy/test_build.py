"""`tol taxonomy` end to end through the CLI: kit hard cases, iNat21 as given, determinism, bad inputs, real rows."""

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from taxonomy.authorities.schema import create_tables
from taxonomy.build import OUTPUTS
from taxonomy.labels import LabelInputs, collect_labels
from taxonomy.profiles import get_profile
from taxonomy.records import taxon_id
from taxonomy.resolve import resolve_labels

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def tol_taxonomy(*argv: object) -> int:
    return main(["taxonomy", *map(str, argv)])


@pytest.fixture(scope="module")
def kit_out(kit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("taxonomy")
    assert tol_taxonomy(kit, out) == 0
    return out


def read(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / name).to_pylist()


def outcome(out: Path, key: str) -> tuple[dict, dict | None]:
    """(label_map row, taxa row or None) of one label."""
    [mapping] = [m for m in read(out, "label_map.parquet") if m["label_key"] == key]
    taxa = [t for t in read(out, "taxa.parquet") if t["taxon_id"] == mapping["taxon_id"]]
    return mapping, (taxa[0] if taxa else None)


def hard_case_key(case: dict) -> str:
    label = case["label"]
    if case["source"] == "eol":
        return f"eol:{label['eol_page_id']}"
    return "bioscan:" + "|".join(label[rank] for rank in ("order", "family", "genus", "species"))


def test_writes_every_file_with_its_schema(kit_out: Path) -> None:
    assert {p.name for p in kit_out.iterdir()} >= {*OUTPUTS, "summary.json", "authorities.duckdb"}
    assert not list(kit_out.glob(".*tmp*"))
    taxa = pq.read_schema(kit_out / "taxa.parquet").names
    assert taxa == ["taxon_id", *RANKS, "scientific_name", "common_name", "common_name_source",
                    *(f"{r}_authority" for r in RANKS), *(f"{r}_match" for r in RANKS), "match", "status"]
    assert pq.read_schema(kit_out / "label_map.parquet").names == ["source", "label_key", "taxon_id", "status",
                                                                    "reason", "match"]
    assert pq.read_schema(kit_out / "conflicts.parquet").names == ["source", "label_key", "candidates", "why"]
    assert pq.read_schema(kit_out / "unresolved.parquet").names == ["source", "label_key", "reason", "detail"]
    for row in read(kit_out, "taxa.parquet"):
        assert row["taxon_id"] == taxon_id(tuple(row[r] for r in RANKS))
        assert all(bool(row[r]) == bool(row[f"{r}_authority"]) == bool(row[f"{r}_match"]) for r in RANKS)


def test_every_hard_case_of_the_kit_resolves_to_its_expected_ranks(kit: Path, kit_out: Path) -> None:
    cases = json.loads((kit / "EXPECTED.json").read_text())["hard_cases"]
    assert len(cases) == 10
    for case in cases:
        mapping, taxon = outcome(kit_out, hard_case_key(case))
        assert taxon is not None, (case["id"], mapping)
        assert tuple(taxon[r] for r in RANKS) == tuple(case["expected"].values()), case["id"]
    mapping, ant = outcome(kit_out, "bioscan:Hymenoptera|Formicidae|Procryptocerus|Procryptocerus scabriuscula")
    assert ant["species"] == "scabriusculus" and mapping["match"] == ant["match"] == "fuzzy"
    mapping, cougar = outcome(kit_out, "eol:90000004")
    assert (cougar["genus"], mapping["match"], cougar["common_name"]) == ("Puma", "synonym", "Cougar")


def test_every_inat21_category_maps_to_its_given_ranks(kit: Path, kit_out: Path) -> None:
    categories = json.loads((kit / "inat21/train.json").read_text())["categories"]
    for category in categories:
        mapping, taxon = outcome(kit_out, f"inat21:{category['id']}")
        given = tuple(category[r] for r in (*RANKS[:6], "specific_epithet"))
        assert mapping["status"] == "resolved" and tuple(taxon[r] for r in RANKS) == given


def test_counts_add_up(kit_out: Path) -> None:
    summary = json.loads((kit_out / "summary.json").read_text())
    mappings = read(kit_out, "label_map.parquet")
    assert sum(summary["outcomes"].values()) == sum(summary["labels"].values()) == len(mappings)
    for source, counts in summary["by_source"].items():
        assert sum(counts.values()) == summary["labels"][source]
    assert summary["taxa"]["total"] == len(read(kit_out, "taxa.parquet")) == len({m["taxon_id"] for m in mappings
                                                                                   if m["taxon_id"]})
    assert summary["files"]["label_map.parquet"]["rows"] == len(mappings)


def test_reruns_give_identical_bytes_and_reuse_the_authority_db(kit: Path, kit_out: Path, tmp_path: Path) -> None:
    assert tol_taxonomy(kit, tmp_path) == 0
    for name in OUTPUTS:
        assert (tmp_path / name).read_bytes() == (kit_out / name).read_bytes(), name
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}
    assert tol_taxonomy(kit, tmp_path) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["run"]["authorities_db_reused"] is True
    assert {name: (tmp_path / name).read_bytes() for name in OUTPUTS} == before


def test_a_changed_dump_rebuilds_the_authority_db(kit: Path, tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    shutil.copytree(kit / "authorities", dumps / "authorities")
    out = tmp_path / "out"
    assert tol_taxonomy(kit, out, "--authorities", dumps) == 0
    assert tol_taxonomy(kit, out, "--authorities", dumps) == 0
    assert json.loads((out / "summary.json").read_text())["run"]["authorities_db_reused"] is True
    with open(dumps / "authorities/itis/species_level_taxonomy_chains.csv", "a", encoding="utf-8") as f:
        f.write("\n")
    assert tol_taxonomy(kit, out, "--authorities", dumps) == 0
    assert json.loads((out / "summary.json").read_text())["run"]["authorities_db_reused"] is False


@pytest.mark.parametrize(("argv", "named"), [
    (["{missing}", "{out}"], "is not a directory"),
    (["{kit}", "{out}", "--profile", "nope"], "known profiles: bioclip-v1, gbif-first"),
    (["{kit}", "{out}", "--eol-manifest", "{missing}"], "--eol-manifest"),
    (["{empty}", "{out}"], "--inat21-json"),
    (["{empty}", "{out}", "--inat21-json", "{kit}/inat21/train.json"], "--authorities"),
])
def test_bad_inputs_exit_2_with_one_line(argv: list[str], named: str, kit: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    places = {"missing": tmp_path / "missing", "out": tmp_path / "out", "kit": kit, "empty": tmp_path / "empty"}
    assert tol_taxonomy(*(arg.format(**places) for arg in argv)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and named in errors[0]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_real_inat21_and_bioscan_rows_resolve_against_the_kit_dumps(kit: Path, shared_data: Path,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    argv = [tmp_path / "raw", tmp_path / "out", "--inat21-json", shared_data / "inat21/tfds_dummy_train.json",
            "--bioscan-metadata", shared_data / "bioscan/small_dataset_validation_metadata.tsv", "--authorities", kit]
    assert tol_taxonomy(*argv) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["labels"]["inat21"] == 3 and summary["labels"]["bioscan"] > 1000 and "eol" not in summary["labels"]
    assert sum(summary["outcomes"].values()) == sum(summary["labels"].values())
    assert summary["by_source"]["inat21"]["resolved"] == 3


def test_real_bioscan_rows_against_an_empty_authority_db(shared_data: Path) -> None:
    inputs = LabelInputs(shared_data / "inat21/tfds_dummy_train.json",
                         shared_data / "bioscan/small_dataset_validation_metadata.tsv")
    labels = [label for found in collect_labels(inputs).values() for label in found]
    con = duckdb.connect()
    create_tables(con)
    for profile in ("bioclip-v1", "gbif-first"):
        result = resolve_labels(con, labels, get_profile(profile))
        statuses = [m.status for m in result.mappings]
        conflicted = {c.key for c in result.conflicts}
        unresolved = [u for u in result.unresolved if u.key not in conflicted]
        assert statuses.count("resolved") + statuses.count("partial") + len(unresolved) + len(conflicted) \
            == len(labels) == len(result.mappings)
        assert all(u.reason and u.detail for u in result.unresolved)
        assert {t.status for t in result.taxa} <= {"resolved", "partial"}
