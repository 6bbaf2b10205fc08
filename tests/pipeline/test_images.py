"""Tests for pipeline.images: modes, EXIF orientation, failure reasons, resize modes, draft, determinism, pHash."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

from pipeline.images import ImageError, Processed, ResizeSpec, hamming, perceptual_hash, process
from pipeline.records import Reason

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def scene(seed: int, size: tuple[int, int] = (600, 400)) -> Image.Image:
    """A smooth, photo-like RGB image: a random coarse grid upsampled bicubically, plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    noisy = np.asarray(coarse).astype(np.int16) + rng.integers(-20, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def quadrants(width: int = 300, height: int = 200) -> Image.Image:
    """Red, green / blue, yellow quadrants: every rotation and flip gives different corners."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    for color, box in ((RED, (0, 0)), (GREEN, (half_w, 0)), (BLUE, (0, half_h)), (YELLOW, (half_w, half_h))):
        image.paste(color, (*box, box[0] + half_w, box[1] + half_h))
    return image


def pixels(result: Processed) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.jpeg))).astype(int)


def near(actual, expected, tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected)) <= tolerance))


def reason_of(data: bytes, spec: ResizeSpec = ResizeSpec()) -> Reason:
    with pytest.raises(ImageError) as caught:
        process(data, spec)
    return caught.value.reason


def png_declaring(width: int, height: int, idat: bytes = zlib.compress(b"\0" * 4)) -> bytes:
    """A valid-looking RGB PNG whose header declares width x height, with the given IDAT (by default one tiny row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- modes -------------------------------------------------------------------------------------------------


def test_rgb_jpeg_reports_format_mode_and_md5():
    data = encode(quadrants(), "JPEG", quality=95)
    result = process(data)
    assert (result.original_format, result.original_mode) == ("JPEG", "RGB")
    assert (result.width, result.height, result.original_width, result.original_height) == (224, 224, 300, 200)
    assert result.md5 == hashlib.md5(data).hexdigest()
    assert Image.open(io.BytesIO(result.jpeg)).format == "JPEG"
    assert 0 <= result.phash < 2**64


def test_palette_without_transparency_keeps_colors():
    image = quadrants().quantize(4)
    result = process(encode(image))
    assert result.original_mode == "P"
    assert near(pixels(result)[20, 20], RED) and near(pixels(result)[200, 200], YELLOW)


def test_palette_transparent_index_becomes_white():
    image = Image.new("P", (224, 224), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (112, 0, 224, 224))
    result = process(encode(image, transparency=0))
    assert near(pixels(result)[112, 40], WHITE) and near(pixels(result)[112, 180], RED)


@pytest.mark.parametrize(("mode", "transparent", "opaque"), [("RGBA", (0, 0, 0, 0), (255, 0, 0, 255)),
                                                               ("LA", (0, 0), (0, 255))])
def test_alpha_is_composited_on_white(mode, transparent, opaque):
    image = Image.new(mode, (224, 224), transparent)
    image.paste(opaque, (112, 0, 224, 224))
    result = process(encode(image))
    assert result.original_mode == mode
    expected_opaque = RED if mode == "RGBA" else BLACK
    assert near(pixels(result)[112, 40], WHITE) and near(pixels(result)[112, 180], expected_opaque)


@pytest.mark.parametrize(("mode", "key"), [("L", 0), ("RGB", (0, 0, 0))])
def test_colour_key_transparency_becomes_white(mode, key):
    image = Image.new(mode, (224, 224), key)
    image.paste(255 if mode == "L" else RED, (112, 0, 224, 224))
    result = process(encode(image, transparency=key))
    assert near(pixels(result)[112, 40], WHITE) and near(pixels(result)[112, 180], WHITE if mode == "L" else RED)


def test_half_transparent_black_is_mid_grey():
    result = process(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 128))))
    assert near(pixels(result)[100, 100], (127, 127, 127), tolerance=3)


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (224, 224), (0, 255, 255, 0))  # red in CMYK
    result = process(encode(image, "JPEG", quality=95))
    assert result.original_mode == "CMYK"
    assert near(pixels(result)[112, 112], RED, tolerance=20)


def test_grayscale_becomes_grey_rgb():
    result = process(encode(Image.new("L", (100, 80), 100)))
    assert result.original_mode == "L"
    assert near(pixels(result)[50, 50], (100, 100, 100), tolerance=3)


def test_sixteen_bit_mid_grey_becomes_128_not_white():
    image = Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16))
    result = process(encode(image))
    assert result.original_mode.startswith("I")
    assert near(pixels(result)[100, 100], (128, 128, 128), tolerance=2)


def test_one_bit_becomes_black_and_white():
    image = Image.new("1", (224, 224), 0)
    image.paste(1, (112, 0, 224, 224))
    result = process(encode(image))
    assert result.original_mode == "1"
    assert near(pixels(result)[112, 40], BLACK) and near(pixels(result)[112, 180], WHITE)


