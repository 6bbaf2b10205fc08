"""SimpleShot checked by hand on tiny fixed embeddings; seeded support draws; support-split files."""

import math
import random

import pytest
import torch

from training.few_shot import (
    SPLITS_FORMAT,
    NoQueryImages,
    draw_splits,
    draw_support,
    few_shot,
    few_shot_run,
    simpleshot_scores,
    splits_document,
    splits_from_document,
)


def test_one_shot_scores_by_hand():
    # Support (2,0) and (0,2): mean (1,1); centred and normalised they are (r,-r) and (-r,r), r = 1/sqrt(2).
    # Query (3,1): centred (2,0), normalised (1,0). Squared distances: (1-r)^2 + r^2 = 2 - sqrt(2), and 2 + sqrt(2).
    scores = simpleshot_scores(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]),
                               torch.tensor([[3.0, 1.0]]), classes=2)
    assert scores[0].tolist() == pytest.approx([-math.sqrt(2 - math.sqrt(2)), -math.sqrt(2 + math.sqrt(2))])


def test_centroids_average_the_normalised_support_without_renormalising():
    # Support mean (1,1). Class 0: (2,2),(2,0) -> (r,r),(r,-r) -> centroid (r,0). Class 1: (0,0),(0,2) -> (-r,0).
    # Query (3,2): centred (2,1)/sqrt(5). d^2 = 1/5*(4+1) + r^2 -/+ 2*2r/sqrt(5) = 1.5 -/+ 2*sqrt(0.4).
    # (A renormalised centroid (1,0) would give 2 - 4/sqrt(5) instead.) Class 2 has no support: -inf.
    support = torch.tensor([[2.0, 2.0], [2.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    scores = simpleshot_scores(support, torch.tensor([0, 0, 1, 1]), torch.tensor([[3.0, 2.0]]), classes=3)
    near, far = math.sqrt(1.5 - 2 * math.sqrt(0.4)), math.sqrt(1.5 + 2 * math.sqrt(0.4))
    assert scores[0, :2].tolist() == pytest.approx([-near, -far])
    assert scores[0, 2].item() == -math.inf


# Six images in two classes. With one support image per class the two centroids are opposite unit vectors, so a
# query goes to class 0 exactly when (query - support mean) points along (support0 - support1).
FEATURES = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, -0.1],    # class 0: f0 f1 f2
                         [0.0, 1.0], [0.1, 0.9], [0.6, 0.4]])    # class 1: f3 f4 f5
TARGETS = torch.tensor([0, 0, 0, 1, 1, 1])
FILES = ["f0", "f1", "f2", "f3", "f4", "f5"]


def test_few_shot_runs_mean_and_std_by_hand():
    # Run A, support f0 + f3: direction (1,-1); f1 (.8), f2 (.9) -> 0 right; f4 (-.8) -> 1 right; f5 (.2) -> 0 wrong.
    # Run B, support f2 + f5: mean (.7,.15), direction (.1,-.25): f0 .0675, f1 .0325 -> 0; f3, f4 negative -> 1.
    result = few_shot(FEATURES, TARGETS, FILES, [["f0", "f3"], ["f2", "f5"]], classes=2)
    assert [run["top1"] for run in result["runs"]] == [75.0, 100.0]
    assert result["top1"] == {"mean": 87.5, "std": 12.5}  # population std over runs, as BioCLIP's np.std
    assert result["top3"] == {"mean": 100.0, "std": 0.0}


def test_a_run_without_query_images_says_so():
    with pytest.raises(NoQueryImages, match="none is left to query"):
        few_shot_run(FEATURES, TARGETS, torch.ones(6, dtype=torch.bool), classes=2)


def files_and_targets(per_class: tuple[int, ...]) -> tuple[list[str], list[int]]:
    files = [f"c{c}/{i}.jpg" for c, count in enumerate(per_class) for i in range(count)]
    return files, [int(f[1]) for f in files]


def test_draw_support_takes_k_per_class_and_all_of_a_smaller_class():
    files, targets = files_and_targets((10, 10, 3))
    support = draw_support(files, targets, shots=5, seed=0, run=0)
    assert [sum(f.startswith(f"c{c}/") for f in support) for c in range(3)] == [5, 5, 3]
    assert draw_support(files, targets, 5, 0, 0) == support  # same seed and run, same draw


def test_draw_support_ignores_row_order_but_not_seed_or_run():
    files, targets = files_and_targets((10, 10))
    rows = list(zip(files, targets))
    random.Random(1).shuffle(rows)
    shuffled_files, shuffled_targets = zip(*rows)
    assert draw_support(shuffled_files, shuffled_targets, 1, 7, 2) == draw_support(files, targets, 1, 7, 2)
    runs = draw_splits(files, targets, shots=(1,), runs=5, seed=7)[1]
    assert len({tuple(run) for run in runs}) > 1
    assert draw_splits(files, targets, (1,), 5, 8)[1] != runs


def test_splits_round_trip_through_their_document():
    files, targets = files_and_targets((6, 6))
    splits = draw_splits(files, targets, shots=(1, 5), runs=3, seed=0)
    document = splits_document("demo", 0, splits)
    assert document["format"] == SPLITS_FORMAT and set(document["shots"]) == {"1", "5"}
    assert splits_from_document(document, "s.json", (1, 5), 3, files) == splits
    assert splits_from_document(document, "s.json", (5,), 3, files) == {5: splits[5]}


@pytest.mark.parametrize("shots, runs, files, message", [
    ((2,), 3, None, r"--support-splits s.json: no 3 runs of 2-shot support \(it has runs per shot \{'1': 3\}\)"),
    ((1,), 5, None, r"no 5 runs of 1-shot support"),
    ((1,), 3, ["c0/0.jpg"], r"support files are not among this task's readable images"),
])
def test_unusable_split_files_are_clear_errors(shots, runs, files, message):
    all_files, targets = files_and_targets((4, 4))
    document = splits_document("demo", 0, draw_splits(all_files, targets, (1,), 3, 0))
    with pytest.raises(ValueError, match=message):
        splits_from_document(document, "s.json", shots, runs, files or all_files)
    with pytest.raises(ValueError, match=f"not a {SPLITS_FORMAT} file"):
        splits_from_document({"shots": {}}, "s.json", shots, runs, all_files)
