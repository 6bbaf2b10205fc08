"""`tol eval`: zero-shot, few-shot (SimpleShot) and per-rank accuracy of a CLIP model on the paper's tasks or yours.

    tol eval --model local-dir:data_manifests/training/models/tiny-cpu --task rare-species \
        --data-root demo-out/rare_species --out runs/demo/eval --support-splits runs/demo/eval/splits.json
    tol eval --checkpoint runs/demo/checkpoints/latest.pt --task rare-species --data-root demo-out/rare_species
    tol eval --model ViT-B-16 --pretrained ViT-B-16.pt --task-csv my.csv       # or --task-folder DIR
    tol eval --list-tasks

Read the task (training.tasks; every listed image must exist) -> embed its images (unreadable ones are counted,
reported and left out) -> zero-shot with --text-type class texts and OpenAI's 80 templates (training.zero_shot) ->
per-rank accuracy where the task has ranks (training.ranks) -> SimpleShot for each of --shots over --runs seeded
support splits (training.few_shot; --support-splits PATH is written if absent and reused if present) ->
OUT/results.json and OUT/results.md, with the published numbers for the same task and shots beside ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from pipeline.argtypes import non_negative_int, positive_int
from taxonomy.build import write_atomic
from taxonomy.captions import DEFAULT_TEXT_TYPE, EVAL_TEXT_TYPES
from training import few_shot, ranks, tasks, zero_shot
from training.embed import TEMPLATES, UnreadableImage, image_features, open_rgb, text_classifier
from training.model import LoadedModel, load_model

RESULTS_FORMAT = "treeoflife-eval-v1"
SHOWN = 5  # unreadable images named in the report
MODEL_SEED = 0  # torch's seed before a model is built

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What one `tol eval` run evaluates, how, and where it writes."""

    task: str | None
    task_csv: Path | None
    task_folder: Path | None
    data_root: Path | None
    model: str | None
    pretrained: Path | None
    checkpoint: Path | None
    out: Path | None
    text_type: str
    templates: str
    shots: tuple[int, ...]
    runs: int
    seed: int
    device: str
    batch_size: int
    workers: int
    support_splits: Path | None


def shot_list(text: str) -> tuple[int, ...]:
    """`1,5` -> (1, 5): distinct positive integers, sorted."""
    try:
        shots = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        shots = []
    if not shots or shots[0] < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers (e.g. 1,5), got {text!r}")
    return tuple(shots)


def device_name(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"expected a torch device (cpu, cuda, cuda:1), got {text!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: CUDA is not available here (use cpu)")
    return text


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--task", help="a task of the paper's table by name (see --list-tasks); needs --data-root")
    which.add_argument("--task-csv", type=Path, help="your task in BioCLIP's annotation CSV format (filepath, class, "
                       "optional ranks and common_name); images relative to its folder or --data-root")
    which.add_argument("--task-folder", type=Path, help="your task as an image folder, one subfolder per class")
    add("--list-tasks", action="store_true", help="list the paper's tasks and exit")
    add("--data-root", type=Path, help="your local copy of the task's images (nothing is downloaded)")
    add("--checkpoint", type=Path, help="one of our training checkpoints (it holds its model config)")
    add("--model", help="an open_clip model name (ViT-B-16) or local-dir:PATH holding open_clip_config.json")
    add("--pretrained", type=Path, help="local weights file for --model (never a tag: nothing is downloaded)")
    add("--out", type=Path, help="output folder for results.json and results.md (default runs/eval/TASK)")
    add("--text-type", choices=EVAL_TEXT_TYPES, default=DEFAULT_TEXT_TYPE,
        help="zero-shot class text (tasks without ranks use their class names, asis)")
    add("--templates", choices=tuple(TEMPLATES), default="openai", help="prompt templates (openai: OpenAI's 80)")
    add("--shots", type=shot_list, default=(1, 5), help="few-shot support images per class, e.g. 1,5")
    add("--runs", type=positive_int, default=5, help="seeded few-shot runs per shot count (mean and std)")
    add("--seed", type=non_negative_int, default=0, help="seed of the support splits")
    add("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu)")
    add("--batch-size", type=positive_int, default=64, help="images per forward pass")
    add("--workers", type=positive_int, default=4, help="threads decoding images")
    add("--support-splits", type=Path, help="JSON of the few-shot support splits: written if absent, read if present")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The run's frozen config; raises with the flag named for a missing or conflicting choice."""
    if not (args.task or args.task_csv or args.task_folder):
        raise ValueError("give --task NAME (with --data-root), --task-csv PATH or --task-folder DIR (or --list-tasks)")
    if args.task:
        tasks.task_spec(args.task)  # an unknown name is the first thing to hear about
    if args.task and args.data_root is None:
        raise ValueError(f"--task {args.task} needs --data-root DIR, your local copy of its images")
    if args.task_folder and args.data_root is not None:
        raise ValueError("--data-root is for --task and --task-csv; --task-folder is the image root itself")
    if args.pretrained and not args.model:
        raise ValueError("--pretrained needs --model NAME (a checkpoint carries its own weights)")
    return EvalConfig(**{field.name: getattr(args, field.name) for field in fields(EvalConfig)})


