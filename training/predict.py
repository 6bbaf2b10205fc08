"""`tol predict IMAGE... --taxa taxa.parquet`: top-k species and per-rank predictions for images.

    tol predict demo-out/rare_species/dataset/*/*.jpg --model local-dir:data_manifests/training/models/tiny-cpu \
        --taxa demo-out/taxonomy/taxa.parquet --within Animalia --top-k 3

The model is `--checkpoint PATH` (ours) or `--model NAME [--pretrained PATH]` (training.model). The classes are the
species of taxa.parquet: rows with both a genus and an epithet, one class per seven-rank lineage (the common name of
its first row by taxon_id). Rows without them (partial resolutions to a genus or family) are not classes, as BioCLIP
predicts species and a genus row beside its own species would split the genus's probability; their count is logged.
Scores follow open_clip and BioCLIP: a softmax over the species of logit_scale * cosine(image, class embedding),
where a class embedding averages OpenAI's templates filled with the `--text-type` text (default taxon_com). A
higher rank's probability is the sum of its species' probabilities; taxa of a rank are told apart by their whole
lineage (a genus in two families is two taxa), and a missing rank is a taxon named "" (shown "-"). `--within NAME`
(repeatable; a name at any rank or a binomial, any case) keeps the species under those taxa, and the softmax runs
over them only. Class embeddings are cached (training.text_cache). An unreadable or missing image gets an error
line (table), row (csv) or field (json) and a warning, and the others are still predicted; the exit code is 1 only
when no image could be read, and 2 for bad arguments (model, taxa, an unknown --within name).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from pipeline.argtypes import positive_int
from taxonomy.captions import DEFAULT_TEXT_TYPE, EVAL_TEXT_TYPES, RANKS, Label, class_texts, label_from_mapping, names
from training.embed import TEMPLATES, UnreadableImage, image_features, open_rgb, text_classifier
from training.model import load_model
from training.text_cache import cached_classifier, default_cache_dir, model_identity

Lineage = tuple[str, ...]  # kingdom .. one rank, "" where a rank is missing
OUTPUT_RANKS = tuple(reversed(RANKS))  # most specific first: species, genus, .. kingdom
IMAGE_BATCH = 32
PROGRESS_MIN_CLASSES = 64  # show a progress bar when embedding at least this many class texts
FORMATS = ("table", "json", "csv")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpeciesClass:
    taxon_id: str
    label: Label


@dataclass(frozen=True, slots=True)
class Prediction:
    rank: str
    name: str  # the binomial for a species, else the rank's own name ("" when missing)
    lineage: Lineage
    probability: float
    common_name: str = ""  # species only, as taxa.parquet gives it
    taxon_id: str = ""  # species only


@dataclass(frozen=True, slots=True)
class ImageResult:
    image: str
    predictions: tuple[Prediction, ...] = ()
    error: str = ""  # why the image could not be read; then there are no predictions


def species_classes(rows: Sequence[dict]) -> list[SpeciesClass]:
    """One class per distinct seven-rank lineage with a genus and an epithet, sorted by lineage."""
    by_lineage: dict[Lineage, SpeciesClass] = {}
    for row in sorted(rows, key=lambda row: row["taxon_id"]):
        label = label_from_mapping(row)
        if label.ranks[5] and label.ranks[6]:
            by_lineage.setdefault(label.ranks, SpeciesClass(row["taxon_id"], label))
    return [by_lineage[lineage] for lineage in sorted(by_lineage)]


def load_species_classes(taxa: Path) -> list[SpeciesClass]:
    """The species classes of a taxa.parquet; ValueError if it lacks the columns or any species."""
    columns = ["taxon_id", *RANKS, "common_name"]
    try:
        rows = pq.read_table(taxa, columns=columns).to_pylist()
    except (OSError, ValueError) as error:  # a missing file, not parquet, a missing column
        raise ValueError(f"--taxa {taxa}: not a taxa.parquet with columns {', '.join(columns)} ({error})") from error
    classes = species_classes(rows)
    log.info("%d species classes from %d taxa rows of %s (rows without genus or epithet are not classes)",
             len(classes), len(rows), taxa)
    if not classes:
        raise ValueError(f"--taxa {taxa}: no row has both a genus and an epithet, so there is no species to predict")
    return classes


def _matchable(species: SpeciesClass) -> dict[str, str]:
    """The names `--within` matches for one species (every higher rank and the binomial): lowercase -> spelling."""
    spellings = (*species.label.ranks[:6], names(species.label).scientific)
    return {name.lower(): name for name in spellings if name}


def within(classes: Sequence[SpeciesClass], taxa_names: Sequence[str]) -> list[SpeciesClass]:
    """The classes under any of `taxa_names` (all if none); ValueError naming an unknown one and close matches."""
    if not taxa_names:
        return list(classes)
    matchable = [_matchable(species) for species in classes]
    spelled = {lower: name for names_ in matchable for lower, name in names_.items()}
    wanted = {name.strip().lower(): name for name in taxa_names}
    for lower, name in wanted.items():
        if lower not in spelled:
            close = difflib.get_close_matches(lower, sorted(spelled), n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(spelled[c] for c in close)}" if close else "no close match"
            raise ValueError(f"--within {name!r}: no species class has this name at any rank ({hint})")
    return [species for species, names_ in zip(classes, matchable) if names_.keys() & wanted.keys()]


def species_probabilities(features: np.ndarray, classifier: np.ndarray, logit_scale: float) -> np.ndarray:
    """[images, species] softmax of logit_scale * cosine; features [images, dim] and classifier [dim, species]."""
    logits = logit_scale * (features.astype(np.float64) @ classifier.astype(np.float64))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def rank_probabilities(probabilities: np.ndarray, classes: Sequence[SpeciesClass],
                       rank: str) -> tuple[list[Lineage], np.ndarray]:
    """The taxa of `rank` (sorted lineages) and [images, taxa] probabilities, each the sum of its species'."""
    depth = RANKS.index(rank) + 1
    lineages = sorted({species.label.ranks[:depth] for species in classes})
    column = {lineage: index for index, lineage in enumerate(lineages)}
    index = np.array([column[species.label.ranks[:depth]] for species in classes], dtype=np.int64)
    sums = np.zeros((len(lineages), probabilities.shape[0]))
    np.add.at(sums, index, probabilities.T)
    return lineages, sums.T


