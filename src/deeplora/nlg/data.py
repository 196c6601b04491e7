"""E2E NLG (Novikova et al. 2017) from the challenge's CSV files or the hub's ``GEM/e2e_nlg``.

Local layout: ``<dir>/devset.csv`` and ``<dir>/testset_w_refs.csv`` with columns ``mr`` (the
meaning representation, e.g. ``name[The Eagle], eatType[coffee shop], …``) and ``ref`` (one
human reference); an MR has several lines, one per reference. The few-shot training examples
are drawn from the dev split (the release has no train split here): ``n`` distinct MRs, seeded,
one of each MR's references, seeded. Evaluation uses every reference of each test MR.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

from deeplora.finetune.data import DataError

FILES = {"dev": "devset.csv", "test": "testset_w_refs.csv"}
HUB_DATASET = "GEM/e2e_nlg"
HUB_SPLITS = {"dev": "validation", "test": "test"}
DATA_DIR_ENV = "DEEPLORA_E2E_DIR"


@dataclass(frozen=True)
class Example:
    """One MR with its references (training examples carry one)."""

    mr: str
    refs: tuple[str, ...]


def resolve_e2e_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The E2E folder: ``data_dir`` (or its ``e2e/`` subfolder when only that holds the
    files), else ``$DEEPLORA_E2E_DIR``, else ``None`` (the hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    folder = Path(chosen)
    nested = folder / "e2e"
    if not (folder / FILES["dev"]).is_file() and (nested / FILES["dev"]).is_file():
        return nested
    return folder


def read_csv(path: Path) -> list[Example]:
    """MRs of one E2E CSV file in file order, each with all its references.

    Raises :class:`DataError` naming ``path`` (and the line) for a missing file, a missing
    ``mr``/``ref`` column, or a line with an empty MR or no reference.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file (E2E NLG needs it)")
    groups: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("mr", "ref") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {missing}")
        for row in reader:
            mr, ref = (row.get("mr") or "").strip(), (row.get("ref") or "").strip()
            if not mr:
                raise DataError(f"{path}:{reader.line_num}: empty MR")
            if not ref:
                raise DataError(f"{path}:{reader.line_num}: MR {mr[:40]!r} has no reference")
            groups.setdefault(mr, []).append(ref)
    if not groups:
        raise DataError(f"{path}: no data rows")
    return [Example(mr, tuple(refs)) for mr, refs in groups.items()]


def load_hub(split: str) -> list[Example]:
    """``split`` of ``GEM/e2e_nlg`` (needs the hub), grouped by MR like :func:`read_csv`."""
    import datasets

    rows = datasets.load_dataset(HUB_DATASET, split=HUB_SPLITS[split])
    groups: dict[str, list[str]] = {}
    for mr, ref in zip(rows["meaning_representation"], rows["target"], strict=True):
        groups.setdefault(mr, []).append(ref)
    return [Example(mr, tuple(refs)) for mr, refs in groups.items()]


def load_e2e(split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Example]:
    """``"dev"`` or ``"test"`` MRs with their references, from a folder (see
    :func:`resolve_e2e_dir`) or else the hub."""
    if split not in FILES:
        raise DataError(f"unknown E2E split {split!r}; choose one of {', '.join(FILES)}")
    folder = resolve_e2e_dir(data_dir)
    if folder is None:
        return load_hub(split)
    return read_csv(folder / FILES[split])


def few_shot(examples: list[Example], n: int, seed: int) -> list[Example]:
    """``n`` distinct MRs drawn with ``seed``, each with one of its references (also seeded)."""
    if not 0 < n <= len(examples):
        raise DataError(f"--samples {n} is not in 1..{len(examples)} (distinct MRs)")
    rng = random.Random(seed)
    return [Example(e.mr, (rng.choice(e.refs),)) for e in rng.sample(examples, n)]


def eval_subset(examples: list[Example], n: int | None) -> list[Example]:
    """``n`` MRs drawn with seed 0, in file order (all for ``None``): the same for every run."""
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise DataError(f"test MRs must be >= 1, got {n}")
    keep = sorted(random.Random(0).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def hold_out(examples: list[Example], n: int) -> tuple[list[Example], list[Example]]:
    """``(pool, dev)``: the :func:`eval_subset` of ``n`` MRs (the same for every run and seed)
    as the dev set, and the other MRs, in file order, as the pool few-shot examples come from."""
    if not 0 < n < len(examples):
        raise DataError(f"--dev-mrs {n} is not in 1..{len(examples) - 1} (distinct MRs)")
    dev = eval_subset(examples, n)
    held = {e.mr for e in dev}
    return [e for e in examples if e.mr not in held], dev
