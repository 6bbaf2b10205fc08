"""Task registry (the paper's ten, class counts checked on BioCLIP's label files) and reading tasks from disk."""

import csv
from pathlib import Path

import pytest

from taxonomy.captions import Label
from training import tasks

ANNOTATION_DIR = "bioclip/data/annotation"
PAPER_ORDER = ("birds-525", "plankton", "insects", "insects-2", "plantnet", "fungi", "plantvillage", "medicinal-leaf",
               "plantdoc", "rare-species")


def test_registry_lists_the_papers_ten_tasks_in_its_column_order():
    registry = tasks.registry()
    assert tuple(registry) == PAPER_ORDER
    assert [spec.code for spec in registry.values()][1:9] == ["PLK_Mini", "INS_Mini", "INS_2_Mini", "PLT_NET_Mini",
                                                              "FNG_Mini", "PLT_VIL_Mini", "MED_LF_Mini", "PLT_DOC_Mini"]
    assert registry["birds-525"].classes == 525
    assert [spec.name for spec in registry.values() if spec.ranks] == ["rare-species"]
    assert all(spec.label_column == "class" and spec.annotations for spec in registry.values())


@pytest.mark.parametrize("name", PAPER_ORDER[1:])
def test_class_counts_match_bioclips_label_files(shared_data: Path, name: str):
    spec = tasks.registry()[name]
    path = shared_data / ANNOTATION_DIR / spec.bioclip_annotation.removeprefix("data/annotation/")
    task = tasks.read_annotation(path, label_column=spec.label_column)
    assert len(task.classes) == spec.classes
    assert (task.labels is not None) == spec.ranks


def test_reads_bioclips_rare_species_file_with_ranks_and_common_names(shared_data: Path):
    path = shared_data / ANNOTATION_DIR / "rare_species/metadata.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == ["", "kingdom", "phylum", "cls", "order", "family", "genus", "species", "common_name", "filepath",
                      "class"]
    task = tasks.read_annotation(path)
    assert len(task.files) == 11983 and task.files[0] == "2024-03-20/12853737_449393_eol-full-size-copy.jpg"
    assert task.root == path.parent
    wartyback = task.labels[task.classes.index("Cyclonaias tuberculata")]
    ranks = ("Animalia", "Mollusca", "Bivalvia", "Unionida", "Unionidae", "Cyclonaias", "tuberculata")
    assert wartyback == Label(ranks, "purple wartyback")
    assert task.targets[0] == task.classes.index("Cyclonaias tuberculata")


def test_task_spec_takes_a_name_or_a_code_in_any_case_and_lists_known_names_otherwise():
    assert tasks.task_spec("plk_mini").name == "plankton"
    assert tasks.task_spec("Rare-Species").name == "rare-species"
    with pytest.raises(ValueError, match=r"--task 'birds': unknown task; known: birds-525, plankton"):
        tasks.task_spec("birds")


def test_published_numbers_name_described_sources_and_registry_tasks():
    published = tasks.published()
    assert {p.source for p in published} <= set(tasks.sources())
    assert {p.task for p in published} <= set(tasks.registry())
    bioclip = {(p.source, p.task): p.top1 for p in published if p.model == "BioCLIP" and p.shots == 0}
    assert bioclip["project-page", "rare-species"] == 37.8
    assert bioclip["model-card", "birds-525"] == 74.7
    assert {p.model for p in tasks.published_for("plankton")} == {"CLIP", "OpenCLIP", "BioCLIP"}
    # Only zero-shot numbers were read from a source; Table 4 is recorded as not transcribed rather than guessed.
    assert {p.shots for p in published} == {0}
    assert tasks.paper()["transcribed"] is False


