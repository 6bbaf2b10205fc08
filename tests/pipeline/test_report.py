"""`tol report`: the card's numbers equal the manifests read apart (pyarrow) and `tol query` on the SQL the card
prints; the figures are PNGs with the titles the card names, the same bytes on a rerun; a build without failures,
from one source, with or without a taxonomy, still gives a card whose empty sections say so."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import shutil
import socket
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import cli, download, manifests
from pipeline.report_figures import FIGURES
from pipeline.samplekit.kit import KitConfig, build_kit
from pipeline.serve_kit import KitServer
from rare_species.layout import EXCLUSIONS_SCHEMA
from taxonomy.build import (
    CONFLICTS_SCHEMA,
    LABEL_MAP_SCHEMA,
    TAXA_SCHEMA,
    UNRESOLVED_SCHEMA,
    TaxonomyConfig,
    build_taxonomy,
)
from taxonomy.captions import RANKS

SCALE = 200
DOWNLOAD_FLAGS = ["--rate", "200", "--burst", "8", "--read-timeout", "0.25", "--connect-timeout", "1",
                  "--max-attempts", "2", "--backoff-base", "0.02", "--backoff-cap", "0.1", "--contact", "t@localhost"]
QUERY = re.compile(r"\(query `(\w+)`\)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parquet_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def card_tables(text: str) -> dict[str, list[list[str]]]:
    """Each `(query `name`)` table of the card as rows of cells, header first (an empty section: no rows)."""
    tables: dict[str, list[list[str]]] = {}
    name = None
    for line in text.splitlines():
        if match := QUERY.search(line):
            name = match[1]
            tables[name] = []
        elif name and line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                tables[name].append(cells)
        elif line.startswith("#"):
            name = None
    return tables


def card_statements(text: str) -> dict[str, str]:
    return dict(re.findall(r"^`(\w+)`:\n\n```sql\n(.*?)\n```", text, flags=re.M | re.S))


def tol_query_rows(out: Path, sql: str, capsys: pytest.CaptureFixture) -> list[list[str]]:
    capsys.readouterr()
    assert cli.main(["query", sql, "--out", str(out), "--format", "csv"]) == 0
    return list(csv.reader(io.StringIO(capsys.readouterr().out)))


def assert_tables_equal_tol_query(out: Path, capsys: pytest.CaptureFixture) -> dict[str, list[list[str]]]:
    """Every table of OUT's card equals `tol query` on the statement the card prints for it."""
    text = (out / "report/DATA_CARD.md").read_text(encoding="utf-8")
    tables, statements = card_tables(text), card_statements(text)
    for name, rows in tables.items():
        if name in statements:
            result = tol_query_rows(out, statements[name], capsys)
            assert rows == (result if rows else []), name
        else:
            assert not rows and f"(query `{name}`): not recorded" in text, name
    return tables


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scale-200 kit built with an excluded species and a leaked eval set, its taxonomy in OUT, and its report."""
    root = tmp_path_factory.mktemp("report")
    out, port = root / "out", free_port()
    build_kit(KitConfig(root / "kit", seed=0, scale=SCALE, eol_base_url=f"http://127.0.0.1:{port}", workers=2))
    with KitServer(root / "kit/eol/images", port=port, hang_seconds=1):
        assert download.run([str(root / "kit/eol/media_manifest.tgz"), str(root / "downloads"), *DOWNLOAD_FLAGS]) == 0
    build_taxonomy(TaxonomyConfig.for_raw(root / "kit", out / "taxonomy"))
    eol_taxa = {r["taxon_id"] for r in parquet_rows(out / "taxonomy/label_map.parquet") if r["source"] == "eol"}
    genus, epithet = min((t["genus"], t["species"]) for t in parquet_rows(out / "taxonomy/taxa.parquet")
                         if t["taxon_id"] in eol_taxa and t["species"])
    (out / "rare_species").mkdir()
    pq.write_table(pa.Table.from_pylist([{"binomial": f"{genus} {epithet}", "md5": "", "phash": ""}],
                   schema=EXCLUSIONS_SCHEMA), out / "rare_species/exclusions.parquet")
    eval_dir = root / "eval/rare_species"
    eval_dir.mkdir(parents=True)
    for image in sorted(sorted((root / "kit/inat21/train").iterdir())[0].glob("*.jpg"))[:2]:
        shutil.copy(image, eval_dir / image.name)
    assert cli.main(["build", str(out), "--kit", str(root / "kit"), "--downloads", str(root / "downloads"),
                     "--shard-samples", "40", "--exclude-species", str(out / "rare_species/exclusions.parquet"),
                     "--eval-images", str(eval_dir / "*.jpg")]) == 0
    assert cli.main(["report", str(out)]) == 0
    return out


def test_every_table_equals_tol_query_on_the_statement_the_card_prints(out: Path, capsys) -> None:
    tables = assert_tables_equal_tol_query(out, capsys)
    assert {"totals", "failures", "leakage", "excluded", "authority_files", "taxonomy_files"} <= {
        name for name, rows in tables.items() if len(rows) > 1}


def test_card_numbers_match_the_manifests_read_apart(out: Path) -> None:
    tables = card_tables((out / "report/DATA_CARD.md").read_text(encoding="utf-8"))
    catalog = parquet_rows(out / "manifests/catalog.parquet")
    failures = parquet_rows(out / "manifests/failures.parquet")
    main = [r for r in catalog if r["split"] != "train_small"]
    labels = Counter(tuple(r[rank] for rank in RANKS) for r in main)
    species = Counter(label for label in labels.elements() if label[-1])
    assert tables["totals"][1][:3] == [str(len(main)), str(len({r["taxon_id"] for r in main})), str(len(labels))]
    assert {row[0]: row[1:] for row in tables["per_source"][1:]} == {
        s: [str(n), str(len({r["taxon_id"] for r in main if r["source"] == s}))]
        for s, n in Counter(r["source"] for r in main).items()}
    assert {row[0]: int(row[1]) for row in tables["per_split"][1:]} == Counter(r["split"] for r in catalog)
    completeness = {row[0]: int(row[1]) for row in tables["completeness"][1:]}
    assert completeness == {rank: sum(1 for r in main if r[rank]) for rank in RANKS}
    assert {int(row[0]): int(row[1]) for row in tables["tail"][1:]} == {
        n: sum(1 for count in species.values() if count < n) for n in (5, 10, 30)}
    assert {(row[0], row[1]): int(row[2]) for row in tables["failures"][1:]} == Counter(
        (r["stage"], r["reason"]) for r in failures)
    excluded = [r for r in failures if r["reason"] == "rare_species_excluded"]
    assert excluded and tables["excluded_total"][1] == [str(len(excluded)), str(len({r["detail"] for r in excluded}))]
    leaks = Counter((r["detail"], r["source"]) for r in failures if r["reason"] == "leaks")
    assert leaks and {(row[0], row[1]): int(row[2]) for row in tables["leakage"][1:]} == leaks
    licenses = Counter(r["license"] for r in parquet_rows(out / "manifests/licenses.parquet"))
    assert {row[0]: int(row[1]) for row in tables["licenses"][1:]} == dict(licenses.most_common(20))
    shards = Counter()
    for row in parquet_rows(out / "manifests/shards.parquet"):
        shards[row["split"]] += row["count"]
    assert {row[0]: int(row[2]) for row in tables["shards"][1:]} == shards
    recorded = dict(tables["build_settings"][1:])
    assert recorded["runner"] == "FnApiRunner" and recorded["seed"] == "0" and recorded["size"] == "224"
    assert recorded["code_version"].startswith("treeoflife ")
    inputs = {row[0]: row for row in tables["build_inputs"][1:]}
    metadata = Path(inputs["inat21_json"][1])
    assert inputs["inat21_json"][2:] == ["file", str(metadata.stat().st_size),
                                         hashlib.sha256(metadata.read_bytes()).hexdigest()]
    assert inputs["eol_downloads"][2] == "folder"


def test_figures_are_pngs_with_the_titles_the_card_names_and_reruns_give_the_same_bytes(out: Path) -> None:
    report = out / "report"
    card = (report / "DATA_CARD.md").read_text(encoding="utf-8")
    assert sorted(re.findall(r"!\[(.+?)\]\((.+?)\)", card)) == sorted((s.title, s.file) for s in FIGURES.values())
    before = {path.name: path.read_bytes() for path in report.iterdir()}
    for spec in FIGURES.values():
        with Image.open(report / spec.file) as image:
            assert image.format == "PNG" and image.width >= 800 and image.height >= 250
            assert "Software" not in image.info
    assert cli.main(["report", str(out)]) == 0
    assert {path.name: path.read_bytes() for path in report.iterdir()} == before


def catalog_row(native_id: str, split: str, taxon: dict) -> dict:
    row = dict.fromkeys(manifests.CATALOG_SCHEMA.names, "")
    return row | {"split": split, "treeoflife_id": f"id-{native_id}", "source": "inat21", "native_id": native_id,
                  "taxon_id": taxon["taxon_id"], **{rank: taxon[rank] for rank in RANKS},
                  "shard": f"{split}/shard-000000.tar", "license": "Attribution License"}


def write_single_source_build(out: Path) -> None:
    """A one-source build where nothing was dropped, with a taxonomy that has no conflict and nothing unresolved."""
    full = {"taxon_id": "t1", **dict(zip(RANKS, ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica",
                                                  "hudsonia"), strict=True))}
    partial = full | {"taxon_id": "t2", "genus": "", "species": ""}
    catalog = [catalog_row("1", "train", full), catalog_row("1", "train_small", full),
               catalog_row("2", "train", partial), catalog_row("3", "val", full)]
    main = [r for r in catalog if r["split"] != "train_small"]
    tables = {"manifests/catalog.parquet": (manifests.CATALOG_SCHEMA, catalog),
              "manifests/failures.parquet": (manifests.FAILURE_SCHEMA, []),
              "manifests/licenses.parquet": (manifests.LICENSE_SCHEMA, [
                  {"treeoflife_id": r["treeoflife_id"], "source": "inat21", "license": r["license"],
                   "rights_holder": "someone", "source_url": "", "md5": ""} for r in main]),
              "manifests/shards.parquet": (manifests.SHARD_SCHEMA, [
                  {"split": s, "shard": f"{s}/shard-000000.tar", "count": n, "bytes": 10240 * n, "sha256": "0" * 64}
                  for s, n in Counter(r["split"] for r in catalog).items()]),
              "manifests/inputs.parquet": (manifests.INPUT_SCHEMA, [
                  {"source": "inat21", "treeoflife_id": r["treeoflife_id"]} for r in main]),
              "taxonomy/taxa.parquet": (TAXA_SCHEMA, [dict.fromkeys(TAXA_SCHEMA.names, "") | taxon | {
                  f"{rank}_authority": "inat21" for rank in RANKS if taxon[rank]} for taxon in (full, partial)]),
              "taxonomy/label_map.parquet": (LABEL_MAP_SCHEMA, [
                  {"source": "inat21", "label_key": f"inat21:{t}", "taxon_id": t, "status": "resolved", "reason": "",
                   "match": "given"} for t in ("t1", "t2")]),
              "taxonomy/conflicts.parquet": (CONFLICTS_SCHEMA, []),
              "taxonomy/unresolved.parquet": (UNRESOLVED_SCHEMA, [])}
    for relative, (schema, rows) in tables.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / relative)


@pytest.mark.parametrize("with_taxonomy", [True, False])
def test_a_build_without_failures_from_one_source_gives_a_card_that_says_so(tmp_path: Path, capsys,
                                                                            with_taxonomy: bool) -> None:
    write_single_source_build(tmp_path)
    if not with_taxonomy:
        shutil.rmtree(tmp_path / "taxonomy")
    assert cli.main(["report", str(tmp_path)]) == 0
    card = (tmp_path / "report/DATA_CARD.md").read_text(encoding="utf-8")
    for empty in ("failures`): every input record was kept.", "duplicates`): none.", "leakage`): none.",
                  "excluded`): no species excluded.", "build_run`): not recorded", "exclusion_list`): not recorded",
                  "authority_files`): not recorded"):
        assert f"(query `{empty}" in card, empty
    assert ("conflict_count`): none." in card) == with_taxonomy
    assert ("Not recorded: " in card) != with_taxonomy and "build_settings`): not recorded" in card
    tables = assert_tables_equal_tol_query(tmp_path, capsys)
    assert tables["per_source"] == [["source", "images", "taxa"], ["inat21", "3", "2"]]
    assert tables["tail"] == [["fewer_than", "species", "species_pct"], ["5", "1", "100.0"], ["10", "1", "100.0"],
                              ["30", "1", "100.0"]]
    for spec in FIGURES.values():
        with Image.open(tmp_path / "report" / spec.file) as image:
            assert image.format == "PNG"


def test_a_missing_manifest_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifests/catalog.parquet" in err[0] and "nowhere" in err[0]
    write_single_source_build(tmp_path)
    assert cli.main(["report", str(tmp_path), "--exclusions", str(tmp_path / "none.parquet")]) == 2
    assert "--exclusions" in capsys.readouterr().err
