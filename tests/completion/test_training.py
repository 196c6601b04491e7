"""The estimator's training loop: the objective, the validation score, divergence."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplora.completion.estimator import DeepMatrixCompletion

from .helpers import low_rank_ratings


def test_loss_is_the_data_term_plus_count_weighted_penalties() -> None:
    """``_loss`` against the objective written out by hand on the fitted parameters."""
    rows, cols, values, _, _ = low_rank_ratings(seed=6)
    est = DeepMatrixCompletion(rank=2, max_steps=20, validation_fraction=0.0, bias_prior=3.0,
                               reg=0.7, bias_reg=0.2).fit(rows, cols, values)
    (batch,) = est._batches(rows, cols, values, np.random.default_rng(0), torch.float32)
    index, target, size = batch
    weights = est._penalty_weights([batch], size)
    loss, data = est._loss(index, target, size, size, weights, 0.7, 0.2)
    a, b = (t.detach().double().numpy() for t in est._end_to_end())
    row_bias, col_bias, mu = est.row_bias_, est.col_bias_, est.global_bias_
    predicted = mu + row_bias[rows] + col_bias[cols] + np.sum(a[rows] * b[cols], axis=1)
    n_row = np.bincount(rows, minlength=a.shape[0]) / rows.size
    n_col = np.bincount(cols, minlength=b.shape[0]) / rows.size
    expected_data = 0.5 * np.mean((predicted - values) ** 2)
    expected = (expected_data
                + 0.35 * (n_row @ np.sum(a * a, 1) + n_col @ np.sum(b * b, 1))
                + 0.1 * (n_row @ row_bias**2 + n_col @ col_bias**2)
                + 1.5 / rows.size * (row_bias @ row_bias + col_bias @ col_bias))
    assert float(data) == pytest.approx(expected_data, rel=1e-4)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_validation_rmse_is_that_of_the_clipped_predictions() -> None:
    rows, cols, values, _, _ = low_rank_ratings(seed=7)
    est = DeepMatrixCompletion(rank=2, max_steps=30, clip=(1.0, 5.0)).fit(rows, cols, values)
    val = np.arange(0, rows.size, 3)
    key, score = est._rmse_validation(rows, cols, values, val)
    expected = np.sqrt(np.mean((est.predict(rows[val], cols[val]) - values[val]) ** 2))
    assert key == "val_rmse" and score() == pytest.approx(expected, rel=1e-5)
    assert est._rmse_validation(rows, cols, values, val[:0]) is None
    assert math.isfinite(min(est.history_["val_rmse"]))


def test_divergence_is_flagged_warned_and_saved(tmp_path: Path) -> None:
    rows, cols, values, _, _ = low_rank_ratings()
    with pytest.warns(RuntimeWarning, match="diverged"):
        est = DeepMatrixCompletion(rank=2, lr=1e6, max_steps=30).fit(rows, cols, values)
    assert est.diverged_ and est.n_steps_ < 30
    est.save(tmp_path / "m.pt")
    assert DeepMatrixCompletion.load(tmp_path / "m.pt").diverged_
    assert not DeepMatrixCompletion(rank=2, max_steps=3).fit(rows, cols, values).diverged_
