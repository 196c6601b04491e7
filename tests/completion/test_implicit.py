"""Implicit feedback: the Gramian loss against the dense weighted loss, and
DeepMatrixCompletion(feedback="implicit") against most-rated on planted preferences."""

import numpy as np
import pytest
import torch

from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.implicit import gramian_norm, implicit_loss, positives
from deeplora.completion.ranking import ranking_metrics


def test_gramian_loss_equals_the_dense_weighted_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=gen, dtype=torch.float64), torch.randn(
        5, 3, generator=gen, dtype=torch.float64)
    values = np.array([1.0, 4.0, 2.0, 5.0])
    rows, cols = np.array([0, 2, 2, 6]), np.array([1, 0, 4, 3])
    mask, confidence = positives(values, 2.0, alpha=0.5)
    np.testing.assert_array_equal(mask, [False, True, True, True])
    np.testing.assert_allclose(confidence, [3.0, 2.0, 3.5])
    x = a @ b.T
    weight, target = torch.ones(7, 5, dtype=torch.float64), torch.zeros(7, 5, dtype=torch.float64)
    weight[rows[mask], cols[mask]] = torch.from_numpy(confidence)
    target[rows[mask], cols[mask]] = 1.0
    dense = 0.5 * torch.sum(weight * (target - x) ** 2) / 3
    assert gramian_norm(a, b).item() == pytest.approx(torch.sum(x**2).item())
    got = implicit_loss(x[rows[mask], cols[mask]], torch.from_numpy(confidence), 3,
                        gramian_norm(a, b), 3, 1.0)
    assert got.item() == pytest.approx(dense.item())


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[int, int], list[np.ndarray]]:
    """Two user groups with disjoint favourite items (each favourite clicked with probability
    0.6; the others held out) plus global popularity noise: items 20–39 clicked by every user
    with probability 0.5 … 0.35, so more users click them than any favourite. Returns training
    ``(rows, cols)``, the shape and each user's held-out favourites."""
    rng = np.random.default_rng(seed)
    m, n = 60, 40
    clicks, held_out = np.zeros((m, n), bool), []
    for user in range(m):
        favourites = np.arange(10) + (0 if user < m // 2 else 10)
        shown = rng.random(10) < 0.6
        clicks[user, favourites[shown]] = True
        held_out.append(favourites[~shown])
        clicks[user, 20:] = rng.random(20) < np.linspace(0.5, 0.35, 20)
    rows, cols = np.nonzero(clicks)
    return rows, cols, (m, n), held_out


def test_implicit_mode_beats_most_rated_on_planted_preferences() -> None:
    rows, cols, shape, held_out = planted()
    users = np.array([u for u in range(shape[0]) if held_out[u].size])
    truth = [held_out[u] for u in users]
    est = DeepMatrixCompletion.implicit(rank=2, reg=1.0, validation_fraction=0.0, max_steps=300)
    est.fit(rows, cols, np.ones(rows.size), shape=shape)
    ours, scores = est.recommend(users, 5)
    seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not any((u, i) in seen for u, row in zip(users, ours, strict=True) for i in row)
    assert np.all(np.diff(scores, axis=1) <= 0)
    order = np.argsort(-np.bincount(cols, minlength=shape[1]), kind="stable")
    popular = np.stack([[i for i in order if (u, i) not in seen][:5] for u in users])
    mine, baseline = ranking_metrics(ours, truth, 5), ranking_metrics(popular, truth, 5)
    assert mine["precision@5"] > baseline["precision@5"] + 0.3
    assert mine["ndcg@5"] > baseline["ndcg@5"] + 0.3


def test_implicit_validation_early_stopping_and_save_load(tmp_path) -> None:
    rows, cols, shape, _ = planted(seed=1)
    est = DeepMatrixCompletion.implicit(rank=2, max_steps=200, eval_every=20)
    est.fit(rows, cols, np.ones(rows.size), shape=shape)
    ndcg = est.history_["val_ndcg"]
    assert len(ndcg) >= 2 and all(0 <= v <= 1 for v in ndcg) and "val_rmse" not in est.history_
    assert est.clip_ is None and est.global_bias_ == 0.0
    est.save(tmp_path / "implicit.pt")
    again = DeepMatrixCompletion.load(tmp_path / "implicit.pt")
    np.testing.assert_array_equal(again.recommend(np.arange(5), 3)[0],
                                  est.recommend(np.arange(5), 3)[0])


@pytest.mark.parametrize(("params", "call", "match"), [
    ({"positive_threshold": 6.0}, "fit", "needs at least one positive, but none of the 3"),
    ({"clip": (1, 5)}, "fit", "feedback='implicit' predicts preference scores"),
    ({"alpha": -1.0}, "fit", "alpha must be a finite number >= 0"),
    ({"distributed": True}, "fit", "does not support distributed"),
    ({}, "evaluate", "use ranking_metrics"),
])
def test_implicit_mode_errors(params: dict, call: str, match: str) -> None:
    est = DeepMatrixCompletion(feedback="implicit", rank=1, max_steps=2,
                               validation_fraction=0.0, **params)
    rows, cols, values = [0, 1, 2], [0, 1, 2], [1.0, 4.0, 5.0]
    with pytest.raises(ValueError, match=match):
        est.fit(rows, cols, values)
        getattr(est, call)(rows, cols, values)


def test_negative_confidences_are_refused() -> None:
    """Values below -1/α (Jester-style ratings in [-10, 10], every one a positive) made
    confidences 1 + α·r < 0: the loss was unbounded below and training ran off to a train
    loss of about -10⁴ without a warning. A threshold that keeps only r >= -1/α fits."""
    rows, cols, values = [0, 1, 2, 3], [0, 1, 2, 3], [-10.0, 4.0, 8.0, 2.0]
    est = DeepMatrixCompletion(feedback="implicit", rank=1, max_steps=2,
                               validation_fraction=0.0)
    with pytest.raises(ValueError, match=r"confidences 1 \+ alpha·r >= 0.*value -10 gives -9"):
        est.fit(rows, cols, values)
    assert est.set_params(positive_threshold=0.0).fit(rows, cols, values).n_steps_ == 2
