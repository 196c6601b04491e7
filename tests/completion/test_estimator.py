"""DeepMatrixCompletion: fit/predict/save/load round trip, options, bad input."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from deeplora.completion.estimator import DeepMatrixCompletion, check_observations


def _low_rank_ratings(m: int = 40, n: int = 30, fraction: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    full = 3.0 + rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
    mask = rng.random((m, n)) < fraction
    rows, cols = np.nonzero(mask)
    return rows, cols, full[rows, cols], full, mask


def test_fit_predict_save_load_round_trip(tmp_path: Path) -> None:
    rows, cols, values, full, mask = _low_rank_ratings()
    est = DeepMatrixCompletion(rank=3, gamma=0.1, max_steps=400, validation_fraction=0.1,
                               patience=20)  # small problem: outer factors must move
    est.fit(rows, cols, values)
    hidden = np.nonzero(~mask)
    error = est.evaluate(*hidden, full[hidden])
    baseline = np.sqrt(np.mean((full[hidden] - values.mean()) ** 2))
    assert error["rmse"] < 0.01 * baseline
    assert est.history_["step"][0] == 0 and len(est.history_["val_rmse"]) >= 2
    path = tmp_path / "model.pt"
    est.save(path)
    loaded = DeepMatrixCompletion.load(path)
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.predict(*hidden), est.predict(*hidden))
    assert loaded.score(*hidden, full[hidden]) == pytest.approx(est.score(*hidden, full[hidden]))


def test_fit_from_scipy_sparse_minibatches_and_narrow() -> None:
    rows, cols, values, full, _ = _low_rank_ratings(seed=1)
    matrix = scipy.sparse.coo_array((values, (rows, cols)), shape=full.shape)
    est = DeepMatrixCompletion(rank=3, method="narrow", max_steps=40, batch_size=200,
                               validation_fraction=0.0, bias="global")
    est.fit(matrix)
    assert est.shape_ == full.shape and est.n_steps_ == 40
    assert est.history_["train_loss"][-1] < est.history_["train_loss"][0]


def test_clip_and_unknown_fallback() -> None:
    rows, cols, values, *_ = _low_rank_ratings(seed=2)
    est = DeepMatrixCompletion(rank=2, max_steps=20, clip=(2.5, 3.5)).fit(rows, cols, values)
    predicted = est.predict(np.array([0, 40, 0, 41]), np.array([0, 0, 30, 31]))
    assert predicted.min() >= 2.5 and predicted.max() <= 3.5
    mean = est.global_bias_
    assert predicted[3] == pytest.approx(np.clip(mean, 2.5, 3.5))  # both unknown: μ
    assert predicted[1] == pytest.approx(np.clip(mean + est.col_bias_[0], 2.5, 3.5))
    strict = DeepMatrixCompletion(rank=2, max_steps=2, unknown="raise").fit(rows, cols, values)
    with pytest.raises(ValueError, match="unknown"):
        strict.predict([40], [0])


def test_duplicates_raise_or_average() -> None:
    rows, cols, values = np.array([0, 1, 0, 2]), np.array([1, 0, 1, 2]), np.array([1., 2, 3, 4])
    with pytest.raises(ValueError, match="duplicate"):
        check_observations(rows, cols, values)
    r, c, v, shape = check_observations(rows, cols, values, duplicates="mean")
    assert shape == (3, 3) and list(zip(r, c, v, strict=True)) == [(0, 1, 2.0), (1, 0, 2.0),
                                                                   (2, 2, 4.0)]


@pytest.mark.parametrize(("rows", "cols", "values", "shape", "match"), [
    ([], [], [], None, "no observations"),
    ([0, 1], [0, 1], [1.0, np.nan], None, "finite"),
    ([0, -1], [0, 1], [1.0, 2.0], None, ">= 0"),
    ([0, 5], [0, 1], [1.0, 2.0], (3, 3), r"\[0, 3\)"),
    ([0, 1], [0, 1], [1.0], None, "equal length"),
    ([0.5, 1], [0, 1], [1.0, 2.0], None, "integer"),
])
def test_bad_observations(rows, cols, values, shape, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeepMatrixCompletion(rank=1, max_steps=1).fit(rows, cols, values, shape=shape)


@pytest.mark.parametrize(("params", "match"), [
    ({"rank": 0}, "rank"), ({"depth": 1}, "depth"), ({"method": "original"}, "method"),
    ({"lr": -1.0}, "lr"), ({"clip": (5, 1)}, "clip"), ({"validation_fraction": 1.0}, "valid"),
    ({"bias": "rows"}, "bias"), ({"init_scale": float("inf")}, "init_scale"),
])
def test_bad_params_fail_at_fit(params: dict, match: str) -> None:
    rows, cols, values, *_ = _low_rank_ratings()
    est = DeepMatrixCompletion(**params)  # scikit-learn: __init__ only stores
    with pytest.raises(ValueError, match=match):
        est.fit(rows, cols, values)


def test_rank_larger_than_dimension_and_unfitted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 × rank"):
        DeepMatrixCompletion(rank=3).fit([0, 1, 4], [0, 1, 2], [1.0, 2.0, 3.0])
    est = DeepMatrixCompletion()
    with pytest.raises(ValueError, match="not fitted"):
        est.predict([0], [0])
    with pytest.raises(ValueError, match="not fitted"):
        est.save(tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="no observations"):
        DeepMatrixCompletion(rank=1, max_steps=1).fit([0, 1, 2], [0, 1, 2], [1., 2, 3]).evaluate(
            [], [], [])
