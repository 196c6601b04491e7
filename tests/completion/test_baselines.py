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
    # same draws; ARPACK's round-off differs from run to run
    np.testing.assert_allclose(fitted.predict(rows, cols), same.predict(rows, cols), atol=1e-9)
    for bad in (-1, 1.5, 2**32, True):
        with pytest.raises(ValueError, match=rf"random_state must be an integer in "
                                             rf"\[0, 2\*\*32\), got {bad!r}"):
            baseline(random_state=bad).fit(rows, cols, values)


# Oracle tests: each baseline against a dense NumPy reference of what its docstring cites.

def _noisy(seed: int = 0, m: int = 30, n: int = 25):
    """Biases + rank 2 + noise, half observed; returns rows, cols (row-major), values, mask."""
    rng = np.random.default_rng(seed)
    full = (3.0 + rng.standard_normal(m)[:, None] + rng.standard_normal(n)[None, :]
            + rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
            + 0.3 * rng.standard_normal((m, n)))
    mask = rng.random((m, n)) < 0.5
    rows, cols = np.nonzero(mask)
    return rows, cols, full[rows, cols], mask


def _dense(rows, cols, values, shape) -> np.ndarray:
    out = np.zeros(shape)
    out[rows, cols] = values
    return out


def _ridge_biases(rows, cols, values, shape, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """argmin Σ (y − μ − b_u − c_i)² + reg (‖b‖² + ‖c‖²), μ the mean of ``values``: the direct
    solve of its normal equations."""
    m, n = shape
    design = np.zeros((rows.size, m + n))
    design[np.arange(rows.size), rows] = 1.0
    design[np.arange(rows.size), m + cols] = 1.0
    exact = np.linalg.solve(design.T @ design + reg * np.eye(m + n),
                            design.T @ (values - values.mean()))
    return exact[:m], exact[m:]


@pytest.mark.parametrize("reg", [5.0, 0.5])
def test_biases_are_the_ridge_minimizer(reg: float) -> None:
    """Koren's baseline predictor: μ = the training mean, (b, c) = argmin Σ (y − μ − b_u − c_i)²
    + reg (‖b‖² + ‖c‖²); a row and a column with no rating (shape larger than the data) get
    bias 0. At the defaults: the sweeps used to stop after 20, 0.003 short of the minimizer at
    reg = 0.5; they now run until no bias moves by more than tol = 1e-8."""
    rows, cols, values, _ = _noisy()
    m, n = 31, 26
    model = Biases(reg=reg).fit(rows, cols, values, shape=(m, n))
    row_bias, col_bias = _ridge_biases(rows, cols, values, (m, n), reg)
    assert model.mean_ == pytest.approx(values.mean(), abs=1e-12)
    np.testing.assert_allclose(model.row_bias_, row_bias, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.col_bias_, col_bias, rtol=0, atol=1e-6)
    assert model.row_bias_[30] == model.col_bias_[25] == 0.0


def test_biases_stop_at_tol_or_after_iterations_sweeps() -> None:
    """``iterations`` caps the sweeps (tol = 0: exactly that many); a loose tol stops early,
    short of the minimizer, a tight one reaches it."""
    rows, cols, values, _ = _noisy()
    row_bias, _ = _ridge_biases(rows, cols, values, (30, 25), 0.5)

    def error(**params) -> float:
        return float(np.abs(Biases(reg=0.5, **params).fit(rows, cols, values).row_bias_
                            - row_bias).max())

    assert error(iterations=20, tol=0.0) > 1e-3
    assert error(iterations=21, tol=0.0) < error(iterations=20, tol=0.0)
    assert 1e-6 < error(tol=1e-3) < 1e-1
    assert error(tol=1e-12) < 1e-9


def _svt(matrix: np.ndarray, lam: float, max_rank: int | None = None) -> np.ndarray:
    """S_λ: soft-threshold the singular values (keeping the top max_rank)."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    s = np.maximum(s - lam, 0.0)
    if max_rank is not None:
        s[max_rank:] = 0.0
    return (u * s) @ vt


def _dense_soft_impute(observed: np.ndarray, mask: np.ndarray, lambdas, iterations: int,
                       max_rank: int | None = None) -> list[np.ndarray]:
    """Mazumder et al. (2010) Alg. 1, dense: Z ← S_λ(P_Ω(Y) + P_Ω⊥(Z)), ``iterations`` times
    per λ (stopping early only at Z = 0), warm-started along ``lambdas``."""
    z, fits = np.zeros_like(observed), []
    for lam in lambdas:
        for _ in range(iterations):
            z = _svt(np.where(mask, observed, z), lam, max_rank)
            if not z.any():
                break
        fits.append(z)
    return fits


def _low_rank(factors) -> np.ndarray:
    u, s, v = factors
    return (u * s) @ v.T


@pytest.mark.parametrize("max_rank", [24, 3])
def test_soft_impute_iterates_are_dense_algorithm_1(max_rank: int) -> None:
    """The sparse + low-rank iteration (ARPACK on a LinearOperator) is Alg. 1 step for step:
    a one-λ path and a warm-started three-λ path, a fixed number of iterations (tol=0), equal
    the dense reference (top max_rank singular values when the cap binds)."""
    rows, cols, values, mask = _noisy()
    residual = values - values.mean()
    observed = _dense(rows, cols, residual, mask.shape)
    top = np.linalg.svd(observed, compute_uv=False)[0]
    model = SoftImpute(max_rank=max_rank, iterations=25, tol=0.0)
    model.shape_ = mask.shape
    for lambdas in (np.array([0.2 * top]), top * np.array([0.6, 0.3, 0.15])):
        fits = model._path(rows, cols, residual, lambdas)
        expected = _dense_soft_impute(observed, mask, lambdas, 25, max_rank)
        assert len(fits) == len(lambdas)
        for fit, ref in zip(fits, expected, strict=True):
            assert fit[1].size <= max_rank
            np.testing.assert_allclose(_low_rank(fit), ref, atol=1e-8)


def test_soft_impute_converges_to_the_fixed_point() -> None:
    """Run to a tight tolerance at one λ, Z = S_λ(P_Ω(Y) + P_Ω⊥(Z)) (dense SVD) holds."""
    rows, cols, values, mask = _noisy(seed=1)
    residual = values - values.mean()
    observed = _dense(rows, cols, residual, mask.shape)
    lam = 0.2 * np.linalg.svd(observed, compute_uv=False)[0]
    model = SoftImpute(max_rank=24, iterations=1000, tol=1e-14)
    model.shape_ = mask.shape
    fit = model._path(rows, cols, residual, np.array([lam]))[0]
    z = _low_rank(fit)
    assert 0 < fit[1].size < 24  # the rank cap does not bind
    np.testing.assert_allclose(_svt(np.where(mask, observed, z), lam), z, atol=1e-4)


def test_soft_impute_path_validation_and_refit() -> None:
    """The whole fit against a dense reference. Selection on the training part (all but
    random_state's draw of validation_fraction) alone: its mean and ridge biases (bias_reg),
    the λ path σ_max(P_Ω(its residual))·geomspace(1, lambda_min_ratio, n_lambdas), each λ
    fitted warm-started; λ_ = the best RMSE on the validation residual of those biases. Then
    the biases on all observations and the path up to λ_ on their residual predict."""
    rows, cols, values, mask = _noisy(seed=7)
    m, n = mask.shape
    params = dict(max_rank=24, n_lambdas=6, lambda_min_ratio=0.02, iterations=25, tol=0.0,
                  validation_fraction=0.2, bias_reg=5.0, random_state=3)
    model = SoftImpute(**params).fit(rows, cols, values)
    val = np.random.default_rng(3).random(rows.size) < 0.2
    train = Biases(reg=5.0).fit(rows[~val], cols[~val], values[~val], shape=(m, n))
    residual = values - train.predict(rows, cols)
    train_mask = _dense(rows[~val], cols[~val], 1.0, (m, n)).astype(bool)
    observed = _dense(rows[~val], cols[~val], residual[~val], (m, n))
    lambdas = (np.linalg.svd(observed, compute_uv=False)[0]
               * np.geomspace(1.0, 0.02, 6))
    errors = [float(np.sqrt(np.mean((z[rows[val], cols[val]] - residual[val]) ** 2)))
              for z in _dense_soft_impute(observed, train_mask, lambdas, 25)]
    best = int(np.argmin(errors))
    assert 0 < best < 5 and sorted(errors)[1] - errors[best] > 1e-3  # a clear interior choice
    assert model.lambda_ == pytest.approx(lambdas[best], rel=1e-10)
    assert model.validation_rmse_ == pytest.approx(errors[best], abs=1e-8)
    biases = Biases(reg=5.0).fit(rows, cols, values)
    np.testing.assert_allclose(model.row_bias_, biases.row_bias_, atol=1e-12)
    np.testing.assert_allclose(model.col_bias_, biases.col_bias_, atol=1e-12)
    observed = _dense(rows, cols, values - biases.predict(rows, cols), (m, n))
    z = _dense_soft_impute(observed, mask, lambdas[: best + 1], 25)[-1]
    everything = np.nonzero(np.ones((m, n), bool))
    np.testing.assert_allclose(
        model.predict(*everything),
        biases.predict(*everything) + z[everything], atol=1e-8)


def test_soft_impute_selection_never_sees_the_validation_ratings(monkeypatch) -> None:
    """The biases were fitted on all observations before λ was chosen on a validation split of
    them, so the validation ratings leaked into the residuals the path was fitted on and scored
    against. Now the selection path is fitted on the same residuals, with the same λ's, whatever
    the validation ratings are; only the final refit on all observations sees them."""
    rows, cols, values, _ = _noisy(seed=2)
    val = np.random.default_rng(3).random(rows.size) < 0.2
    poisoned = np.where(val, values + 3.0 * np.random.default_rng(9).standard_normal(rows.size),
                        values)
    calls = []
    original = SoftImpute._path

    def spy(self, rows, cols, residual, lambdas):
        calls.append((rows.copy(), cols.copy(), residual.copy(), lambdas.copy()))
        return original(self, rows, cols, residual, lambdas)

    monkeypatch.setattr(SoftImpute, "_path", spy)
    for data in (values, poisoned):
        SoftImpute(max_rank=5, n_lambdas=4, validation_fraction=0.2, random_state=3).fit(
            rows, cols, data)
    (clean, clean_refit), (dirty, dirty_refit) = calls[:2], calls[2:]
    assert clean[0].size == (~val).sum()
    for a, b in zip(clean, dirty, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)  # λ's: ARPACK's round-off
    assert not np.allclose(clean_refit[2], dirty_refit[2])


def _als_objective(model: BiasedALS, rows, cols, values) -> float:
    """Σ_Ω (y − ŷ)² + reg Σ_u n_u (‖p_u‖² + b_u²) + reg Σ_i n_i (‖q_i‖² + c_i²)."""
    n_u = np.bincount(rows, minlength=model.shape_[0])
    n_i = np.bincount(cols, minlength=model.shape_[1])
    return float(np.sum((values - model.predict(rows, cols)) ** 2)
                 + model.reg * n_u @ (np.sum(model.row_factors_**2, 1) + model.row_bias_**2)
                 + model.reg * n_i @ (np.sum(model.col_factors_**2, 1) + model.col_bias_**2))


def _ridge(features: np.ndarray, target: np.ndarray, penalty: float) -> np.ndarray:
    return np.linalg.solve(features.T @ features + penalty * np.eye(features.shape[1]),
                           features.T @ target)


def _assert_ridge_half_step(factors: np.ndarray, biases: np.ndarray, own: np.ndarray,
                            other: np.ndarray, other_factors: np.ndarray,
                            other_bias: np.ndarray, y: np.ndarray, reg: float) -> None:
    """Each row u of ``factors``/``biases`` is the weighted-λ ridge solution of its ratings
    (``own == u``) given the other side's factors and biases (ALS-WR's half-step)."""
    k = factors.shape[1]
    for u in range(len(factors)):
        sel = own == u
        x = _ridge(np.column_stack([other_factors[other[sel]], np.ones(sel.sum())]),
                   y[sel] - other_bias[other[sel]], reg * sel.sum())
        np.testing.assert_allclose(factors[u], x[:k], atol=1e-10)
        assert biases[u] == pytest.approx(x[k], abs=1e-10)


def test_biased_als_half_steps_are_weighted_lambda_ridge_solves() -> None:
    """ALS-WR (Zhou et al. 2008, biased): iteration t's user step is, for every user, the
    ridge solve of [p_u; b_u] against [q_i; 1] with penalty reg·n_u, given iteration t − 1's
    items; its item step the same given iteration t's users (dense per-row solves). A row and
    a column with no rating (shape larger than the data) get zero factors and bias."""
    rows, cols, values, _ = _noisy()
    m, n, k, reg = 31, 26, 3, 0.1
    before = BiasedALS(rank=k, reg=reg, iterations=4).fit(rows, cols, values, shape=(m, n))
    after = BiasedALS(rank=k, reg=reg, iterations=5).fit(rows, cols, values, shape=(m, n))
    y = values - values.mean()
    assert after.mean_ == pytest.approx(values.mean(), abs=1e-12)
    _assert_ridge_half_step(after.row_factors_[:30], after.row_bias_[:30], rows, cols,
                            before.col_factors_, before.col_bias_, y, reg)
    _assert_ridge_half_step(after.col_factors_[:25], after.col_bias_[:25], cols, rows,
                            after.row_factors_, after.row_bias_, y, reg)
    assert not after.row_factors_[30].any() and after.row_bias_[30] == 0.0
    assert not after.col_factors_[25].any() and after.col_bias_[25] == 0.0


def test_biased_als_objective_never_increases() -> None:
    """Exact block minimization: the stated objective is non-increasing over iterations."""
    rows, cols, values, _ = _noisy(seed=1)
    objective = [_als_objective(BiasedALS(rank=3, reg=0.1, iterations=t).fit(rows, cols, values),
                                rows, cols, values) for t in range(1, 9)]
    assert np.all(np.diff(objective) <= 1e-9 * objective[0]), objective


@pytest.mark.parametrize("algorithm,params", [("BaselineOnly", {"verbose": False}), ("SVD", {}),
                                              ("KNNBaseline", {"verbose": False}),
                                              ("SVDpp", {"n_epochs": 3})])
@pytest.mark.parametrize("clip", [None, (2.0, 4.0)])
def test_surprise_wrapper_predicts_as_surprise(algorithm: str, params: dict, clip) -> None:
    """Same predictions as Surprise fitted directly on the same trainset (the wrapper's
    row-major order, raw ids = our indices), unknown ids (a row with no rating, ids past the
    shape) included, clipped to clip or the training range."""
    surprise = pytest.importorskip("surprise")
    from deeplora.completion.baselines import Surprise

    rng = np.random.default_rng(0)
    full = np.clip(np.round(3 + rng.standard_normal(30)[:, None]
                            + rng.standard_normal(25)[None, :]), 1, 5)
    mask = rng.random((30, 25)) < 0.5
    mask[7] = False
    rows, cols = np.nonzero(mask)
    values = full[rows, cols]
    shuffled = rng.permutation(rows.size)
    model = Surprise(algorithm, clip=clip, random_state=0, **params).fit(
        rows[shuffled], cols[shuffled], values[shuffled], shape=(30, 25))
    reader = surprise.Reader(rating_scale=clip or (values.min(), values.max()))
    trainset = surprise.Dataset.load_from_folds([], reader).construct_trainset(
        [(int(r), int(c), float(v), None) for r, c, v in zip(rows, cols, values, strict=True)])
    extra = {"random_state": 0} if algorithm.startswith("SVD") else {}
    reference = getattr(surprise, algorithm)(**params, **extra).fit(trainset)
    q_rows = np.r_[np.arange(30), 30, 0, 35]
    q_cols = np.r_[np.arange(30) % 25, 3, 40, 40]
    expected = [reference.predict(int(r), int(c), clip=True).est
                for r, c in zip(q_rows, q_cols, strict=True)]
    np.testing.assert_allclose(model.predict(q_rows, q_cols), expected, atol=1e-12)
    low, high = clip or (values.min(), values.max())
    assert np.all((model.predict(q_rows, q_cols) >= low) & (model.predict(q_rows, q_cols) <= high))


def test_unregularized_biases_of_unrated_indices_are_zero() -> None:
    """reg=0 with a row and a column of the shape never rated gave them 0/0 = NaN biases (and
    NaN predictions); their bias is 0 and the others are the least-squares fit."""
    rows, cols, values, _ = _noisy()
    model = Biases(reg=0.0).fit(rows, cols, values, shape=(31, 26))
    assert model.row_bias_[30] == model.col_bias_[25] == 0.0
    assert np.all(np.isfinite(model.predict([30, 0, 30], [0, 25, 25])))
    residual = values - model.predict(rows, cols)
    # Least squares: the residual of every row and column sums to zero.
    np.testing.assert_allclose(np.bincount(rows, weights=residual), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.bincount(cols, weights=residual), 0.0, atol=1e-8)


@pytest.mark.parametrize("make,message", [
    (lambda: Biases(reg=-1.0), "reg must be a finite number >= 0, got -1.0"),
    (lambda: Biases(reg=float("nan")), "reg must be a finite number >= 0, got nan"),
    (lambda: Biases(iterations=0), "iterations must be an integer >= 1, got 0"),
    (lambda: Biases(iterations=2.5), "iterations must be an integer >= 1, got 2.5"),
    (lambda: Biases(tol=-1e-8), "tol must be a finite number >= 0, got -1e-08"),
    (lambda: SoftImpute(max_rank=0), "max_rank must be an integer >= 1, got 0"),
    (lambda: SoftImpute(n_lambdas=0), "n_lambdas must be an integer >= 1, got 0"),
    (lambda: SoftImpute(lambda_min_ratio=0.0),
     r"lambda_min_ratio must be a finite number in \(0, 1\], got 0.0"),
    (lambda: SoftImpute(lambda_min_ratio=2.0),
     r"lambda_min_ratio must be a finite number in \(0, 1\], got 2.0"),
    (lambda: SoftImpute(iterations=0), "iterations must be an integer >= 1, got 0"),
    (lambda: SoftImpute(tol=-1e-4), "tol must be a finite number >= 0, got -0.0001"),
    (lambda: SoftImpute(validation_fraction=0.0),
     r"validation_fraction must be a finite number in \(0, 1\), got 0.0"),
    (lambda: SoftImpute(validation_fraction=1.0),
     r"validation_fraction must be a finite number in \(0, 1\), got 1.0"),
    (lambda: SoftImpute(bias_reg=-5.0), "bias_reg must be a finite number >= 0, got -5.0"),
    (lambda: SoftImpute(random_state=-1),
     r"random_state must be an integer in \[0, 2\*\*32\), got -1"),
    (lambda: BiasedALS(rank=0), "rank must be an integer >= 1, got 0"),
    (lambda: BiasedALS(rank=-1), "rank must be an integer >= 1, got -1"),
    (lambda: BiasedALS(reg=0.0), "reg must be a finite number > 0, got 0.0"),
    (lambda: BiasedALS(reg=-0.1), "reg must be a finite number > 0, got -0.1"),
    (lambda: BiasedALS(iterations=0), "iterations must be an integer >= 1, got 0"),
    (lambda: BiasedALS(random_state=None),
     r"random_state must be an integer in \[0, 2\*\*32\), got None"),
    (lambda: GlobalMean(clip=(5.0, 1.0)),
     r"clip must be None or \(low, high\) with low < high, got \(5.0, 1.0\)"),
    (lambda: Biases(clip=(10.0, 20.0)), r"clip \(10, 20\) does not overlap the ratings' range"),
    (lambda: BiasedALS(clip=(1.0, float("inf"))), "clip must be None or"),
])
def test_bad_parameters_raise_naming_them(make, message: str) -> None:
    """They were accepted: silent garbage (reg=-1, iterations=0, rank=0, validation_fraction=0
    fitting λ_max, a reversed or missing clip mapping every prediction to one value) or an
    error from deep inside NumPy/ARPACK naming no parameter. Checked before anything is set."""
    rows, cols, values, _ = _noisy()
    model = make()
    with pytest.raises(ValueError, match=message):
        model.fit(rows, cols, values)
    assert not hasattr(model, "shape_")


def test_soft_impute_refuses_an_empty_validation_or_training_part() -> None:
    """Three ratings at validation_fraction=0.01 drew no validation rating: every λ scored NaN
    and λ_max (a zero interaction) was kept without a word; at 0.99 no training rating (an
    ARPACK error)."""
    with pytest.raises(ValueError, match=r"validation_fraction=0\.01 leaves 0 of the 3 ratings"):
        SoftImpute(validation_fraction=0.01).fit([0, 1, 1], [1, 0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"validation_fraction=0\.99 leaves 3 of the 3 ratings"):
        SoftImpute(validation_fraction=0.99).fit([0, 1, 1], [1, 0, 1], [1.0, 2.0, 3.0])


def test_surprise_wrapper_checks_algorithm_and_clip() -> None:
    pytest.importorskip("surprise")
    from deeplora.completion.baselines import Surprise

    rows, cols, values, _ = _noisy()
    for model, message in (
            (Surprise("Foo"), "algorithm must name a surprise algorithm .*got 'Foo'"),
            (Surprise("Dataset"), "algorithm must name a surprise algorithm"),
            (Surprise("BaselineOnly", clip=(5.0, 1.0)), "clip must be None or")):
        with pytest.raises(ValueError, match=message):
            model.fit(rows, cols, values)
        assert not hasattr(model, "shape_")


@pytest.mark.parametrize("make", [GlobalMean, lambda **kw: Biases(reg=1.0, **kw),
                                  lambda **kw: SoftImpute(max_rank=5, n_lambdas=4, **kw),
                                  lambda **kw: BiasedALS(rank=2, **kw)])
def test_every_baseline_falls_back_clips_and_refuses_duplicates(make) -> None:
    """An unknown row, column or both gets μ plus the known side's bias (no interaction); a
    known pair μ + b + c + interaction; all clipped; a duplicate (row, col) pair is refused."""
    rows, cols, values, _ = _noisy()
    model = make(clip=(2.0, 4.5)).fit(rows, cols, values, shape=(30, 25))
    free = make().fit(rows, cols, values, shape=(30, 25))
    out = free.predict([30, 0, 30, 3], [0, 25, 25, 4])
    expected = free.mean_ + np.array([free.col_bias_[0], free.row_bias_[0], 0.0,
                                      free.row_bias_[3] + free.col_bias_[4]])
    np.testing.assert_allclose(out[:3], expected[:3], atol=1e-12)
    interaction = free._interaction(np.array([3]), np.array([4]))[0]
    assert out[3] == pytest.approx(expected[3] + interaction, abs=1e-12)
    everything = np.nonzero(np.ones((31, 26), bool))
    np.testing.assert_allclose(model.predict(*everything),
                               np.clip(free.predict(*everything), 2.0, 4.5), atol=1e-12)
    with pytest.raises(ValueError, match="1 duplicate"):
        make().fit(np.r_[rows, rows[0]], np.r_[cols, cols[0]], np.r_[values, 1.0])
