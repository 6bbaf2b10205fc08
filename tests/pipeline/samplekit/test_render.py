"""Every defect the kit injects is really there in the bytes, where EXPECTED.json says."""

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.samplekit.plan import DEFECTS


@pytest.fixture(scope="module")
def expected(kit: Path) -> dict:
    return json.loads((kit / "EXPECTED.json").read_text())


def stored_bytes(kit: Path, expected: dict, source: str, native_id: str) -> bytes:
    """The bytes a record's source holds, read the way a source reader would."""
    entry = next((d for d in expected["defects"] if d["source"] == source and d["native_id"] == native_id), None)
    if source == "inat21":
        files = {i["id"]: i["file_name"] for i in json.loads((kit / "inat21/train.json").read_text())["images"]}
        return (kit / "inat21" / files[int(native_id)]).read_bytes()
    if source == "bioscan":
        with zipfile.ZipFile(kit / "bioscan/cropped_256.zip") as archive:
            return archive.read(entry["where"]["member"])
    base = expected["kit"]["eol_base_url"] + "/"
    url = entry["where"]["medium_source_url" if entry["kind"] == "fallback_to_source_url" else "full_size_url"]
    return (kit / "eol/images" / url.removeprefix(base)).read_bytes()


def the(expected: dict, kind: str) -> dict:
    return next(d for d in expected["defects"] if d["kind"] == kind)


def test_every_defect_kind_is_listed_with_its_fate(expected: dict) -> None:
    assert {d["kind"] for d in expected["defects"]} >= set(DEFECTS)
    for defect in expected["defects"]:
        assert defect["expected"]["fate"] in ("kept", "dropped", "ignored")
        if defect["expected"]["fate"] == "dropped":
            assert defect["expected"]["stage"] and defect["expected"]["reason"]
        assert defect["where"], f"{defect['kind']} has no location"


def test_exact_duplicates_repeat_the_original_bytes(kit: Path, expected: dict) -> None:
    for kind in ("exact_duplicate_within_source", "exact_duplicate_cross_source"):
        defect = the(expected, kind)
        original = stored_bytes(kit, expected, defect["copy_of"]["source"], defect["copy_of"]["native_id"])
        assert stored_bytes(kit, expected, defect["source"], defect["native_id"]) == original


def test_near_duplicates_differ_in_bytes_but_not_in_picture(kit: Path, expected: dict) -> None:
    for kind in ("near_duplicate_reencoded", "near_duplicate_resized"):
        defect = the(expected, kind)
        copy = Image.open(io.BytesIO(stored_bytes(kit, expected, defect["source"], defect["native_id"]))).convert("L")
        original_bytes = stored_bytes(kit, expected, defect["copy_of"]["source"], defect["copy_of"]["native_id"])
        original = Image.open(io.BytesIO(original_bytes)).convert("L")
        assert copy.tobytes() != original.tobytes()
        small = [np.asarray(image.resize((16, 16)), dtype=float) for image in (copy, original)]
        assert np.abs(small[0] - small[1]).mean() < 6


def test_broken_images_fail_to_decode_for_the_listed_reason(kit: Path, expected: dict) -> None:
    corrupt = the(expected, "corrupt_jpeg")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(stored_bytes(kit, expected, "inat21", corrupt["native_id"]))).load()
    truncated = the(expected, "truncated_jpeg")
    with pytest.raises(OSError, match="truncated"):
        Image.open(io.BytesIO(stored_bytes(kit, expected, "bioscan", truncated["native_id"]))).load()
    bomb = the(expected, "decompression_bomb")
    data = stored_bytes(kit, expected, "eol", bomb["native_id"])
    assert len(data) < 1_000_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


def test_odd_but_valid_images_are_what_they_claim(kit: Path, expected: dict) -> None:
    png = stored_bytes(kit, expected, "inat21", the(expected, "png_named_jpg")["native_id"])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    palette = Image.open(io.BytesIO(stored_bytes(kit, expected, "eol", the(expected, "palette_image")["native_id"])))
    assert palette.mode == "P" and "transparency" in palette.info
    cmyk = Image.open(io.BytesIO(stored_bytes(kit, expected, "eol", the(expected, "cmyk_jpeg")["native_id"])))
    assert cmyk.mode == "CMYK"
    rotated = Image.open(io.BytesIO(stored_bytes(kit, expected, "inat21", the(expected, "exif_rotated")["native_id"])))
    assert rotated.getexif()[0x0112] == 6
    upright = ImageOps.exif_transpose(rotated)
    assert upright.size == rotated.size[::-1]
    fallback = stored_bytes(kit, expected, "eol", the(expected, "fallback_to_source_url")["native_id"])
    assert Image.open(io.BytesIO(fallback)).format == "JPEG"


def test_missing_images_are_absent_from_the_archives(kit: Path, expected: dict) -> None:
    bioscan = the(expected, "missing_image")
    with zipfile.ZipFile(kit / "bioscan/cropped_256.zip") as archive:
        assert bioscan["where"]["member"] not in archive.namelist()
    inat = the(expected, "missing_image_inat21")
    with tarfile.open(kit / "inat21/train.tar.gz") as tar:
        assert inat["where"]["member"] not in tar.getnames()