def load_task(config: EvalConfig) -> tasks.Task:
    """The task to evaluate, with every listed image present (a clear error naming missing ones otherwise)."""
    if config.task:
        task = tasks.load_registry_task(tasks.task_spec(config.task), config.data_root)
    elif config.task_csv:
        task = tasks.read_annotation(config.task_csv, config.data_root)
    else:
        task = tasks.read_folder(config.task_folder)
    tasks.check_files(task)
    return task


def _decode(path: Path) -> Image.Image | str:
    try:
        return open_rgb(path)
    except UnreadableImage as error:
        return str(error)


def embed(loaded: LoadedModel, task: tasks.Task, config: EvalConfig) -> tuple[torch.Tensor, tasks.Task, list[str]]:
    """Features of the task's readable images, the task without the unreadable ones, and why each was unreadable."""
    chunks, unreadable, bad_files = [], [], set()
    paths = task.paths
    with ThreadPoolExecutor(config.workers) as pool, tqdm(total=len(paths), desc="embedding images", unit="img") as bar:
        for start in range(0, len(paths), config.batch_size):
            batch = list(pool.map(_decode, paths[start:start + config.batch_size]))
            for file, item in zip(task.files[start:start + config.batch_size], batch):
                if isinstance(item, str):
                    unreadable.append(item)
                    bad_files.add(file)
            images = [item for item in batch if not isinstance(item, str)]
            if images:
                chunks.append(image_features(loaded, images, config.device, config.batch_size))
            bar.update(len(batch))
    if not chunks:
        raise ValueError(f"none of the {len(paths)} images of {task.source} is readable (first: {unreadable[0]})")
    if unreadable:
        log.warning("%d of %d images unreadable, left out (first: %s)", len(unreadable), len(paths),
                    "; ".join(unreadable[:SHOWN]))
    return torch.cat(chunks), task.without(bad_files), unreadable


def support_splits(config: EvalConfig, task: tasks.Task) -> tuple[few_shot.Splits, int]:
    """The few-shot splits and the seed they were drawn with: read from --support-splits if it exists, else drawn
    with --seed (and written there if given)."""
    path = config.support_splits
    if path is not None and path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"--support-splits {path}: not JSON ({error}); remove it to draw new splits") from error
        log.info("support splits read from %s (drawn with seed %s)", path, document.get("seed"))
        return few_shot.splits_from_document(document, str(path), config.shots, config.runs, task.files), \
            document["seed"]
    splits = few_shot.draw_splits(task.files, task.targets, config.shots, config.runs, config.seed)
    if path is not None:
        document = json.dumps(few_shot.splits_document(task.name, config.seed, splits), indent=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda temporary: temporary.write_text(document, encoding="utf-8"))
        log.info("support splits written to %s", path)
    return splits, config.seed


def evaluate(config: EvalConfig) -> dict:
    """Every number of one run, as results.json holds them."""
    task = load_task(config)
    torch.manual_seed(MODEL_SEED)  # a random-init model is then the same on every run, whatever --seed says
    loaded = load_model(config.model, config.pretrained, config.checkpoint, config.device)
    features, task, unreadable = embed(loaded, task, config)
    targets = torch.tensor(task.targets)
    texts, text_type = zero_shot.class_texts_for(task, config.text_type)
    if text_type != config.text_type:
        log.info("%s has no rank columns: its class names are the class texts (asis)", task.source)
    classifier = text_classifier(loaded, texts, config.templates, config.device, progress=True).cpu()
    predictions, zero = zero_shot.zero_shot(features, classifier, targets)
    splits, seed = support_splits(config, task)
    classes = len(task.classes)
    return {
        "format": RESULTS_FORMAT,
        "task": {"name": task.name, "title": task.title, "source": task.source, "images": len(task.files),
                 "classes": classes, "expected_classes": task.expected_classes,
                 "unreadable": {"count": len(unreadable), "first": unreadable[:SHOWN]}},
        "model": {"checkpoint": _text(config.checkpoint), "model": config.model,
                  "pretrained": _text(config.pretrained)},
        "settings": {"text_type": text_type, "templates": config.templates, "shots": list(config.shots),
                     "runs": config.runs, "seed": seed, "support_splits": _text(config.support_splits)},
        "chance": {f"top{k}": 100.0 * min(k, classes) / classes for k in zero_shot.TOP_K},
        "zero_shot": zero,
        "per_rank": ranks.rank_accuracy(predictions, targets, task.labels) if task.labels else None,
        "few_shot": {str(k): _few_shot(features, targets, task, k, runs) for k, runs in splits.items()},
        "published": [asdict(p) for p in tasks.published_for(task.name)] if config.task else [],
        "class_texts": texts,
    }


