"""Zero-shot classification as BioCLIP's evaluation does it: class texts, OpenAI's 80 templates, top-k accuracy.

    texts, used = class_texts_for(task, "taxon_com")       # ("Animalia ... Bombus crotchii with common name ...", ...)
    classifier = training.embed.text_classifier(loaded, texts)  # [embed_dim, classes], open_clip's own builder
    predictions, accuracy = zero_shot(image_features, classifier, targets)   # {"top1": 37.5, "top3": ..., "top5": ...}

Class texts come from taxonomy.captions (`class_text`, types EVAL_TEXT_TYPES, with its fallbacks when a common name
is missing). A task without rank columns has only its class names, so there every type is `asis`. Scoring takes
feature tensors, apart from any model, so tests check it by hand. Accuracies are percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taxonomy.captions import EVAL_TEXT_TYPES, class_text
from training.tasks import Task

TOP_K = (1, 3, 5)


def class_texts_for(task: Task, text_type: str) -> tuple[list[str], str]:
    """The class texts of `task` in class order, and the text type used (`asis` when the task has no ranks)."""
    if text_type not in EVAL_TEXT_TYPES:
        raise ValueError(f"--text-type {text_type!r}: expected one of {', '.join(EVAL_TEXT_TYPES)}")
    if task.labels is None or text_type == "asis":
        return list(task.classes), "asis"
    texts = []
    for label, name in zip(task.labels, task.classes):
        try:
            texts.append(class_text(label, text_type, name))
        except ValueError as error:
            raise ValueError(f"--text-type {text_type}: class {name!r} of {task.source} has no rank to name it "
                             f"({error}); fill its ranks or use --text-type asis") from error
    return texts, text_type


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = TOP_K) -> dict[str, float]:
    """Percent of rows whose target is among their k highest scores, for each k (k >= the class count gives 100)."""
    if scores.shape[0] == 0:
        raise ValueError("no images to score")
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == targets[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).double().mean().item() for k in ks}


def zero_shot(image_features: torch.Tensor, classifier: torch.Tensor,
              targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Predicted class per image (highest cosine similarity) and top-k accuracy, from normalised features."""
    scores = image_features.float() @ classifier.float()
    return scores.argmax(dim=1), topk_accuracy(scores, targets)
