"""Evaluation tasks: the paper's ten (registry in data_manifests/eval/), or yours, read into images and classes.

    spec = task_spec("rare-species")                              # a name or Meta-Album code; else the known names
    task = load_registry_task(spec, Path("demo-out/rare_species"))  # its label file there, else an image folder
    task = read_annotation(Path("my.csv"))                         # BioCLIP's annotation CSV format
    task = read_folder(Path("images"))                             # one subfolder per class

BioCLIP's annotation format: `filepath` (relative to the CSV's folder, or to `root`) and `class` (the class name,
the `asis` text), optional ranks `kingdom, phylum, cls, order, family, genus, species` (species = epithet) and
`common_name`; a first column without a name is a pandas index and is ignored. Classes are sorted by name, so class
indices do not depend on row order. Published numbers (data_manifests/eval/published.csv) are top-1 percentages,
each row from a source named in tasks.toml.
"""

from __future__ import annotations

import csv
import functools
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import data_manifests
from taxonomy.captions import Label, label_from_mapping

RANK_COLUMNS = ("kingdom", "phylum", "cls", "order", "family", "genus", "species")  # BioCLIP's names for RANKS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SHOWN = 5  # paths named in an error before "..."


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One registry task: names, class count and where its labels are found in a user's copy."""

    name: str
    code: str
    title: str
    classes: int
    label_column: str
    annotations: tuple[str, ...]
    ranks: bool
    bioclip_annotation: str
    homepage: str
    note: str


@dataclass(frozen=True, slots=True)
class Published:
    """A published top-1 accuracy (%) of `model` on `task` with `shots` images per class (0 = zero-shot)."""

    source: str
    model: str
    task: str
    shots: int
    top1: float


@dataclass(frozen=True)
class Task:
    """Images with a class each; `labels` holds each class's ranks and common name when the label file has ranks."""

    name: str
    title: str
    root: Path
    files: tuple[str, ...]  # image paths relative to `root`, as the label file lists them
    targets: tuple[int, ...]  # class index of each file
    classes: tuple[str, ...]  # class names (the `asis` texts), sorted
    labels: tuple[Label, ...] | None
    source: str  # the label file or folder read
    expected_classes: int | None = None  # the registry's count, for registry tasks

    @property
    def paths(self) -> list[Path]:
        return [self.root / file for file in self.files]

    def without(self, files: set[str]) -> Task:
        """The same task without the given files (classes stay, even if one loses every image)."""
        kept = [i for i, file in enumerate(self.files) if file not in files]
        return replace(self, files=tuple(self.files[i] for i in kept), targets=tuple(self.targets[i] for i in kept))


@functools.cache
def _registry() -> dict:
    return tomllib.loads(data_manifests.path("eval/tasks.toml").read_text(encoding="utf-8"))


def registry() -> dict[str, TaskSpec]:
    """The registry's tasks by name, in the paper's column order."""
    specs = (TaskSpec(**{**entry, "annotations": tuple(entry["annotations"])}) for entry in _registry()["task"])
    return {spec.name: spec for spec in specs}


def sources() -> dict[str, dict[str, str]]:
    """Where each source of published numbers comes from: key -> {"title", "where"}."""
    return _registry()["source"]


def paper() -> dict[str, object]:
    """The paper whose table the registry follows: arxiv id, version, table, and whether it was transcribed."""
    return _registry()["paper"]


def task_spec(name: str) -> TaskSpec:
    """The registry task called `name` (or its code, any case); a clear error listing the known names."""
    known = registry()
    for spec in known.values():
        if name.lower() in (spec.name, spec.code.lower()):
            return spec
    raise ValueError(f"--task {name!r}: unknown task; known: {', '.join(known)} (or --task-csv / --task-folder)")