def _few_shot(features: torch.Tensor, targets: torch.Tensor, task: tasks.Task, shots: int,
              runs: list[list[str]]) -> dict:
    """One shot count's few-shot results, or {"skipped": why} when its support leaves no image to query."""
    small = sum(count <= shots for count in torch.bincount(targets, minlength=len(task.classes)).tolist())
    if small:
        log.warning("%d-shot: %d of %d classes have %d images or fewer, so no query image", shots, small,
                    len(task.classes), shots)
    try:
        return few_shot.few_shot(features, targets, task.files, runs, len(task.classes))
    except few_shot.NoQueryImages as error:
        log.warning("%d-shot skipped: %s", shots, error)
        return {"skipped": str(error)}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _published_cells(results: dict) -> tuple[list[str], dict[tuple[str, int], str], list[str]]:
    """Published models in order, each (model, shots) cell ("49.9 (a, b)" or "72.1 (a) / 74.7 (b)"), the legend."""
    published = results["published"]
    letters = {key: chr(ord("a") + i) for i, key in enumerate(dict.fromkeys(p["source"] for p in published))}
    models = list(dict.fromkeys(p["model"] for p in published))
    cells = {}
    for model in models:
        for shots in {p["shots"] for p in published}:
            values: dict[float, list[str]] = {}
            for p in published:
                if (p["model"], p["shots"]) == (model, shots):
                    values.setdefault(p["top1"], []).append(letters[p["source"]])
            cells[model, shots] = " / ".join(f"{v:.1f} ({', '.join(keys)})" for v, keys in values.items())
    legend = [f"({letter}) {tasks.sources()[key]['title']}: {tasks.sources()[key]['where']}"
              for key, letter in letters.items()]
    return models, cells, legend


def render_markdown(results: dict) -> str:
    """results.md: our top-k beside chance and the published top-1 for the same task and shots, then per rank."""
    task, settings = results["task"], results["settings"]
    models, cells, legend = _published_cells(results)
    model = results["model"]
    weights = f" with `{model['pretrained']}`" if model["pretrained"] else ""
    lines = [f"# tol eval: {task['title']} ({task['name']})", "",
             f"- model: `{model['checkpoint'] or model['model']}`{weights}",
             f"- images: {task['images']} in {task['classes']} classes from `{task['source']}`; "
             f"{task['unreadable']['count']} unreadable left out",
             f"- zero-shot class texts: `{settings['text_type']}`, templates `{settings['templates']}`",
             f"- few-shot: SimpleShot, {settings['runs']} runs (seed {settings['seed']}), mean ± std; support splits "
             f"{'`' + settings['support_splits'] + '`' if settings['support_splits'] else 'not saved'}"]
    if task["expected_classes"] not in (None, task["classes"]):
        lines.append(f"- note: the paper's task has {task['expected_classes']} classes; published numbers are for it")
    lines += ["", "| Shots | Top-1 | Top-3 | Top-5 | Chance top-1 | " + " | ".join(models) + " |",
              "|---:|---:|---:|---:|---:|" + "---:|" * len(models)]
    rows = [(0, {key: f"{value:.2f}" for key, value in results["zero_shot"].items()})]
    rows += [(int(k), {key: "skipped" if "skipped" in r else f"{r[key]['mean']:.2f} ± {r[key]['std']:.2f}"
                       for key in results["zero_shot"]}) for k, r in results["few_shot"].items()]
    for shots, ours in rows:
        published = [cells.get((m, shots), "") for m in models]
        lines.append(f"| {shots} | {ours['top1']} | {ours['top3']} | {ours['top5']} | "
                     f"{results['chance']['top1']:.2f} | " + " | ".join(published) + " |")
    lines += ["", "Published top-1 (%): " + ("; ".join(legend) if legend else "none recorded for this task") + "."]
    paper = tasks.paper()
    if task["expected_classes"] is not None and not paper["transcribed"]:
        lines += ["", f"Not recorded: arXiv {paper['arxiv']}{paper['version']} {paper['table']}; see "
                  "data_manifests/eval/tasks.toml."]
    if results["per_rank"]:
        lines += ["", "## Per-rank accuracy of the zero-shot species prediction", "",
                  "| Rank | Accuracy | Images scored |", "|---|---:|---:|"]
        for rank, score in results["per_rank"].items():
            accuracy = "" if score["accuracy"] is None else f"{score['accuracy']:.2f}"
            lines.append(f"| {rank} | {accuracy} | {score['scored']} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.list_tasks:
        sys.stdout.write(tasks.describe())
        return 0
    try:
        config = config_from_args(args)
        results = evaluate(config)
    except ValueError as error:
        log.error("%s", error)
        return 2
    out = config.out or Path("runs/eval") / results["task"]["name"]
    markdown = render_markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", lambda path: path.write_text(json.dumps(results, indent=1) + "\n",
                                                                        encoding="utf-8"))
    write_atomic(out / "results.md", lambda path: path.write_text(markdown, encoding="utf-8"))
    sys.stdout.write(markdown)
    log.info("results written to %s", out)
    return 0
