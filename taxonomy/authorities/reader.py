"""Streaming reads of delimited dumps into DuckDB, with every malformed row kept as a problem with file and line.

DuckDB reads each file as whole lines (`WITH ORDINALITY` gives the physical line number), then splits them in SQL:
tab-separated dumps on the tab alone (GBIF and the EOL Dynamic Hierarchy are unquoted: a `"` is data), CSVs with a
regular expression for RFC 4180 fields. A row with the wrong number of fields or broken quoting is recorded in
`load_problems` and left out; lines DuckDB cannot decode (bad UTF-8, over-long) are recorded the same way. Known
limit: a quoted CSV field that spans lines is reported as broken quoting on each of its lines.
"""

from __future__ import annotations

import csv
import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

_NUL = "\x00"  # the line-mode delimiter: text dumps never contain it, so every line is one field
_MAX_LINE_BYTES = 64 * 1024 * 1024
_DETAIL_CHARS = 200


class MissingColumnError(ValueError):
    """A dump lacks a column its loader needs: the file is not the format it was taken for."""


@dataclass(frozen=True, slots=True)
class DumpFormat:
    """How one dump file is laid out and which of its columns a loader reads."""

    name: str
    delimiter: str
    quoted: bool
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


@dataclass(slots=True)
class FileCounts:
    """Rows read from one file so far: data rows (header and blank lines excluded) and rows left out."""

    authority: str
    path: Path
    data_rows: int = 0
    rejected: int = 0

    @property
    def loaded(self) -> int:
        return self.data_rows - self.rejected


def quote_ident(name: str) -> str:
    """A column name as a quoted SQL identifier (`order` and `class` are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def read_header(path: Path, fmt: DumpFormat) -> list[str] | None:
    """The column names on the first line, or None for an empty file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
        first = f.readline()
    if not first.strip():
        return None
    if fmt.quoted:
        return [c.strip() for c in next(csv.reader([first.rstrip("\r\n")], delimiter=fmt.delimiter))]
    return [c.strip() for c in first.rstrip("\r\n").split(fmt.delimiter)]


def _csv_patterns(delimiter: str) -> tuple[str, str]:
    """(one field with its leading delimiter, a whole valid line) as RE2 patterns for quoted CSV."""
    d = "\\t" if delimiter == "\t" else delimiter
    one = f'"[^"]*(?:""[^"]*)*"|[^{d}"][^{d}]*|'
    return f"{d}(?:{one})", f"(?:{one})(?:{d}(?:{one}))*"


def _split_sql(fmt: DumpFormat) -> tuple[str, str]:
    """SQL (fields list, line is well-formed) over a column `line`."""
    split = f"string_split(line, chr({ord(fmt.delimiter)}))"
    if not fmt.quoted:
        return split, "true"
    field_re, line_re = _csv_patterns(fmt.delimiter)
    # Most lines hold no quote: split those on the delimiter, and parse only the rest with the patterns. Each match
    # starts with a delimiter (one is put before the line), so an empty field never makes an empty match.
    quoted = "contains(line, '\"')"
    unquote = "x -> CASE WHEN x[2] = '\"' THEN replace(x[3:-2], '\"\"', '\"') ELSE x[2:] END"
    fields = (f"CASE WHEN {quoted} THEN list_transform(regexp_extract_all(chr({ord(fmt.delimiter)}) || line, "
              f"'{field_re}'), {unquote}) ELSE {split} END")
    return fields, f"NOT {quoted} OR regexp_full_match(line, '{line_re}')"