def test_float_tiff_is_unsupported_mode():
    image = Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32))
    assert reason_of(encode(image, "TIFF")) == Reason.UNSUPPORTED_MODE


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "BMP", "TIFF"])
def test_other_accepted_formats_decode(fmt):
    assert process(encode(quadrants(), fmt)).original_format == fmt


def test_formats_outside_the_accepted_set_are_decode_errors():
    assert reason_of(encode(quadrants(64, 64), "ICO")) == Reason.DECODE_ERROR


# --- EXIF orientation --------------------------------------------------------------------------------------


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pillow_transpose(orientation):
    data = with_orientation(quadrants(), orientation)
    result = process(data, ResizeSpec(mode="keep-ratio"))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert (result.original_width, result.original_height) == expected.size
    assert (result.width, result.height) == ((224, 149) if expected.width > expected.height else (149, 224))
    out = pixels(result)
    for fx, fy in ((0.2, 0.2), (0.8, 0.2), (0.2, 0.8), (0.8, 0.8)):
        want = expected.getpixel((int(fx * expected.width), int(fy * expected.height)))
        assert near(out[int(fy * result.height), int(fx * result.width)], want, tolerance=20)


def test_orientation_6_puts_stored_bottom_left_at_top_left():
    result = process(with_orientation(quadrants(), 6), ResizeSpec(mode="keep-ratio"))
    assert (result.original_width, result.original_height) == (200, 300)
    assert near(pixels(result)[20, 20], BLUE, tolerance=20)


def test_orientation_on_a_drafted_jpeg_reports_full_size():
    data = with_orientation(quadrants(4000, 3000), 8)
    result = process(data, ResizeSpec(mode="keep-ratio"))
    assert (result.original_width, result.original_height, result.width, result.height) == (3000, 4000, 168, 224)
    assert near(pixels(result)[10, 10], GREEN, tolerance=20)  # rotate 90 CCW: stored top-right goes to top-left


# --- failures ----------------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header():
    started = time.perf_counter()
    error = pytest.raises(ImageError, process, png_declaring(40000, 40000)).value
    assert error.reason == Reason.DECOMPRESSION_BOMB
    assert time.perf_counter() - started < 1.0  # 40000x40000 RGB would be 4.8 GB if decoded


def test_max_pixels_is_configurable():
    data = encode(quadrants(100, 100))
    error = pytest.raises(ImageError, process, data, ResizeSpec(max_pixels=5000)).value
    assert error.reason == Reason.DECOMPRESSION_BOMB and "100x100" in error.detail and "5000" in error.detail
    assert process(data, ResizeSpec(max_pixels=10_000)).original_width == 100


