"""Every distinct label of the three sources, read from their metadata alone (no image is opened).

    .venv/bin/python -c "
    from taxonomy.labels import LabelInputs, collect_labels
    labels = collect_labels(LabelInputs.under('demo-out/kit'))
    print({source: len(found) for source, found in labels.items()})"

- iNat21: every category of `train.json`, key `inat21:<category id>`, with its seven ranks and common name as given.
- BIOSCAN-1M: every distinct (order, family, genus, species) of the metadata TSV or JSON-LD, key
  `bioscan:<order>|<family>|<genus>|<species>` (`not_classified`, `no_data` and "" are missing, written "").
- EOL: every distinct page id of the media manifest, key `eol:<page_id>`.
The rows are parsed by the source readers' own pure parsers (pipeline/sources), so a label's key is the
`label_key` those readers put on each SourceRecord. They are imported inside the functions: their modules load Beam.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from taxonomy.records import SOURCES, SourceLabel

log = logging.getLogger(__name__)
INAT21_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")
# Where each source's metadata sits under a raw-data root laid out like the sample kit, first found wins.
DEFAULT_PATHS = {
    "inat21": ("inat21/train.json",),
    "bioscan": ("bioscan/BIOSCAN_Insect_Dataset_metadata.tsv", "bioscan/BIOSCAN_Insect_Dataset_metadata.jsonld"),
    "eol": ("eol/media_manifest.tgz",),
}


@dataclass(frozen=True, slots=True)
class LabelInputs:
    """The metadata file of each source; None = that source is not read."""

    inat21_json: Path | None = None
    bioscan_metadata: Path | None = None
    eol_manifest: Path | None = None

    @classmethod
    def under(cls, root: str | Path) -> LabelInputs:
        """The files found at their usual places under a raw-data root (see DEFAULT_PATHS)."""
        found = {source: next((Path(root) / p for p in paths if (Path(root) / p).is_file()), None)
                 for source, paths in DEFAULT_PATHS.items()}
        return cls(found["inat21"], found["bioscan"], found["eol"])

    def by_source(self) -> dict[str, Path | None]:
        return {"inat21": self.inat21_json, "bioscan": self.bioscan_metadata, "eol": self.eol_manifest}


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def inat21_label(category: Mapping) -> SourceLabel:
    """The label of one `categories[]` entry: its ranks, name and common name as given."""
    ranks = tuple(_text(category.get(rank)) for rank in INAT21_RANKS)
    name = _text(category.get("name")) or " ".join(r for r in ranks[5:] if r)
    return SourceLabel("inat21", f"inat21:{_text(category.get('id'))}", ranks,  # type: ignore[arg-type]
                       name, common_name=_text(category.get("common_name")))


def inat21_labels(path: str | Path) -> Iterator[SourceLabel]:
    """One label per category of an iNat21 `train.json` (or val.json), in document order."""
    with open(path, "rb") as f:
        document = json.load(f)
    categories = document.get("categories") if isinstance(document, Mapping) else None
    if not isinstance(categories, list):
        raise ValueError(f"{path} is not an iNat21 JSON document: no 'categories' list")
    for category in categories:
        if isinstance(category, Mapping) and _text(category.get("id")):
            yield inat21_label(category)


def bioscan_label(key: str, ranks: Mapping[str, str]) -> SourceLabel:
    """A BIOSCAN label: order, family and genus as given (the profile implies the ranks above); the species string
    (a binomial, or a placeholder) is its name."""
    order, family, genus, species = (ranks.get(r, "") for r in ("order", "family", "genus", "species"))
    return SourceLabel("bioscan", key, ("", "", "", order, family, genus, ""), species or genus or family or order)


def bioscan_labels(path: str | Path) -> Iterator[SourceLabel]:
    """One label per distinct key of the BIOSCAN metadata (rows the reader rejects give none)."""
    from pipeline.sources.bioscan import iter_bioscan_metadata

    seen: set[str] = set()
    for item in iter_bioscan_metadata(str(path)):
        if isinstance(item, tuple) and (key := item[0].label_key) not in seen:
            seen.add(key)
            yield bioscan_label(key, dict(item[0].label))


def eol_labels(path: str | Path) -> Iterator[SourceLabel]:
    """One label per distinct page id of the EOL media manifest (a .tgz of CSV chunks, a CSV, or a glob)."""
    from pipeline.sources.eol import ManifestRow, iter_manifest

    seen: set[int] = set()
    for row in iter_manifest(str(path)):
        if isinstance(row, ManifestRow) and row.page_id not in seen:
            seen.add(row.page_id)
            yield SourceLabel("eol", f"eol:{row.page_id}", page_id=row.page_id)


READERS = {"inat21": inat21_labels, "bioscan": bioscan_labels, "eol": eol_labels}


def collect_labels(inputs: LabelInputs) -> dict[str, list[SourceLabel]]:
    """Source -> its distinct labels, for every source with a metadata file; logs the count of each."""
    labels: dict[str, list[SourceLabel]] = {}
    for source in SOURCES:
        path = inputs.by_source()[source]
        if path is None:
            continue
        labels[source] = list(READERS[source](path))
        log.info("labels: %d distinct %s labels from %s", len(labels[source]), source, path)
    return labels
