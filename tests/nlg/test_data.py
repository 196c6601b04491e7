from __future__ import annotations

from pathlib import Path

import pytest

from deeplora.finetune.data import DataError
from deeplora.nlg.data import (
    Example,
    eval_subset,
    few_shot,
    hold_out,
    load_e2e,
    resolve_e2e_dir,
)
from tests.nlg.conftest import write_csv


def test_load_groups_references_by_mr(e2e_dir: Path) -> None:
    dev = load_e2e("dev", e2e_dir)
    assert [e.mr for e in dev][:2] == ["name[The Eagle], eatType[pub]", "name[Mill], food[French]"]
    assert dev[0].refs == ("The Eagle is a pub.", "The Eagle is a pub in the city centre.")
    assert len(load_e2e("test", e2e_dir)) == 3


def test_nested_folder_is_found(e2e_dir: Path) -> None:
    assert resolve_e2e_dir(e2e_dir.parent) == e2e_dir
    assert resolve_e2e_dir(e2e_dir) == e2e_dir


def test_few_shot_is_seeded_distinct_and_one_reference_each(e2e_dir: Path) -> None:
    dev = load_e2e("dev", e2e_dir)
    draw = few_shot(dev, 3, seed=1)
    assert draw == few_shot(dev, 3, seed=1)
    assert len({e.mr for e in draw}) == 3
    assert all(len(e.refs) == 1 for e in draw)
    by_mr = {e.mr: e.refs for e in dev}
    assert all(e.refs[0] in by_mr[e.mr] for e in draw)
    assert {e.mr for e in few_shot(dev, 16, 0)} == set(by_mr)
    with pytest.raises(DataError, match="--samples 17"):
        few_shot(dev, 17, 0)


def test_eval_subset_is_fixed() -> None:
    examples = [Example(str(i), ("r",)) for i in range(50)]
    subset = eval_subset(examples, 10)
    assert subset == eval_subset(examples, 10)
    assert len(subset) == 10 and subset != examples[:10]
    assert [int(e.mr) for e in subset] == sorted(int(e.mr) for e in subset)
    assert eval_subset(examples, None) == examples


def test_hold_out_is_fixed_and_apart_from_the_pool(e2e_dir: Path) -> None:
    dev = load_e2e("dev", e2e_dir)
    pool, held = hold_out(dev, 4)
    assert (pool, held) == hold_out(dev, 4)
    assert held == eval_subset(dev, 4)
    assert not {e.mr for e in pool} & {e.mr for e in held}
    assert len(pool) + len(held) == len(dev)
    for n in (0, len(dev)):
        with pytest.raises(DataError, match="--dev-mrs"):
            hold_out(dev, n)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"devset\.csv: no such file"):
        load_e2e("dev", tmp_path)


def test_mr_without_reference(tmp_path: Path) -> None:
    write_csv(tmp_path / "devset.csv", [("name[A]", "A is."), ("name[B]", "")])
    with pytest.raises(DataError, match=r"devset.csv:3: MR 'name\[B\]' has no reference"):
        load_e2e("dev", tmp_path)


def test_bad_header(tmp_path: Path) -> None:
    (tmp_path / "devset.csv").write_text("meaning,text\na,b\n")
    with pytest.raises(DataError, match="header lacks"):
        load_e2e("dev", tmp_path)
