"""`tol query`: views over the output files, three formats, DuckDB's own errors on one line."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.query import query


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "taxonomy").mkdir()
    pq.write_table(pa.table({"taxon_id": ["a", "b", "c"], "kingdom": ["Animalia", "Animalia", "Plantae"],
                             "common_name": ["black-billed magpie", "Northern Gannet", None]}),
                   tmp_path / "taxonomy/taxa.parquet")
    (tmp_path / "manifests").mkdir()
    pq.write_table(pa.table({"source": ["eol", "eol", "inat21"], "stage": ["download", "process", "read"],
                             "reason": ["timeout", "decode_error", "missing_image"]}), tmp_path / "manifests/failures.parquet")
    return tmp_path


def test_views_answer_grouped_queries_in_each_format(out: Path) -> None:
    sql = "SELECT kingdom, count(*) AS taxa FROM taxa GROUP BY kingdom ORDER BY kingdom"
    assert query(out, sql, "csv") == "kingdom,taxa\nAnimalia,2\nPlantae,1\n"
    assert [json.loads(line) for line in query(out, sql, "json").splitlines()] == [
        {"kingdom": "Animalia", "taxa": 2}, {"kingdom": "Plantae", "taxa": 1}]
    table = query(out, sql, "table").splitlines()
    assert table[0].split() == ["kingdom", "taxa"] and table[2].split() == ["Animalia", "2"] and table[-1] == "(2 rows)"
    assert query(out, "SELECT reason FROM failures WHERE stage = 'download'", "csv") == "reason\ntimeout\n"


def test_nulls_show_as_empty_cells(out: Path) -> None:
    assert query(out, "SELECT taxon_id, common_name FROM taxa WHERE taxon_id = 'c'", "csv") == "taxon_id,common_name\nc,\n"
    assert query(out, "SELECT taxon_id, common_name FROM taxa WHERE taxon_id = 'c'").splitlines()[2].split() == ["c"]


def test_bad_sql_gives_duckdbs_error_on_one_line(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELEC nonsense", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "syntax error" in err[0].lower() and "Traceback" not in err[0]


def test_a_missing_view_names_the_views_that_exist(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELECT * FROM catalog", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "catalog" in err and "views available" in err and "taxa" in err and "failures" in err


def test_the_command_prints_the_result(out: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELECT count(*) AS n FROM taxa", "--out", str(out), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n3\n"


def test_a_missing_out_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELECT 1", "--out", str(tmp_path / "nowhere")]) == 2
    assert "--out" in capsys.readouterr().err
