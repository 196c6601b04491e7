"""GLUE tasks from a local ``glue_data`` folder (original TSV layout) or the Hugging Face hub.

Local layout: ``<dir>/<Folder>/train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv``), tab
separated, quote characters are data (parsed with ``csv.QUOTE_NONE``). Every file has a header
line except CoLA's train/dev files. Columns are read by header name where there is a header, by
position otherwise. Rows come back as a :class:`datasets.Dataset` with the same column names and
integer/float labels as the hub's ``nyu-mll/glue`` configs, so both sources are interchangeable.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

DATA_DIR_ENV = "DEEPLORA_DATA_DIR"
HUB_DATASET = "nyu-mll/glue"


class DataError(ValueError):
    """A task, split or data file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored and scored.

    ``columns`` maps our (hub) column names to the TSV header names; ``positions`` gives the
    column indices for header-less files. ``labels`` lists label strings in id order
    (``None`` for STS-B's float score).
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    columns: dict[str, str]
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    main_metric: str
    dev_file: str = "dev.tsv"
    header: bool = True
    positions: dict[str, int] = field(default_factory=dict)
    n_fields: int | None = None
    hub_dev_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in [
        GlueTask(
            "cola", "CoLA", ("sentence",), {}, ("0", "1"), ("matthews",), "matthews",
            header=False, positions={"label": 1, "sentence": 3}, n_fields=4,
        ),
        GlueTask(
            "sst2", "SST-2", ("sentence",), {"sentence": "sentence", "label": "label"},
            ("0", "1"), ("accuracy",), "accuracy",
        ),
        GlueTask(
            "mrpc", "MRPC", ("sentence1", "sentence2"),
            {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
            ("0", "1"), ("accuracy", "f1"), "accuracy",
        ),
        GlueTask(
            "qqp", "QQP", ("question1", "question2"),
            {"question1": "question1", "question2": "question2", "label": "is_duplicate"},
            ("0", "1"), ("accuracy", "f1"), "accuracy",
        ),
        GlueTask(
            "stsb", "STS-B", ("sentence1", "sentence2"),
            {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"},
            None, ("pearson", "spearman"), "pearson",
        ),
        GlueTask(
            "mnli", "MNLI", ("premise", "hypothesis"),
            {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
            ("entailment", "neutral", "contradiction"), ("accuracy",), "accuracy",
            dev_file="dev_matched.tsv", hub_dev_split="validation_matched",
        ),
        GlueTask(
            "qnli", "QNLI", ("question", "sentence"),
            {"question": "question", "sentence": "sentence", "label": "label"},
            ("entailment", "not_entailment"), ("accuracy",), "accuracy",
        ),
        GlueTask(
            "rte", "RTE", ("sentence1", "sentence2"),
            {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"},
            ("entailment", "not_entailment"), ("accuracy",), "accuracy",
        ),
    ]
}

SPLITS = ("train", "dev")

SCORE_RANGE = (0.0, 5.0)
"""STS-B's similarity scores lie in this closed range."""


def get_task(name: str) -> GlueTask:
    """The :class:`GlueTask` called ``name`` (case-insensitive; ``sts-b``/``sst-2`` accepted)."""
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """``data_dir``, else ``$DEEPLORA_DATA_DIR``, else ``None`` (meaning: use the hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return None if chosen is None else Path(chosen)


def task_file(task: GlueTask, split: str, data_dir: Path) -> Path:
    """Path of ``split`` (``"train"`` or ``"dev"``) of ``task`` under a GLUE folder."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return data_dir / task.folder / ("train.tsv" if split == "train" else task.dev_file)


def _parse_label(task: GlueTask, raw: str, where: str) -> int | float:
    if task.labels is None:
        try:
            score = float(raw)
        except ValueError:
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if not math.isfinite(score):
            raise DataError(f"{where}: score {raw!r} is not a finite number")
        low, high = SCORE_RANGE
        if not low <= score <= high:
            raise DataError(f"{where}: score {raw!r} is not in [{low:g}, {high:g}] "
                            f"(the range of {task.name} scores)")
        return score
    if raw not in task.labels:
        raise DataError(f"{where}: label {raw!r} is not one of {list(task.labels)}")
    return task.labels.index(raw)


def read_tsv(task: GlueTask, path: Path) -> datasets.Dataset:
    """Parse one GLUE TSV file; raise :class:`DataError` naming ``path:line`` on a bad row."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (task {task.name} needs it)")
    wanted = (*task.text_columns, "label")
    rows: dict[str, list[int | float | str]] = {name: [] for name in wanted}
    # utf-8-sig: MRPC's header line starts with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.header:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}:1: empty file, expected a header line")
            missing = [task.columns[c] for c in wanted if task.columns[c] not in header]
            if missing:
                raise DataError(f"{path}:1: header lacks column(s) {missing}")
            index = {c: header.index(task.columns[c]) for c in wanted}
            n_fields = len(header)
        else:
            index, n_fields = task.positions, task.n_fields
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if len(fields) != n_fields:
                raise DataError(
                    f"{where}: expected {n_fields} tab-separated fields, got {len(fields)}"
                )
            for name in task.text_columns:
                rows[name].append(fields[index[name]])
            rows["label"].append(_parse_label(task, fields[index["label"]], where))
    if not rows["label"]:
        raise DataError(f"{path}: no data rows")
    import datasets

    return datasets.Dataset.from_dict(rows)


def load_split(
    task: str | GlueTask, split: str, data_dir: str | os.PathLike[str] | None = None
) -> datasets.Dataset:
    """One split of a GLUE task, from ``data_dir`` / ``$DEEPLORA_DATA_DIR`` or else the hub.

    Columns: the task's ``text_columns`` plus ``label`` (class id, or the 0–5 score for STS-B).
    """
    task = get_task(task) if isinstance(task, str) else task
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        if not (folder / task.folder).is_dir():
            raise DataError(f"{folder}: no {task.folder}/ folder for task {task.name}")
        return read_tsv(task, task_file(task, split, folder))
    import datasets

    hub_split = "train" if split == "train" else task.hub_dev_split
    loaded = datasets.load_dataset(HUB_DATASET, task.name, split=hub_split)
    return loaded.select_columns([*task.text_columns, "label"])


def few_shot(dataset: datasets.Dataset, n: int, seed: int, replace: bool = False
             ) -> datasets.Dataset:
    """``n`` rows, the same ones for the same ``seed``: drawn without replacement (a seeded
    shuffle's first ``n``), or with ``replace=True`` with replacement (``n`` seeded uniform
    draws, repeats possible, as the authors' ``jax.random.choice``; any ``n`` >= 1)."""
    if replace:
        if n < 1 or len(dataset) == 0:
            raise DataError(f"--samples {n}: need n >= 1 and a non-empty training split")
        import numpy as np

        return dataset.select(np.random.default_rng(seed).integers(0, len(dataset), n))
    if not 0 < n <= len(dataset):
        raise DataError(f"--samples {n} is not in 1..{len(dataset)} (size of the training split)")
    return dataset.shuffle(seed=seed).select(range(n))


HELDOUT_SEED = 0
"""Seed of the held-out draw: every run of a task holds out the same training rows."""


class HeldOut:
    """The held-out split of ``train`` for ``n`` rows, drawn once: both parts walk a seed-
    :data:`HELDOUT_SEED` shuffle of the rows whose texts do not occur in ``test``. ``pool`` is
    every row but the first ``n`` of them, and few-shot examples are drawn from it;
    :meth:`rows` are the first ``n`` whose texts are not those of a row of ``trained`` either
    (the run's training rows, drawn from the pool: training splits repeat some texts). So the
    held-out rows are never trained on, never repeat a training row's text and are never part
    of the test split; they are the same for every run but where a run's training rows repeat
    one."""

    def __init__(self, task: GlueTask, train: datasets.Dataset, n: int,
                 test: datasets.Dataset) -> None:
        import numpy as np

        texts = set(_row_texts(task, test))
        order = np.random.default_rng(HELDOUT_SEED).permutation(len(train))
        self._task, self._train, self._n = task, train, n
        self._texts = _row_texts(task, train)
        self._candidates = [int(i) for i in order if self._texts[i] not in texts]
        if len(self._candidates) < n:
            raise DataError(f"--heldout-samples {n}: only {len(self._candidates)} training rows "
                            f"of {task.name} are not in its test (dev) split")
        taken = set(self._candidates[:n])
        self.pool = train.select([i for i in range(len(train)) if i not in taken])

    def rows(self, trained: datasets.Dataset | None = None) -> datasets.Dataset:
        """The ``n`` held-out rows, none repeating the text of a row of ``trained``."""
        seen = set() if trained is None else set(_row_texts(self._task, trained))
        chosen = [i for i in self._candidates if self._texts[i] not in seen][:self._n]
        if len(chosen) < self._n:
            raise DataError(f"--heldout-samples {self._n}: only {len(chosen)} training rows of "
                            f"{self._task.name} are neither in its test (dev) split nor repeat "
                            "the text of a training row")
        return self._train.select(chosen)


def hold_out(task: GlueTask, train: datasets.Dataset, n: int, test: datasets.Dataset,
             trained: datasets.Dataset | None = None
             ) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(pool, held-out rows)`` of :class:`HeldOut` in one call (``trained`` known
    beforehand)."""
    split = HeldOut(task, train, n, test)
    return split.pool, split.rows(trained)


def _row_texts(task: GlueTask, rows: datasets.Dataset) -> list[tuple[str, ...]]:
    """Every row's input: its values of the task's text columns."""
    return list(zip(*(rows[c] for c in task.text_columns), strict=True))


def available_tasks(data_dir: str | os.PathLike[str]) -> list[str]:
    """Tasks whose train and dev files both exist under ``data_dir``."""
    folder = Path(data_dir)
    return [
        name
        for name, task in TASKS.items()
        if all(task_file(task, split, folder).is_file() for split in SPLITS)
    ]
