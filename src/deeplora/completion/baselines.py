"""Rating-prediction baselines, written here on NumPy/SciPy (no extra dependency).

All share ``fit(rows, cols, values, shape)`` / ``predict(rows, cols)``; ids >= the fitted shape
are unknown and get the global mean plus the known side's bias. Predictions are clipped to
``clip`` when given. ``fit`` checks the parameters first: a bad one (``rank=0``, ``reg=-1``, a
``clip`` that misses the ratings' range, …) is a ``ValueError`` naming it.

- :class:`GlobalMean`: μ.
- :class:`Biases`: ``μ + b_u + c_i``, ridge-regularized, by alternating exact minimization
  to convergence (Koren 2008, "baseline predictors").
- :class:`SoftImpute`: nuclear-norm regularized completion of the bias residuals (Mazumder,
  Hastie & Tibshirani 2010, Alg. 1): ``Z ← S_λ(P_Ω(Y) + P_Ω⊥(Z))`` with S_λ soft-thresholding
  of singular values, over a decreasing λ path with warm starts; λ is chosen on a validation
  split that the biases and fits it scores never saw. ``P_Ω(Y − Z) + Z`` is kept as sparse +
  low-rank and its top singular triplets come from ARPACK on a
  :class:`scipy.sparse.linalg.LinearOperator`, so nothing is m×n.
- :class:`BiasedALS`: ``μ + b_u + c_i + p_uᵀ q_i`` by alternating least squares with
  weighted-λ regularization (Zhou et al. 2008), each half-step an exact batch of ridge solves.

- :class:`Surprise`: any algorithm of ``scikit-surprise`` (BaselineOnly, SVD, SVDpp,
  KNNBaseline, …; Hug 2020) behind the same interface — the optional ``surprise`` extra.
  SoftImpute and ALS-WR stay here because Surprise has no counterpart.

(``fancyimpute`` has a SoftImpute but pulls in TensorFlow.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from deeplora.checks import check_integer, check_seed, is_finite_number
from deeplora.completion.observations import as_index, check_clip, check_observations


def _check_number(name: str, value: Any, low: float, high: float = math.inf, *,
                  low_open: bool = False, high_open: bool = True) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number in the interval."""
    if not (is_finite_number(value) and (low < value if low_open else low <= value)
            and (value < high if high_open else value <= high)):
        bounds = (f"{'>' if low_open else '>='} {low:g}" if high == math.inf else
                  f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")


def _check_clip(clip: Any, values: np.ndarray) -> None:
    """``clip`` is None or ``(low, high)``, finite, ``low < high``, overlapping ``values``."""
    if clip is None:
        return
    if not (isinstance(clip, (tuple, list)) and len(clip) == 2
            and all(is_finite_number(c) for c in clip) and clip[0] < clip[1]):
        raise ValueError(f"clip must be None or (low, high) with low < high, got {clip!r}")
    check_clip(clip, values)


class _Baseline:
    clip: tuple[float, float] | None = None

    def fit(self, rows: Any, cols: Any, values: Any,
            shape: tuple[int, int] | None = None) -> _Baseline:
        self._check_params()
        rows, cols, values, shape = check_observations(rows, cols, values, shape)
        _check_clip(self.clip, values)
        self.shape_, self.mean_ = shape, float(values.mean())
        m, n = self.shape_
        self.row_bias_, self.col_bias_ = np.zeros(m), np.zeros(n)
        self._fit(rows, cols, values)
        return self

    def _check_params(self) -> None:
        """``ValueError`` naming the first bad parameter (``clip`` is checked in ``fit``)."""

    def _fit(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        """Set biases (and factors) after ``mean_`` and ``shape_``."""

    def _interaction(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.zeros(rows.size)

    def predict(self, rows: Any, cols: Any) -> np.ndarray:
        rows, cols = as_index("rows", rows), as_index("cols", cols)
        m, n = self.shape_
        known_row, known_col = rows < m, cols < n
        out = np.full(rows.size, self.mean_)
        out[known_row] += self.row_bias_[rows[known_row]]
        out[known_col] += self.col_bias_[cols[known_col]]
        both = known_row & known_col
        out[both] += self._interaction(rows[both], cols[both])
        return out if self.clip is None else np.clip(out, *self.clip)


class GlobalMean(_Baseline):
    """Predict the training mean."""

    def __init__(self, clip: tuple[float, float] | None = None) -> None:
        self.clip = clip


def _biases(rows: np.ndarray, cols: np.ndarray, residual: np.ndarray, shape: tuple[int, int],
            reg: float, tol: float = 1e-8, max_sweeps: int = 1000
            ) -> tuple[np.ndarray, np.ndarray]:
    """argmin Σ (r − b_u − c_i)² + reg (‖b‖² + ‖c‖²) by alternating exact updates, until no
    bias moved by more than ``tol`` in a sweep (at most ``max_sweeps`` sweeps)."""
    m, n = shape
    # An index with no rating has a zero sum: at least 1 keeps its bias 0 when reg = 0.
    row_count = np.maximum(np.bincount(rows, minlength=m), 1) + reg
    col_count = np.maximum(np.bincount(cols, minlength=n), 1) + reg
    b, c = np.zeros(m), np.zeros(n)
    for _ in range(max_sweeps):
        new_c = np.bincount(cols, weights=residual - b[rows], minlength=n) / col_count
        new_b = np.bincount(rows, weights=residual - new_c[cols], minlength=m) / row_count
        change = max(np.abs(new_b - b).max(initial=0.0), np.abs(new_c - c).max(initial=0.0))
        b, c = new_b, new_c
        if change <= tol:
            break
    return b, c


class Biases(_Baseline):
    """``μ + b_u + c_i`` with ridge penalty ``reg`` on the biases: alternating sweeps until no
    bias moves by more than ``tol`` (at most ``iterations`` sweeps)."""

    def __init__(self, reg: float = 5.0, iterations: int = 1000, tol: float = 1e-8,
                 clip: tuple[float, float] | None = None) -> None:
        self.reg, self.iterations, self.tol, self.clip = reg, iterations, tol, clip

    def _check_params(self) -> None:
        _check_number("reg", self.reg, 0)
        check_integer("iterations", self.iterations, 1)
        _check_number("tol", self.tol, 0)

    def _fit(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        self.row_bias_, self.col_bias_ = _biases(rows, cols, values - self.mean_, self.shape_,
                                                 self.reg, self.tol, self.iterations)


def _soft_impute(sparse: scipy.sparse.csr_array, rows: np.ndarray, cols: np.ndarray,
                 values: np.ndarray, lam: float, max_rank: int, start: tuple | None,
                 iterations: int, tol: float, seed: int) -> tuple[np.ndarray, ...]:
    """Soft-Impute iterations at one λ; returns (U, s, V) with Z = U diag(s) Vᵀ."""
    m, n = sparse.shape
    u, s, v = start if start is not None else (np.zeros((m, 1)), np.zeros(1), np.zeros((n, 1)))
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        fitted = np.einsum("ij,ij->i", u[rows] * s, v[cols])
        resid = sparse.copy()
        resid.data = values - fitted  # P_Ω(Y − Z), same pattern (rows/cols are CSR-ordered)
        def matmat(x: np.ndarray, r=resid, u=u, s=s, v=v) -> np.ndarray:
            x2 = x.reshape(n, -1)
            return (r @ x2 + u @ (s[:, None] * (v.T @ x2))).reshape(m, *x.shape[1:])

        def rmatmat(y: np.ndarray, r=resid, u=u, s=s, v=v) -> np.ndarray:
            y2 = y.reshape(m, -1)
            return (r.T @ y2 + v @ (s[:, None] * (u.T @ y2))).reshape(n, *y.shape[1:])

        op = scipy.sparse.linalg.LinearOperator((m, n), dtype=np.float64, matvec=matmat,
                                                rmatvec=rmatmat, matmat=matmat, rmatmat=rmatmat)
        k = min(max_rank, min(m, n) - 1)
        un, sn, vtn = scipy.sparse.linalg.svds(op, k=k, v0=rng.standard_normal(min(m, n)))
        sn = np.maximum(sn - lam, 0.0)
        keep = sn > 0
        new = (un[:, keep], sn[keep], vtn[keep].T)
        old_sq = float(np.sum(s**2))
        change = _frobenius_diff_sq(u, s, v, *new)
        u, s, v = new
        if s.size == 0 or change <= tol * max(old_sq, 1e-300):
            break
    if s.size == 0:
        u, s, v = np.zeros((m, 1)), np.zeros(1), np.zeros((n, 1))
    return u, s, v


def _frobenius_diff_sq(u1: np.ndarray, s1: np.ndarray, v1: np.ndarray, u2: np.ndarray,
                       s2: np.ndarray, v2: np.ndarray) -> float:
    """‖U₁S₁V₁ᵀ − U₂S₂V₂ᵀ‖²_F via small Gram matrices."""
    def inner(ua, sa, va, ub, sb, vb):
        return float(np.sum((sa[:, None] * (ua.T @ ub) * sb[None, :]) * (va.T @ vb)))
    return (inner(u1, s1, v1, u1, s1, v1) - 2 * inner(u1, s1, v1, u2, s2, v2)
            + inner(u2, s2, v2, u2, s2, v2))


class SoftImpute(_Baseline):
    """Soft-Impute on the residuals of :class:`Biases`.

    λ is chosen on a ``validation_fraction`` split of the observations, everything else fitted
    on the rest (the training part): its mean and biases (``bias_reg``), their residual, and the
    path: ``n_lambdas`` values from λ_max = σ_max(P_Ω(residual)) down to
    ``lambda_min_ratio·λ_max`` (geometric), warm-started. Then the biases are refit on all
    observations and the path, up to the λ with the best validation RMSE, on their residual.
    """

    def __init__(self, max_rank: int = 50, n_lambdas: int = 12, lambda_min_ratio: float = 0.05,
                 iterations: int = 30, tol: float = 1e-4, validation_fraction: float = 0.1,
                 bias_reg: float = 5.0, random_state: int = 0,
                 clip: tuple[float, float] | None = None) -> None:
        self.max_rank, self.n_lambdas, self.lambda_min_ratio = max_rank, n_lambdas, lambda_min_ratio
        self.iterations, self.tol, self.validation_fraction = iterations, tol, validation_fraction
        self.bias_reg, self.random_state, self.clip = bias_reg, random_state, clip

    def _check_params(self) -> None:
        check_integer("max_rank", self.max_rank, 1)
        check_integer("n_lambdas", self.n_lambdas, 1)
        _check_number("lambda_min_ratio", self.lambda_min_ratio, 0, 1, low_open=True,
                      high_open=False)
        check_integer("iterations", self.iterations, 1)
        _check_number("tol", self.tol, 0)
        _check_number("validation_fraction", self.validation_fraction, 0, 1, low_open=True)
        _check_number("bias_reg", self.bias_reg, 0)
        check_seed("random_state", self.random_state)

    def _path(self, rows: np.ndarray, cols: np.ndarray, residual: np.ndarray,
              lambdas: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        order = np.lexsort((cols, rows))
        rows, cols, residual = rows[order], cols[order], residual[order]
        sparse = scipy.sparse.csr_array((residual, (rows, cols)), shape=self.shape_)
        fits, start = [], None
        for lam in lambdas:
            start = _soft_impute(sparse, rows, cols, residual, lam, self.max_rank, start,
                                 self.iterations, self.tol, self.random_state)
            fits.append(start)
        return fits

    def _residual(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Biases (μ of ``values``, b, c by :func:`_biases`) and the residual they leave."""
        centred = values - values.mean()
        b, c = _biases(rows, cols, centred, self.shape_, self.bias_reg)
        return b, c, centred - b[rows] - c[cols]

    def _fit(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        val = rng.random(rows.size) < self.validation_fraction
        if not 0 < val.sum() < val.size:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves {val.sum()} "
                             f"of the {val.size} ratings for validation; each part needs one")
        # Selection sees the training part only: its mean, biases, λ path and fits.
        fit_rows, fit_cols = rows[~val], cols[~val]
        b, c, residual = self._residual(fit_rows, fit_cols, values[~val])
        val_residual = values[val] - values[~val].mean() - b[rows[val]] - c[cols[val]]
        top = scipy.sparse.linalg.svds(
            scipy.sparse.csr_array((residual, (fit_rows, fit_cols)), shape=self.shape_), k=1,
            return_singular_vectors=False)[0]
        lambdas = top * np.geomspace(1.0, self.lambda_min_ratio, self.n_lambdas)
        fits = self._path(fit_rows, fit_cols, residual, lambdas)
        errors = [math.sqrt(np.mean((np.einsum("ij,ij->i", u[rows[val]] * s, v[cols[val]])
                                     - val_residual) ** 2)) for u, s, v in fits]
        best = int(np.argmin(errors))
        self.lambda_, self.validation_rmse_ = float(lambdas[best]), errors[best]
        self.row_bias_, self.col_bias_, residual = self._residual(rows, cols, values)
        self.factors_ = self._path(rows, cols, residual, lambdas[: best + 1])[-1]

    def _interaction(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        u, s, v = self.factors_
        return np.einsum("ij,ij->i", u[rows] * s, v[cols])


class BiasedALS(_Baseline):
    """Biased matrix factorization ``μ + b_u + c_i + p_uᵀ q_i`` (rank k) by ALS.

    Minimizes ``Σ_Ω (y − ŷ)² + reg Σ_u n_u (‖p_u‖² + b_u²) + reg Σ_i n_i (‖q_i‖² + c_i²)``:
    each half-step solves every user's (item's) (k+1)-dim ridge problem exactly.
    """

    def __init__(self, rank: int = 10, reg: float = 0.1, iterations: int = 15,
                 random_state: int = 0, clip: tuple[float, float] | None = None) -> None:
        self.rank, self.reg, self.iterations = rank, reg, iterations
        self.random_state, self.clip = random_state, clip

    def _check_params(self) -> None:
        check_integer("rank", self.rank, 1)
        _check_number("reg", self.reg, 0, low_open=True)
        check_integer("iterations", self.iterations, 1)
        check_seed("random_state", self.random_state)

    @staticmethod
    def _solve(groups: np.ndarray, size: int, features: np.ndarray, target: np.ndarray,
               reg: float) -> np.ndarray:
        """Per group g: argmin_x Σ_{ω∈g} (f_ωᵀ x − t_ω)² + reg·n_g ‖x‖²; features (|Ω|×d)."""
        d = features.shape[1]
        indicator = scipy.sparse.csr_array(
            (np.ones(groups.size), (groups, np.arange(groups.size))), shape=(size, groups.size))
        gram = (indicator @ np.einsum("oi,oj->oij", features, features).reshape(groups.size, -1)
                ).reshape(size, d, d)
        rhs = indicator @ (features * target[:, None])
        count = np.bincount(groups, minlength=size)
        gram += (reg * np.maximum(count, 1))[:, None, None] * np.eye(d)
        return np.linalg.solve(gram, rhs[..., None])[..., 0]

    def _fit(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        m, n = self.shape_
        rng = np.random.default_rng(self.random_state)
        p = 0.1 * rng.standard_normal((m, self.rank))
        q = 0.1 * rng.standard_normal((n, self.rank))
        b, c = np.zeros(m), np.zeros(n)
        y = values - self.mean_
        for _ in range(self.iterations):
            x = self._solve(rows, m, np.column_stack([q[cols], np.ones(rows.size)]),
                            y - c[cols], self.reg)
            p, b = x[:, :-1], x[:, -1]
            x = self._solve(cols, n, np.column_stack([p[rows], np.ones(rows.size)]),
                            y - b[rows], self.reg)
            q, c = x[:, :-1], x[:, -1]
        self.row_bias_, self.col_bias_, self.row_factors_, self.col_factors_ = b, c, p, q

    def _interaction(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.row_factors_[rows], self.col_factors_[cols])


class Surprise:
    """A ``scikit-surprise`` algorithm (``algorithm``: class name in ``surprise``, e.g.
    ``"SVD"``, ``params``: its keyword arguments) with the interface of the baselines above.

    Indices are Surprise's raw ids; an index it never saw gets Surprise's own fallback (the
    global mean plus the known side's bias for the biased models). Predictions are clipped to
    ``clip`` (Surprise's rating scale, default the training range).
    """

    def __init__(self, algorithm: str, clip: tuple[float, float] | None = None,
                 random_state: int | None = 0, **params: Any) -> None:
        self.algorithm, self.clip, self.random_state, self.params = (algorithm, clip,
                                                                     random_state, params)

    def fit(self, rows: Any, cols: Any, values: Any,
            shape: tuple[int, int] | None = None) -> Surprise:
        import surprise

        if self.random_state is not None:
            check_seed("random_state", self.random_state)
        algorithm = getattr(surprise, self.algorithm, None) if isinstance(self.algorithm,
                                                                           str) else None
        if not (isinstance(algorithm, type) and issubclass(algorithm, surprise.AlgoBase)):
            raise ValueError("algorithm must name a surprise algorithm (BaselineOnly, SVD, SVDpp, "
                             f"KNNBaseline, …), got {self.algorithm!r}")
        rows, cols, values, shape = check_observations(rows, cols, values, shape)
        _check_clip(self.clip, values)
        self.shape_ = shape
        scale = self.clip or (float(values.min()), float(values.max()))
        data = surprise.Dataset.load_from_folds([], surprise.Reader(rating_scale=scale))
        self.trainset_ = data.construct_trainset(
            list(zip(rows.tolist(), cols.tolist(), values.tolist(), [None] * rows.size,
                     strict=True)))
        options = dict(self.params)
        if self.random_state is not None and "random_state" in _signature(self.algorithm):
            options["random_state"] = self.random_state
        self.model_ = algorithm(**options)
        self.model_.fit(self.trainset_)
        return self

    def predict(self, rows: Any, cols: Any) -> np.ndarray:
        rows, cols = as_index("rows", rows), as_index("cols", cols)
        return np.array([self.model_.predict(r, c, clip=True).est
                         for r, c in zip(rows.tolist(), cols.tolist(), strict=True)])


def _signature(algorithm: str) -> set[str]:
    import inspect

    import surprise

    return set(inspect.signature(getattr(surprise, algorithm).__init__).parameters)
