"""`tol report OUT`: a data card, OUT/report/DATA_CARD.md, with PNG figures beside it, from a build's outputs.

    tol report demo-out

Every table in the card is one named DuckDB statement's result as DuckDB returns it, over `tol query`'s views
(pipeline/query.py) or a named file (manifests/inputs.parquet, build_summary.json, taxonomy/summary.json and
authorities.duckdb, the Rare Species exclusion list); the card ends with every statement, so `tol query "SQL"
--out OUT` gives the same numbers. Images are counted once (train_small repeats train samples). What the build does
not record (checksums of image archives; the settings of a build older than their recording) is "not recorded".
Same outputs, same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from string import Formatter

import duckdb

from pipeline import report_figures as figures
from pipeline.query import VIEWS, connect
from pipeline.records import Reason
from taxonomy.build import write_atomic
from taxonomy.captions import RANKS

log = logging.getLogger(__name__)
CARD = "DATA_CARD.md"
REQUIRED = ("catalog", "failures", "licenses", "shards")
FILES = {"inputs": "manifests/inputs.parquet", "build_summary": "build_summary.json",
         "taxonomy_summary": "taxonomy/summary.json", "authorities": "taxonomy/authorities.duckdb"}
MAIN = "split != 'train_small'"  # train_small repeats train samples: each image is counted once
LABEL = ", ".join(f'"{rank}"' for rank in RANKS)
RANK_NAMES = ", ".join(f"'{rank}'" for rank in RANKS)
TAIL = (5, 10, 30)
TOP = 10
LICENSE_TERMS = {"BY": "attribution|(^|[^a-z])by([^a-z]|$)", "NC": "noncommercial|(^|[^a-z])nc([^a-z]|$)",
                 "ND": "noderiv|(^|[^a-z])nd([^a-z]|$)", "SA": "sharealike|(^|[^a-z])sa([^a-z]|$)"}
PUBLIC_DOMAIN = "public ?domain|publicdomain|cc0|no known copyright"
OBLIGATIONS = {"BY": "credit the rights holder and name the license", "NC": "no commercial use",
               "ND": "no adapted versions", "SA": "share adaptations under the same license",
               "public domain": "nothing required (crediting the source is still good practice)",
               "not stated": "no license recorded: check the source before reuse", "other": "read the license text"}
_TERM_CASES = ", ".join(f"CASE WHEN regexp_matches(lower(license), '{rx}') THEN '{term}' END"
                        for term, rx in LICENSE_TERMS.items())
TERMS = (f"CASE WHEN trim(license) = '' THEN 'not stated' WHEN regexp_matches(lower(license), '{PUBLIC_DOMAIN}') "
         f"THEN 'public domain' ELSE coalesce(nullif(concat_ws('-', {_TERM_CASES}), ''), 'other') END")
SHARE = "round(100 * count(*) / sum(count(*)) OVER (), 1)"  # % of all rows, per group
NAMED, NAMED_TAXA = "count(*) FILTER (WHERE name != '')", "count(DISTINCT taxon_id) FILTER (WHERE name != '')"
PER_SPECIES = f"SELECT count(*) AS images FROM catalog WHERE {MAIN} AND species != '' GROUP BY {LABEL}"
AUTHORITY_OF = ", ".join(f"coalesce(nullif({r}_authority, ''), '(none)') AS \"{r}\"" for r in RANKS)
REASON_IS = "FROM failures WHERE reason = '{}'".format

SQL = {
    "totals": f"SELECT count(*) AS images, count(DISTINCT taxon_id) AS taxa, count(DISTINCT ({LABEL})) AS "
              "seven_rank_labels, count(DISTINCT (kingdom, phylum)) AS phyla, count(DISTINCT source) AS sources, "
              f"count(DISTINCT license) AS licenses FROM catalog WHERE {MAIN}",
    "per_source": "SELECT source, count(*) AS images, count(DISTINCT taxon_id) AS taxa FROM catalog "
                  f"WHERE {MAIN} GROUP BY source ORDER BY source",
    "per_split": "SELECT split, count(*) AS images, count(DISTINCT taxon_id) AS taxa FROM catalog "
                 "GROUP BY split ORDER BY split",
    "per_source_split": "SELECT source, split, count(*) AS images, count(DISTINCT taxon_id) AS taxa FROM catalog "
                        "GROUP BY ALL ORDER BY source, split",
    "completeness": f"SELECT rank, {NAMED} AS images, round(100 * {NAMED} / count(*), 1) AS images_pct, "
                    f"{NAMED_TAXA} AS taxa, round(100 * {NAMED_TAXA} / count(DISTINCT taxon_id), 1) AS taxa_pct "
                    f"FROM (UNPIVOT (SELECT taxon_id, {LABEL} FROM catalog WHERE {MAIN}) ON {LABEL} "
                    f"INTO NAME rank VALUE name) GROUP BY rank ORDER BY list_position([{RANK_NAMES}], rank)",
    "kingdoms": "SELECT coalesce(nullif(kingdom, ''), '(none)') AS kingdom, count(DISTINCT taxon_id) AS taxa, "
                f"count(*) AS images FROM catalog WHERE {MAIN} GROUP BY 1 ORDER BY images DESC, kingdom",
    "phyla": "SELECT kingdom, coalesce(nullif(phylum, ''), '(none)') AS phylum, count(DISTINCT taxon_id) AS taxa, "
             f"count(*) AS images FROM catalog WHERE {MAIN} GROUP BY ALL ORDER BY images DESC, kingdom, phylum "
             f"LIMIT {3 * TOP}",
    "species": f"SELECT count(DISTINCT ({LABEL})) FILTER (WHERE species != '') AS species, count(*) FILTER (WHERE "
               "species != '') AS images_of_species, count(*) FILTER (WHERE species = '') AS images_above_species "
               f"FROM catalog WHERE {MAIN}",
    "species_images": f"{PER_SPECIES} ORDER BY images DESC",
    "tail": f"WITH per_species AS ({PER_SPECIES}) SELECT fewer_than, count(images) FILTER (WHERE images < "
            "fewer_than) AS species, round(100 * count(images) FILTER (WHERE images < fewer_than) / count(images), "
            f"1) AS species_pct FROM (VALUES {', '.join(f'({n})' for n in TAIL)}) AS t(fewer_than) "
            "LEFT JOIN per_species ON true GROUP BY fewer_than HAVING count(images) > 0 ORDER BY fewer_than",
    "top_species": f"SELECT kingdom, family, genus, species, count(*) AS images FROM catalog WHERE {MAIN} AND "
                   f"species != '' GROUP BY {LABEL} ORDER BY images DESC, {LABEL} LIMIT {TOP}",
    "outcomes": "SELECT source, coalesce(inputs, 0) AS inputs, coalesce(kept, 0) AS kept, coalesce(dropped, 0) AS "
                "dropped, coalesce(rows_without_id, 0) AS rows_without_id FROM (SELECT source, count(*) AS inputs "
                "FROM read_parquet({inputs}) GROUP BY source) FULL JOIN (SELECT source, count(*) AS kept FROM "
                f"catalog WHERE {MAIN} GROUP BY source) USING (source) FULL JOIN (SELECT source, count(*) FILTER "
                "(WHERE treeoflife_id != '') AS dropped, count(*) FILTER (WHERE treeoflife_id = '') AS "
                "rows_without_id FROM failures GROUP BY source) USING (source) ORDER BY source",
    "failures": "SELECT stage, reason, count(*) AS records, string_agg(DISTINCT source, ', ' ORDER BY source) AS "
                "sources, left(min(detail), 60) AS example FROM failures GROUP BY ALL "
                "ORDER BY records DESC, stage, reason",
    "duplicates": "SELECT f.reason, f.source AS dropped_from, coalesce(c.source, '(survivor dropped later)') AS "
                  "kept_from, count(*) AS images FROM failures f LEFT JOIN (SELECT treeoflife_id, source FROM "
                  f"catalog WHERE {MAIN}) c ON c.treeoflife_id = f.detail WHERE f.reason IN "
                  f"('{Reason.DUPLICATE_OF}', '{Reason.NEAR_DUPLICATE_OF}') GROUP BY ALL ORDER BY ALL",
    "leakage": f"SELECT detail AS eval_set, source, count(*) AS images {REASON_IS(Reason.LEAKS)} "
               "GROUP BY ALL ORDER BY ALL",
    "excluded_total": "SELECT count(*) AS images, count(DISTINCT detail) AS species "
                      f"{REASON_IS(Reason.RARE_SPECIES_EXCLUDED)}",
    "excluded": f"SELECT detail AS binomial, count(*) AS images {REASON_IS(Reason.RARE_SPECIES_EXCLUDED)} "
                f"GROUP BY 1 ORDER BY images DESC, binomial LIMIT {TOP}",
    "exclusion_list": "SELECT count(DISTINCT binomial) AS species, count(*) AS images FROM read_parquet({exclusions})",
    "licenses": f"SELECT license, count(*) AS images, {SHARE} AS images_pct FROM licenses GROUP BY license "
                f"ORDER BY images DESC, license LIMIT {2 * TOP}",
    "license_sources": f"PIVOT (SELECT {TERMS} AS terms, source FROM licenses) ON source USING count(*) "
                       "GROUP BY terms ORDER BY terms",
    "attribution": f"SELECT {TERMS} AS terms, count(*) AS images, {SHARE} AS images_pct, count(*) FILTER (WHERE "
                   "rights_holder = '') AS without_rights_holder, count(DISTINCT rights_holder) AS rights_holders "
                   "FROM licenses GROUP BY terms ORDER BY images DESC, terms",
    "label_outcomes": "PIVOT label_map ON status USING count(*) GROUP BY source ORDER BY source",
    "authorities": f"PIVOT (UNPIVOT (SELECT {AUTHORITY_OF} FROM taxa) ON {LABEL} INTO NAME rank VALUE authority) "
                   f"ON rank IN ({RANK_NAMES}) USING count(*) GROUP BY authority ORDER BY authority",
    "common_names": "SELECT common_name_source, count(*) AS taxa FROM taxa GROUP BY 1 ORDER BY taxa DESC, 1",
    "conflict_count": "SELECT source, count(*) AS labels FROM conflicts GROUP BY source ORDER BY source",
    "conflicts": "SELECT source, label_key, why, array_to_string([c.authority || ': ' || concat_ws(' ', c.kingdom, "
                 "c.family, c.genus, c.species) FOR c IN candidates], '; ') AS candidates FROM conflicts "
                 f"ORDER BY source, label_key LIMIT {TOP}",
    "unresolved_count": "SELECT source, reason, count(*) AS labels FROM unresolved GROUP BY ALL ORDER BY ALL",
    "unresolved": "SELECT source, label_key, reason, left(detail, 60) AS detail FROM unresolved "
                  f"ORDER BY reason, source, label_key LIMIT {TOP}",
    "build_run": 'SELECT elapsed_s, shards.total AS shards, "check" FROM read_json({build_summary})',
    "build_settings": "SELECT unnest(settings, recursive := true) FROM read_json({build_summary})",
    "build_inputs": "SELECT unnest(source_inputs, recursive := true) FROM read_json({build_summary})",
    "shards": "SELECT split, count(*) AS shards, sum(count) AS samples, sum(bytes) AS bytes FROM shards "
              "GROUP BY split ORDER BY split",
    "taxonomy_inputs": "SELECT profile, source, path FROM read_json({taxonomy_summary}), (UNPIVOT (SELECT inputs.* "
                       "FROM read_json({taxonomy_summary})) ON COLUMNS(*) INTO NAME source VALUE path) ORDER BY source",
    "authority_files": "ATTACH {authorities} AS authorities (READ_ONLY); SELECT authority, file, rows_loaded, "
                       "rows_rejected, sha256 FROM authorities.loads ORDER BY authority, file",
    "taxonomy_files": "SELECT file, info.rows AS rows, info.sha256 AS sha256 FROM (UNPIVOT (SELECT files.* FROM "
                      "read_json({taxonomy_summary})) ON COLUMNS(*) INTO NAME file VALUE info) ORDER BY file",
}
UNHASHED = ("Inputs larger than 1 GiB (image archives) and folders have no sha256 above: hashing them is the job of "
            "fetching them, and their size is recorded.")


def markdown_table(columns: list[str], rows: list[tuple]) -> list[str]:
    """Rows as a markdown table, values as `tol query` prints them (None as an empty cell); numbers right-aligned."""
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    align = ["---:" if isinstance(value, int | float) else "---" for value in rows[0]]
    return ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(map(cell, row)) + " |" for row in rows)]


class Card:
    """The named statements run on one connection to OUT's views, each once, in the order the card uses them."""

    def __init__(self, out: Path, exclusions: Path) -> None:
        self.out, self.directory = out, out / "report"
        self.con, self.views = connect(out)
        self.paths = {name: out / relative for name, relative in FILES.items()} | {"exclusions": exclusions}
        self.results: dict[str, tuple[list[str], list[tuple]]] = {}

    def missing(self, name: str) -> list[str]:  # the files statement `name` reads that do not exist
        fields = {field for _, field, _, _ in Formatter().parse(SQL[name]) if field}
        return sorted(str(self.paths[field]) for field in fields if not self.paths[field].is_file())

    def sql(self, name: str) -> str:
        return SQL[name].format(**{key: "'" + str(path).replace("'", "''") + "'" for key, path in self.paths.items()})

    def result(self, name: str) -> tuple[list[str], list[tuple]]:
        """The column names and rows of statement `name` (run once)."""
        if name not in self.results:
            result = self.con.execute(self.sql(name))
            self.results[name] = ([d[0] for d in result.description], result.fetchall())
        return self.results[name]

    def table(self, name: str, title: str, empty: str = "none") -> list[str]:
        head = f"**{title}** (query `{name}`)"
        if missing := self.missing(name):
            return [f"{head}: not recorded ({', '.join(missing)} does not exist).", ""]
        columns, rows = self.result(name)
        return [head, "", *markdown_table(columns, rows), ""] if rows else [f"{head}: {empty}.", ""]

    def figure(self, key: str, name: str, series: dict[str, int], label: tuple[int, ...] = (0,),
               stacked: bool = False) -> list[str]:
        """Bar chart `key` of statement `name`: labels join the `label` columns; each series is one column."""
        rows, spec = self.result(name)[1], figures.FIGURES[key]
        figures.write_bars(self.directory / spec.file, spec, [": ".join(str(r[i]) for i in label) for r in rows],
                           {series_name: [r[i] for r in rows] for series_name, i in series.items()}, stacked)
        return [f"![{spec.title}]({spec.file})", ""]


