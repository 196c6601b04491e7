"""The estimator's training loop: the objective, the validation score, divergence."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.training import candidate_state, stack_candidates

from .helpers import low_rank_ratings


@pytest.mark.parametrize("uniform", [0.0, 0.3, 1.0])
def test_loss_is_the_data_term_plus_count_weighted_penalties(uniform: float) -> None:
    """``_loss`` of two stacked candidates against the objective written out by hand, the
    penalties' weights ``(1 − β)`` × count share + ``β`` × even share."""
    rows, cols, values, _, _ = low_rank_ratings(seed=6)
    est = DeepMatrixCompletion(rank=2, max_steps=20, validation_fraction=0.0, bias_prior=3.0,
                               reg=0.7, bias_reg=0.2, reg_uniform=uniform
                               ).fit(rows, cols, values)
    (batch,) = est._batches(rows, cols, values, np.random.default_rng(0), torch.float32)
    index, target, size = batch
    params = stack_candidates(est._state(), 2)
    regs, bias_regs = torch.tensor([0.7, 0.0]), torch.tensor([0.2, 0.5])
    loss, data = est._loss(params, index, target, size, size,
                           est._penalty_weights([batch], size), regs, bias_regs)
    a, b = (t.detach().double().numpy() for t in est._end_to_end())
    row_bias, col_bias, mu = est.row_bias_, est.col_bias_, est.global_bias_
    predicted = mu + row_bias[rows] + col_bias[cols] + np.sum(a[rows] * b[cols], axis=1)
    n_row = ((1 - uniform) * np.bincount(rows, minlength=a.shape[0]) / rows.size
             + uniform / a.shape[0])
    n_col = ((1 - uniform) * np.bincount(cols, minlength=b.shape[0]) / rows.size
             + uniform / b.shape[0])
    expected_data = 0.5 * np.mean((predicted - values) ** 2)
    for k, (reg, bias_reg) in enumerate(zip(regs.tolist(), bias_regs.tolist(), strict=True)):
        expected = (expected_data
                    + 0.5 * reg * (n_row @ np.sum(a * a, 1) + n_col @ np.sum(b * b, 1))
                    + 0.5 * bias_reg * (n_row @ row_bias**2 + n_col @ col_bias**2)
                    + 1.5 / rows.size * (row_bias @ row_bias + col_bias @ col_bias))
        assert float(data[k]) == pytest.approx(expected_data, rel=1e-4)
        assert float(loss[k]) == pytest.approx(expected, rel=1e-4)


def test_stacked_candidates_hold_copies_with_b_contiguous_and_give_the_state_back() -> None:
    """``stack_candidates`` copies the state (B = W_1ᵀ stored contiguous, nothing aliased:
    training one row changes neither the state nor another row), ``candidate_state`` gives
    each row back in the state's layout."""
    generator = torch.Generator().manual_seed(0)
    state = [torch.randn(shape, generator=generator) for shape in [(3, 7), (3, 3), (5, 3), (),
                                                                   (5,), (7,)]]
    params = stack_candidates(state, 2)
    assert params[0].shape == (2, 7, 3) and params[0].is_contiguous()
    with torch.no_grad():
        for param in params:
            param[1] += 1.0
    for row, shift in ((0, 0.0), (1, 1.0)):
        for got, saved in zip(candidate_state(params, row), state, strict=True):
            torch.testing.assert_close(got, saved + shift, rtol=0, atol=0)


