"""Decode, verify, orient, convert, hash and resize one image: bytes in, a 224x224 JPEG and its provenance out.

Pure Python over Pillow and numpy; no Beam. Bad data raises `ImageError` with a `reason` from `Reason`;
wrong arguments raise ValueError or TypeError.

    from pipeline.images import ResizeSpec, hamming, process
    result = process(Path("photo.jpg").read_bytes(), ResizeSpec(size=224, mode="squash"))  # or ImageError(reason)
    result.jpeg, result.md5, f"{result.phash:016x}"
    hamming(result.phash, other.phash) <= 8  # likely the same picture

Speed: JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (`Image.draft`) when the target allows it, and the
perceptual hash reuses that small decoded image instead of decoding twice.

Perceptual hash: a 64-bit DCT pHash in numpy, laid out like `imagehash.phash` (grayscale, 32x32 Lanczos, DCT-II,
top-left 8x8 including DC, bits above the median, row-major, first bit most significant), so `f"{h:016x}"`
reads like imagehash's hex (on the same decoded image the two agree bit for bit). PDQ (`pdqhash`) builds here, but
only from a C++ sdist (a compiler on every worker), and as an optional import it would make the hash depend on
what a worker has installed, breaking byte-identical shards. Pillow's resampling is fixed-point and the DCT runs
in exact int64 arithmetic, so the hash is the same on every CPU and BLAS.
"""

import hashlib
import io
import math
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from pipeline.records import Reason

RESIZE_MODES = ("squash", "keep-ratio", "center-crop")
SIZE_RANGE = (1, 8192)
JPEG_QUALITY_RANGE = (1, 100)
# Formats Pillow may try (JPEG also opens multi-picture files, reported as "MPO"); others (EPS runs
# Ghostscript, PSD, ICO...) are refused as decode_error.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
WHITE = (255, 255, 255)
JPEG_SUBSAMPLING = "4:2:0"

_HASH_INPUT = 32  # side of the grayscale square the DCT runs on
_HASH_BITS_SIDE = 8  # side of the low-frequency block kept: 8x8 = 64 bits
_DCT_SCALE_BITS = 14  # DCT matrix is round(cos * 2**14): exact int64 products, no float drift
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_KEYED_MODES = frozenset({"P", "L", "RGB"})  # transparent through a palette entry or colour key in info
_PLAIN_MODES = frozenset({"RGBX", "L", "1", "P", "CMYK", "YCbCr"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Exceptions Pillow's plugins raise on bad bytes (TypeError: a malformed TIFF tag reaching a seek); caught only
# around open/load/EXIF, so elsewhere they still mean a bug.
_PILLOW_DATA_ERRORS = (OSError, SyntaxError, EOFError, ValueError, TypeError, struct.error, IndexError)


class ImageError(Exception):
    """A data problem with one image: `reason` (a Reason) says which, `detail` says what was seen."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = Reason(reason)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _check_int_range(field: str, value: object, low: int, high: int | None) -> None:
    allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"ResizeSpec.{field}={value!r} must be {allowed}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"ResizeSpec.{field}={value!r} is out of range: allowed {allowed}")


@dataclass(frozen=True, slots=True)
class ResizeSpec:
    """How to shape the output: side `size`, `mode` (squash | keep-ratio | center-crop), JPEG quality, pixel bound."""

    size: int = 224
    mode: str = "squash"
    jpeg_quality: int = 95
    max_pixels: int = 89_478_485  # Pillow's MAX_IMAGE_PIXELS; Pillow itself still refuses more than twice its own

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"ResizeSpec.mode={self.mode!r} is not one of {', '.join(RESIZE_MODES)}")
        _check_int_range("size", self.size, *SIZE_RANGE)
        _check_int_range("jpeg_quality", self.jpeg_quality, *JPEG_QUALITY_RANGE)
        _check_int_range("max_pixels", self.max_pixels, 1, None)


@dataclass(frozen=True, slots=True)
class Processed:
    """One processed image: output JPEG and size, original size (EXIF-oriented), format, mode, md5 and pHash.

    `phash` is an unsigned 64-bit int (0 <= phash < 2**64); compare two with `hamming`.
    """

    jpeg: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    original_format: str
    original_mode: str
    md5: str
    phash: int


def process(data: bytes, spec: ResizeSpec = ResizeSpec(), md5: str | None = None) -> Processed:
    """Turn original image bytes into a resized JPEG with provenance; raises ImageError for bad data.

    `md5` is the hex md5 of `data` when the caller already has it (the download stage stores it beside the bytes),
    so that large originals are not hashed twice.
    """
    _check_call(data, spec)
    decoded = _decode(data, spec)
    image = decoded.image
    if decoded.orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[decoded.orientation])
    image = _to_rgb(image)
    out = _resize(image, decoded.oriented_size, spec)
    return Processed(
        jpeg=_encode_jpeg(out, spec.jpeg_quality),
        width=out.width,
        height=out.height,
        original_width=decoded.oriented_size[0],
        original_height=decoded.oriented_size[1],
        original_format=decoded.format,
        original_mode=decoded.mode,
        md5=md5 or hashlib.md5(data).hexdigest(),
        phash=perceptual_hash(image),
    )


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT pHash of an image: bit set where a low-frequency coefficient is above the median."""
    gray = image.convert("L").resize((_HASH_INPUT, _HASH_INPUT), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.int64)
    coefficients = (_DCT_ROWS @ pixels @ _DCT_ROWS.T).ravel()
    ordered = np.sort(coefficients)
    middle = len(ordered) // 2
    bits = 2 * coefficients > ordered[middle - 1] + ordered[middle]  # exact "> median" in integers
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (a ^ b).bit_count()


def _dct_rows() -> np.ndarray:
    """First 8 rows of the unnormalised 32-point DCT-II matrix, scaled to integers."""
    k = np.arange(_HASH_BITS_SIDE)[:, None]
    n = np.arange(_HASH_INPUT)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * _HASH_INPUT))
    return np.rint(basis * (1 << _DCT_SCALE_BITS)).astype(np.int64)


