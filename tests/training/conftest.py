"""Fixtures for the training tests: the tiny random-init model, and evaluation tasks written in BioCLIP's format."""

import csv
from pathlib import Path

import pytest
from PIL import Image

import data_manifests
from training.model import LoadedModel, load_model

TINY_MODEL = "local-dir:" + str(data_manifests.path("training/models/tiny-cpu/open_clip_config.json").parent)
ANNOTATION_HEADER = ("", "kingdom", "phylum", "cls", "order", "family", "genus", "species", "common_name", "filepath",
                     "class")
# Three species (one without a common name) with four images each, as BioCLIP's Rare Species metadata.csv lists them.
EVAL_SPECIES = (
    (("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "hudsonia"), "black-billed magpie"),
    (("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica"), ""),
    (("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba"), "white mulberry"),
)
EVAL_COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    """The tiny random-init CLIP (data_manifests/training/models/tiny-cpu), in eval mode, on CPU."""
    return load_model(TINY_MODEL)


def write_image(path: Path, colour: tuple[int, int, int], shade: int) -> None:
    """A small solid picture with a lighter square, as PNG or JPEG by the path's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (24, 20), colour)
    image.paste(tuple(min(255, c + 10 * shade) for c in colour), (4, 4, 12, 12))
    image.save(path)


def write_annotation_task(root: Path, images_per_species: int = 4) -> Path:
    """BioCLIP's annotation CSV (unnamed index column, `cls`, epithet in `species`) + tiny PNG/JPEG images under
    `root`; returns the CSV path, root/metadata.csv."""
    rows = []
    for (ranks, common), colour in zip(EVAL_SPECIES, EVAL_COLOURS):
        for shade in range(images_per_species):
            suffix = ".png" if shade % 2 else ".jpg"
            filepath = f"images/{ranks[5]}_{ranks[6]}/{shade}{suffix}"
            write_image(root / filepath, colour, shade)
            rows.append((len(rows), *ranks, common, filepath, f"{ranks[5]} {ranks[6]}"))
    path = root / "metadata.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ANNOTATION_HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def annotation_task(tmp_path: Path) -> Path:
    """A 3-species, 12-image task in BioCLIP's annotation format; the CSV's path (images relative to its folder)."""
    return write_annotation_task(tmp_path / "task")


@pytest.fixture
def make_annotation_task():
    """`write_annotation_task(root, images_per_species=4) -> CSV path`, for tests that need the task elsewhere."""
    return write_annotation_task


@pytest.fixture
def make_image():
    """`write_image(path, colour, shade)`: a tiny PNG or JPEG (by suffix)."""
    return write_image


SYNTHETIC_SAMPLES, SYNTHETIC_SPECIES, SYNTHETIC_SHARDS = 160, 16, 4


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic 64 px shards in the build's format (training.synthetic): OUT/train (4 shards, 152 samples of 16
    species) and OUT/val (1 shard, 8 samples), each with sizes.json; written once, tests must not modify them."""
    from training.synthetic import write_synthetic_shards  # imports Beam's shard writer: only when asked for

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_shards(out, SYNTHETIC_SAMPLES, SYNTHETIC_SPECIES, SYNTHETIC_SHARDS, side=64)
    return out