@functools.cache
def published() -> tuple[Published, ...]:
    """Every published number, one per (source, model, task, shots); empty cells are numbers nobody recorded."""
    names = set(registry())
    with open(data_manifests.path("eval/published.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    found: list[Published] = []
    for row in rows:
        if row["source"] not in sources():
            raise ValueError(f"published.csv: source {row['source']!r} is not described in tasks.toml")
        for task in (column for column in row if column not in ("source", "model", "shots")):
            if task not in names:
                raise ValueError(f"published.csv: column {task!r} is not a registry task ({', '.join(names)})")
            if row[task]:
                found.append(Published(row["source"], row["model"], task, int(row["shots"]), float(row[task])))
    return tuple(found)


def describe() -> str:
    """The registry as text, a block per task (`tol eval --list-tasks`)."""
    return "".join(
        f"{spec.name} (also {spec.code}): {spec.title}, {spec.classes} classes{', seven ranks' if spec.ranks else ''}\n"
        f"  images: {spec.homepage}\n"
        f"  labels: {' or '.join(spec.annotations)} in --data-root, else one subfolder per class; BioCLIP's: "
        f"Imageomics/bioclip {spec.bioclip_annotation}\n"
        f"  note: {spec.note}\n" for spec in registry().values())


def published_for(task: str) -> tuple[Published, ...]:
    return tuple(p for p in published() if p.task == task)


def _missing_error(what: str, missing: Sequence[str], total: int, hint: str) -> ValueError:
    shown = ", ".join(missing[:SHOWN]) + (", ..." if len(missing) > SHOWN else "")
    return ValueError(f"{len(missing)} of {total} {what} (first: {shown}); {hint}")


def _read_rows(path: Path, label_column: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"label file {path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for needed in ("filepath", label_column):
            if needed not in columns:
                raise ValueError(f"label file {path}: no {needed!r} column (columns: {', '.join(columns) or 'none'}); "
                                 "expected BioCLIP's annotation format (filepath, class, optional ranks)")
        rows = list(reader)
    if not rows:
        raise ValueError(f"label file {path}: no rows")
    empty = [str(i + 2) for i, row in enumerate(rows) if not row["filepath"].strip() or not row[label_column].strip()]
    if empty:
        raise _missing_error(f"rows of {path} have an empty filepath or {label_column!r}; lines", empty, len(rows),
                             "every row needs both")
    return rows


def _class_labels(rows: Sequence[Mapping[str, str]], classes: Sequence[str], label_column: str,
                  path: Path) -> tuple[Label, ...] | None:
    """Each class's Label from its rows' rank columns; None without rank columns; an error if a class has two."""
    if not any(column in rows[0] for column in RANK_COLUMNS):
        return None
    by_class: dict[str, Label] = {}
    for row in rows:
        # `class` is the dataset's class name here, never the class rank (that is `cls`).
        label = label_from_mapping({k: v for k, v in row.items() if k != label_column and k is not None})
        first = by_class.setdefault(row[label_column], label)
        if first != label:
            raise ValueError(f"label file {path}: class {row[label_column]!r} has two taxonomies "
                             f"({' '.join(first.ranks)} / {' '.join(label.ranks)}); one class needs one")
    return tuple(by_class[name] for name in classes)


def read_annotation(path: Path, root: Path | None = None, label_column: str = "class", name: str | None = None,
                    title: str | None = None, expected_classes: int | None = None) -> Task:
    """A task from a label file in BioCLIP's annotation format; image paths are relative to `root` or its folder."""
    rows = _read_rows(path, label_column)
    files = [row["filepath"].strip() for row in rows]
    duplicates = [file for file, count in Counter(files).items() if count > 1]
    if duplicates:
        raise _missing_error(f"rows of {path} repeat a filepath", duplicates, len(files), "list each image once")
    classes = tuple(sorted({row[label_column] for row in rows}))
    index = {name: i for i, name in enumerate(classes)}
    return Task(name or path.stem, title or str(path), root or path.parent, tuple(files),
                tuple(index[row[label_column]] for row in rows), classes,
                _class_labels(rows, classes, label_column, path), str(path), expected_classes)


def read_folder(folder: Path, name: str | None = None, title: str | None = None,
                expected_classes: int | None = None) -> Task:
    """A task from an image folder: one subfolder per class, image files (by suffix) inside, sorted."""
    if not folder.is_dir():
        raise ValueError(f"image folder {folder}: no such directory")
    per_class = {sub.name: sorted(f.relative_to(folder).as_posix() for f in sub.rglob("*")
                                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                 for sub in sorted(folder.iterdir()) if sub.is_dir()}
    per_class = {name: files for name, files in per_class.items() if files}
    if not per_class:
        raise ValueError(f"image folder {folder}: no class subfolder with images ({', '.join(IMAGE_SUFFIXES)}) "
                         "and no label file; expected one subfolder per class")
    classes = tuple(per_class)
    files = tuple(file for name in classes for file in per_class[name])
    targets = tuple(i for i, name in enumerate(classes) for _ in per_class[name])
    return Task(name or folder.name, title or str(folder), folder, files, targets, classes, None, str(folder),
                expected_classes)


def load_registry_task(spec: TaskSpec, data_root: Path) -> Task:
    """A registry task from the user's copy: the first of its label files found in `data_root`, else the folder."""
    if not data_root.is_dir():
        raise ValueError(f"--data-root {data_root}: no such directory (your local copy of {spec.title}'s images)")
    for annotation in spec.annotations:
        if (data_root / annotation).is_file():
            return read_annotation(data_root / annotation, data_root, spec.label_column, spec.name, spec.title,
                                   spec.classes)
    return read_folder(data_root, spec.name, spec.title, spec.classes)


def check_files(task: Task) -> None:
    """Raise, naming a few, if any image file the task lists is missing under its root."""
    missing = [file for file, path in zip(task.files, task.paths) if not path.is_file()]
    if missing:
        raise _missing_error(f"image files listed by {task.source} are missing under {task.root}", missing,
                             len(task.files), "point --data-root at the folder the filepath column is relative to")
