"""SimpleShot few-shot classification (nearest class centroid) as BioCLIP's evaluation does it, on fixed splits.

    splits = draw_splits(task.files, task.targets, shots=(1, 5), runs=5, seed=0)  # {1: [[support files] x 5], 5: ...}
    result = few_shot(features, targets, task.files, splits[5], len(task.classes))
    # {"runs": [{"top1": ...}, ...], "top1": {"mean": ..., "std": ...}, "top3": ..., "top5": ...}

A k-shot run draws k support images per class (all of a class that has fewer), seeded by (seed, k, run) and
independent of row order; every other image is a query. As BioCLIP's src/evaluation/few_shot.py does (SimpleShot,
Wang et al. 2019, "CL2N"): subtract the mean of the support features from support and queries, L2-normalise, average
each class's support into its centroid, and rank classes by Euclidean distance to the centroids. Mean and std (ddof
0, as BioCLIP's np.std) are over runs. Splits are saved by file path (`splits_document`), so a saved split file gives
the same numbers again wherever the same images are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.zero_shot import topk_accuracy

SPLITS_FORMAT = "treeoflife-support-splits-v1"
Splits = dict[int, list[list[str]]]  # shots -> one list of support files per run


class NoQueryImages(ValueError):
    """A split whose support takes every image, leaving nothing to classify."""


def draw_support(files: Sequence[str], targets: Sequence[int], shots: int, seed: int, run: int) -> list[str]:
    """`shots` support files per class (all of a smaller class), drawn by a generator seeded (seed, shots, run)."""
    rng = np.random.default_rng([seed, shots, run])
    by_class: dict[int, list[str]] = defaultdict(list)
    for file, target in zip(files, targets):
        by_class[target].append(file)
    support = []
    for target in sorted(by_class):
        members = sorted(by_class[target])
        picks = rng.choice(len(members), size=min(shots, len(members)), replace=False)
        support.extend(members[i] for i in sorted(picks))
    return support


def draw_splits(files: Sequence[str], targets: Sequence[int], shots: Sequence[int], runs: int, seed: int) -> Splits:
    """`runs` support draws for each shot count."""
    return {k: [draw_support(files, targets, k, seed, run) for run in range(runs)] for k in shots}


def splits_document(task: str, seed: int, splits: Splits) -> dict:
    """The JSON content of a support-splits file."""
    return {"format": SPLITS_FORMAT, "task": task, "seed": seed,
            "shots": {str(k): runs for k, runs in sorted(splits.items())}}


def splits_from_document(document: Mapping, where: str, shots: Sequence[int], runs: int,
                         files: Sequence[str]) -> Splits:
    """The splits a support-splits file holds for `shots` x `runs`; a clear error if it cannot give them."""
    if not isinstance(document, Mapping) or document.get("format") != SPLITS_FORMAT:
        raise ValueError(f"--support-splits {where}: not a {SPLITS_FORMAT} file")
    saved = document["shots"]
    known = set(files)
    splits: Splits = {}
    for k in shots:
        if str(k) not in saved or len(saved[str(k)]) != runs:
            have = {key: len(value) for key, value in saved.items()}
            raise ValueError(f"--support-splits {where}: no {runs} runs of {k}-shot support (it has runs per shot "
                             f"{have}); pass matching --shots/--runs or another path to draw new splits")
        missing = sorted({file for run in saved[str(k)] for file in run} - known)
        if missing:
            raise ValueError(f"--support-splits {where}: {len(missing)} support files are not among this task's "
                             f"readable images (first: {', '.join(missing[:5])}); the splits belong to other data")
        splits[k] = [list(run) for run in saved[str(k)]]
    return splits


def simpleshot_scores(support: torch.Tensor, support_targets: torch.Tensor, queries: torch.Tensor,
                      classes: int) -> torch.Tensor:
    """[queries, classes] scores: minus the Euclidean distance to each class centroid (-inf for a class without one)."""
    support, queries = support.double(), queries.double()
    mean = support.mean(dim=0)
    support, queries = F.normalize(support - mean, dim=1), F.normalize(queries - mean, dim=1)
    counts = torch.bincount(support_targets, minlength=classes)
    centroids = torch.zeros(classes, support.shape[1], dtype=support.dtype).index_add_(0, support_targets, support)
    centroids = centroids / counts.clamp(min=1)[:, None]
    scores = -torch.cdist(queries, centroids)
    scores[:, counts == 0] = -torch.inf
    return scores


def few_shot_run(features: torch.Tensor, targets: torch.Tensor, support: torch.Tensor,
                 classes: int) -> dict[str, float]:
    """Top-k accuracy (%) of one run; `support` is a boolean mask over images, the rest are queries."""
    if bool(support.all()):
        raise NoQueryImages("every image is a support image, none is left to query (every class has too few images)")
    scores = simpleshot_scores(features[support], targets[support], features[~support], classes)
    return topk_accuracy(scores, targets[~support])


def few_shot(features: torch.Tensor, targets: torch.Tensor, files: Sequence[str], runs: Sequence[Sequence[str]],
             classes: int) -> dict:
    """Every run's top-k accuracy and their mean and std (%), one run per list of support files."""
    index = {file: i for i, file in enumerate(files)}
    results = []
    for support_files in runs:
        support = torch.zeros(len(files), dtype=torch.bool)
        support[[index[file] for file in support_files]] = True
        results.append(few_shot_run(features, targets, support, classes))
    summary = {key: {"mean": float(np.mean([r[key] for r in results])), "std": float(np.std([r[key] for r in results]))}
               for key in results[0]}
    return {"runs": results, **summary}