def top_predictions(probabilities: np.ndarray, classes: Sequence[SpeciesClass], ranks: Sequence[str],
                    k: int) -> list[tuple[Prediction, ...]]:
    """Per image, the top `k` taxa of each rank in `ranks` order, most probable first (ties by lineage)."""
    per_image: list[list[Prediction]] = [[] for _ in range(probabilities.shape[0])]
    by_lineage = {species.label.ranks: species for species in classes}
    for rank in ranks:
        lineages, rank_probs = rank_probabilities(probabilities, classes, rank)
        for image, row in enumerate(rank_probs):
            for column in np.argsort(-row, kind="stable")[:k]:
                lineage = lineages[column]
                species = by_lineage.get(lineage) if rank == "species" else None
                name = names(species.label).scientific if species else lineage[-1]
                per_image[image].append(Prediction(rank, name, lineage, float(row[column]),
                                                   species.label.common_name if species else "",
                                                   species.taxon_id if species else ""))
    return [tuple(predictions) for predictions in per_image]


def format_table(results: Sequence[ImageResult]) -> str:
    lines = []
    for result in results:
        lines.append(result.image)
        if result.error:
            lines.append(f"  error: {result.error}")
        for position, prediction in _positions(result.predictions):
            common = prediction.common_name
            shown = f" ({common})" if common and common.lower() != prediction.name.lower() else ""
            rank = prediction.rank if position == 1 else ""
            lines.append(f"  {rank:<8} {position:>2}  {prediction.probability:.4f}  {prediction.name or '-'}{shown}")
        lines.append("")
    return "\n".join(lines)


def _positions(predictions: Sequence[Prediction]) -> list[tuple[int, Prediction]]:
    """(1-based position within its rank, prediction) pairs."""
    positioned, previous, position = [], None, 0
    for prediction in predictions:
        position = position + 1 if prediction.rank == previous else 1
        positioned.append((position, prediction))
        previous = prediction.rank
    return positioned


def format_json(results: Sequence[ImageResult]) -> str:
    documents = []
    for result in results:
        by_rank: dict[str, list[dict]] = {}
        for prediction in result.predictions:
            by_rank.setdefault(prediction.rank, []).append(
                {"name": prediction.name, "common_name": prediction.common_name, "taxon_id": prediction.taxon_id,
                 "lineage": list(prediction.lineage), "probability": prediction.probability})
        documents.append({"image": result.image, "error": result.error or None, "predictions": by_rank})
    return json.dumps(documents, indent=1, ensure_ascii=False)


