"""Scikit-learn style estimator for deep matrix completion on sparse observations.

Prediction for entry (i, j): ``μ + b_i + c_j + X_ij`` with ``X = W_L ⋯ W_1`` the compressed (or
narrow) deep factorization of width 2r̂ and optional biases. Training minimizes
``½ mean_{ω ∈ batch} (prediction_ω − y_ω)²`` through the sparse path of
:mod:`deeplora.completion.sparse` (cost per step O(|batch|·r̂ + (m + n)·r̂²)); the biases ride
along as two extra columns, ``[A, b, 1]·[B, 1, c]ᵀ = A Bᵀ + b 1ᵀ + 1 cᵀ``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn
from tqdm.auto import tqdm

from deeplora.completion.methods import default_settings, optimizer_options
from deeplora.completion.sparse import compressed_factorization
from deeplora.factorization import DeepFactorization, discrepant_param_groups, make_optimizer
from deeplora.factorization.optim import OPTIMIZERS
from deeplora.factorization.sampled import ObservedIndex, sampled_product

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def rmse(predicted: np.ndarray, values: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(values)) ** 2)))


def mae(predicted: np.ndarray, values: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(values))))


def _as_index(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array))
        and np.all(array == np.round(array)))
    if array.size and not integral:
        raise ValueError(f"{name} must be integer indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0, found {int(array.min())}")
    return array


def check_observations(
    rows: Any, cols: Any, values: Any, shape: tuple[int, int] | None = None,
    duplicates: str = "raise",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Validate triples; return ``(rows, cols, values, shape)``, sorted row-major.

    Errors (``ValueError``): empty, unequal lengths, non-integer or negative ids, ids outside
    ``shape``, non-finite values, and duplicate (row, col) pairs unless ``duplicates="mean"``,
    which replaces them by their average. ``shape`` defaults to ``(max row + 1, max col + 1)``.
    """
    if duplicates not in ("raise", "mean"):
        raise ValueError(f"duplicates must be 'raise' or 'mean', got {duplicates!r}")
    rows, cols = _as_index("rows", rows), _as_index("cols", cols)
    values = np.asarray(values, dtype=np.float64)
    if not (rows.shape == cols.shape == values.shape):
        raise ValueError(f"rows, cols and values must have equal length, got {rows.shape}, "
                         f"{cols.shape} and {values.shape}")
    if rows.size == 0:
        raise ValueError("no observations given")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite (found NaN or inf)")
    if shape is None:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    m, n = shape
    if rows.max() >= m or cols.max() >= n:
        raise ValueError(f"ids must lie in [0, {m}) × [0, {n}), found "
                         f"({int(rows.max())}, {int(cols.max())})")
    key = rows * n + cols
    order = np.argsort(key, kind="stable")
    key, values = key[order], values[order]
    first = np.concatenate([[True], key[1:] != key[:-1]])
    if not first.all():
        if duplicates == "raise":
            i = int(np.argmin(first))
            raise ValueError(f"{int((~first).sum())} duplicate (row, col) pairs, e.g. "
                             f"({key[i] // n}, {key[i] % n}); pass duplicates='mean' to average")
        group = np.cumsum(first) - 1
        values = np.bincount(group, weights=values) / np.bincount(group)
        key = key[first]
    return key // n, key % n, values, (int(m), int(n))


