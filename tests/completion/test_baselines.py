"""Baselines recover what they model and fall back on unknown ids."""

import numpy as np
import pytest

from deeplora.completion.baselines import BiasedALS, Biases, GlobalMean, SoftImpute


def _data(seed: int = 0, m: int = 30, n: int = 25):
    rng = np.random.default_rng(seed)
    b, c = rng.standard_normal(m), rng.standard_normal(n)
    full = 3.0 + b[:, None] + c[None, :] + rng.standard_normal((m, 2)) @ rng.standard_normal(
        (2, n))
    mask = rng.random((m, n)) < 0.6
    rows, cols = np.nonzero(mask)
    return rows, cols, full[rows, cols], full, np.nonzero(~mask)


def _rmse(model, full, hidden) -> float:
    return float(np.sqrt(np.mean((model.predict(*hidden) - full[hidden]) ** 2)))


def test_baselines_ordering_on_low_rank_plus_biases() -> None:
    rows, cols, values, full, hidden = _data()
    errors = {type(b).__name__: _rmse(b.fit(rows, cols, values), full, hidden)
              for b in (GlobalMean(), Biases(reg=0.1), SoftImpute(max_rank=5, n_lambdas=8),
                        BiasedALS(rank=2, reg=0.01, iterations=20))}
    assert errors["Biases"] < 0.85 * errors["GlobalMean"], errors
    assert errors["SoftImpute"] < 0.5 * errors["Biases"], errors
    assert errors["BiasedALS"] < 0.2 * errors["Biases"], errors


def test_unknown_ids_fall_back_and_clip() -> None:
    rows, cols, values, *_ = _data(seed=1)
    model = Biases(clip=(1.0, 5.0)).fit(rows, cols, values, shape=(30, 25))
    out = model.predict([30, 0], [25, 25])
    assert out[0] == pytest.approx(np.clip(model.mean_, 1, 5))
    assert out[1] == pytest.approx(np.clip(model.mean_ + model.row_bias_[0], 1, 5))
    with pytest.raises(ValueError, match="duplicate"):
        GlobalMean().fit([0, 0], [1, 1], [1.0, 2.0])


@pytest.mark.parametrize("baseline", [SoftImpute, BiasedALS])
def test_random_state_of_numpy_type_is_used_and_a_bad_one_named(baseline) -> None:
    """random_state=-1 or 1.5 was numpy's 'expected non-negative integer' / 'SeedSequence
    expects int'."""
    rows, cols, values, *_ = _data()
    fitted = baseline(random_state=np.int64(2)).fit(rows, cols, values)
    same = baseline(random_state=2).fit(rows, cols, values)
    np.testing.assert_array_equal(fitted.predict(rows, cols), same.predict(rows, cols))
    for bad in (-1, 1.5, 2**32, True):
        with pytest.raises(ValueError, match=rf"random_state must be an integer in "
                                             rf"\[0, 2\*\*32\), got {bad!r}"):
            baseline(random_state=bad).fit(rows, cols, values)
