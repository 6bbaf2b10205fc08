"""`tol query "SQL"`: DuckDB over a build's manifests and taxonomy outputs, as named views.

    tol query "SELECT kingdom, count(*) AS taxa FROM taxa GROUP BY kingdom ORDER BY taxa DESC" --out demo-out

Views (each made only when its file exists): `catalog`, `failures`, `licenses`, `shards` from OUT/manifests/*.parquet;
`taxa`, `label_map`, `conflicts`, `unresolved` from OUT/taxonomy/*.parquet. A bad statement prints DuckDB's own
error (and the views that exist) on one line, not a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)
VIEWS = {
    "catalog": "manifests/catalog.parquet",
    "failures": "manifests/failures.parquet",
    "licenses": "manifests/licenses.parquet",
    "shards": "manifests/shards.parquet",
    "taxa": "taxonomy/taxa.parquet",
    "label_map": "taxonomy/label_map.parquet",
    "conflicts": "taxonomy/conflicts.parquet",
    "unresolved": "taxonomy/unresolved.parquet",
}
FORMATS = ("table", "csv", "json")


def connect(out: Path) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB with a view per output file found under `out`; returns the view names made."""
    con = duckdb.connect()
    made = []
    for view, relative in VIEWS.items():
        path = out / relative
        if path.is_file():
            literal = str(path).replace("'", "''")
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{literal}')")
            made.append(view)
    return con, made


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """The result as an aligned text table, CSV, or JSON lines."""
    if fmt == "json":
        return "".join(json.dumps(dict(zip(columns, row)), default=str, ensure_ascii=False) + "\n" for row in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([columns, *rows])
        return buffer.getvalue()
    cells = [columns, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def query(out: Path, sql: str, fmt: str = "table") -> str:
    """Run `sql` against the views of `out`; raise duckdb.Error (with the views named) for a bad statement."""
    con, views = connect(out)
    try:
        result = con.execute(sql)
        columns = [d[0] for d in result.description] if result.description else []
        return render(columns, result.fetchall(), fmt) if columns else ""
    except duckdb.Error as error:
        raise duckdb.Error(f"{error} (views available in {out}: {', '.join(views) or 'none'})") from None
    finally:
        con.close()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", metavar="SQL", help="a DuckDB statement over the views listed below")
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="the build's output directory, holding manifests/ and taxonomy/ (default out)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.epilog = "views: " + ", ".join(f"{view} ({path})" for view, path in VIEWS.items())


def run(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        log.error("--out %s is not a directory (expected a build's output with manifests/ and taxonomy/)", args.out)
        return 2
    try:
        sys.stdout.write(query(args.out, args.sql, args.format))
    except duckdb.Error as error:
        log.error("%s", " ".join(str(error).split()))
        return 1
    return 0
