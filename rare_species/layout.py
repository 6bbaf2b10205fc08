"""The Rare Species outputs in the published (Hugging Face imageomics/rare-species) layout, and the exclusions.

    OUT/dataset/<kingdom-phylum-class-order-family-genus-species>/<content>_<page>_eol-full-size-copy.jpg
    OUT/metadata.csv                      file_name (for the HF imagefolder loader) + ids, ranks, names
    OUT/metadata/rarespecies-catalog.csv  rarespecies_id, eol_content_id, eol_page_id, kingdom .. species, sciName,
                                          common
    OUT/metadata/licenses.csv             rarespecies_id, eol_content_id, md5, source_url, license_name,
                                          license_link, owner
    OUT/metadata/iucn-categories.csv      binomial, iucn_scientific_name, redlist_category, iucn_code
    OUT/annotation.csv                    BioCLIP's evaluation format: ,kingdom,phylum,cls,order,family,genus,species,
                                          common_name,filepath,class (filepath relative to OUT)
    OUT/exclusions.parquet                binomial, md5, phash (16 hex; "" when unknown): one row per image

`species` is the epithet, as in BioCLIP. Every file is written to a temp name and renamed; rows are sorted by
folder then content id, so the same selection gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
# uuid5(NAMESPACE_URL, "https://github.com/treeoflife/treeoflife/rare-species"): fixed, so ids never change.
RARESPECIES_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/treeoflife/treeoflife/rare-species")
ANNOTATION_COLUMNS = ("", "kingdom", "phylum", "cls", "order", "family", "genus", "species", "common_name", "filepath",
                      "class")
EXCLUSIONS_SCHEMA = pa.schema([("binomial", pa.string()), ("md5", pa.string()), ("phash", pa.string())])
_CC = re.compile(r"^cc-(by(?:-nc)?(?:-sa|-nd)?)-(\d\.\d)$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One benchmark image: ids, seven ranks, names, IUCN category, hashes, license, and its bytes if we have them."""

    content_id: int
    page_id: int
    ranks: tuple[str, ...]
    common_name: str
    iucn_category: str = ""
    iucn_name: str = ""
    iucn_code: str = ""
    md5: str = ""
    phash: str = ""
    source_url: str = ""
    license_name: str = ""
    owner: str = ""
    data: bytes | None = None

    @property
    def binomial(self) -> str:
        return f"{self.ranks[5]} {self.ranks[6]}"

    @property
    def folder(self) -> str:
        return "-".join(self.ranks)

    @property
    def file_name(self) -> str:
        return f"{self.content_id}_{self.page_id}_eol-full-size-copy.jpg"

    @property
    def path(self) -> str:
        return f"dataset/{self.folder}/{self.file_name}"

    @property
    def rarespecies_id(self) -> str:
        return str(uuid.uuid5(RARESPECIES_NAMESPACE, f"eol:{self.content_id}"))


def license_link(name: str) -> str:
    """The deed URL of an EOL license name (`cc-by-nc-3.0`, a URL already, public domain); "" when unknown."""
    text = name.strip()
    if text.startswith("http"):
        return text
    match = _CC.match(text.lower())
    if match:
        return f"https://creativecommons.org/licenses/{match.group(1)}/{match.group(2)}/"
    if text.lower() in ("cc-publicdomain", "public domain"):
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    if text.lower() == "no known copyright restrictions":
        return "https://www.flickr.com/commons/usage/"
    return ""


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_outputs(out: Path, entries: Sequence[Entry]) -> dict[str, int]:
    """Write every output file for `entries` (images only for those with bytes); return counts written."""
    entries = sorted(entries, key=lambda e: (e.folder, e.content_id))
    images = 0
    for entry in entries:
        if entry.data is not None:
            _atomic_write(out / entry.path, entry.data)
            images += 1
    ids = [(e.rarespecies_id, e.content_id, e.page_id) for e in entries]
    _atomic_write(out / "metadata/rarespecies-catalog.csv", _csv_bytes(
        ("rarespecies_id", "eol_content_id", "eol_page_id", *RANKS, "sciName", "common"),
        [(*i, *e.ranks, e.binomial, e.common_name) for i, e in zip(ids, entries)]))
    _atomic_write(out / "metadata/licenses.csv", _csv_bytes(
        ("rarespecies_id", "eol_content_id", "md5", "source_url", "license_name", "license_link", "owner"),
        [(i[0], e.content_id, e.md5, e.source_url, e.license_name, license_link(e.license_name), e.owner)
         for i, e in zip(ids, entries)]))
    per_species = {e.binomial: e for e in entries}
    _atomic_write(out / "metadata/iucn-categories.csv", _csv_bytes(
        ("binomial", "iucn_scientific_name", "redlist_category", "iucn_code"),
        [(b, e.iucn_name, e.iucn_category, e.iucn_code) for b, e in sorted(per_species.items())]))
    _atomic_write(out / "metadata.csv", _csv_bytes(
        ("file_name", "rarespecies_id", "eol_content_id", "eol_page_id", *RANKS, "sciName", "common"),
        [(e.path, *i, *e.ranks, e.binomial, e.common_name) for i, e in zip(ids, entries)]))
    _atomic_write(out / "annotation.csv", _csv_bytes(
        ANNOTATION_COLUMNS, [(n, *e.ranks, e.common_name, e.path, e.binomial) for n, e in enumerate(entries)]))
    table = pa.table([[e.binomial for e in entries], [e.md5 for e in entries], [e.phash for e in entries]],
                     schema=EXCLUSIONS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    _atomic_write(out / "exclusions.parquet", buffer.getvalue())
    return {"species": len(per_species), "images": len(entries), "image_files": images}


def read_published(path: str) -> list[Entry]:
    """Entries from BioCLIP's published annotation file (`data/annotation/rare_species/metadata.csv`).

    The EOL ids come from `filepath` (`2024-03-20/<content>_<page>_eol-full-size-copy.jpg`); a row whose filepath
    does not have that shape raises, naming the row and the value.
    """
    entries = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = row["filepath"].rsplit("/", 1)[-1]
            parts = name.split("_")
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                raise ValueError(f"{path} row {row['']!r}: filepath {row['filepath']!r} is not "
                                 "<date>/<eol_content_id>_<eol_page_id>_eol-full-size-copy.jpg")
            ranks = tuple(row[c] for c in ("kingdom", "phylum", "cls", "order", "family", "genus", "species"))
            entries.append(Entry(int(parts[0]), int(parts[1]), ranks, row["common_name"]))
    return entries