_DCT_ROWS = _dct_rows()


def _check_call(data: bytes, spec: ResizeSpec) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"process() needs the image bytes, got {type(data).__name__}")
    if not isinstance(spec, ResizeSpec):
        raise TypeError(f"process() needs a ResizeSpec, got {type(spec).__name__}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process, so truncated files would"
                           " decode as gray; set it back to False (something imported earlier changed it)")
    if len(data) == 0:
        raise ImageError(Reason.EMPTY_IMAGE, "0 bytes")


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A fully decoded (possibly drafted) image and what its header said at full resolution."""

    image: Image.Image
    format: str
    mode: str
    orientation: int
    oriented_size: tuple[int, int]


def _decode(data: bytes, spec: ResizeSpec) -> _Decoded:
    """Open, bound-check the declared size, draft, and decode every pixel."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            (width, height), original_format, original_mode = image.size, image.format or "", image.mode
            _check_pixel_count(width, height, spec.max_pixels)
            image.draft("RGB", _draft_request(width, height, spec))
            image.load()
            orientation = _orientation(image)
    except Image.DecompressionBombError as error:
        raise ImageError(Reason.DECOMPRESSION_BOMB, str(error)) from None
    except UnidentifiedImageError:
        detail = f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); starts with {data[:16]!r}"
        raise ImageError(Reason.DECODE_ERROR, detail) from None
    except _PILLOW_DATA_ERRORS as error:
        raise ImageError(_classify(error), f"{type(error).__name__}: {error}") from None
    oriented_size = (height, width) if orientation in _SWAPS_AXES else (width, height)
    return _Decoded(image, original_format, original_mode, orientation, oriented_size)


def _classify(error: Exception) -> Reason:
    # Cut files say "image file is truncated" (load) or "Truncated File Read" (header); "broken data stream" is
    # Pillow's codec status for corrupt compressed data, which is decode_error, not truncation.
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return Reason.TRUNCATED_IMAGE
    return Reason.DECODE_ERROR


def _check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(Reason.EMPTY_IMAGE, f"declared size {width}x{height}")
    if width * height > max_pixels:
        detail = f"declared size {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        raise ImageError(Reason.DECOMPRESSION_BOMB, detail)


def _draft_request(width: int, height: int, spec: ResizeSpec) -> tuple[int, int]:
    """Smallest decode size that needs no upscaling for the output nor for the hash's 32x32 (orientation-free)."""
    if spec.mode == "squash":
        need = (spec.size, spec.size)
    elif spec.mode == "keep-ratio":
        need = _fit_long_side(width, height, spec.size)
    else:
        short = min(width, height)
        need = (math.ceil(width * spec.size / short), math.ceil(height * spec.size / short))
    return max(need[0], _HASH_INPUT), max(need[1], _HASH_INPUT)


def _fit_long_side(width: int, height: int, size: int) -> tuple[int, int]:
    """Size with the long side equal to `size` and the aspect kept, rounded half up, at least 1 pixel."""
    if width >= height:
        return size, max(1, (2 * height * size + width) // (2 * width))
    return max(1, (2 * width * size + height) // (2 * height)), size


def _orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1-8); missing, invalid or unreadable EXIF counts as upright (1)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _PILLOW_DATA_ERRORS:
        return 1
    return orientation if isinstance(orientation, int) and orientation in _TRANSPOSE else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any supported mode to RGB: alpha over white, 16-bit scaled down, palettes expanded."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if mode in _ALPHA_MODES or (mode in _KEYED_MODES and "transparency" in image.info):
        return _composite_on_white(image if mode == "RGBA" else image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode in _PLAIN_MODES:
        return image.convert("RGB")
    raise ImageError(Reason.UNSUPPORTED_MODE, f"mode {mode!r} has no defined conversion to RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own I;16 -> L clips everything above 255 to white; keep the high byte instead.
    samples = np.asarray(image)
    high_byte = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(high_byte).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, WHITE)
    background.paste(rgba, mask=rgba)
    return background


def _resize(image: Image.Image, oriented_size: tuple[int, int], spec: ResizeSpec) -> Image.Image:
    """Resize the (possibly drafted) image; output size comes from the full-resolution size, not the draft."""
    size = spec.size
    if spec.mode == "squash":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    if spec.mode == "keep-ratio":
        return image.resize(_fit_long_side(*oriented_size, size), Image.Resampling.BICUBIC)
    side = min(image.size)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    # Pillow copies image.info (comment, ICC, EXIF) into a save unless told otherwise; drop it for stable bytes.
    image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=False, progressive=False, subsampling=JPEG_SUBSAMPLING)
    return buffer.getvalue()
