"""`tol eval` end to end through the CLI with the tiny random model: BioCLIP's CSV format, registry tasks, folders,
checkpoints, saved support splits, unreadable images and one-line errors."""

import csv
import json
from pathlib import Path

import pytest
import torch

import data_manifests
from pipeline.cli import main
from training import checkpoints
from training.few_shot import draw_splits
from training.tasks import read_annotation

TINY = "local-dir:" + str(data_manifests.path("training/models/tiny-cpu/open_clip_config.json").parent)
FAST = ["--model", TINY, "--templates", "none", "--batch-size", "5"]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_eval_reads_bioclips_csv_format_and_writes_json_and_markdown(annotation_task: Path, tmp_path: Path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--model", TINY, "--task-csv", str(annotation_task), "--out", str(out), "--shots", "1,2",
                 "--runs", "2", "--batch-size", "5"]) == 0
    found = results(out)
    assert found["task"] | {"source": ""} == {"name": "metadata", "title": str(annotation_task), "source": "",
                                              "images": 12, "classes": 3, "expected_classes": None,
                                              "unreadable": {"count": 0, "first": []}}
    assert found["settings"] | {"support_splits": None} == {
        "text_type": "taxon_com", "templates": "openai", "shots": [1, 2], "runs": 2, "seed": 0, "support_splits": None}
    assert set(found["zero_shot"]) == {"top1", "top3", "top5"} and found["zero_shot"]["top3"] == 100.0
    assert found["chance"]["top1"] == pytest.approx(100 / 3)
    assert [len(found["few_shot"][k]["runs"]) for k in ("1", "2")] == [2, 2]
    assert all(0 <= found["few_shot"][k]["top1"]["mean"] <= 100 for k in ("1", "2"))
    assert list(found["per_rank"]) == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    assert found["per_rank"]["species"]["scored"] == 12
    assert found["class_texts"][1].endswith("Pica hudsonia with common name black-billed magpie")
    assert found["published"] == []
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "| Shots | Top-1 | Top-3 | Top-5 | Chance top-1 |" in markdown and "| 2 |" in markdown
    assert "## Per-rank accuracy" in markdown and "none recorded for this task" in markdown
    assert markdown in capsys.readouterr().out


def test_saved_support_splits_give_identical_numbers(annotation_task: Path, tmp_path: Path):
    splits = tmp_path / "splits.json"
    common = ["eval", *FAST, "--task-csv", str(annotation_task), "--shots", "1,3", "--support-splits", str(splits)]
    assert main([*common, "--out", str(tmp_path / "first")]) == 0
    saved = splits.read_text(encoding="utf-8")
    assert json.loads(saved)["seed"] == 0 and results(tmp_path / "first")["settings"]["seed"] == 0
    # Another seed would draw other splits; with the saved file it must not matter.
    assert main([*common, "--seed", "9", "--out", str(tmp_path / "again")]) == 0
    assert splits.read_text(encoding="utf-8") == saved
    assert results(tmp_path / "again")["few_shot"] == results(tmp_path / "first")["few_shot"]
    assert results(tmp_path / "again")["settings"]["seed"] == 0  # the splits' seed, not the unused --seed
    task = read_annotation(annotation_task)
    seed9 = {str(k): runs for k, runs in draw_splits(task.files, task.targets, (1, 3), 5, seed=9).items()}
    assert seed9 != json.loads(saved)["shots"]  # so the file, not luck, made the numbers equal


def test_unreadable_images_are_counted_reported_and_left_out(annotation_task: Path, tmp_path: Path, capsys):
    (annotation_task.parent / "images/Pica_pica/1.png").write_bytes(b"not a png")
    out = tmp_path / "eval"
    assert main(["eval", *FAST, "--task-csv", str(annotation_task), "--out", str(out), "--shots", "1", "--runs",
                 "1"]) == 0
    task = results(out)["task"]
    assert task["images"] == 11 and task["unreadable"]["count"] == 1
    assert "Pica_pica/1.png: not a readable image" in task["unreadable"]["first"][0]
    assert "1 of 12 images unreadable, left out" in capsys.readouterr().err


