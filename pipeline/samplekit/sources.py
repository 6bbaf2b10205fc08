"""Writers for the three image sources, each in the exact layout of its real distribution.

- iNat21: `inat21/train.json` (COCO-style: info, images, categories, annotations, licenses), the extracted
  `inat21/train/<image_dir_name>/<uuid>.jpg` tree and the same tree as `inat21/train.tar.gz`.
- BIOSCAN-1M: `bioscan/BIOSCAN_Insect_Dataset_metadata.tsv` (the release's 28 columns, `not_classified` for
  missing ranks) and `bioscan/cropped_256.zip` with members `bioscan/images/cropped_256/part{N}/{image_file}`.
- EOL: `eol/media_manifest.tgz` of `media_manifest_{N}.csv` chunks and the images under `eol/images/`, laid out
  as content.eol.org serves them, for `tol serve-kit`.

Each writer returns, per record key (`source:native_id`), where the record lives (file, line, member, URL), so
that EXPECTED.json can point at every defect.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import uuid
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from pipeline.samplekit.archives import DeterministicZip, atomic_path, tar_gz_members, tar_gz_tree
from pipeline.samplekit.plan import KitRecord
from pipeline.samplekit.taxa import Taxon

Rendered = Iterable[tuple[KitRecord, bytes | None]]
Locations = dict[str, dict]

INAT21_LICENSES = [
    {"id": 0, "name": "Attribution-NonCommercial License", "url": "http://creativecommons.org/licenses/by-nc/4.0/"},
    {"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/4.0/"},
    {"id": 2, "name": "Attribution-ShareAlike License", "url": "http://creativecommons.org/licenses/by-sa/4.0/"},
    {"id": 3, "name": "Attribution-NonCommercial-ShareAlike License", "url": "http://creativecommons.org/licenses/by-nc-sa/4.0/"},
    {"id": 4, "name": "No known copyright restrictions", "url": "https://www.flickr.com/commons/usage/"},
    {"id": 5, "name": "Public Domain Dedication", "url": "https://creativecommons.org/publicdomain/zero/1.0/"},
]
# Rights holders from the real iNat21 sample records, plus numeric account ids as iNat21 also has.
INAT21_RIGHTS_HOLDERS = ("Ken-ichi Ueda", "Michelle S. Koo", "105615097470186309865", "Greg Lasley", "Alex Rebelo")
BIOSCAN_COLUMNS = (
    "sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe", "genus",
    "species", "subspecies", "nucraw", "image_file", "large_diptera_family", "medium_diptera_family",
    "small_diptera_family", "large_insect_order", "medium_insect_order", "small_insect_order", "chunk_number",
    "copyright_license", "copyright_holder", "copyright_institution", "copyright_contact", "photographer", "author",
)
BIOSCAN_SPLITS = ("train", "validation", "test", "no_split")
BIOSCAN_PARTS = 4
EOL_MANIFEST_COLUMNS = ("EOL content ID", "EOL page ID", "Medium Source URL", "EOL Full-Size Copy URL",
                        "License Name", "Copyright Owner")
# License spellings as they occur in EOL's manifest.
EOL_LICENSES = ("cc-by-3.0", "cc-by-nc-3.0", "cc-by-sa-3.0", "cc-by-nc-sa-3.0", "public domain", "cc-publicdomain",
                "No known copyright restrictions", "http://creativecommons.org/licenses/by/2.0/")
EOL_OWNERS = ("Smithsonian Institution, National Museum of Natural History", "", "J. Smith", "Wikimedia Commons user \"Kurt\"",
              "Biodiversity Heritage Library", "Lee, Ming-Wei")
EOL_PROVIDERS = ("flickr", "inaturalist", "wikimedia", "morphbank")
FAULT_PATHS = {
    "http_404": ("_fault/status/404", "_fault/status/404"),
    "http_500": ("_fault/status/500", "_fault/status/500"),
    "http_hang": ("_fault/hang", "_fault/status/404"),
    "http_html": ("_fault/html", "_fault/html"),
    "http_oversize": ("_fault/oversize", "_fault/oversize"),
    "http_redirect_file": ("_fault/redirect-file", "_fault/redirect-file"),
}


def stable_rng(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def stored_size(data: bytes | None) -> tuple[int, int] | None:
    """Width and height as the file's header declares them (EXIF rotation not applied), if it has a header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, TypeError, Image.DecompressionBombError):
        return None


def image_dir_name(taxon: Taxon) -> str:
    return f"{taxon.inat21_category_id:05d}_" + "_".join(taxon.ranks)


