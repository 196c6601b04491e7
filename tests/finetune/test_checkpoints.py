"""Checkpoint and learning-rate selection read held-out rows only, never the test split."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from deeplora.finetune.checkpoints import (
    best_checkpoint,
    choose_lr,
    loss_curve,
    matched_checkpoints,
    window_loss,
)


class Sealed(Mapping[str, float]):
    """Test metrics that fail the test when anything reads them."""

    def __getitem__(self, key: str) -> float:
        raise AssertionError(f"selection read the test metric {key!r}")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("selection iterated the test metrics")

    def __len__(self) -> int:
        raise AssertionError("selection measured the test metrics")


def _history(heldout: list[float | None], test: list[Mapping[str, float]] | None = None
             ) -> list[dict[str, Any]]:
    test = test or [Sealed() for _ in heldout]
    return [{"step": 10 * i, "heldout": {"accuracy": h}, "metrics": t}
            for i, (h, t) in enumerate(zip(heldout, test, strict=True))]


def test_best_checkpoint_is_chosen_on_heldout_rows_without_reading_test() -> None:
    assert best_checkpoint(_history([0.5, 0.7, 0.6, 0.7]), "accuracy") == 1  # earliest of ties
    assert best_checkpoint(_history([None, math.nan, 0.4]), "accuracy") == 2
    assert best_checkpoint(_history([None, math.nan]), "accuracy") is None


def test_best_checkpoint_refuses_what_it_cannot_select_on() -> None:
    with pytest.raises(ValueError, match=r"no held-out metric 'acuracy' in the history; it "
                                         r"has \['accuracy'\]"):
        best_checkpoint(_history([0.5, 0.7]), "acuracy")  # not None: a typo selects nothing
    without = [{"step": 0, "metrics": Sealed()}]  # a run without heldout_samples
    with pytest.raises(ValueError, match=r"entry 0 \(step 0\) has no held-out metrics"):
        best_checkpoint(without, "accuracy")
    assert best_checkpoint([], "accuracy") is None


def test_best_checkpoint_does_not_follow_the_test_scores() -> None:
    test = [{"accuracy": v} for v in (0.9, 0.1, 0.8)]
    assert best_checkpoint(_history([0.2, 0.6, 0.4], test), "accuracy") == 1


def test_window_loss() -> None:
    losses = [4.0, 3.0, 2.0, 1.0]
    assert window_loss(losses, 4, 2) == 1.5 and window_loss(losses, 2, 2) == 3.5
    assert window_loss(losses, 0, 2) is None and window_loss([1.0, math.nan], 2, 2) is None


def _run(losses: list[float], every: int) -> dict[str, Any]:
    steps = range(0, len(losses) + 1, every)
    return {"config": {"eval_every": every}, "train_loss": losses,
            "history": [{"step": s, "heldout": {}, "metrics": Sealed()} for s in steps]}


def test_matched_checkpoints_compare_runs_at_the_lowest_loss_both_reach() -> None:
    fast = _run([3.0, 1.0, 0.5, 0.2, 0.1, 0.05], 2)  # window losses: -, 2.0, 0.35, 0.075
    slow = _run([3.0, 2.5, 2.0, 1.5, 1.0, 0.8], 2)  # -, 2.75, 1.75, 0.9
    assert loss_curve(fast) == pytest.approx([None, 2.0, 0.35, 0.075])
    i, j, target = matched_checkpoints(fast, slow)
    assert target == pytest.approx(0.9) and (i, j) == (2, 3)
    assert matched_checkpoints(fast, _run([], 2)) is None


def test_choose_lr_on_mean_heldout_score() -> None:
    assert choose_lr({1e-4: [0.5, 0.7], 1e-3: [0.8, 0.6], 3e-4: [0.9, None]}) == 3e-4
    assert choose_lr({1e-3: [0.6], 1e-4: [0.6]}) == 1e-4  # the smaller of equals
    assert choose_lr({1e-3: [math.nan]}) is None