def test_a_registry_task_on_real_rare_species_rows(shared_data: Path, tmp_path: Path, make_image):
    """BioCLIP's own metadata.csv rows (three species, four images each) as --task rare-species reads them."""
    with open(shared_data / "bioclip/data/annotation/rare_species/metadata.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    wanted = list(dict.fromkeys(row[-1] for row in rows))[:3]
    chosen = [row for name in wanted for row in [r for r in rows if r[-1] == name][:4]]
    for index, row in enumerate(chosen):
        make_image(tmp_path / "data" / row[-2], (40 * index % 255, 90, 140), index)
    with open(tmp_path / "data/metadata.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *chosen])
    out = tmp_path / "eval"
    assert main(["eval", *FAST, "--task", "rare-species", "--data-root", str(tmp_path / "data"), "--out", str(out),
                 "--shots", "1", "--runs", "2", "--text-type", "com"]) == 0
    found = results(out)
    assert found["task"]["classes"] == 3 and found["task"]["expected_classes"] == 400
    common = {row[-1]: row[header.index("common_name")] for row in chosen}
    assert found["class_texts"] == [common[name] for name in sorted(common)]
    assert {p["model"] for p in found["published"]} == {"CLIP", "OpenCLIP", "BioCLIP"}
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "| 37.8 (a) / 39.2 (b) |" in markdown and "the paper's task has 400 classes" in markdown


def test_a_checkpoint_on_an_image_folder(tiny_model, tmp_path: Path, make_image):
    for name in ("Apidae", "Vespidae"):
        for index in range(3):
            make_image(tmp_path / "folder" / name / f"{index}.jpg", (200, 150 if name == "Apidae" else 20, 0), index)
    model = tiny_model.model
    path = checkpoints.save(tmp_path / "run", 1, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            scaler=None, open_clip_config=tiny_model.config, config={}, workers=0)
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(path), "--task-folder", str(tmp_path / "folder"), "--templates", "none",
                 "--out", str(out), "--shots", "1", "--runs", "1"]) == 0
    found = results(out)
    assert found["model"]["checkpoint"] == str(path) and found["settings"]["text_type"] == "asis"
    assert found["class_texts"] == ["Apidae", "Vespidae"] and found["per_rank"] is None


@pytest.mark.parametrize("args, message", [
    (["--task", "birds"], "--task 'birds': unknown task; known: birds-525, plankton, insects"),
    (["--task", "plankton"], "--task plankton needs --data-root DIR"),
    ([], "give --task NAME (with --data-root), --task-csv PATH or --task-folder DIR"),
    (["--task-csv", "{missing_column}"], "no 'class' column (columns: filepath, label)"),
    (["--task-csv", "{csv}", "--model", "RN-9000"], "model 'RN-9000' is not an open_clip model name"),
])
def test_bad_input_is_one_clear_line(annotation_task: Path, tmp_path: Path, capsys, args, message):
    missing_column = tmp_path / "bad.csv"
    missing_column.write_text("filepath,label\na.jpg,x\n", encoding="utf-8")
    args = [a.format(missing_column=missing_column, csv=annotation_task) for a in args]
    model = [] if "--model" in args else ["--model", TINY]
    assert main(["eval", *model, *args]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ERROR training.evaluate" in error and message in error


def test_missing_images_are_counted_and_named(annotation_task: Path, capsys):
    for name in ("0.jpg", "1.png"):
        (annotation_task.parent / "images/Morus_alba" / name).unlink()
    assert main(["eval", *FAST, "--task-csv", str(annotation_task)]) == 2
    assert "2 of 12 image files listed by" in capsys.readouterr().err


def test_help_lists_eval_and_list_tasks_prints_the_registry(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "eval" in capsys.readouterr().out
    assert main(["eval", "--list-tasks"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("birds-525", "PLK_Mini", "medicinal-leaf", "rare-species"))
    with pytest.raises(SystemExit):
        main(["eval", "--shots", "0,5", "--list-tasks"])
    assert "--shots: expected comma-separated positive integers (e.g. 1,5), got '0,5'" in capsys.readouterr().err
