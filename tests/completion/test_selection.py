"""Penalty chosen on the validation split: search logic, per-dataset choice, no test reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeplora.cli import main
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.selection import penalty_grid, search_penalty


def _search(curve: dict[float, float], start: float) -> tuple[dict, list]:
    """:func:`search_penalty` on a made-up validation RMSE per λ (no training)."""
    current: list[float] = [0.0]

    def train(penalties: list[tuple[float, float]], drop) -> list[tuple | None]:
        """Fits finish in order of their penalty, strongest first; the dropped ones give
        None."""
        done: dict[int, float] = {}
        dropped: set[int] = set()
        for i in sorted(range(len(penalties)), key=lambda i: -penalties[i][0]):
            if i not in dropped:
                done[i] = curve[penalties[i][0]]
                dropped |= drop(done)
                assert dropped <= set(range(len(penalties)))  # positions of this batch only
        return [None if i in dropped else (curve[reg], 0, 10, reg)
                for i, (reg, _) in enumerate(penalties)]

    selected, path = search_penalty(train, lambda s: current.__setitem__(0, s),
                                    bias_reg="auto", grid=np.array(sorted(curve)), start=start)
    assert current[0] == selected["reg"]  # the chosen fit's parameters are restored
    return selected, path


def test_search_walks_towards_the_better_side_and_keeps_the_best() -> None:
    grid = penalty_grid(0.8, 0.5, 6)  # 0.8 … 0.025
    np.testing.assert_allclose(grid, [0.8, 0.4, 0.2, 0.1, 0.05, 0.025])
    stronger = {reg: abs(np.log(reg / 0.4)) for reg in grid}  # best at 0.4
    selected, path = _search(stronger, start=0.1)
    assert selected["reg"] == 0.4 and selected["bias_reg"] == pytest.approx(0.08)
    # the λ's of a walk one at a time: start, weaker, stronger (weaker was worse), on
    assert [p["reg"] for p in path] == [0.1, 0.05, 0.2, 0.4, 0.8]
    weaker = {reg: reg for reg in grid}  # best at the weak end
    selected, path = _search(weaker, start=0.1)
    assert selected["reg"] == 0.025 and [p["reg"] for p in path] == [0.1, 0.05, 0.025]
    flat = {reg: 1.0 for reg in grid}  # no improvement on the start: one stacked run
    selected, path = _search(flat, start=0.1)
    assert selected["reg"] == 0.1 and len(path) == 3
    # a start at either end of the grid: its one neighbour, then on while it improves
    selected, path = _search(weaker, start=0.8)
    assert selected["reg"] == 0.025 and [p["reg"] for p in path] == [
        0.8, 0.4, 0.2, 0.1, 0.05, 0.025]
    selected, path = _search(stronger, start=0.025)
    assert selected["reg"] == 0.4 and [p["reg"] for p in path] == [
        0.025, 0.05, 0.1, 0.2, 0.4, 0.8]
    with pytest.raises(ValueError, match="ratio"):
        penalty_grid(1.0, 1.5, 3)


def _planted(noise: float, interaction: float, seed: int = 0, shape: tuple[int, int] = (80, 60),
             biases: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``biases`` × (row + column biases) plus ``interaction`` × a rank-2 matrix plus Gaussian
    noise, half observed."""
    rng = np.random.default_rng(seed)
    m, n = shape
    x = rng.standard_normal((m, 2)) @ rng.standard_normal((2, n)) / np.sqrt(2)
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    rows, cols = np.nonzero(rng.random(shape) < 0.5)
    values = (3 + biases * (b[rows] + c[cols]) + interaction * x[rows, cols]
              + noise * rng.standard_normal(rows.size))
    return rows, cols, values


@pytest.mark.parametrize("seed", [0, 1])
def test_chosen_penalty_differs_between_datasets_that_need_different_strengths(seed: int
                                                                              ) -> None:
    """Clean low-rank ratings want a weak penalty: the search walks to the weak end, each step
    clearly better on validation. Pure noise (no biases, no interaction) has nothing to fit:
    no λ improves on the start's validation RMSE (every fit is best at step 0), so the search
    keeps the start λ = 0.1, never a weak one. (Between these, for this model, the validation
    RMSE is nearly flat in λ: early stopping already shrinks.)"""
    chosen = {}
    for name, (noise, interaction, biases) in {"clean": (0.1, 1.0, 1.0),
                                               "noisy": (1.0, 0.0, 0.0)}.items():
        est = DeepMatrixCompletion.ratings(rank=2, clip=None, max_steps=300, random_state=seed)
        est.fit(*_planted(noise, interaction, seed, biases=biases))
        chosen[name] = est.selected_["reg"]
        assert est.selected_["val_rmse"] == min(p["val_rmse"] for p in est.path_)
        chosen_fit = next(p for p in est.path_ if p["reg"] == est.selected_["reg"])
        assert len(est.path_) >= 3 and chosen_fit["best_step"] == est.selected_["step"]
        # the refit on all ratings ran the chosen number of steps after the search
        refit_steps = est.selected_["step"] - est.selected_["first_step"]
        assert est.history_["step"][-1] - refit_steps > max(p["best_step"] for p in est.path_)
    assert chosen["clean"] <= 0.0125 and chosen["noisy"] >= 0.1


def test_explicit_penalty_invalid_auto_and_saved_selection(tmp_path: Path) -> None:
    rows, cols, values = _planted(0.1, 1.0)
    est = DeepMatrixCompletion.ratings(rank=2, reg=0.05, max_steps=30).fit(rows, cols, values)
    assert est.selected_["reg"] == 0.05 and est.path_ == []
    auto = DeepMatrixCompletion.ratings(rank=2, max_steps=30).fit(rows, cols, values)
    path = tmp_path / "model.pt"
    auto.save(path)
    again = DeepMatrixCompletion.load(path)
    assert again.selected_ == auto.selected_ and again.path_ == auto.path_
    with pytest.raises(ValueError, match="validation_fraction"):
        DeepMatrixCompletion(reg="auto", validation_fraction=0.0).fit(rows, cols, values)
    with pytest.raises(ValueError, match="bias_reg='auto' needs reg='auto'"):
        DeepMatrixCompletion(reg=0.1, bias_reg="auto").fit(rows, cols, values)
    with pytest.raises(ValueError, match="refit"):
        DeepMatrixCompletion(refit="yes").fit(rows, cols, values)


def test_selection_never_reads_the_test_file(tmp_path: Path) -> None:
    """``deeplora complete --ratings train --test test``: poisoning every test rating changes
    the reported test error but not the fit, the chosen penalty or the path."""
    rows, cols, values = _planted(0.3, 1.0, seed=1, shape=(50, 40))
    frame = pd.DataFrame({"userId": rows, "movieId": cols, "rating": values})
    test = frame.sample(frac=0.2, random_state=0)
    frame.drop(test.index).to_csv(tmp_path / "train.csv", index=False)
    results = []
    for poison in (False, True):
        if poison:
            test = test.assign(rating=1.0)
        test.to_csv(tmp_path / "test.csv", index=False)
        out = tmp_path / f"result-{poison}.json"
        assert main(["complete", "--ratings", str(tmp_path / "train.csv"), "--test",
                     str(tmp_path / "test.csv"), "--rank", "2", "--steps", "100", "--json",
                     str(out), "--quiet"]) == 0
        results.append(json.loads(out.read_text()))
    clean, poisoned = results
    assert clean["selected"] == poisoned["selected"] and clean["steps"] == poisoned["steps"]
    assert clean["rmse"] != poisoned["rmse"]