@dataclass(slots=True)
class LoadSession:
    """One DuckDB connection being filled, and what was read from each file so far."""

    con: duckdb.DuckDBPyConnection
    counts: dict[tuple[str, str], FileCounts] = field(default_factory=dict)
    _tables: int = 0

    def counts_for(self, authority: str, path: Path) -> FileCounts:
        """The running counts of one file (created on first use)."""
        return self.counts.setdefault((authority, str(path)), FileCounts(authority, path))

    def problem(self, authority: str, path: Path, line: int, reason: str, detail: str, rejected: bool) -> None:
        """Record one problem row."""
        self.con.execute("INSERT INTO load_problems VALUES (?, ?, ?, ?, ?, ?)",
                         [authority, str(path), line, reason, detail, rejected])

    def read(self, authority: str, path: Path, fmt: DumpFormat) -> str:
        """Load the data rows of `path` into a new temp table (line_no, one column per wanted name); return its name."""
        counts = self.counts_for(authority, path)
        self._tables += 1
        table = f"_rows{self._tables}"
        wanted = [*fmt.required, *fmt.optional]
        header = read_header(path, fmt)
        if header is None:
            self.problem(authority, path, 1, "empty_file", f"no header line; expected a {fmt.name}", False)
            cols = ", ".join(f"'' AS {quote_ident(c)}" for c in wanted)
            self.con.execute(f"CREATE TEMP TABLE {table} AS SELECT 0::BIGINT AS line_no, {cols} LIMIT 0")
            return table
        missing = [c for c in fmt.required if c not in header]
        if missing:
            raise MissingColumnError(
                f"{path}: required column {missing[0]!r} is missing (all missing: {missing}); a {fmt.name} needs "
                f"{list(fmt.required)}, the header has {header}")
        fields, well_formed = _split_sql(fmt)
        picks = ", ".join(
            f"CASE WHEN reason IS NULL THEN f[{header.index(c) + 1}] END AS {quote_ident(c)}" if c in header
            else f"'' AS {quote_ident(c)}" for c in wanted)
        n = len(header)
        self.con.execute(f"""
            CREATE TEMP TABLE {table} AS
            SELECT line_no, {picks}, reason,
                   CASE WHEN reason = 'field_count' THEN 'expected {n} fields, found ' || len(f) || ': '
                        WHEN reason IS NOT NULL THEN 'unbalanced quotes: ' END || left(line, {_DETAIL_CHARS}) AS detail
            FROM (SELECT line_no, line, f,
                         CASE WHEN NOT ok THEN 'bad_quoting' WHEN len(f) <> {n} THEN 'field_count' END AS reason
                  FROM (SELECT ordinality AS line_no, line, {fields} AS f, {well_formed} AS ok
                        FROM read_csv(?, columns={{'line': 'VARCHAR'}}, delim=?, quote='', escape='', header=false,
                                      auto_detect=false, strict_mode=false, max_line_size={_MAX_LINE_BYTES},
                                      store_rejects=true, rejects_table='_rejects', rejects_scan='_reject_scans')
                        WITH ORDINALITY)
                  WHERE line IS NOT NULL)""", [str(path), _NUL])
        unreadable = self._renumber_after_unreadable(table, authority, path)
        self.con.execute(f"DELETE FROM {table} WHERE line_no = 1")
        self.con.execute(f"INSERT INTO load_problems SELECT ?, ?, line_no, reason, detail, true FROM {table} "
                         "WHERE reason IS NOT NULL", [authority, str(path)])
        bad = self.con.execute(f"DELETE FROM {table} WHERE reason IS NOT NULL").fetchone()[0]
        good = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        counts.data_rows += good + bad + unreadable
        counts.rejected += bad + unreadable
        if good + bad + unreadable == 0:
            self.problem(authority, path, 1, "no_data_rows", "the file has a header and no data rows", False)
        return table

    def _renumber_after_unreadable(self, table: str, authority: str, path: Path) -> int:
        """Record lines DuckDB skipped as unreadable and fix the line numbers after them; return how many were data."""
        skipped = self.con.execute(
            "SELECT line, string_agg(DISTINCT error_type::VARCHAR, '; '), any_value(left(csv_line, ?)) "
            "FROM _rejects GROUP BY line ORDER BY line", [_DETAIL_CHARS]).fetchall()
        self.con.execute("DROP TABLE _rejects; DROP TABLE _reject_scans")
        if not skipped:
            return 0
        for line, error, text in skipped:
            self.problem(authority, path, int(line), "unreadable_line", f"{error}: {text}", True)
        # The k-th line DuckDB kept is line k + (number of skipped lines before it); skipped line i (1-based, sorted)
        # has r_i - i kept lines before it, so it precedes kept line k exactly when r_i - i < k.
        self.con.execute("CREATE TEMP TABLE _gaps (gap BIGINT, n BIGINT)")
        self.con.executemany("INSERT INTO _gaps VALUES (?, ?)",
                             [(int(line) - i, i) for i, (line, _, _) in enumerate(skipped, start=1)])
        self.con.execute(f"""
            UPDATE {table} SET line_no = {table}.line_no + g.n
            FROM (SELECT t.line_no AS kept, max(g.n) AS n FROM {table} t JOIN _gaps g ON g.gap < t.line_no
                  GROUP BY t.line_no) g
            WHERE {table}.line_no = g.kept""")
        self.con.execute("DROP TABLE _gaps")
        return sum(1 for line, _, _ in skipped if int(line) > 1)

    def reject(self, authority: str, path: Path, table: str, where: str, reason: str, detail: str) -> int:
        """Move the rows of `table` matching `where` to load_problems (detail is an SQL expression); return how many."""
        self.con.execute(f"INSERT INTO load_problems SELECT ?, ?, line_no, ?, {detail}, true FROM {table} "
                         f"WHERE {where}", [authority, str(path), reason])
        n = self.con.execute(f"DELETE FROM {table} WHERE {where}").fetchone()[0]
        self.counts_for(authority, path).rejected += n
        return n

    def reject_bad_ids(self, authority: str, path: Path, table: str, columns: tuple[str, ...],
                       required: str = "") -> None:
        """Reject rows whose `required` id is empty, or whose id columns are set but not integers."""
        if required:
            col = quote_ident(required)
            self.reject(authority, path, table, f"trim({col}) = ''", "missing_id", f"'{required} is empty'")
        for column in columns:
            col = quote_ident(column)
            self.reject(authority, path, table, f"{col} <> '' AND TRY_CAST({col} AS BIGINT) IS NULL", "bad_id",
                        f"'{column} is not an integer: ' || left({col}, {_DETAIL_CHARS})")

    def reject_duplicates(self, authority: str, path: Path, table: str, key: str) -> None:
        """Keep the first row of each key (by line) and reject later repeats."""
        col = quote_ident(key)
        self.con.execute(f"""
            CREATE TEMP TABLE _dups AS SELECT line_no FROM (
                SELECT line_no, min(line_no) OVER (PARTITION BY {col}) AS first FROM {table}) WHERE line_no > first""")
        if self.con.execute("SELECT count(*) FROM _dups").fetchone()[0]:
            self.reject(authority, path, table, "line_no IN (SELECT line_no FROM _dups)", "duplicate_id",
                        f"'{key} ' || {col} || ' already on an earlier line'")
        self.con.execute("DROP TABLE _dups")

    def drop(self, table: str) -> None:
        """Drop a temp table once its rows are staged."""
        self.con.execute(f"DROP TABLE IF EXISTS {table}")