def test_read_annotation_sorts_classes_and_resolves_paths_against_the_csv_folder(annotation_task: Path):
    task = tasks.read_annotation(annotation_task)
    assert task.classes == ("Morus alba", "Pica hudsonia", "Pica pica")
    assert len(task.files) == 12 and task.files[0] == "images/Pica_hudsonia/0.jpg"
    assert task.targets[:4] == (1, 1, 1, 1) and task.targets[-1] == 0
    assert task.paths[0] == annotation_task.parent / "images/Pica_hudsonia/0.jpg"
    assert task.labels[2] == Label(("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica"), "")
    tasks.check_files(task)
    elsewhere = tasks.read_annotation(annotation_task, root=Path("/data/copy"))
    assert elsewhere.paths[0] == Path("/data/copy/images/Pica_hudsonia/0.jpg")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def test_a_class_only_file_has_no_labels_and_class_is_never_read_as_a_rank(tmp_path: Path):
    path = write_csv(tmp_path / "plain.csv", ["filepath", "class"], [["a/1.jpg", "Apidae"], ["b/1.jpg", "Vespidae"]])
    assert tasks.read_annotation(path).labels is None
    ranked = write_csv(tmp_path / "ranked.csv", ["filepath", "class", "genus", "species"],
                       [["a/1.jpg", "Bombus crotchii", "Bombus", "crotchii"]])
    assert tasks.read_annotation(ranked).labels[0].ranks == ("", "", "", "", "", "Bombus", "crotchii")


@pytest.mark.parametrize("header, rows, message", [
    (["path", "class"], [["a.jpg", "x"]], r"no 'filepath' column \(columns: path, class\)"),
    (["filepath", "label"], [["a.jpg", "x"]], r"no 'class' column"),
    (["filepath", "class"], [], r"no rows"),
    (["filepath", "class"], [["a.jpg", ""]], r"1 of 1 rows of .* have an empty filepath or 'class'; lines \(first: 2"),
    (["filepath", "class"], [["a.jpg", "x"], ["a.jpg", "y"]], r"1 of 2 rows of .* repeat a filepath \(first: a.jpg\)"),
    (["filepath", "class", "genus", "species"], [["a.jpg", "x", "Pica", "pica"], ["b.jpg", "x", "Pica", "hudsonia"]],
     r"class 'x' has two taxonomies"),
])
def test_bad_label_files_give_one_clear_error(tmp_path: Path, header, rows, message):
    with pytest.raises(ValueError, match=message):
        tasks.read_annotation(write_csv(tmp_path / "bad.csv", header, rows))


def test_check_files_counts_missing_images_and_names_the_first(annotation_task: Path):
    task = tasks.read_annotation(annotation_task)
    for path in task.paths[:7]:
        path.unlink()
    with pytest.raises(ValueError, match=r"7 of 12 image files listed by .* are missing under .* \(first: "
                                         r"images/Pica_hudsonia/0.jpg, .*, \.\.\.\); point --data-root"):
        tasks.check_files(task)


def test_read_folder_takes_one_subfolder_per_class_and_image_files_only(tmp_path: Path, make_image):
    for name, count in (("Zebra", 2), ("Aardvark", 1)):
        for index in range(count):
            make_image(tmp_path / name / f"{index}.png", (10, 10, 10), index)
    (tmp_path / "Zebra" / "notes.txt").write_text("not an image")
    (tmp_path / "Empty").mkdir()
    task = tasks.read_folder(tmp_path)
    assert task.classes == ("Aardvark", "Zebra")
    assert task.files == ("Aardvark/0.png", "Zebra/0.png", "Zebra/1.png") and task.targets == (0, 1, 1)
    assert task.labels is None
    with pytest.raises(ValueError, match="no class subfolder with images"):
        tasks.read_folder(tmp_path / "Empty")


def test_registry_task_prefers_its_label_file_else_reads_the_folder(tmp_path: Path, make_annotation_task):
    spec = tasks.task_spec("rare-species")
    make_annotation_task(tmp_path)
    task = tasks.load_registry_task(spec, tmp_path)
    assert task.name == "rare-species" and task.source.endswith("metadata.csv") and task.expected_classes == 400
    (tmp_path / "metadata.csv").unlink()
    folder = tasks.load_registry_task(spec, tmp_path / "images")
    assert folder.classes == ("Morus_alba", "Pica_hudsonia", "Pica_pica") and folder.labels is None
    with pytest.raises(ValueError, match=r"--data-root .*missing: no such directory"):
        tasks.load_registry_task(spec, tmp_path / "missing")


def test_without_drops_files_but_keeps_classes(annotation_task: Path):
    task = tasks.read_annotation(annotation_task)
    smaller = task.without({"images/Pica_hudsonia/0.jpg", "images/Morus_alba/3.png"})
    assert len(smaller.files) == 10 and smaller.classes == task.classes
    assert all(task.targets[task.files.index(f)] == t for f, t in zip(smaller.files, smaller.targets))
