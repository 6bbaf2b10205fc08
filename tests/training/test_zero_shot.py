"""Zero-shot: class texts by type with their fallbacks, and top-k scoring checked by hand on fixed embeddings."""

import math
from pathlib import Path

import pytest
import torch

from taxonomy.captions import Label
from training.embed import text_classifier
from training.tasks import Task, read_annotation
from training.zero_shot import class_texts_for, topk_accuracy, zero_shot


def test_class_texts_by_type_with_common_name_fallbacks(annotation_task: Path):
    task = read_annotation(annotation_task)  # classes: Morus alba, Pica hudsonia, Pica pica (no common name)
    assert class_texts_for(task, "asis") == (["Morus alba", "Pica hudsonia", "Pica pica"], "asis")
    assert class_texts_for(task, "sci")[0] == ["Morus alba", "Pica hudsonia", "Pica pica"]
    assert class_texts_for(task, "com")[0] == ["white mulberry", "black-billed magpie", "Pica pica"]
    taxon_com, used = class_texts_for(task, "taxon_com")
    assert used == "taxon_com"
    magpie = "Animalia Chordata Aves Passeriformes Corvidae Pica hudsonia with common name black-billed magpie"
    assert taxon_com[1] == magpie
    assert taxon_com[2] == "Animalia Chordata Aves Passeriformes Corvidae Pica pica"  # no common name: taxon alone
    assert class_texts_for(task, "sci_com")[0][2] == "Pica pica"


def test_a_task_without_ranks_uses_its_class_names_for_every_type():
    task = Task("plankton", "Plankton", Path("."), ("a.png",), (0,), ("Emiliania_huxleyi",), None, "labels.csv")
    assert class_texts_for(task, "taxon_com") == (["Emiliania_huxleyi"], "asis")


def test_unknown_type_and_rankless_class_are_clear_errors(annotation_task: Path):
    task = read_annotation(annotation_task)
    with pytest.raises(ValueError, match=r"--text-type 'taxonTag': expected one of asis, sci, com"):
        class_texts_for(task, "taxonTag")
    blank = Task("t", "t", Path("."), ("a.png",), (0,), ("mystery",), (Label(("",) * 7),), "t.csv")
    with pytest.raises(ValueError, match=r"class 'mystery' of t.csv has no rank to name it .* --text-type asis"):
        class_texts_for(blank, "sci")
    assert class_texts_for(blank, "asis") == (["mystery"], "asis")


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0],   # target 0: rank 1
                           [0.5, 0.4, 0.3, 0.2],   # target 2: rank 3
                           [0.1, 0.2, 0.3, 0.4],   # target 0: rank 4
                           [0.0, 0.9, 0.8, 0.7]])  # target 3: rank 3
    targets = torch.tensor([0, 2, 0, 3])
    assert topk_accuracy(scores, targets, (1, 2, 3, 5)) == {"top1": 25.0, "top2": 25.0, "top3": 75.0, "top5": 100.0}
    with pytest.raises(ValueError, match="no images to score"):
        topk_accuracy(torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def test_zero_shot_on_a_fixed_embedding_set():
    # Three class directions in 2-D and four unit image features; cosine = dot product.
    r = 1 / math.sqrt(2)
    classifier = torch.tensor([[1.0, 0.0, r],
                               [0.0, 1.0, r]])               # [embed_dim, classes]: east, north, north-east
    features = torch.tensor([[1.0, 0.0],                     # east: sims 1, 0, .71 -> 0
                             [0.6, 0.8],                     # sims .6, .8, .99 -> 2
                             [0.0, -1.0],                    # sims 0, -1, -.71 -> 0
                             [-0.6, 0.8]])                   # sims -.6, .8, .14 -> 1
    predictions, accuracy = zero_shot(features, classifier, torch.tensor([0, 1, 2, 1]))
    assert predictions.tolist() == [0, 2, 0, 1]
    # Top-1: images 0 and 3 right; images 1 and 2 have their target second. Top-3 of 3 classes: all.
    assert accuracy == {"top1": 50.0, "top3": 100.0, "top5": 100.0}


def test_classifier_from_the_tiny_model_scores_every_class(tiny_model, annotation_task: Path):
    task = read_annotation(annotation_task)
    texts, _ = class_texts_for(task, "taxon_com")
    classifier = text_classifier(tiny_model, texts, "simple")
    assert classifier.shape == (tiny_model.config["model_cfg"]["embed_dim"], 3)
    assert torch.allclose(classifier.norm(dim=0), torch.ones(3), atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(5, classifier.shape[0], generator=generator), dim=1)
    predictions, accuracy = zero_shot(features, classifier, torch.zeros(5, dtype=torch.long))
    assert predictions.tolist() == (features @ classifier).argmax(dim=1).tolist()
    assert accuracy["top3"] == 100.0