def inat21_category(taxon: Taxon, supercategory: str) -> dict:
    kingdom, phylum, cls, order, family, genus, epithet = taxon.ranks
    return {"id": taxon.inat21_category_id, "name": taxon.binomial, "common_name": taxon.common_name,
            "supercategory": supercategory, "kingdom": kingdom, "phylum": phylum, "class": cls, "order": order,
            "family": family, "genus": genus, "specific_epithet": epithet, "image_dir_name": image_dir_name(taxon)}


def write_inat21(out: Path, rendered: Rendered, supercategories: dict[int, str]) -> Locations:
    images, annotations, categories, locations = [], [], {}, {}
    for record, data in rendered:
        rng = stable_rng("inat21-meta", record.seed)
        file_name = f"train/{image_dir_name(record.taxon)}/{uuid.UUID(int=record.seed << 64 | rng.getrandbits(64), version=4)}.jpg"
        width, height = stored_size(data) or record.size
        if data is not None:
            (out / file_name).parent.mkdir(parents=True, exist_ok=True)
            (out / file_name).write_bytes(data)
        image_id = int(record.native_id)
        images.append({"id": image_id, "width": width, "height": height, "file_name": file_name,
                       "license": rng.randrange(len(INAT21_LICENSES)), "rights_holder": rng.choice(INAT21_RIGHTS_HOLDERS),
                       "date": f"20{rng.randrange(10, 20)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)} 1{rng.randrange(10)}:00:00+00:00",
                       "latitude": round(rng.uniform(-40, 60), 5), "longitude": round(rng.uniform(-120, 150), 5),
                       "location_uncertainty": rng.choice([None, rng.randrange(5, 500)])})
        annotations.append({"id": len(annotations), "image_id": image_id, "category_id": record.taxon.inat21_category_id})
        categories[record.taxon.inat21_category_id] = inat21_category(
            record.taxon, supercategories[record.taxon.inat21_category_id])
        locations[record.key] = {"file": f"inat21/{file_name}", "archive": "inat21/train.tar.gz", "member": file_name}
    document = {
        "info": {"year": 2021, "version": "2021", "description": "iNat2021 training dataset (treeoflife sample kit)",
                 "contributor": "iNaturalist 2021 competition organizers", "url": "https://github.com/visipedia/inat_comp/tree/master/2021",
                 "date_created": "2021-03-01 00:00:00"},
        "images": images, "categories": [categories[k] for k in sorted(categories)],
        "annotations": annotations, "licenses": INAT21_LICENSES,
    }
    with atomic_path(out / "train.json") as tmp:
        tmp.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    tar_gz_tree(out, "train", out / "train.tar.gz")
    return locations


def bin_uri(taxon: Taxon) -> str:
    digest = hashlib.sha256("|".join(taxon.ranks).encode()).digest()
    return "BOLD:A" + "".join(chr(65 + b % 26) for b in digest[:2]) + f"{int.from_bytes(digest[2:4], 'big') % 10000:04d}"


def bioscan_row(record: KitRecord) -> dict[str, str]:
    rng = stable_rng("bioscan-meta", record.seed)
    label = record.taxon.bioscan or {"order": record.taxon.ranks[3], "family": record.taxon.ranks[4], "subfamily": "",
                                     "genus": record.taxon.ranks[5], "species": record.taxon.binomial}
    ranks = {"phylum": "Arthropoda", "class": "Insecta", **label, "tribe": "", "subspecies": ""}
    name = next((ranks[r] for r in ("species", "genus", "tribe", "subfamily", "family", "order") if ranks[r]), "")
    splits = {c: rng.choice(BIOSCAN_SPLITS) for c in BIOSCAN_COLUMNS[15:21]}
    return {
        "sampleid": record.native_id.removesuffix(".jpg"), "processid": f"BIOSCAN{record.seed % 10**6:06d}-22",
        "uri": bin_uri(record.taxon), "name": name,
        **{k: (v or "not_classified") for k, v in ranks.items()},
        "nucraw": "".join(rng.choice("ACGT") for _ in range(658)), "image_file": record.native_id, **splits,
        "chunk_number": str(1 + record.seed % BIOSCAN_PARTS), "copyright_license": "CreativeCommons - Attribution",
        "copyright_holder": "CBG Photography Group", "copyright_institution": "Centre for Biodiversity Genomics",
        "copyright_contact": "ccdbcol@uoguelph.ca", "photographer": "CBG Photography Group", "author": "CBG Photography Group",
    }