def counts(card: Card) -> list[str]:
    return ["## Counts", "", *card.table("totals", "Images, taxa, labels, phyla, sources, licenses (train + val)"),
            *card.table("per_source", "Per source (train + val)"),
            *card.table("per_split", "Per split (train_small is a sample of train)"),
            *card.table("per_source_split", "Per source and split"),
            *card.table("completeness", "Images and taxa labelled to each rank (train + val)"),
            *card.figure("completeness", "completeness", {"images": 2, "taxa": 4}),
            *card.table("kingdoms", "Taxa and images per kingdom"),
            *card.figure("kingdoms", "kingdoms", {"images": 2}),
            *card.table("phyla", f"Taxa and images per phylum, the {3 * TOP} with most images")]


def long_tail(card: Card) -> list[str]:
    spec = figures.FIGURES["long_tail"]
    figures.write_long_tail(card.directory / spec.file, spec, [n for (n,) in card.result("species_images")[1]], TAIL)
    return ["## Long tail", "", *card.table("species", "Species (seven ranks down to the epithet) and their images"),
            *card.table("tail", "Species with fewer images than a threshold", "no image labelled to species"),
            f"![{spec.title}]({spec.file})", "",
            *card.table("top_species", f"The {TOP} species with most images", "no image labelled to species")]


