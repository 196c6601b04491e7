"""GLUE TSV loading: every task's layout, header convention, errors and few-shot subsets."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplora.finetune.data import (
    DATA_DIR_ENV,
    TASKS,
    DataError,
    available_tasks,
    few_shot,
    get_task,
    hold_out,
    load_split,
)


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("split", ["train", "dev"])
def test_every_task_loads_with_hub_columns(glue_dir: Path, name: str, split: str) -> None:
    task = get_task(name)
    data = load_split(name, split, glue_dir)
    assert data.column_names == [*task.text_columns, "label"]
    assert len(data) == 40  # CoLA's header-less first row is data, not a header
    if task.is_regression:
        assert data[3]["label"] == pytest.approx(3 * 0.37)
    else:
        assert set(data["label"]) == set(range(task.num_labels))


def test_cola_first_row_and_last_line_without_newline(glue_dir: Path) -> None:
    data = load_split("cola", "dev", glue_dir)
    assert data[0]["label"] == 0 and data[0]["sentence"].startswith("a man is")
    assert data[-1]["label"] == 1


def test_quotes_are_data(glue_dir: Path) -> None:
    stsb = load_split("stsb", "train", glue_dir)
    assert stsb[0]["sentence1"].startswith('A "quoted" ')
    mrpc = load_split("mrpc", "train", glue_dir)  # BOM in the header, lone quote in the text
    assert mrpc[0]["sentence1"].endswith(' " .')


def test_mnli_uses_gold_label_of_dev_matched(glue_dir: Path) -> None:
    dev = load_split("mnli", "dev", glue_dir)
    assert dev["label"][:3] == [0, 1, 2]  # gold_label column, not label2..label5 ("neutral")


def test_task_names_are_case_and_dash_insensitive() -> None:
    assert get_task("STS-B") is TASKS["stsb"] and get_task("SST-2") is TASKS["sst2"]


def test_env_variable_selects_folder(glue_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(glue_dir))
    assert len(load_split("rte", "train")) == 40


def test_available_tasks(glue_dir: Path, tmp_path: Path) -> None:
    assert available_tasks(glue_dir) == list(TASKS)
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "train.tsv").write_text("x")
    assert available_tasks(tmp_path) == []


@pytest.mark.parametrize(
    ("folder", "file", "line", "text", "message"),
    [
        ("STS-B", "train.tsv", 3, "1\tg\tf\ty\t0\tn\tn\tonly\tnine", "expected 10 tab-separated"),
        ("STS-B", "dev.tsv", 5, "1\tg\tf\ty\t0\tn\tn\ta\tb\tfive", "score 'five' is not a number"),
        ("STS-B", "train.tsv", 4, "1\tg\tf\ty\t0\tn\tn\ta\tb\tnan", "score 'nan' is not a finite"),
        ("STS-B", "train.tsv", 2, "1\tg\tf\ty\t0\tn\tn\ta\tb\t1e400", "score '1e400' is not a fin"),
        ("STS-B", "dev.tsv", 3, "1\tg\tf\ty\t0\tn\tn\ta\tb\t-inf", "score '-inf' is not a finite"),
        ("STS-B", "train.tsv", 3, "1\tg\tf\ty\t0\tn\tn\ta\tb\t7.2", "score '7.2' is not in"),
        ("STS-B", "dev.tsv", 2, "1\tg\tf\ty\t0\tn\tn\ta\tb\t-1", "score '-1' is not in"),
        ("CoLA", "train.tsv", 2, "gj04\t7\t\tx", "label '7'"),
        ("RTE", "train.tsv", 4, "1\ta\tb\tmaybe", "label 'maybe'"),
    ],
)
def test_malformed_row_names_file_and_line(
    tmp_path: Path, make_glue, folder: str, file: str, line: int, text: str, message: str
) -> None:
    root = make_glue(tmp_path, n=6)
    path = root / folder / file
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    task = next(t for t in TASKS.values() if t.folder == folder)
    with pytest.raises(DataError, match=rf"{path}:{line}: .*{message}"):
        load_split(task.name, "train" if file == "train.tsv" else "dev", root)


def test_missing_header_column_and_missing_files(tmp_path: Path, make_glue) -> None:
    root = make_glue(tmp_path, n=4)
    (root / "SST-2" / "train.tsv").write_text("text\tlabel\nhi\t1\n")
    with pytest.raises(DataError, match=r"train.tsv:1: header lacks column\(s\) \['sentence'\]"):
        load_split("sst2", "train", root)
    (root / "QNLI" / "train.tsv").unlink()
    with pytest.raises(DataError, match=r"QNLI/train\.tsv: no such file"):
        load_split("qnli", "train", root)
    with pytest.raises(DataError, match=r"unknown task 'wnli'"):
        load_split("wnli", "train", root)
    with pytest.raises(DataError, match="no STS-B/ folder"):
        load_split("stsb", "train", tmp_path / "elsewhere")


def test_few_shot_is_seeded_and_bounded(glue_dir: Path) -> None:
    train = load_split("stsb", "train", glue_dir)
    a, b, c = few_shot(train, 8, 0), few_shot(train, 8, 0), few_shot(train, 8, 1)
    assert a["sentence1"] == b["sentence1"] and a["sentence1"] != c["sentence1"]
    assert len(set(a["sentence1"])) == 8
    with pytest.raises(DataError, match=r"--samples 41 is not in 1\.\.40"):
        few_shot(train, 41, 0)


def _texts(rows) -> set[str]:
    return set(rows["sentence"])


def test_held_out_rows_are_apart_from_the_few_shot_pool_and_the_test_split(
        split_glue: Path) -> None:
    task = get_task("sst2")
    train, test = load_split(task, "train", split_glue), load_split(task, "dev", split_glue)
    pool, heldout = hold_out(task, train, 12, test)
    assert len(heldout) == 12 and len(pool) == len(train) - 12
    assert not _texts(heldout) & _texts(test)
    for seed in range(5):  # every few-shot draw comes from the pool
        assert not _texts(few_shot(pool, 16, seed)) & _texts(heldout)
    again = hold_out(task, train, 12, test)[1]
    assert list(again["sentence"]) == list(heldout["sentence"])  # the same rows every run
    with pytest.raises(DataError, match="only 30 training rows"):
        hold_out(task, train, 31, test)


def test_held_out_rows_never_repeat_a_training_rows_text() -> None:
    import datasets

    task = get_task("sst2")  # every text twice, as GLUE training splits repeat some texts
    train = datasets.Dataset.from_dict({"sentence": [f"s{i % 20}" for i in range(40)],
                                        "label": [i % 2 for i in range(40)]})
    test = datasets.Dataset.from_dict({"sentence": ["s19"], "label": [1]})
    pool, heldout = hold_out(task, train, 6, test)
    for seed in range(5):
        trained = few_shot(pool, 8, seed)
        again, kept = hold_out(task, train, 6, test, trained)
        assert list(again["sentence"]) == list(pool["sentence"])  # the pool does not change
        assert len(kept) == 6 and not _texts(kept) & (_texts(trained) | _texts(test))
        unrepeated = [s for s in heldout["sentence"] if s not in _texts(trained)]
        assert kept["sentence"][:len(unrepeated)] == unrepeated  # only repeats are replaced
    with pytest.raises(DataError, match="only 2 training rows of sst2 are neither"):
        hold_out(task, train, 6, test, pool)