def test_stacked_candidates_follow_the_paths_they_follow_alone() -> None:
    """Four penalties trained as one stacked model (each stopping on its own validation RMSE
    or raced out, the stopped ones dropped from the stack) follow the paths each one follows
    alone: the same evaluations as far as they go, the same winner, ending where it ends
    alone; a candidate stops earlier only when raced out by one before it that it would not
    have beaten, the race's condition holding when it stopped."""
    rows, cols, values, _, _ = low_rank_ratings(m=60, n=50, seed=8)
    values = values + 1.5 * np.random.default_rng(1).standard_normal(values.size)  # overfits
    est = DeepMatrixCompletion(rank=3, max_steps=300, patience=3, eval_every=5, lr=0.1,
                               dtype="float64", reg=0.0).fit(rows, cols, values)
    rng = np.random.default_rng(0)
    val = np.arange(0, rows.size, 5)
    train = np.setdiff1d(np.arange(rows.size), val)
    batches = est._start(rows[train], cols[train], values[train], rng, torch.float64)
    validation = est._rmse_validation(rows, cols, values, val)
    penalties = [(0.0, 0.0), (0.01, 0.001), (0.03, 0.0), (0.3, 0.0)]
    initial = est._state()
    together = est._train(batches, validation, rng, 0.0, penalties)
    alone = [est._train(batches, validation, rng, 0.0, [pair])[0] for pair in penalties]
    assert len({c.last_step for c in together}) == 4  # they stopped at different steps
    raced = 0
    for i, (joint, single) in enumerate(zip(together, alone, strict=True)):
        seen = len(joint.history["val_rmse"])
        np.testing.assert_allclose(joint.history["val_rmse"], single.history["val_rmse"][:seen],
                                   rtol=1e-9)
        if joint.last_step < single.last_step:  # raced out by a candidate before it
            raced += 1
            assert single.score > min(c.score for c in alone[:i])  # which it did not beat
            gained = joint.curve[-est.patience - 1] - joint.score
            assert joint.score - min(c.score for c in together[:i]) > gained
        else:
            assert (joint.best_step, joint.last_step) == (single.best_step, single.last_step)
    assert raced >= 1
    winner = int(np.argmin([c.score for c in together]))
    assert winner == int(np.argmin([c.score for c in alone]))
    assert together[winner].last_step == alone[winner].last_step
    for x, y in zip(together[winner].state, alone[winner].state, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-7, atol=1e-10)
    for x, y in zip(est._state(), initial, strict=True):  # the estimator's are left as is
        np.testing.assert_array_equal(x.numpy(), y.numpy())


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


def test_a_fit_whose_interaction_term_grew_left_its_initialization() -> None:
    rows, cols, values, _, _ = low_rank_ratings()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        explicit = DeepMatrixCompletion.ratings(rank=2, max_steps=200, clip=None
                                                 ).fit(rows, cols, values)
        implicit = DeepMatrixCompletion.implicit(rank=2, max_steps=100, positive_threshold=3.0
                                                 ).fit(rows, cols, values)
    assert explicit.left_init_ and implicit.left_init_
    x = explicit.predict(rows, cols) - (explicit.global_bias_ + explicit.row_bias_[rows]
                                        + explicit.col_bias_[cols])  # X at the entries
    assert explicit.interaction_rms_ == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert explicit.interaction_rms_ > 0.5 * np.std(values)


@pytest.mark.parametrize("settings", [
    {"max_steps": 0}, {"reg": 1e3}, {"lr": 1e-7},
    {"max_steps": 0, "feedback": "implicit", "positive_threshold": 3.0},
    {"reg": 1e4, "feedback": "implicit", "positive_threshold": 3.0}])
def test_a_fit_held_at_its_initialization_is_flagged_warned_and_saved(
        settings: dict, tmp_path: Path) -> None:
    """With trainable biases, a fit whose X = A Bᵀ never grew is a model of its biases
    alone: ``left_init_`` is False, with a warning, and a saved model keeps it."""
    rows, cols, values, _, _ = low_rank_ratings()
    with pytest.warns(RuntimeWarning, match="never left its initialization"):
        est = DeepMatrixCompletion(rank=2, **{"max_steps": 50, **settings}
                                   ).fit(rows, cols, values)
    assert est.left_init_ is False and est.interaction_rms_ < 1e-3 * np.std(values)
    est.save(tmp_path / "m.pt")
    loaded = DeepMatrixCompletion.load(tmp_path / "m.pt")
    assert loaded.left_init_ is False and loaded.interaction_rms_ == est.interaction_rms_


def test_without_validation_the_last_step_is_kept_whatever_the_penalty() -> None:
    """A strong penalty makes the data term rise after an early minimum; without a validation
    split (``validation_fraction=0``, and so the refit) the run still ends with the
    parameters of its last step, not those of the lowest data term."""
    rng = np.random.default_rng(0)
    m, n = 60, 50
    target = rng.normal(size=(m, 3)) @ rng.normal(size=(3, n)) + 3
    rows, cols = np.nonzero(rng.random((m, n)) < 0.4)
    values = target[rows, cols] + 0.1 * rng.normal(size=rows.size)
    est = DeepMatrixCompletion(rank=3, reg=3.0, validation_fraction=0.0, max_steps=300,
                               random_state=0).fit(rows, cols, values, (m, n))
    losses = est.history_["train_loss"]
    assert est.history_["step"][int(np.argmin(losses))] < 150  # the case is the hard one
    assert losses[-1] > min(losses) * 1.005
    assert est.best_step_ == est.n_steps_ == 300
