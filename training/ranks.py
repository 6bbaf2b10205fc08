"""Per-rank accuracy of species predictions: is the predicted class right at kingdom, phylum, ... species?

    accuracy = rank_accuracy(predictions, targets, task.labels)  # {"kingdom": {"accuracy": 100.0, "scored": 40}, ...}

The model predicts one class (the zero-shot argmax); at each rank the prediction counts as right when the predicted
class's ranks from kingdom down to that rank equal the true class's (so a genus homonym in another kingdom is
wrong, and `species` means the whole binomial and above). An image is scored at a rank only where its true class
names that rank; names are compared after whitespace and case folding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taxonomy.captions import RANKS, Label


def _folded(label: Label) -> tuple[str, ...]:
    return tuple(" ".join(rank.split()).casefold() for rank in label.ranks)


def rank_accuracy(predictions: torch.Tensor, targets: torch.Tensor,
                  labels: Sequence[Label]) -> dict[str, dict[str, float | int | None]]:
    """Accuracy (%; None where no image names the rank) and images scored at each of RANKS, by rank prefixes."""
    ranks = [_folded(label) for label in labels]
    result: dict[str, dict[str, float | int | None]] = {}
    for depth, rank in enumerate(RANKS, start=1):
        scored = right = 0
        for predicted, true in zip(predictions.tolist(), targets.tolist()):
            if not ranks[true][depth - 1]:
                continue
            scored += 1
            right += ranks[predicted][:depth] == ranks[true][:depth]
        result[rank] = {"accuracy": 100.0 * right / scored if scored else None, "scored": scored}
    return result