class DeepMatrixCompletion(BaseEstimator):
    """Deep matrix completion with the paper's compressed factorization (scikit-learn API).

    Args:
        depth: L, layers of the original deep model (the compressed one has L + 2 factors).
        rank: r̂, assumed rank; the factorization has width 2r̂ (needs 2r̂ <= min(m, n)).
        method: ``"compressed"`` (built from the first gradient, outer factors at γ·η) or
            ``"narrow"`` (random ε-orthogonal width-2r̂ factors).
        init_scale: ε.
        optimizer: ``"adam"``, ``"adamw"``, ``"gd"`` or ``"sgd"``.
        lr, gamma: step η and discrepant rate γ; ``None`` takes
            :func:`~deeplora.completion.methods.default_settings` of the method and optimizer.
        weight_decay: passed to the optimizer (all parameters).
        max_steps: optimizer steps.
        batch_size: observations per step; ``None`` = all (full-batch). Batches are a random
            partition drawn once; their order is reshuffled every epoch.
        bias: ``"none"``, ``"global"`` (μ, the training mean, fixed) or ``"all"`` (trainable
            μ, row biases b, column biases c).
        clip: ``(low, high)`` to clip predictions to (e.g. ``(1, 5)`` for ratings), or ``None``.
        validation_fraction: share of the observations held out for early stopping (0: none).
        patience: stop after this many evaluations without a better validation RMSE; the best
            parameters are restored.
        eval_every: steps between evaluations.
        duplicates: ``"raise"`` or ``"mean"`` (see :func:`check_observations`).
        unknown: at predict time, a row id >= m or column id >= n is unknown. ``"bias"``: predict
            μ plus the known side's bias (X's term is 0); ``"raise"``: error.
        dtype: ``"float32"`` or ``"float64"``.
        random_state: seeds the split, the batches and the initialization.
        progress: show a progress bar.

    Attributes after :meth:`fit`: ``model_``, ``shape_``, ``global_bias_``, ``row_bias_``,
    ``col_bias_``, ``history_`` (lists ``step``, ``train_loss``, ``val_rmse``, ``seconds``),
    ``best_step_``, ``n_steps_``, ``build_seconds_``, ``fit_seconds_``.
    """

    def __init__(
        self,
        depth: int = 3,
        rank: int = 10,
        method: str = "compressed",
        init_scale: float = 1e-3,
        optimizer: str = "adam",
        lr: float | None = None,
        gamma: float | None = None,
        weight_decay: float = 0.0,
        max_steps: int = 1000,
        batch_size: int | None = None,
        bias: str = "all",
        clip: tuple[float, float] | None = None,
        validation_fraction: float = 0.1,
        patience: int = 10,
        eval_every: int = 10,
        duplicates: str = "raise",
        unknown: str = "bias",
        dtype: str = "float32",
        random_state: int = 0,
        progress: bool = False,
    ) -> None:
        self.depth = depth
        self.rank = rank
        self.method = method
        self.init_scale = init_scale
        self.optimizer = optimizer
        self.lr = lr
        self.gamma = gamma
        self.weight_decay = weight_decay
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.bias = bias
        self.clip = clip
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.eval_every = eval_every
        self.duplicates = duplicates
        self.unknown = unknown
        self.dtype = dtype
        self.random_state = random_state
        self.progress = progress

    def _check_params(self) -> None:
        """Raise ``ValueError`` for any invalid parameter (the only place they are checked)."""

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

        def number(name: str, low: float, *, strict: bool, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and (value > low if strict else value >= low)):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} "
                                 f"{low}, got {value!r}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {list(options)}, "
                                 f"got {getattr(self, name)!r}")

        integer("depth", 2)
        integer("rank", 1)
        integer("max_steps", 0)
        integer("patience", 1)
        integer("eval_every", 1)
        integer("random_state", 0)
        if self.batch_size is not None:
            integer("batch_size", 1)
        number("init_scale", 0, strict=True)
        number("lr", 0, strict=True, optional=True)
        number("gamma", 0, strict=False, optional=True)
        number("weight_decay", 0, strict=False)
        number("validation_fraction", 0, strict=False)
        if self.validation_fraction >= 1:
            raise ValueError(f"validation_fraction must be < 1, got {self.validation_fraction}")
        choice("method", ("compressed", "narrow"))
        choice("optimizer", OPTIMIZERS)
        choice("bias", ("none", "global", "all"))
        choice("duplicates", ("raise", "mean"))
        choice("unknown", ("bias", "raise"))
        choice("dtype", tuple(DTYPES))
        if self.clip is not None:
            clip = tuple(self.clip)
            if not (len(clip) == 2 and all(isinstance(c, int | float) and math.isfinite(c)
                                           for c in clip) and clip[0] < clip[1]):
                raise ValueError(f"clip must be None or (low, high) with low < high, got "
                                 f"{self.clip!r}")

    # ----------------------------------------------------------------------------------------
    def fit(self, rows: Any, cols: Any = None, values: Any = None,
            shape: tuple[int, int] | None = None) -> DeepMatrixCompletion:
        """Fit on triples ``(rows, cols, values)``, or on a SciPy sparse matrix passed as
        ``rows`` (its stored entries, explicit zeros included, are the observations and its
        shape is m×n). ``shape`` defaults to ``(max row + 1, max col + 1)``."""
        self._check_params()
        if scipy.sparse.issparse(rows):
            if cols is not None or values is not None:
                raise ValueError("pass either a sparse matrix or (rows, cols, values)")
            coo = scipy.sparse.coo_array(rows)
            rows, cols, values, shape = coo.row, coo.col, coo.data, coo.shape
        elif cols is None or values is None:
            raise ValueError("fit needs (rows, cols, values) or a SciPy sparse matrix")
        rows, cols, values, shape = check_observations(rows, cols, values, shape,
                                                       self.duplicates)
        m, n = shape
        if 2 * self.rank > min(m, n):
            raise ValueError(f"2 × rank must be <= min(m, n) = {min(m, n)}, got rank "
                             f"{self.rank}")
        rng = np.random.default_rng(self.random_state)
        torch_dtype = DTYPES[self.dtype]
        n_val = round(self.validation_fraction * rows.size)
        if n_val and rows.size - n_val < 1:
            raise ValueError("validation split leaves no training observations")
        perm = rng.permutation(rows.size)
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        start = time.perf_counter()
        self.shape_ = (m, n)
        mean = float(values[train].mean()) if self.bias != "none" else 0.0
        self._set_model(self._init_model(rows[train], cols[train], values[train] - mean,
                                         torch_dtype),
                        mean, torch.zeros(m, dtype=torch_dtype),
                        torch.zeros(n, dtype=torch_dtype))
        self.build_seconds_ = time.perf_counter() - start
        batches = self._batches(rows[train], cols[train], values[train], rng, torch_dtype)
        val_index = (ObservedIndex(torch.from_numpy(rows[val]), torch.from_numpy(cols[val]),
                                   shape) if n_val else None)
        self._train(batches, val_index, values[val], rng, start)
        return self

    def _init_model(self, rows: np.ndarray, cols: np.ndarray, residual: np.ndarray,
                    dtype: torch.dtype) -> DeepFactorization:
        m, n = self.shape_
        if self.method == "compressed":
            index = ObservedIndex(torch.from_numpy(rows), torch.from_numpy(cols), (m, n))
            return compressed_factorization(index, torch.from_numpy(residual), self.rank,
                                            self.depth, self.init_scale, self.random_state,
                                            dtype)
        gen = torch.Generator().manual_seed(self.random_state)
        return DeepFactorization(m, n, self.depth, 2 * self.rank, "orthogonal",
                                 self.init_scale, gen, dtype)

    def _set_model(self, model: DeepFactorization, mean: float, row_bias: Tensor,
                   col_bias: Tensor) -> None:
        self.model_ = model
        dtype = model.factors[0].dtype
        self._mean = nn.Parameter(torch.tensor(mean, dtype=dtype))
        self._row_bias, self._col_bias = nn.Parameter(row_bias), nn.Parameter(col_bias)

    def _batches(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                 rng: np.random.Generator, dtype: torch.dtype
                 ) -> list[tuple[ObservedIndex, Tensor]]:
        size = rows.size if self.batch_size is None else min(self.batch_size, rows.size)
        parts = ([np.arange(rows.size)] if size == rows.size
                 else np.array_split(rng.permutation(rows.size), math.ceil(rows.size / size)))
        out = []
        for part in parts:
            part = np.sort(part)  # keeps row-major order: no permutation inside the index
            index = ObservedIndex(torch.from_numpy(rows[part]), torch.from_numpy(cols[part]),
                                  self.shape_)
            out.append((index, torch.from_numpy(values[part]).to(dtype)))
        return out

    @property
    def global_bias_(self) -> float:
        """μ."""
        return float(self._mean.detach())

    @property
    def row_bias_(self) -> np.ndarray:
        """b (m,), zeros unless ``bias="all"``."""
        return self._row_bias.detach().double().numpy().copy()

    @property
    def col_bias_(self) -> np.ndarray:
        """c (n,), zeros unless ``bias="all"``."""
        return self._col_bias.detach().double().numpy().copy()

    def _raw_predict(self, index: ObservedIndex) -> Tensor:
        """``μ + b_i + c_j + X_ij`` at the entries of ``index`` (no clipping)."""
        factors = list(self.model_.factors)
        a = factors[1] if len(factors) == 2 else torch.linalg.multi_dot(factors[:0:-1])
        b = factors[0].T
        if self.bias == "all":
            ones = torch.ones(a.shape[0], 1, dtype=a.dtype)
            a = torch.cat([a, self._row_bias[:, None], ones], dim=1)
            b = torch.cat([b, torch.ones(b.shape[0], 1, dtype=a.dtype),
                           self._col_bias[:, None]], dim=1)
        return sampled_product(a, b, index) + self._mean

    def _clip(self, predicted: np.ndarray) -> np.ndarray:
        return predicted if self.clip is None else np.clip(predicted, *self.clip)

    def _state(self) -> list[Tensor]:
        return [p.detach().clone() for p in self._parameters_list()]

    def _parameters_list(self) -> list[nn.Parameter]:
        return [*self.model_.factors, self._mean, self._row_bias, self._col_bias]

    def _train(self, batches: list[tuple[ObservedIndex, Tensor]], val_index: ObservedIndex | None,
               val_values: np.ndarray, rng: np.random.Generator, start: float) -> None:
        fraction = sum(index.nnz for index, _ in batches) / (self.shape_[0] * self.shape_[1])
        _, lr, gamma = default_settings(self.method, self.optimizer, self.lr, self.gamma,
                                        fraction)
        outer = self.model_.outer_parameters() if self.method == "compressed" else []
        inner = [p for p in self.model_.factors if all(p is not o for o in outer)]
        if self.bias == "all":
            inner += [self._mean, self._row_bias, self._col_bias]
        groups = discrepant_param_groups(outer, inner, lr, gamma)
        opt = make_optimizer(self.optimizer, groups, weight_decay=self.weight_decay,
                             **optimizer_options(self.optimizer))
        self.history_: dict[str, list[float]] = {"step": [], "train_loss": [], "val_rmse": [],
                                                 "seconds": []}
        best, best_state, self.best_step_, stale = math.inf, self._state(), 0, 0
        order: list[int] = []
        bar = tqdm(total=self.max_steps, disable=not self.progress, desc="fit", unit="step",
                   leave=False)
        step = 0
        for step in range(self.max_steps + 1):
            if not order:
                order = list(rng.permutation(len(batches)))
            index, target = batches[order.pop()]
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * torch.mean((self._raw_predict(index) - target) ** 2)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            if step % self.eval_every == 0 or step == self.max_steps:
                score = value
                if val_index is not None:
                    with torch.no_grad():
                        predicted = self._raw_predict(val_index).double().numpy()
                    score = rmse(self._clip(predicted), val_values)
                for key, item in (("step", step), ("train_loss", value), ("val_rmse", score),
                                  ("seconds", time.perf_counter() - start)):
                    self.history_[key].append(item)
                bar.set_postfix(loss=f"{value:.3e}", val=f"{score:.4f}", refresh=False)
                if score < best:
                    best, best_state, self.best_step_, stale = score, self._state(), step, 0
                else:
                    stale += 1
                    if val_index is not None and stale >= self.patience:
                        break
            if step == self.max_steps:
                break
            loss.backward()
            opt.step()
            bar.update()
        bar.close()
        with torch.no_grad():
            for param, saved in zip(self._parameters_list(), best_state, strict=True):
                param.copy_(saved)
        self.n_steps_ = step
        self.fit_seconds_ = time.perf_counter() - start

    # ----------------------------------------------------------------------------------------
    def predict(self, rows: Any, cols: Any) -> np.ndarray:
        """Predictions (float64) at entries ``(rows[t], cols[t])``; unknown ids per ``unknown``."""
        check_is_fitted(self, "model_")
        rows, cols = _as_index("rows", rows), _as_index("cols", cols)
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols must have equal length, got {rows.shape} and "
                             f"{cols.shape}")
        m, n = self.shape_
        known_row, known_col = rows < m, cols < n
        if self.unknown == "raise" and not (known_row.all() and known_col.all()):
            raise ValueError(f"unknown ids (model is {m}×{n}); set unknown='bias' for a fallback")
        with torch.no_grad():
            out = np.full(rows.size, float(self._mean))
            if self.bias == "all":
                out[known_row] += self._row_bias.double().numpy()[rows[known_row]]
                out[known_col] += self._col_bias.double().numpy()[cols[known_col]]
            both = np.flatnonzero(known_row & known_col)
            if both.size:
                index = ObservedIndex(torch.from_numpy(rows[both]), torch.from_numpy(cols[both]),
                                      self.shape_)
                out[both] = self._raw_predict(index).double().numpy()
        return self._clip(out)

    def evaluate(self, rows: Any, cols: Any, values: Any) -> dict[str, float]:
        """``{"rmse": …, "mae": …}`` of :meth:`predict` against ``values``."""
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no observations to evaluate on")
        predicted = self.predict(rows, cols)
        if predicted.shape != values.shape:
            raise ValueError(f"values must have shape {predicted.shape}, got {values.shape}")
        return {"rmse": rmse(predicted, values), "mae": mae(predicted, values)}

    def score(self, rows: Any, cols: Any, values: Any) -> float:
        """Coefficient of determination R² of the predictions (scikit-learn's regressor score;
        higher is better). Use :meth:`evaluate` for RMSE/MAE."""
        values = np.asarray(values, dtype=np.float64)
        residual = self.evaluate(rows, cols, values)["rmse"] ** 2
        return 1.0 - residual / float(np.var(values)) if np.var(values) > 0 else 0.0

    # ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write parameters and fitted state to ``path`` (``torch.save``, atomically)."""
        from deeplora.cli.output import write_atomic

        check_is_fitted(self, "model_")
        params = self.get_params()
        if params["clip"] is not None:
            params["clip"] = [float(c) for c in params["clip"]]
        state = {"format": 1, "params": params, "shape": list(self.shape_),
                 "factors": [f.detach() for f in self.model_.factors],
                 "model_init": self.model_.init, "model_scale": self.model_.scale,
                 "mean": self._mean.detach(), "row_bias": self._row_bias.detach(),
                 "col_bias": self._col_bias.detach(), "history": self.history_,
                 "fitted": {k: getattr(self, k) for k in
                            ("best_step_", "n_steps_", "build_seconds_", "fit_seconds_")}}
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeepMatrixCompletion:
        """Read an estimator written by :meth:`save`."""
        state = torch.load(path, weights_only=True)
        if not (isinstance(state, dict) and state.get("format") == 1):
            raise ValueError(f"{os.fspath(path)!r} is not a saved DeepMatrixCompletion")
        params = copy.deepcopy(state["params"])
        if params["clip"] is not None:
            params["clip"] = tuple(params["clip"])
        est = cls(**params)
        est.shape_ = tuple(state["shape"])
        model = DeepFactorization.from_factors(state["factors"], init=state["model_init"],
                                               scale=state["model_scale"])
        est._set_model(model, float(state["mean"]), state["row_bias"].clone(),
                       state["col_bias"].clone())
        est.history_ = state["history"]
        for key, value in state["fitted"].items():
            setattr(est, key, value)
        return est