def dropped(card: Card) -> list[str]:
    return ["## What was dropped", "", *card.table("outcomes", "Input records per source: kept or dropped"),
            *card.table("failures", "Dropped records by stage and reason", "every input record was kept"),
            *card.figure("failures", "failures", {"records": 2}, label=(0, 1)),
            *card.table("duplicates", "Duplicates (md5 exact, pHash near) and the source of the image kept instead"),
            *card.table("leakage", "Near copies of evaluation images removed (leakage)"),
            *card.table("excluded_total", "Rare Species exclusions: images dropped and species matched"),
            *card.table("excluded", f"The {TOP} excluded species with most images", "no species excluded"),
            *card.table("exclusion_list", f"The exclusion list at {card.paths['exclusions']} (which list the build "
                                          "used is not recorded)")]


def licenses(card: Card) -> list[str]:
    sources = {source: index for index, source in enumerate(card.result("license_sources")[0]) if index}
    used = {part for terms, *_ in card.result("attribution")[1] for part in
            ([terms] if terms in OBLIGATIONS else terms.split("-"))}
    return ["## Licenses", "", *card.table("licenses", f"Images per license, the {2 * TOP} most used (`totals` counts "
                                           "the distinct license strings)"),
            *card.table("license_sources", "Images per license terms and source"),
            *card.figure("licenses", "license_sources", sources, stacked=True),
            *card.table("attribution", "Attribution: images per license terms, and those without a rights holder"),
            "What the terms ask of a user:", "", *(f"- {term}: {text}" for term, text in OBLIGATIONS.items()
                                                   if term in used), ""]


