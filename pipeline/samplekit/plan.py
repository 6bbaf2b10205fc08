"""Which records a sample kit holds, and which of them carry a deliberate defect.

The plan is made first, from the seed alone, so that every record's id, taxon, size and fate are fixed before
any pixel is drawn; images can then be rendered in parallel and still come out byte-identical.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from pipeline.samplekit.taxa import KitTaxa, Taxon

SOURCES = ("inat21", "bioscan", "eol")
SOURCE_SHARES = {"inat21": 0.45, "bioscan": 0.25, "eol": 0.30}

# kind -> (source it is injected into, what must become of it). Each kind appears at least once per kit.
PAIR_NOTE = "exactly one of this record and its copy_of is dropped; the build's survivor rule decides which"
DEFECTS: dict[str, tuple[str, dict[str, str]]] = {
    "exact_duplicate_within_source": ("inat21", {"fate": "dropped", "stage": "dedup", "reason": "duplicate_of",
                                                 "note": PAIR_NOTE}),
    "exact_duplicate_cross_source": ("eol", {"fate": "dropped", "stage": "dedup", "reason": "duplicate_of",
                                             "note": PAIR_NOTE}),
    "near_duplicate_reencoded": ("eol", {"fate": "dropped", "stage": "near_dedup", "reason": "near_duplicate_of",
                                         "note": PAIR_NOTE}),
    "near_duplicate_resized": ("inat21", {"fate": "dropped", "stage": "near_dedup", "reason": "near_duplicate_of",
                                          "note": PAIR_NOTE}),
    "corrupt_jpeg": ("inat21", {"fate": "dropped", "stage": "process", "reason": "decode_error"}),
    "truncated_jpeg": ("bioscan", {"fate": "dropped", "stage": "process", "reason": "truncated_image"}),
    "png_named_jpg": ("inat21", {"fate": "kept", "note": "PNG bytes under a .jpg name; decoded by content"}),
    "palette_image": ("eol", {"fate": "kept", "note": "mode P with transparency; converted to RGB on white"}),
    "cmyk_jpeg": ("eol", {"fate": "kept", "note": "CMYK JPEG; converted to RGB"}),
    "exif_rotated": ("inat21", {"fate": "kept", "note": "stored rotated with EXIF Orientation=6; shown upright"}),
    "decompression_bomb": ("eol", {"fate": "dropped", "stage": "process", "reason": "decompression_bomb"}),
    "missing_image": ("bioscan", {"fate": "dropped", "stage": "read", "reason": "missing_image"}),
    "missing_image_inat21": ("inat21", {"fate": "dropped", "stage": "read", "reason": "missing_image"}),
    "http_404": ("eol", {"fate": "dropped", "stage": "download", "reason": "http_not_found"}),
    "http_500": ("eol", {"fate": "dropped", "stage": "download", "reason": "http_server_error"}),
    "http_hang": ("eol", {"fate": "dropped", "stage": "download", "reason": "timeout"}),
    "http_html": ("eol", {"fate": "dropped", "stage": "download", "reason": "not_an_image"}),
    "http_oversize": ("eol", {"fate": "dropped", "stage": "download", "reason": "too_large"}),
    "http_redirect_file": ("eol", {"fate": "dropped", "stage": "download", "reason": "redirect_refused"}),
    "fallback_to_source_url": ("eol", {"fate": "kept", "note": "full-size URL 404s; Medium Source URL serves it"}),
}
# Row-level defects in metadata files (no image behind them); written by the source writers.
ROW_DEFECTS: dict[str, dict[str, str]] = {
    "malformed_row": {"fate": "dropped", "stage": "read", "reason": "malformed_row"},
    "repeated_header": {"fate": "ignored", "note": "a header row repeated inside a manifest chunk is not a record"},
    "lenient_integer_id": {"fate": "kept", "note": "content id written as '97.0' parses as 97"},
}

INAT_ASPECTS = ((500, 375), (375, 500), (500, 500), (500, 333), (333, 500))
EOL_LONG_SIDES = (400, 640, 800, 1024, 1200, 1600, 2000)


@dataclass(frozen=True, slots=True)
class KitRecord:
    """One image record of a kit: its source identity, its true taxon, how it is drawn, and its defect."""

    source: str
    native_id: str
    taxon: Taxon
    size: tuple[int, int]
    seed: int
    defect: str = ""
    copy_of: KitRecord | None = None

    @property
    def key(self) -> str:
        return f"{self.source}:{self.native_id}"


def record_seed(kit_seed: int, source: str, index: int) -> int:
    digest = hashlib.sha256(f"{kit_seed}:{source}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def source_sizes(scale: int) -> dict[str, int]:
    inat = round(scale * SOURCE_SHARES["inat21"])
    bioscan = round(scale * SOURCE_SHARES["bioscan"])
    return {"inat21": inat, "bioscan": bioscan, "eol": scale - inat - bioscan}


def image_size(source: str, rng: random.Random) -> tuple[int, int]:
    if source == "inat21":
        return rng.choice(INAT_ASPECTS)
    if source == "bioscan":
        long_side = rng.randrange(256, 520)
        return (256, long_side) if rng.random() < 0.5 else (long_side, 256)
    long_side = rng.choices(EOL_LONG_SIDES, weights=(3, 4, 4, 3, 2, 1, 1))[0]
    w, h = rng.choice(INAT_ASPECTS)
    return (long_side, round(long_side * h / w)) if w >= h else (round(long_side * w / h), long_side)


def eol_content_ids(taxon: Taxon, count: int, next_synthetic: list[int]) -> list[int]:
    """Real EOL content ids first (Rare Species taxa carry them), then kit-assigned ones from 900,000,000 up."""
    ids = list(taxon.eol_content_ids[:count])
    while len(ids) < count:
        ids.append(next_synthetic[0])
        next_synthetic[0] += 1
    return ids


def clean_records(source: str, taxa: tuple[Taxon, ...], count: int, kit_seed: int) -> list[KitRecord]:
    """`count` defect-free records spread over `taxa` (every taxon at least once, the rest at random)."""
    rng = random.Random(f"sample-kit-records:{kit_seed}:{source}")
    per_taxon = [1] * len(taxa)
    for _ in range(max(0, count - len(taxa))):
        per_taxon[rng.randrange(len(taxa))] += 1
    records, next_synthetic, image_id = [], [900_000_000], 1_000_000 + rng.randrange(1000)
    for taxon, n in zip(taxa, per_taxon):
        content_ids = eol_content_ids(taxon, n, next_synthetic) if source == "eol" else []
        for i in range(n):
            index = len(records)
            if source == "inat21":
                native_id = str(image_id + index)
            elif source == "bioscan":
                native_id = f"BIOUG{70000 + index // 96:05d}-{'ABCDEFGH'[index % 96 // 12]}{index % 12 + 1:02d}.jpg"
            else:
                native_id = str(content_ids[i])
            records.append(KitRecord(source, native_id, taxon, image_size(source, rng), record_seed(kit_seed, source, index)))
    return records


def inject_defects(records: dict[str, list[KitRecord]], per_kind: int, kit_seed: int) -> dict[str, list[KitRecord]]:
    """Turn `per_kind` records of each defect kind's source into defect records; copies copy clean iNat21 ones."""
    rng = random.Random(f"sample-kit-defects:{kit_seed}")
    out = {source: list(rs) for source, rs in records.items()}
    free = {source: list(range(len(rs))) for source, rs in out.items()}
    for indices in free.values():
        rng.shuffle(indices)
    copied_content_id = 800_000_000
    for kind, (source, _) in DEFECTS.items():
        for _ in range(per_kind):
            index = free[source].pop()
            record = out[source][index]
            taxon, size, native_id, copy_of = record.taxon, record.size, record.native_id, None
            if kind.startswith(("exact_duplicate", "near_duplicate")):
                # Popped from the free list, so the original stays clean. A copy shows the same organism.
                copy_of = out["inat21"][free["inat21"].pop()]
                taxon, size = copy_of.taxon, copy_of.size
                if source == "eol":
                    native_id, copied_content_id = str(copied_content_id), copied_content_id + 1
            out[source][index] = KitRecord(source, native_id, taxon, size, record.seed, kind, copy_of)
    return out


def make_plan(taxa: KitTaxa, scale: int, kit_seed: int) -> dict[str, list[KitRecord]]:
    sizes = source_sizes(scale)
    records = {source: clean_records(source, getattr(taxa, source), sizes[source], kit_seed) for source in SOURCES}
    return inject_defects(records, max(1, scale // 1000), kit_seed)