def write_bioscan(out: Path, rendered: Rendered, malformed_rows: int) -> Locations:
    locations, line = {}, 1
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "BIOSCAN_Insect_Dataset_metadata.tsv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f, \
            DeterministicZip(out / "cropped_256.zip") as archive:
        f.write("\t".join(BIOSCAN_COLUMNS) + "\n")
        for index, (record, data) in enumerate(rendered):
            row = bioscan_row(record)
            member = f"bioscan/images/cropped_256/part{row['chunk_number']}/{record.native_id}"
            if data is not None:
                archive.add(member, data)
            line += 1
            f.write("\t".join(row[c] for c in BIOSCAN_COLUMNS) + "\n")
            locations[record.key] = {"file": "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv", "line": line,
                                     "archive": "bioscan/cropped_256.zip", "member": member}
            if index < malformed_rows:
                # A row cut short after the species column, as a broken export leaves it.
                line += 1
                cut = "\t".join(row[c] for c in BIOSCAN_COLUMNS[:12])
                f.write(cut + "\n")
                locations[f"malformed_row:bioscan:{line}"] = {"file": "bioscan/BIOSCAN_Insect_Dataset_metadata.tsv",
                                                              "line": line, "fields": 12}
    return locations


def eol_page_id(taxon: Taxon) -> int:
    """Real page ids for Rare Species taxa; kit-assigned 91xxxxxx ones for iNat21 taxa that EOL also shows."""
    return taxon.eol_page_id if taxon.eol_page_id is not None else 91_000_000 + taxon.inat21_category_id


def eol_paths(record: KitRecord) -> tuple[str, str]:
    """(full-size copy path, medium source path) under the served root, as content.eol.org and providers lay them."""
    h = hashlib.md5(record.native_id.encode()).hexdigest()
    full = f"data/media/{h[:2]}/{h[2:4]}/{h[4:6]}/{509 + int(h[6], 16)}.{record.native_id}.jpg"
    source = f"providers/{EOL_PROVIDERS[int(h[7], 16) % len(EOL_PROVIDERS)]}/{record.native_id}.jpg"
    if record.defect in FAULT_PATHS:
        full_fault, source_fault = FAULT_PATHS[record.defect]
        return f"{full_fault}/{full}", f"{source_fault}/{source}"
    if record.defect == "fallback_to_source_url":
        return f"_fault/status/404/{full}", source
    return full, source


def eol_manifest_rows(rendered: Rendered, images: Path, base_url: str, locations: Locations) -> list[list[str]]:
    rows = []
    for record, data in rendered:
        rng = stable_rng("eol-meta", record.seed)
        full, source = eol_paths(record)
        if data is not None:
            served = images / (source if record.defect == "fallback_to_source_url" else full)
            served.parent.mkdir(parents=True, exist_ok=True)
            served.write_bytes(data)
        rows.append([record.native_id, str(eol_page_id(record.taxon)), f"{base_url}/{source}", f"{base_url}/{full}",
                     rng.choice(EOL_LICENSES), rng.choice(EOL_OWNERS)])
        locations[record.key] = {"full_size_url": f"{base_url}/{full}", "medium_source_url": f"{base_url}/{source}"}
    return rows


def write_eol_media(out: Path, rendered: Rendered, base_url: str, row_defects: int) -> Locations:
    """Write the served images and `media_manifest.tgz`, with the manifest quirks the real one has."""
    locations: Locations = {}
    rows = eol_manifest_rows(rendered, out / "images", base_url, locations)
    rows[0][0] += ".0"  # a lenient integer id, as spreadsheets export them
    locations["lenient_integer_id"] = {"content_id": rows[0][0]}
    chunk_size = max(8, -(-len(rows) // 3))
    chunks = [rows[i:i + chunk_size] for i in range(0, len(rows), chunk_size)]
    members = []
    for number, chunk in enumerate(chunks, start=1):
        name = f"media_manifest_{number}.csv"
        lines = [list(EOL_MANIFEST_COLUMNS)] + chunk
        if number == 2 or len(chunks) == 1:
            lines.insert(len(lines) // 2, list(EOL_MANIFEST_COLUMNS))  # a header repeated where chunks were joined
            locations[f"repeated_header:{name}"] = {"archive": "eol/media_manifest.tgz", "file": name, "line": len(lines) // 2}
        for i in range(2 * row_defects if number == len(chunks) else 0):
            bad = [["n/a", lines[-1][1], *lines[-1][2:]], lines[-1][:4]][i % 2]  # non-numeric id; a row missing fields
            lines.append(bad)
            locations[f"malformed_row:eol:{name}:{len(lines)}"] = {"archive": "eol/media_manifest.tgz", "file": name,
                                                                   "line": len(lines)}
        for line_number, line in enumerate(lines, start=1):
            place = locations.get(f"eol:{line[0].removesuffix('.0')}")
            if place is not None and "file" not in place:
                place.update(archive="eol/media_manifest.tgz", file=name, line=line_number)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(lines)
        members.append((name, buffer.getvalue().encode("utf-8")))
    tar_gz_members(members, out / "media_manifest.tgz")
    return locations