def taxonomy(card: Card) -> list[str]:
    head = ["## Taxonomy decisions", ""]
    if not {"taxa", "label_map", "conflicts", "unresolved"} <= set(card.views):
        return [*head, f"Not recorded: {card.out / 'taxonomy'} lacks tol taxonomy's parquet outputs.", ""]
    return [*head, *card.table("label_outcomes", "Source labels by outcome (the profile is under How it was built)"),
            *card.table("authorities", "Taxa per authority that gave each rank (all taxa of taxa.parquet)"),
            *card.table("common_names", "Where the common names come from"),
            *card.table("conflict_count", "Conflicts (authorities disagree; the label is left unresolved)"),
            *card.table("conflicts", f"The first {TOP} conflicts"),
            *card.table("unresolved_count", "Unresolved labels by reason"),
            *card.table("unresolved", f"The first {TOP} unresolved labels")]


def recorded_settings(card: Card) -> list[str]:
    """The build's settings and inputs, which build_summary.json holds since `tol build` records them."""
    path = card.paths["build_summary"]
    if path.is_file() and "settings" not in json.loads(path.read_text(encoding="utf-8")):
        return [f"**The build's settings and inputs**: not recorded ({path} predates recording them).", ""]
    return [*card.table("build_settings", "The build's command, code version, runner and settings"),
            *card.table("build_inputs", "The source inputs the build read (sha256 for files up to 1 GiB)")]


