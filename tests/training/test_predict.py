"""`tol predict`: classes from taxa, per-rank sums, --within, the text-embedding cache, and the command end to end."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import data_manifests
from pipeline.cli import main
from taxonomy.build import TAXA_SCHEMA
from taxonomy.captions import RANKS, Label
from training.model import create_model, export_local_dir
from training.predict import (
    SpeciesClass,
    rank_probabilities,
    species_classes,
    species_probabilities,
    top_predictions,
    within,
)
from training.text_cache import cached_classifier, model_identity

CORVIDAE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae")
# Morus is a real homonym: the gannets (Sulidae) and the mulberries (Moraceae).
SPECIES = [
    ((*CORVIDAE, "Corvus", "corax"), "Common Raven"),
    ((*CORVIDAE, "Pica", "hudsonia"), "black-billed magpie"),
    ((*CORVIDAE, "Pica", "pica"), "Eurasian Magpie"),
    (("Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus"), "Northern Gannet"),
    (("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba"), "white mulberry"),
]
CLASSES = [SpeciesClass(f"t{index}", Label(ranks, common)) for index, (ranks, common) in enumerate(SPECIES)]


def taxa_row(taxon_id: str, ranks: tuple[str, ...], common: str) -> dict:
    """A taxa.parquet row in the real schema."""
    row = dict.fromkeys(TAXA_SCHEMA.names, "")
    scientific = f"{ranks[5]} {ranks[6]}".strip() or next(r for r in reversed(ranks) if r)
    row.update(zip(RANKS, ranks), taxon_id=taxon_id, scientific_name=scientific, common_name=common,
               common_name_source="itis", match="exact", status="resolved" if ranks[6] else "partial")
    return row


def test_species_classes_keep_rows_with_genus_and_epithet_once_each() -> None:
    rows = [taxa_row("b", SPECIES[1][0], "black-billed magpie"),
            taxa_row("a", SPECIES[1][0], "American magpie"),  # the same lineage again: first taxon_id wins
            taxa_row("c", ("Animalia", "Arthropoda", "Insecta", "Diptera", "Tachinidae", "Medina", ""), "Medina"),
            taxa_row("d", ("Animalia", "Arthropoda", "Insecta", "Blattodea", "Kalotermitidae", "", ""), ""),
            taxa_row("e", SPECIES[0][0], "Common Raven")]
    classes = species_classes(rows)
    assert [(c.taxon_id, c.label.ranks[5:], c.label.common_name) for c in classes] == [
        ("e", ("Corvus", "corax"), "Common Raven"), ("a", ("Pica", "hudsonia"), "American magpie")]


def test_softmax_of_scaled_cosine() -> None:
    probabilities = species_probabilities(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]), 2.0)
    assert probabilities[0] == pytest.approx([np.e**2 / (np.e**2 + 1), 1 / (np.e**2 + 1)])


def test_rank_probabilities_sum_species_and_keep_homonyms_apart() -> None:
    probabilities = np.array([[0.05, 0.12, 0.18, 0.25, 0.40],   # raven, 2 magpies, gannet, mulberry
                              [0.70, 0.10, 0.10, 0.05, 0.05]])
    lineages, genus = rank_probabilities(probabilities, CLASSES, "genus")
    assert [lineage[-2:] for lineage in lineages] == [("Corvidae", "Corvus"), ("Corvidae", "Pica"),
                                                      ("Sulidae", "Morus"), ("Moraceae", "Morus")]
    assert genus[0] == pytest.approx([0.05, 0.30, 0.25, 0.40])
    assert genus[1] == pytest.approx([0.70, 0.20, 0.05, 0.05])
    lineages, kingdom = rank_probabilities(probabilities, CLASSES, "kingdom")
    assert lineages == [("Animalia",), ("Plantae",)] and kingdom[0] == pytest.approx([0.60, 0.40])
    assert rank_probabilities(probabilities, CLASSES, "family")[1][0] == pytest.approx([0.35, 0.25, 0.40])
    top = top_predictions(probabilities, CLASSES, ["genus", "species", "class"], 2)
    assert [(p.rank, p.name, round(p.probability, 6)) for p in top[0]] == [
        ("genus", "Morus", 0.40), ("genus", "Pica", 0.30), ("species", "Morus alba", 0.40),
        ("species", "Morus bassanus", 0.25), ("class", "Aves", 0.60), ("class", "Magnoliopsida", 0.40)]
    assert top[1][2].common_name == "Common Raven" and top[1][2].taxon_id == "t0"
    assert top[0][0].lineage == SPECIES[4][0][:6]


def test_within_keeps_the_subtrees_named_at_any_rank() -> None:
    def kept(*names: str) -> list[str]:
        return [c.label.ranks[6] for c in within(CLASSES, names)]

    assert kept() == ["corax", "hudsonia", "pica", "bassanus", "alba"]
    assert kept("Aves") == ["corax", "hudsonia", "pica", "bassanus"]
    assert kept("corvidae") == ["corax", "hudsonia", "pica"]
    assert kept("Morus") == ["bassanus", "alba"]  # both homonyms
    assert kept("Pica hudsonia", "Plantae") == ["hudsonia", "alba"]
    with pytest.raises(ValueError, match=r"--within 'Avess'.*close matches: Aves"):
        within(CLASSES, ["Aves", "Avess"])
    with pytest.raises(ValueError, match="no close match"):
        within(CLASSES, ["Xyzzy"])


def test_cache_is_reused_and_invalidated_when_the_texts_change(tmp_path: Path) -> None:
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3) + len(calls)

    identity = {"checkpoint": {"path": "/x.pt", "size": 1, "mtime_ns": 2}}
    first = cached_classifier(tmp_path, identity, "taxon_com", ["a photo of {}."], ["A", "B", "C"], compute)
    again = cached_classifier(tmp_path, identity, "taxon_com", ["a photo of {}."], ["A", "B", "C"], compute)
    assert len(calls) == 1 and np.array_equal(first, again)
    cached_classifier(tmp_path, identity, "taxon_com", ["a photo of {}."], ["A", "B", "D"], compute)
    cached_classifier(tmp_path, identity, "sci", ["a photo of {}."], ["A", "B", "D"], compute)
    assert len(calls) == 3 and len(list(tmp_path.glob("*.npy"))) == len(list(tmp_path.glob("*.json"))) == 3
    for sidecar in tmp_path.glob("*.json"):  # an entry whose sidecar is gone was never finished
        sidecar.unlink()
    cached_classifier(tmp_path, identity, "taxon_com", ["a photo of {}."], ["A", "B", "C"], compute)
    assert len(calls) == 4
    cached_classifier(tmp_path / "none", None, "sci", [], ["A"], compute)  # random init: never cached
    cached_classifier(tmp_path / "none", None, "sci", [], ["A"], compute)
    assert len(calls) == 6 and not (tmp_path / "none").exists()


def test_model_identity_follows_the_weight_files(tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text("{}")
    assert model_identity(f"local-dir:{tmp_path}", None, None, {}) is None
    weights = tmp_path / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"0")
    before = model_identity(f"local-dir:{tmp_path}", None, None, {})
    os.utime(weights, ns=(1, 1))
    assert before != model_identity(f"local-dir:{tmp_path}", None, None, {}) is not None


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model exported with weights, a taxa.parquet of real taxa, two pictures, a broken and a missing file."""
    root = tmp_path_factory.mktemp("predict")
    tiny = create_model(f"local-dir:{data_manifests.path('training/models/tiny-cpu/open_clip_config.json').parent}")
    model = export_local_dir(tiny.model, tiny.config, root / "model")
    rows = [taxa_row(f"{index:016x}", ranks, common) for index, (ranks, common) in enumerate(SPECIES)]
    rows.append(taxa_row("ffffffffffffffff", ("Animalia", "Arthropoda", "Insecta", "Diptera", "Tachinidae",
                                              "Medina", ""), "Medina"))
    pq.write_table(pa.Table.from_pylist(rows, schema=TAXA_SCHEMA), root / "taxa.parquet")
    for name, colour in (("black.jpg", (20, 20, 20)), ("white.png", (240, 250, 240))):
        Image.new("RGB", (80, 60), colour).save(root / name)
    (root / "broken.jpg").write_bytes(b"not a picture")
    return {"root": root, "model": model, "taxa": root / "taxa.parquet", "cache": root / "cache"}