def format_csv(results: Sequence[ImageResult]) -> str:
    """One row per prediction, or one row with `error` per unreadable image; lineage joined with ';'."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "rank", "position", "name", "common_name", "taxon_id", "lineage", "probability",
                     "error"])
    for result in results:
        if result.error:
            writer.writerow([result.image, "", "", "", "", "", "", "", result.error])
        for position, p in _positions(result.predictions):
            writer.writerow([result.image, p.rank, position, p.name, p.common_name, p.taxon_id, ";".join(p.lineage),
                             f"{p.probability:.6g}", ""])
    return buffer.getvalue().rstrip("\n")


FORMATTERS = {"table": format_table, "json": format_json, "csv": format_csv}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to classify")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="one of our training checkpoints (it holds its config)")
    source.add_argument("--model", help="an open_clip model name or local-dir:PATH (training.model)")
    parser.add_argument("--pretrained", type=Path, help="local weights file for --model (default: its own or none)")
    parser.add_argument("--taxa", type=Path, required=True, help="taxa.parquet from tol taxonomy (the classes)")
    parser.add_argument("--within", action="append", default=[], metavar="NAME",
                        help="keep only species under this taxon (any rank, or a binomial); repeatable")
    parser.add_argument("--text-type", choices=EVAL_TEXT_TYPES, default=DEFAULT_TEXT_TYPE,
                        help=f"class text of each species (default {DEFAULT_TEXT_TYPE}, as BioCLIP predicts)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="taxa shown per rank (default 5)")
    parser.add_argument("--rank", choices=RANKS, help="show only this rank (default: species, then genus .. kingdom)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"class-text embedding cache (default {default_cache_dir()})")


def _load_model(args: argparse.Namespace):
    """The model, on the chosen device; ValueError for a bad flag."""
    if args.pretrained is not None and args.model is None:
        raise ValueError("--pretrained goes with --model NAME (a --checkpoint holds its own weights)")
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise ValueError(f"--device {args.device!r}: not a torch device ({error})") from error
    return load_model(args.model, args.pretrained, args.checkpoint, device), device


def _class_embeddings(args: argparse.Namespace, loaded, device, texts: Sequence[str]) -> np.ndarray:
    templates = [template("{}") for template in TEMPLATES["openai"]]
    identity = model_identity(args.model, args.pretrained, args.checkpoint, loaded.config)
    return cached_classifier(args.cache_dir or default_cache_dir(), identity, args.text_type, templates, texts,
                             lambda: text_classifier(loaded, texts, "openai", device,
                                                     progress=len(texts) >= PROGRESS_MIN_CLASSES).cpu().numpy())


def _image_features(loaded, device, paths: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
    """Features of the readable images, in order, and per path its error ("" when it was read)."""
    features, errors = [], []
    for start in tqdm(range(0, len(paths), IMAGE_BATCH), desc="embedding images", unit="batch",
                      disable=len(paths) <= IMAGE_BATCH):
        opened = []
        for path in paths[start:start + IMAGE_BATCH]:
            try:
                opened.append(open_rgb(path))
                errors.append("")
            except UnreadableImage as error:
                log.warning("%s", error)
                errors.append(str(error))
        if opened:
            features.append(image_features(loaded, opened, device).numpy())
    dim = loaded.config["model_cfg"]["embed_dim"]
    return (np.concatenate(features) if features else np.empty((0, dim), np.float32)), errors


def run(args: argparse.Namespace) -> int:
    try:
        classes = within(load_species_classes(args.taxa), args.within)
        loaded, device = _load_model(args)
    except (ValueError, OSError) as error:
        log.error("%s", error, exc_info=log.isEnabledFor(logging.DEBUG))
        return 2
    features, errors = _image_features(loaded, device, args.images)
    predictions: Iterator[tuple[Prediction, ...]] = iter(())
    if len(features):  # embed the class texts only when there is an image to compare them with
        texts = class_texts((species.label for species in classes), args.text_type)
        probabilities = species_probabilities(features, _class_embeddings(args, loaded, device, texts),
                                              loaded.model.logit_scale.exp().item())
        predictions = iter(top_predictions(probabilities, classes, [args.rank] if args.rank else OUTPUT_RANKS,
                                           args.top_k))
    results = [ImageResult(str(path), () if error else next(predictions), error)
               for path, error in zip(args.images, errors)]
    print(FORMATTERS[args.format](results))
    if all(result.error for result in results):
        log.error("none of the %d images could be read", len(results))
        return 1
    return 0