def provenance(card: Card) -> list[str]:
    return ["## How it was built", "", *card.table("build_run", "The build run (build_summary.json)"),
            *recorded_settings(card),
            *card.table("shards", "Shards per split (each shard's sha256 is in manifests/shards.parquet)"),
            *card.table("taxonomy_inputs", "Taxonomy profile and the source metadata it read (no checksum recorded)"),
            *card.table("authority_files", "Authority dumps the taxonomy loaded, with their sha256"),
            *card.table("taxonomy_files", "Taxonomy outputs, with their sha256"),
            UNHASHED, ""]


def appendix(card: Card) -> list[str]:
    lines = ["## Queries", "", f"Each table above is one of these statements: `tol query \"SQL\" --out {card.out}` "
             "prints the same rows. `species_images` draws the long-tail figure.", ""]
    for name in (name for name in SQL if name in card.results):
        lines += [f"`{name}`:", "", "```sql", card.sql(name), "```", ""]
    return lines


def render(card: Card) -> str:
    intro = [f"# Data card: {card.out}", "", f"Written by `tol report {card.out}` from {card.out / 'manifests'} and "
             f"{card.out / 'taxonomy'}. Each table names the DuckDB statement it comes from (listed at the end). "
             "Images are counted in train and val; train_small is a sample of train.", ""]
    sections = (intro, counts(card), long_tail(card), dropped(card), licenses(card), taxonomy(card),
                provenance(card), appendix(card))
    return "\n".join(line for section in sections for line in section).rstrip("\n") + "\n"


def write_report(out: Path, exclusions: Path) -> Path:
    """OUT/report/DATA_CARD.md and its figures; returns the card's path."""
    card = Card(out, exclusions)
    card.directory.mkdir(parents=True, exist_ok=True)
    with card.con:
        text = render(card)
    path = card.directory / CARD
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="a build's output: manifests/ (and taxonomy/)")
    parser.add_argument("--exclusions", type=Path, metavar="FILE", help="the Rare Species exclusion list to describe "
                        "(default OUT_DIR/rare_species/exclusions.parquet, if there)")


def run(args: argparse.Namespace) -> int:
    missing = [VIEWS[view] for view in REQUIRED if not (args.out / VIEWS[view]).is_file()]
    if missing or (args.exclusions and not args.exclusions.is_file()):
        log.error("report: %s", f"OUT_DIR {args.out} has no {', '.join(missing)}: run tol build {args.out} first"
                  if missing else f"--exclusions {args.exclusions} does not exist")
        return 2
    started = time.monotonic()
    try:
        path = write_report(args.out, args.exclusions or args.out / "rare_species/exclusions.parquet")
    except duckdb.Error as error:
        log.error("report: reading %s failed: %s", args.out, " ".join(str(error).split()))
        return 2
    log.info("report: wrote %s and %d figures in %.1f s", path, len(figures.FIGURES), time.monotonic() - started)
    return 0
