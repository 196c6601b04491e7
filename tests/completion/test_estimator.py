"""DeepMatrixCompletion: fit/predict round trip, options, bad input."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from deeplora.completion.estimator import DeepMatrixCompletion

from .helpers import low_rank_ratings


def test_fit_predict_save_load_round_trip(tmp_path: Path) -> None:
    rows, cols, values, full, mask = low_rank_ratings()
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
    rows, cols, values, full, _ = low_rank_ratings(seed=1)
    matrix = scipy.sparse.coo_array((values, (rows, cols)), shape=full.shape)
    est = DeepMatrixCompletion(rank=3, method="narrow", max_steps=40, batch_size=200,
                               validation_fraction=0.0, bias="global")
    est.fit(matrix)
    assert est.shape_ == full.shape and est.n_steps_ == 40
    assert est.history_["train_loss"][-1] < est.history_["train_loss"][0]


def test_clip_and_unknown_fallback() -> None:
    rows, cols, values, *_ = low_rank_ratings(seed=2)
    est = DeepMatrixCompletion(rank=2, max_steps=20, clip=(2.5, 3.5)).fit(rows, cols, values)
    predicted = est.predict(np.array([0, 40, 0, 41]), np.array([0, 0, 30, 31]))
    assert predicted.min() >= 2.5 and predicted.max() <= 3.5
    mean = est.global_bias_
    assert predicted[3] == pytest.approx(np.clip(mean, 2.5, 3.5))  # both unknown: μ
    assert predicted[1] == pytest.approx(np.clip(mean + est.col_bias_[0], 2.5, 3.5))
    strict = DeepMatrixCompletion(rank=2, max_steps=2, unknown="raise").fit(rows, cols, values)
    with pytest.raises(ValueError, match="unknown"):
        strict.predict([40], [0])


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
    ({"reg_uniform": 1.5}, "reg_uniform"), ({"reg_uniform": -0.1}, "reg_uniform"),
    ({"reg_uniform": 0.5, "feedback": "implicit", "reg": 1.0}, "reg_uniform"),
    ({"feedback": "implicit", "positive_threshold": float("nan")},
     r"^positive_threshold must be a finite number, got nan$"),
    # 2**32 was taken by torch (numpy's global seeding and the CLI's --seed refuse it)
    ({"random_state": 2**32}, r"random_state must be an integer in \[0, 2\*\*32\), got 4294967296"),
    ({"random_state": 1.5}, r"random_state must be an integer in \[0, 2\*\*32\), got 1.5"),
])
def test_bad_params_fail_at_fit(params: dict, match: str) -> None:
    rows, cols, values, *_ = low_rank_ratings()
    est = DeepMatrixCompletion(**params)  # scikit-learn: __init__ only stores
    with pytest.raises(ValueError, match=match):
        est.fit(rows, cols, values)


@pytest.mark.parametrize("method", ["compressed", "narrow"])
def test_numpy_integer_and_float_parameters_fit(method: str) -> None:
    """rank=np.int64(2) (a grid over np.arange) was refused as 'not an integer', lr and
    init_scale of np.float32 as 'not a finite number'; bools stay refused."""
    rows, cols, values, *_ = low_rank_ratings()
    params = {"rank": np.int64(2), "depth": np.int64(3), "max_steps": np.int64(4),
              "patience": np.int64(2), "eval_every": np.int64(2), "batch_size": np.int64(64),
              "random_state": np.int64(1), "lr": np.float32(0.01),
              "init_scale": np.float32(1e-3), "clip": (np.float32(0), np.int64(9))}
    est = DeepMatrixCompletion(method=method, **params).fit(rows, cols, values)
    plain = DeepMatrixCompletion(method=method, **{k: v.item() for k, v in params.items()
                                                   if k != "clip"}, clip=(0.0, 9)
                                 ).fit(rows, cols, values)
    assert est.model_.depth == (5 if method == "compressed" else 3)
    np.testing.assert_array_equal(est.predict(rows, cols), plain.predict(rows, cols))
    for name in ("rank", "max_steps"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= ., got True"):
            DeepMatrixCompletion(**{name: True}).fit(rows, cols, values)


def test_clip_that_misses_the_training_range_is_refused_at_fit() -> None:
    rows, cols, values, *_ = low_rank_ratings(seed=2)
    high = float(values.max())
    with pytest.raises(ValueError, match=r"clip \(.*\) does not overlap the ratings' range"):
        DeepMatrixCompletion(rank=2, max_steps=2, clip=(high, high + 10)).fit(rows, cols, values)
    narrow = DeepMatrixCompletion(rank=2, max_steps=2, clip=(high - 1, high + 10))
    assert narrow.fit(rows, cols, values).clip_ == (high - 1, high + 10)


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


def _frame(rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame({"userId": [f"u{r}" for r in rows], "movieId": cols + 100,
                         "rating": values, "timestamp": np.arange(rows.size)})


def test_ratings_preset_regularization_and_sklearn_clone() -> None:
    from sklearn.base import clone

    est = DeepMatrixCompletion.ratings(max_steps=7)
    assert est.reg == "auto" and est.clip == "auto" and est.max_steps == 7
    copy = clone(est)
    assert copy.get_params() == est.get_params() and copy is not est
    copy.set_params(reg=0.5, rank=2)
    assert (copy.reg, copy.rank, est.reg) == (0.5, 2, "auto")
    rows, cols, values, *_ = low_rank_ratings(seed=3)
    fitted = copy.fit(rows, cols, values)
    assert fitted.clip_ == (values.min(), values.max())
    assert fitted.selected_["reg"] == 0.5 and fitted.path_ == []  # explicit: one fit
    # λ shrinks the factors: a heavily regularized fit has a smaller interaction term
    free = DeepMatrixCompletion(rank=2, max_steps=300, validation_fraction=0.0,
                                lr=0.1).fit(rows, cols, values)
    tight = clone(free).set_params(reg=5.0).fit(rows, cols, values)
    size = [np.linalg.norm(e._end_to_end()[0].detach().numpy() @ e._end_to_end()[1].detach()
                           .numpy().T) for e in (free, tight)]
    assert size[1] < 0.5 * size[0]


def test_device_parameter_on_cpu() -> None:
    rows, cols, values, *_ = low_rank_ratings(seed=4)
    est = DeepMatrixCompletion(rank=2, max_steps=5, device="cpu").fit(rows, cols, values)
    assert est.model_.factors[0].device.type == "cpu"
    auto = DeepMatrixCompletion(rank=2, max_steps=5).fit(rows, cols, values)  # "auto"
    np.testing.assert_allclose(auto.predict(rows, cols), est.predict(rows, cols), rtol=1e-5)
    with pytest.raises(ValueError, match="device"):
        DeepMatrixCompletion(device="nonsense").fit(rows, cols, values)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            DeepMatrixCompletion(device="cuda").fit(rows, cols, values)


def test_dataframe_fit_predict_recommend_raw_ids(tmp_path: Path) -> None:
    rows, cols, values, full, _mask = low_rank_ratings(seed=5)
    frame = _frame(rows, cols, values)
    est = DeepMatrixCompletion(rank=3, gamma=0.1, max_steps=300, patience=20).fit(frame)
    assert est.ids_ is not None and est.shape_ == full.shape
    np.testing.assert_allclose(est.predict(frame), est.predict(frame["userId"],
                                                                frame["movieId"]))
    assert est.evaluate(frame)["rmse"] < 0.5
    items, ratings = est.recommend(["u0", "u1", "nobody"], k=5)
    assert items.shape == ratings.shape == (3, 5)
    seen = set(cols[rows == 0] + 100)
    assert not seen & set(items[0]) and all(isinstance(i, int | np.integer) for i in items[0])
    assert np.all(np.diff(ratings[0]) <= 1e-12)  # best first
    # the top unseen items are those with the highest predicted rating among unseen ones
    unseen = np.setdiff1d(np.arange(full.shape[1]), cols[rows == 0])
    scores = est.predict(np.full(unseen.size, "u0"), unseen + 100)
    assert set(items[0]) == set(unseen[np.argsort(-scores)[:5]] + 100)
    # unknown user: the items with the largest column bias
    assert list(items[2]) == list(est.ids_.items[np.argsort(-est.col_bias_)[:5]])
    path = tmp_path / "m.pt"
    est.save(path)
    loaded = DeepMatrixCompletion.load(path)
    again, _ = loaded.recommend(["u0", "u1", "nobody"], k=5)
    np.testing.assert_array_equal(again, items)


def test_raw_ids_that_make_a_huge_shape_are_refused_with_advice() -> None:
    with pytest.raises(ValueError, match=r"a 100000001×100000001 model \(2 distinct rows, 2 "
                       r"distinct columns, rank 10\) needs about .* the ids look like raw "
                       r"labels, not 0-based indices: fit on a DataFrame"):
        DeepMatrixCompletion().fit([0, 10**8], [0, 10**8], [3.0, 4.0])
    with pytest.raises(ValueError, match="integer indices"):  # beyond int64: no OverflowError
        DeepMatrixCompletion().fit([2**70, 1], [0, 1], [3.0, 4.0])


@pytest.mark.parametrize(("method", "rows", "cols", "values", "match"), [
    ("evaluate", [0, 1], [0, 1], [3.0, np.nan], "finite"),
    ("score", [0, 1], [0, 1], [3.0, np.inf], "finite"),
    ("ranking_metrics", [0, 1], [0, 1], [5.0, np.nan], "finite"),
    ("evaluate", [0, 1], [0, 1], [3.0], "equal length"),
    ("ranking_metrics", [0, 1], [0], [5.0, 5.0], "equal length"),
    ("ranking_metrics", [0, 1], [0, 1], [5.0], "equal length"),
])
def test_held_out_ratings_are_checked(method: str, rows: list, cols: list, values: list,
                                      match: str) -> None:
    """NaN ratings gave an RMSE of NaN (or were silently left out of the ranking metrics);
    unequal lengths an IndexError from deep inside ranking_metrics."""
    est = DeepMatrixCompletion(rank=1, max_steps=1).fit([0, 1, 2], [0, 1, 2], [1.0, 2, 3])
    with pytest.raises(ValueError, match=match):
        getattr(est, method)(rows, cols, values)


def test_raw_integer_ids_are_looked_up_one_by_one() -> None:
    """On a model fitted on integer raw ids, one id that is not an integer ("new user")
    made every id of the call unknown (user 1 got the unknown user's list), and 100.5 was
    truncated to item 100."""
    rows, cols, values, *_ = low_rank_ratings(seed=5)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"userId": rows + 1, "movieId": cols + 100, "rating": values})
    est = DeepMatrixCompletion(rank=2, max_steps=20, validation_fraction=0.0).fit(frame)
    mean_plus_user = est.global_bias_ + est.row_bias_[0]  # user 1, unknown item
    np.testing.assert_allclose(est.predict([1, 1, 1, "new user"], [100, 100.0, 100.5, 100]),
                               [*est.predict([1, 1], [100, 100]), mean_plus_user,
                                est.predict([10**6], [100])[0]])
    mixed, _ = est.recommend([1, "new user"], k=3)
    np.testing.assert_array_equal(mixed, np.concatenate([est.recommend([1], k=3)[0],
                                                         est.recommend([10**6], k=3)[0]]))
