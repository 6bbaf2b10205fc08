"""Per-rank accuracy on a constructed case: prefixes decide, homonyms in another kingdom are wrong, gaps unscored."""

import torch

from taxonomy.captions import Label
from training.ranks import rank_accuracy

CORVIDAE = ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae")
LABELS = (
    Label((*CORVIDAE, "Pica", "hudsonia")),                                                     # 0
    Label((*CORVIDAE, "Pica", "pica")),                                                         # 1
    Label((*CORVIDAE, "Corvus", "corax")),                                                      # 2
    Label(("Animalia", "Chordata", "Aves", "Suliformes", "Sulidae", "Morus", "bassanus")),      # 3 gannet
    Label(("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Moraceae", "Morus", "alba")),  # 4 mulberry
    Label(("Animalia", "Chordata", "Aves", "Passeriformes", "", "", "")),                       # 5 family unknown
)


def test_rank_accuracy_compares_rank_prefixes():
    # (predicted, true): right species; same genus; same family; same class; genus homonym across kingdoms;
    # predicted into a class whose true label stops at order (scored only down to order).
    predictions = torch.tensor([0, 1, 2, 3, 4, 0])
    targets = torch.tensor([0, 0, 0, 0, 3, 5])
    result = rank_accuracy(predictions, targets, LABELS)
    # kingdom: all right but the mulberry-for-gannet (5 of 6). phylum, class: same 5 of 6.
    # order: pairs 0,1,2 (Passeriformes) and 5 (Passeriformes) right; gannet-for-magpie and mulberry wrong: 4 of 6.
    # family and below: image 5 not scored (5 images). family: 0,1,2 -> 3 of 5; genus: 0,1 -> 2 of 5 (Morus
    # homonym is wrong, its kingdom differs); species: 0 -> 1 of 5.
    assert {rank: (round(score["accuracy"], 4), score["scored"]) for rank, score in result.items()} == {
        "kingdom": (round(500 / 6, 4), 6), "phylum": (round(500 / 6, 4), 6), "class": (round(500 / 6, 4), 6),
        "order": (round(400 / 6, 4), 6), "family": (60.0, 5), "genus": (40.0, 5), "species": (20.0, 5)}


def test_names_compare_after_case_and_whitespace_folding_and_unnamed_ranks_report_none():
    labels = (Label(("Animalia", "", "", "", "", "", "")), Label(("animalia ", "", "", "", "", "", "")))
    result = rank_accuracy(torch.tensor([1]), torch.tensor([0]), labels)
    assert result["kingdom"] == {"accuracy": 100.0, "scored": 1}
    assert result["species"] == {"accuracy": None, "scored": 0}