def predict(inputs: dict[str, Path], *images: str, extra: tuple[str, ...] = ()) -> int:
    images_ = [str(inputs["root"] / image) for image in images]
    return main(["predict", *images_, "--model", f"local-dir:{inputs['model']}", "--taxa", str(inputs["taxa"]),
                 "--cache-dir", str(inputs["cache"]), *extra])


def test_predict_end_to_end(inputs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert predict(inputs, "black.jpg", "broken.jpg", "white.png", "missing.jpg",
                   extra=("--format", "json", "--top-k", "10")) == 0
    results = json.loads(capsys.readouterr().out)
    assert [Path(r["image"]).name for r in results] == ["black.jpg", "broken.jpg", "white.png", "missing.jpg"]
    assert [bool(r["error"]) for r in results] == [False, True, False, True]
    assert "broken.jpg: not a readable image" in results[1]["error"] and not results[1]["predictions"]
    for result in (results[0], results[2]):
        species = result["predictions"]["species"]
        assert len(species) == 5 and sum(p["probability"] for p in species) == pytest.approx(1.0)  # no Medina
        assert list(result["predictions"]) == ["species", "genus", "family", "order", "class", "phylum", "kingdom"]
        kingdoms = {p["name"]: p["probability"] for p in result["predictions"]["kingdom"]}
        mulberry = next(p["probability"] for p in species if p["name"] == "Morus alba")
        assert kingdoms["Plantae"] == pytest.approx(mulberry)
    [entry] = inputs["cache"].glob("*.npy")
    written = entry.stat().st_mtime_ns

    assert predict(inputs, "white.png", extra=("--format", "csv", "--rank", "genus", "--top-k", "2")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("image,rank,position,name") and len(lines) == 3
    assert all(",genus," in line for line in lines[1:])
    assert list(inputs["cache"].glob("*.npy")) == [entry] and entry.stat().st_mtime_ns == written  # reused

    assert predict(inputs, "black.jpg", extra=("--within", "Corvidae", "--text-type", "sci")) == 0
    table = capsys.readouterr().out
    assert "Pica hudsonia (black-billed magpie)" in table and "Morus" not in table
    assert len(list(inputs["cache"].glob("*.npy"))) == 2  # other texts, another entry


def test_predict_errors(inputs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert predict(inputs, "broken.jpg", "missing.jpg") == 1  # no image could be read
    assert "none of the 2 images could be read" in capsys.readouterr().err
    assert predict(inputs, "black.jpg", extra=("--within", "Corvida")) == 2
    assert "close matches: Corvidae" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --checkpoint and --model exclude each other
        predict(inputs, "black.jpg", extra=("--checkpoint", "x.pt"))
    assert "not allowed with argument --model" in capsys.readouterr().err
