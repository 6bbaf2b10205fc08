"""Turn a planned kit record into the exact bytes its source would hold, defects included.

Pure and deterministic (a record's own seed drives everything), so records render in any order, in parallel.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from PIL import Image

from pipeline.samplekit.drawing import draw_specimen
from pipeline.samplekit.plan import KitRecord

JPEG_QUALITY = {"inat21": 90, "bioscan": 92, "eol": 88}
# Records whose bytes are never stored: the metadata points at nothing, or at a fault URL.
NO_BYTES = frozenset({"missing_image", "missing_image_inat21", "http_404", "http_500", "http_hang", "http_html",
                      "http_oversize", "http_redirect_file"})
EXIF_ORIENTATION = 0x0112


def encode_jpeg(image: Image.Image, quality: int, **extra) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **extra)
    return buffer.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def picture(record: KitRecord) -> Image.Image:
    return draw_specimen(record.taxon.ranks, record.size, np.random.default_rng(record.seed))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels: decoding it naively would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows only: the declared size is the attack
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def corrupt(jpeg: bytes, seed: int) -> bytes:
    """Keep the JPEG start marker, replace the rest with noise: recognisable as JPEG, undecodable."""
    noise = random.Random(seed).randbytes(len(jpeg) - 4)
    return jpeg[:4] + noise.replace(b"\xff", b"\x00")


def exif_rotated(image: Image.Image, quality: int) -> bytes:
    """Store the picture turned 90 degrees anticlockwise with Orientation=6, so a viewer shows it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encode_jpeg(image.transpose(Image.Transpose.ROTATE_90), quality, exif=exif.tobytes())


def palette_with_transparency(image: Image.Image) -> bytes:
    paletted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buffer = io.BytesIO()
    paletted.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def near_copy(original: bytes, kind: str) -> bytes:
    """A near-duplicate: the same picture re-encoded at a lower quality, or resized to 90% and re-encoded."""
    image = Image.open(io.BytesIO(original)).convert("RGB")
    if kind == "near_duplicate_resized":
        image = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.BICUBIC)
    return encode_jpeg(image, 72)


def render(record: KitRecord) -> bytes | None:
    """The bytes the source holds for `record`, or None where the kit stores no image for it."""
    if record.defect in NO_BYTES:
        return None
    quality = JPEG_QUALITY[record.source]
    if record.copy_of is not None:
        original = render(record.copy_of)
        return original if record.defect.startswith("exact_duplicate") else near_copy(original, record.defect)
    if record.defect == "decompression_bomb":
        return bomb_png()
    image = picture(record)
    match record.defect:
        case "corrupt_jpeg":
            return corrupt(encode_jpeg(image, quality), record.seed)
        case "truncated_jpeg":
            jpeg = encode_jpeg(image, quality)
            return jpeg[: len(jpeg) * 11 // 20]
        case "png_named_jpg":
            return encode_png(image)
        case "palette_image":
            return palette_with_transparency(image)
        case "cmyk_jpeg":
            return encode_jpeg(image.convert("CMYK"), quality)
        case "exif_rotated":
            return exif_rotated(image, quality)
    return encode_jpeg(image, quality)