def test_declared_size_between_our_bound_and_pillows_is_ours():
    with pytest.warns(Image.DecompressionBombWarning):
        assert reason_of(png_declaring(10000, 10000)) == Reason.DECOMPRESSION_BOMB


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
def test_file_cut_in_half_is_truncated(fmt):
    data = encode(scene(1), fmt)
    assert reason_of(data[: len(data) // 2]) == Reason.TRUNCATED_IMAGE


def test_truncated_load_flag_set_elsewhere_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        process(encode(quadrants()))


@pytest.mark.parametrize("data", [b"<!DOCTYPE html><html><body>Not found</body></html>", b"\xff\xd8\xff" + b"\x00" * 50,
                                  png_declaring(16, 16, idat=b"not zlib data" * 4), bytes(range(256))])
def test_non_images_are_decode_errors(data):
    error = pytest.raises(ImageError, process, data).value
    assert error.reason == Reason.DECODE_ERROR
    assert str(error).startswith("decode_error: ")


def test_empty_bytes_are_empty_image():
    assert reason_of(b"") == Reason.EMPTY_IMAGE


def test_programmer_errors_are_not_image_errors():
    with pytest.raises(TypeError):
        process("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        process(b"x", {"size": 224})  # type: ignore[arg-type]


def test_image_error_survives_pickling():
    error = pickle.loads(pickle.dumps(ImageError(Reason.TRUNCATED_IMAGE, "cut")))
    assert (error.reason, error.detail, str(error)) == (Reason.TRUNCATED_IMAGE, "cut", "truncated_image: cut")


VALID_SEEDS = [encode(quadrants(40, 30), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")]


@st.composite
def damaged_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning", "ignore::UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), damaged_images()))
def test_arbitrary_bytes_give_a_result_or_an_image_error(data):
    try:
        result = process(data, ResizeSpec(size=32))
    except ImageError as error:
        assert error.reason in set(Reason)
    else:
        assert result.width == result.height == 32


# --- resize modes, draft, determinism ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "size", "expected"),
    [
        ("squash", (300, 200), (224, 224)), ("squash", (200, 300), (224, 224)), ("squash", (50, 30), (224, 224)),
        ("keep-ratio", (300, 200), (224, 149)), ("keep-ratio", (200, 300), (149, 224)),
        ("keep-ratio", (50, 30), (224, 134)), ("keep-ratio", (5000, 10), (224, 1)),
        ("center-crop", (300, 200), (224, 224)), ("center-crop", (200, 300), (224, 224)),
        ("center-crop", (50, 30), (224, 224)),
    ],
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_resize_mode_output_size(mode, size, expected, fmt):
    result = process(encode(quadrants(*size), fmt), ResizeSpec(mode=mode))
    assert (result.width, result.height) == expected
    assert (result.original_width, result.original_height) == size
    assert Image.open(io.BytesIO(result.jpeg)).size == expected


def test_center_crop_keeps_the_middle():
    image = Image.new("RGB", (600, 200), RED)
    image.paste(GREEN, (200, 0, 400, 200))
    image.paste(BLUE, (400, 0, 600, 200))
    out = pixels(process(encode(image), ResizeSpec(mode="center-crop")))
    assert near(out[112, 5], GREEN, tolerance=20) and near(out[112, 218], GREEN, tolerance=20)


def test_squash_stretches_the_whole_image():
    out = pixels(process(encode(quadrants(600, 200))))
    assert near(out[20, 20], RED) and near(out[20, 200], GREEN) and near(out[200, 20], BLUE)


def test_same_input_gives_identical_output():
    data = encode(scene(3), "JPEG", quality=90, comment=b"camera note")
    first, second = process(data), process(data)
    assert first == second
    assert "comment" not in Image.open(io.BytesIO(first.jpeg)).info


def test_jpeg_quality_changes_the_output():
    data = encode(scene(3))
    assert len(process(data, ResizeSpec(jpeg_quality=30)).jpeg) < len(process(data, ResizeSpec(jpeg_quality=95)).jpeg)


@pytest.mark.parametrize(("mode", "size"), [("squash", (4000, 3000)), ("center-crop", (4000, 1000))])
def test_big_jpeg_is_decoded_at_reduced_scale(monkeypatch, mode, size):
    decoded_sizes = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, *args):
        answer = real_draft(self, *args)
        decoded_sizes.append(self.size)
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = process(encode(quadrants(*size), "JPEG"), ResizeSpec(mode=mode))
    assert (result.width, result.height, result.original_width, result.original_height) == (224, 224, *size)
    (decoded,) = decoded_sizes
    assert decoded[0] < size[0] and min(decoded) >= 224  # smaller decode, yet never upscaled


# --- perceptual hash ---------------------------------------------------------------------------------------


def test_phash_is_robust_to_recompression_and_resizing():
    original = scene(1)
    reference = process(encode(original, "JPEG", quality=95)).phash
    recompressed = process(encode(original, "JPEG", quality=60)).phash
    resized = process(encode(original.resize((540, 360), Image.Resampling.BICUBIC), "JPEG", quality=90)).phash
    assert hamming(reference, recompressed) <= 8
    assert hamming(reference, resized) <= 8


def test_phash_tells_different_images_apart():
    reference = process(encode(scene(1), "JPEG")).phash
    for seed in (2, 4, 5):
        assert hamming(reference, process(encode(scene(seed), "JPEG")).phash) > 20


def test_phash_does_not_depend_on_the_output_spec_for_natural_images():
    data = encode(scene(1, (1500, 1000)), "JPEG")
    hashes = {process(data, ResizeSpec(size=size, mode=mode)).phash
              for size in (64, 224, 512) for mode in ("squash", "keep-ratio", "center-crop")}
    assert max(hamming(a, b) for a in hashes for b in hashes) <= 2


def test_phash_layout_is_row_major_msb_first():
    flat = Image.new("RGB", (64, 64), (90, 90, 90))
    assert perceptual_hash(flat) == 1 << 63  # only the DC coefficient is above the (zero) median


def test_hamming_counts_differing_bits():
    assert hamming(0, 0) == 0 and hamming(0b1011, 0b0001) == 2 and hamming(0, 2**64 - 1) == 64


# --- ResizeSpec validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error", "mentions"),
    [
        ("mode", "fit", ValueError, ["mode", "'fit'", "squash, keep-ratio, center-crop"]),
        ("size", 0, ValueError, ["size", "0", "[1, 8192]"]),
        ("size", 224.0, TypeError, ["size", "224.0", "integer"]),
        ("jpeg_quality", 101, ValueError, ["jpeg_quality", "101", "[1, 100]"]),
        ("jpeg_quality", True, TypeError, ["jpeg_quality", "True"]),
        ("max_pixels", 0, ValueError, ["max_pixels", "0", ">= 1"]),
    ],
)
def test_resize_spec_rejects_bad_values_naming_field_value_and_allowed(field, value, error, mentions):
    with pytest.raises(error) as caught:
        ResizeSpec(**{field: value})
    for text in mentions:
        assert text in str(caught.value)


def test_a_known_md5_is_reused_instead_of_hashing_again() -> None:
    data = encode(quadrants(64, 48), "JPEG")
    assert process(data).md5 == hashlib.md5(data).hexdigest()
    assert process(data, md5="0123abcd").md5 == "0123abcd"
