"""Scikit-learn style estimator for deep matrix completion on sparse observations.

Prediction for entry (i, j): ``μ + b_i + c_j + X_ij`` with ``X = W_L ⋯ W_1`` the compressed (or
narrow) deep factorization of width 2r̂ and optional biases. Training minimizes
``½ mean_{ω ∈ batch} (prediction_ω − y_ω)²`` through the sparse path of
:mod:`deeplora.completion.sparse` (cost per step O(|batch|·r̂ + (m + n)·r̂²)); the biases ride
along as two extra columns, ``[A, b, 1]·[B, 1, c]ᵀ = A Bᵀ + b 1ᵀ + 1 cᵀ``.

Fitting and prediction live here; observation checks in :mod:`~deeplora.completion.observations`,
data-parallel training in :mod:`~deeplora.completion.distributed`, top-k recommendation in
:mod:`~deeplora.completion.recommend` and save/load in :mod:`~deeplora.completion.persistence`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn
from tqdm.auto import tqdm

from deeplora.completion.data import IdIndex, _lookup, ratings_from_frame
from deeplora.completion.distributed import DataParallel, check_process_group, local_cuda_index
from deeplora.completion.methods import default_settings, optimizer_options
from deeplora.completion.observations import as_index, check_clip, check_observations, mae, rmse
from deeplora.completion.persistence import PersistenceMixin
from deeplora.completion.recommend import RecommenderMixin, seen_crow
from deeplora.completion.sparse import compressed_factorization
from deeplora.factorization import DeepFactorization, discrepant_param_groups, make_optimizer
from deeplora.factorization.optim import OPTIMIZERS
from deeplora.factorization.sampled import ObservedIndex, sampled_product
from deeplora.memory import check_fits

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class DeepMatrixCompletion(RecommenderMixin, PersistenceMixin, BaseEstimator):
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
        reg: λ, L2 penalty on the end-to-end factors ``A = W_L ⋯ W_2`` and ``B = W_1ᵀ``,
            weighted by how often each row/column is observed (as per-rating SGD
            regularization does): ``+ ½λ Σ_ω (‖a_{i_ω}‖² + ‖b_{j_ω}‖²) / |Ω|``.
        bias_reg: the same penalty on the row and column biases.
        clip: ``(low, high)`` to clip predictions to (e.g. ``(1, 5)`` for ratings), ``"auto"``
            (the training ratings' range, ``clip_`` after fit), or ``None``. A ``(low, high)``
            that shares at most one point with the training ratings' range is refused at fit
            (:func:`~deeplora.completion.observations.check_clip`).
        validation_fraction: share of the observations held out for early stopping (0: none).
        patience: stop after this many evaluations without a better validation RMSE; the best
            parameters are restored.
        eval_every: steps between evaluations.
        duplicates: ``"raise"`` or ``"mean"`` (see :func:`check_observations`).
        unknown: at predict time, a row id >= m or column id >= n is unknown. ``"bias"``: predict
            μ plus the known side's bias (X's term is 0); ``"raise"``: error.
        dtype: ``"float32"`` or ``"float64"``.
        random_state: seeds the split, the batches and the initialization.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
            Parameters and the observed index live there; the compressed model's construction
            (a sparse SVD) runs on the CPU first.
        distributed: shard the training observations over the processes of the default
            :mod:`torch.distributed` process group (e.g. started by ``torchrun``; gloo on CPU,
            NCCL on GPUs). Every process passes the same data and settings; each computes the
            loss and gradients on its 1/world share of every batch (and of the validation
            split), the gradients of all parameters (the small factors, O((m + n)·r̂)) are
            summed by one ``all_reduce`` per step, and every process takes the same optimizer
            step, so all hold the same model. The compressed construction runs on every
            process and rank 0's result is broadcast. With ``device="auto"`` and CUDA, process
            ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``.
        progress: show a progress bar.

    :meth:`ratings` gives the settings tuned for explicit ratings (:data:`RATINGS_PRESET`).
    Observations come as triples of 0-based indices, a SciPy sparse matrix, or a pandas
    DataFrame with user/item/rating columns (raw ids of any kind, re-indexed:
    ``ids_`` holds them; predict/recommend then take and return raw ids).

    Attributes after :meth:`fit`: ``model_``, ``shape_``, ``global_bias_``, ``row_bias_``,
    ``col_bias_``, ``history_`` (lists ``step``, ``train_loss``, ``val_rmse``, ``seconds``),
    ``best_step_``, ``n_steps_``, ``build_seconds_`` (the compressed construction),
    ``eval_seconds_`` (validation and best-state copies), ``fit_seconds_`` (all),
    ``diverged_`` (the train loss became non-finite; training stopped, a warning was issued
    and the best parameters before it were kept), ``clip_``, ``ids_`` (an
    :class:`~deeplora.completion.data.IdIndex` or ``None``).
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
        reg: float = 0.0,
        bias_reg: float = 0.0,
        max_steps: int = 1000,
        batch_size: int | None = None,
        bias: str = "all",
        clip: tuple[float, float] | str | None = None,
        validation_fraction: float = 0.1,
        patience: int = 10,
        eval_every: int = 10,
        duplicates: str = "raise",
        unknown: str = "bias",
        dtype: str = "float32",
        random_state: int = 0,
        device: str = "auto",
        distributed: bool = False,
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
        self.reg = reg
        self.bias_reg = bias_reg
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
        self.device = device
        self.distributed = distributed
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
        number("reg", 0, strict=False)
        number("bias_reg", 0, strict=False)
        number("validation_fraction", 0, strict=False)
        if self.validation_fraction >= 1:
            raise ValueError(f"validation_fraction must be < 1, got {self.validation_fraction}")
        choice("method", ("compressed", "narrow"))
        choice("optimizer", OPTIMIZERS)
        choice("bias", ("none", "global", "all"))
        choice("duplicates", ("raise", "mean"))
        choice("unknown", ("bias", "raise"))
        choice("dtype", tuple(DTYPES))
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")
        self._device()
        if self.distributed:
            check_process_group()
        if self.clip is not None and self.clip != "auto":
            clip = tuple(self.clip)
            if not (len(clip) == 2 and all(isinstance(c, int | float) and math.isfinite(c)
                                           for c in clip) and clip[0] < clip[1]):
                raise ValueError(f"clip must be None, 'auto' or (low, high) with low < high, got "
                                 f"{self.clip!r}")

    # ----------------------------------------------------------------------------------------
    @classmethod
    def ratings(cls, **overrides: Any) -> DeepMatrixCompletion:
        """An estimator with :data:`RATINGS_PRESET` (explicit ratings), ``overrides`` on top."""
        return cls(**{**RATINGS_PRESET, **overrides})

    def _device(self) -> torch.device:
        if self.device == "auto":
            if not torch.cuda.is_available():
                return torch.device("cpu")
            return torch.device("cuda", local_cuda_index(self.distributed))
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"device: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: CUDA is not available here")
        return device

    def fit(self, rows: Any, cols: Any = None, values: Any = None,
            shape: tuple[int, int] | None = None) -> DeepMatrixCompletion:
        """Fit on triples ``(rows, cols, values)`` of 0-based indices, on a SciPy sparse matrix
        passed as ``rows`` (its stored entries, explicit zeros included, are the observations
        and its shape is m×n), or on a pandas DataFrame passed as ``rows`` with user, item
        and rating columns (names as in :data:`~deeplora.completion.data.COLUMN_NAMES`, raw
        ids re-indexed). ``shape`` defaults to ``(max row + 1, max col + 1)``."""
        self._check_params()
        self.ids_: IdIndex | None = None
        if _is_frame(rows):
            if cols is not None or values is not None or shape is not None:
                raise ValueError("pass either a DataFrame or (rows, cols, values)")
            ratings = ratings_from_frame(rows, duplicates=self.duplicates)
            self.ids_ = IdIndex.fit(ratings)
            (rows, cols), values, shape = (self.ids_.transform(ratings), ratings.values,
                                           self.ids_.shape)
        elif scipy.sparse.issparse(rows):
            if cols is not None or values is not None:
                raise ValueError("pass either a sparse matrix or (rows, cols, values)")
            coo = scipy.sparse.coo_array(rows)
            rows, cols, values, shape = coo.row, coo.col, coo.data, coo.shape
        elif cols is None or values is None:
            raise ValueError("fit needs (rows, cols, values) or a SciPy sparse matrix")
        rows, cols, values, shape = check_observations(rows, cols, values, shape,
                                                       self.duplicates)
        m, n = shape
        self.clip_: tuple[float, float] | None = None
        if self.clip == "auto":  # the training range; none if every rating is the same
            low, high = float(values.min()), float(values.max())
            self.clip_ = (low, high) if low < high else None
        elif self.clip is not None:
            check_clip(self.clip, values)
            self.clip_ = (float(self.clip[0]), float(self.clip[1]))
        if 2 * self.rank > min(m, n):
            raise ValueError(f"2 × rank must be <= min(m, n) = {min(m, n)}, got rank "
                             f"{self.rank}")
        self._check_memory(rows, cols, (m, n))
        rng = np.random.default_rng(self.random_state)
        torch_dtype = DTYPES[self.dtype]
        n_val = round(self.validation_fraction * rows.size)
        if n_val and rows.size - n_val < 1:
            raise ValueError("validation split leaves no training observations")
        perm = rng.permutation(rows.size)
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        start = time.perf_counter()
        self.shape_ = (m, n)
        self._seen = (torch.from_numpy(seen_crow(rows, m)), torch.from_numpy(cols))
        self._parallel = DataParallel(self.distributed)
        device = self._device()
        mean = float(values[train].mean()) if self.bias != "none" else 0.0
        self._set_model(self._init_model(rows[train], cols[train], values[train] - mean,
                                         torch_dtype).to(device),
                        mean, torch.zeros(m, dtype=torch_dtype, device=device),
                        torch.zeros(n, dtype=torch_dtype, device=device))
        self._parallel.broadcast(self._parameters_list())
        self.build_seconds_ = time.perf_counter() - start
        batches = self._batches(rows[train], cols[train], values[train], rng, torch_dtype)
        val = self._parallel.shard(val)
        val_index = (ObservedIndex(torch.from_numpy(rows[val]), torch.from_numpy(cols[val]),
                                   shape).to(device) if n_val else None)
        self._train(batches, val_index, values[val], rng, start)
        return self

    def _check_memory(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
        """:class:`~deeplora.memory.TooLargeError` unless an m×n model fits: per row and column
        2r̂ + 1 parameters, each with its gradient, two Adam moments and a best-state copy."""
        m, n = shape
        itemsize = DTYPES[self.dtype].itemsize
        needed = 5 * (m + n) * (2 * self.rank + 1) * itemsize + 8 * (m + 1)
        distinct = np.unique(rows).size, np.unique(cols).size
        advice = ("the ids look like raw labels, not 0-based indices: fit on a DataFrame (ids "
                  "re-indexed) or re-index them with deeplora.completion.data.IdIndex, as "
                  "`deeplora complete --ratings` does"
                  if distinct[0] * distinct[1] < m * n / 4 else "use a smaller rank")
        check_fits(needed, f"a {m}×{n} model ({distinct[0]} distinct rows, {distinct[1]} "
                   f"distinct columns, rank {self.rank})", advice, self._device())

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
        dtype, device = model.factors[0].dtype, model.factors[0].device
        self._mean = nn.Parameter(torch.tensor(mean, dtype=dtype, device=device))
        self._row_bias, self._col_bias = nn.Parameter(row_bias), nn.Parameter(col_bias)

    def _batches(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                 rng: np.random.Generator, dtype: torch.dtype
                 ) -> list[tuple[ObservedIndex, Tensor, int]]:
        """``(index, targets, size of the whole batch)``; this process's share if distributed."""
        size = rows.size if self.batch_size is None else min(self.batch_size, rows.size)
        parts = ([np.arange(rows.size)] if size == rows.size
                 else np.array_split(rng.permutation(rows.size), math.ceil(rows.size / size)))
        out = []
        for whole in parts:
            # row-major: no permutation inside the index
            part = self._parallel.shard(np.sort(whole))
            index = ObservedIndex(torch.from_numpy(rows[part]), torch.from_numpy(cols[part]),
                                  self.shape_).to(self._device())
            out.append((index, torch.from_numpy(values[part]).to(self._device(), dtype),
                        whole.size))
        return out

    @property
    def global_bias_(self) -> float:
        """μ."""
        return float(self._mean.detach())

    @property
    def row_bias_(self) -> np.ndarray:
        """b (m,), zeros unless ``bias="all"``."""
        return self._row_bias.detach().double().cpu().numpy().copy()

    @property
    def col_bias_(self) -> np.ndarray:
        """c (n,), zeros unless ``bias="all"``."""
        return self._col_bias.detach().double().cpu().numpy().copy()

    def _end_to_end(self) -> tuple[Tensor, Tensor]:
        """``(A, B)`` with ``X = A Bᵀ``: A = W_L ⋯ W_2 (m×2r̂), B = W_1ᵀ (n×2r̂)."""
        factors = list(self.model_.factors)
        a = factors[1] if len(factors) == 2 else torch.linalg.multi_dot(factors[:0:-1])
        return a, factors[0].T

    def _raw_predict(self, index: ObservedIndex,
                     end_to_end: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``μ + b_i + c_j + X_ij`` at the entries of ``index`` (no clipping)."""
        a, b = self._end_to_end() if end_to_end is None else end_to_end
        if self.bias == "all":
            ones = torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)
            a = torch.cat([a, self._row_bias[:, None], ones], dim=1)
            b = torch.cat([b, torch.ones(b.shape[0], 1, dtype=a.dtype, device=a.device),
                           self._col_bias[:, None]], dim=1)
        return sampled_product(a, b, index) + self._mean

    def _clip(self, predicted: np.ndarray) -> np.ndarray:
        return predicted if self.clip_ is None else np.clip(predicted, *self.clip_)

    def _state(self) -> list[Tensor]:
        return [p.detach().clone() for p in self._parameters_list()]

    def _parameters_list(self) -> list[nn.Parameter]:
        return [*self.model_.factors, self._mean, self._row_bias, self._col_bias]

    def _train(self, batches: list[tuple[ObservedIndex, Tensor, int]],
               val_index: ObservedIndex | None, val_values: np.ndarray,
               rng: np.random.Generator, start: float) -> None:
        m, n = self.shape_
        total = sum(size for *_, size in batches)
        dtype = self._mean.dtype
        row_weight = self._parallel.all_reduce(sum(torch.diff(index.crow) for index, *_ in batches)
                                      .to(dtype)) / total
        col_weight = self._parallel.all_reduce(sum(torch.bincount(index.col, minlength=n)
                                          for index, *_ in batches).to(dtype)) / total
        share = self._parallel.share
        n_val = int(self._parallel.all_sum(float(val_values.size), self._mean.device))
        fraction = total / (m * n)
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
        self.eval_seconds_ = 0.0
        self.diverged_ = False
        order: list[int] = []
        bar = tqdm(total=self.max_steps, disable=not self.progress, desc="fit", unit="step",
                   leave=False)
        step = 0
        for step in range(self.max_steps + 1):
            if not order:
                order = list(rng.permutation(len(batches)))
            index, target, size = batches[order.pop()]
            opt.zero_grad(set_to_none=True)
            a, b = self._end_to_end()
            loss = 0.5 * torch.sum((self._raw_predict(index, (a, b)) - target) ** 2) / size
            data_loss = loss.detach()
            if self.reg:  # each process adds its share of the penalty
                loss = loss + 0.5 * self.reg * share * (row_weight @ (a * a).sum(1)
                                                        + col_weight @ (b * b).sum(1))
            if self.bias_reg and self.bias == "all":
                loss = loss + 0.5 * self.bias_reg * share * (row_weight @ self._row_bias**2
                                                             + col_weight @ self._col_bias**2)
            loss.backward()
            value = self._parallel.reduce_gradients(self._parameters_list(), data_loss)
            if not math.isfinite(value):
                self.diverged_ = True
                warnings.warn(f"the train loss became {value} at step {step}: training "
                              f"diverged (lr={lr:g} too large?); the parameters of step "
                              f"{self.best_step_} are kept", RuntimeWarning, stacklevel=3)
                break
            if step % self.eval_every == 0 or step == self.max_steps:
                clock = time.perf_counter()
                score = value
                if n_val:
                    with torch.no_grad():
                        predicted = (self._raw_predict(val_index).double().cpu().numpy()
                                     if val_values.size else np.zeros(0))
                    squared = float(np.sum((self._clip(predicted) - val_values) ** 2))
                    squared = self._parallel.all_sum(squared, self._mean.device)
                    score = math.sqrt(squared / n_val)
                for key, item in (("step", step), ("train_loss", value), ("val_rmse", score),
                                  ("seconds", time.perf_counter() - start)):
                    self.history_[key].append(item)
                bar.set_postfix(loss=f"{value:.3e}", val=f"{score:.4f}", refresh=False)
                if score < best:
                    best, best_state, self.best_step_, stale = score, self._state(), step, 0
                else:
                    stale += 1
                    if n_val and stale >= self.patience:
                        break
                self.eval_seconds_ += time.perf_counter() - clock
            if step == self.max_steps:
                break
            opt.step()
            bar.update()
        bar.close()
        with torch.no_grad():
            for param, saved in zip(self._parameters_list(), best_state, strict=True):
                param.copy_(saved)
        self.n_steps_ = step
        self.fit_seconds_ = time.perf_counter() - start

    # ----------------------------------------------------------------------------------------
    def _indices(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """0-based ``(rows, cols)`` from indices, raw ids (when fitted on a DataFrame) or a
        DataFrame's user/item columns; unknown raw ids map one past the end."""
        if _is_frame(rows):
            if cols is not None:
                raise ValueError("pass either a DataFrame or (rows, cols)")
            ratings = ratings_from_frame(rows, duplicates="keep", require_rating=False)
            rows, cols = ratings.users, ratings.items
        elif cols is None:
            raise ValueError("need (rows, cols) or a DataFrame with user and item columns")
        if self.ids_ is not None:
            return self._lookup_users(rows), _lookup_raw(self.ids_.items, cols)
        return as_index("rows", rows), as_index("cols", cols)

    def _lookup_users(self, users: Any) -> np.ndarray:
        if self.ids_ is None:
            return as_index("users", users)
        return _lookup_raw(self.ids_.users, users)

    def predict(self, rows: Any, cols: Any = None) -> np.ndarray:
        """Predictions (float64) at entries ``(rows[t], cols[t])`` (or a DataFrame's user and
        item columns); unknown ids per ``unknown``."""
        check_is_fitted(self, "model_")
        rows, cols = self._indices(rows, cols)
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
                out[known_row] += self.row_bias_[rows[known_row]]
                out[known_col] += self.col_bias_[cols[known_col]]
            both = np.flatnonzero(known_row & known_col)
            if both.size:
                index = ObservedIndex(torch.from_numpy(rows[both]), torch.from_numpy(cols[both]),
                                      self.shape_).to(self._mean.device)
                out[both] = self._raw_predict(index).double().cpu().numpy()
        return self._clip(out)

    def _targets(self, rows: Any, cols: Any, values: Any) -> tuple[Any, Any, np.ndarray]:
        if _is_frame(rows):
            if cols is not None or values is not None:
                raise ValueError("pass either a DataFrame or (rows, cols, values)")
            ratings = ratings_from_frame(rows, duplicates="keep")
            return ratings.users, ratings.items, ratings.values
        return rows, cols, np.asarray(values, dtype=np.float64)

    def evaluate(self, rows: Any, cols: Any = None, values: Any = None) -> dict[str, float]:
        """``{"rmse": …, "mae": …}`` of :meth:`predict` against ``values`` (or a DataFrame)."""
        rows, cols, values = self._targets(rows, cols, values)
        if values.size == 0:
            raise ValueError("no observations to evaluate on")
        predicted = self.predict(rows, cols)
        if predicted.shape != values.shape:
            raise ValueError(f"values must have shape {predicted.shape}, got {values.shape}")
        return {"rmse": rmse(predicted, values), "mae": mae(predicted, values)}

    def score(self, rows: Any, cols: Any = None, values: Any = None) -> float:
        """Coefficient of determination R² of the predictions (scikit-learn's regressor score;
        higher is better). Use :meth:`evaluate` for RMSE/MAE."""
        rows, cols, values = self._targets(rows, cols, values)
        residual = self.evaluate(rows, cols, values)["rmse"] ** 2
        return 1.0 - residual / float(np.var(values)) if np.var(values) > 0 else 0.0


RATINGS_PRESET: dict[str, Any] = {
    "rank": 10, "depth": 3, "lr": 0.1, "reg": 0.05, "bias_reg": 0.01, "max_steps": 2000,
    "validation_fraction": 0.1, "patience": 5, "eval_every": 10, "clip": "auto",
}
"""Settings of :meth:`DeepMatrixCompletion.ratings`, chosen on validation splits carved from
MovieLens 100K's training files (``docs/results.md``): explicit per-rating L2 (``reg``,
``bias_reg``) and early stopping on a 10 % validation split; Adam at η = 0.1."""


def _is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _lookup_raw(known: np.ndarray, ids: Any) -> np.ndarray:
    """Positions of raw ``ids`` in the sorted ``known`` ids; unknown ones map to len(known)."""
    ids = np.atleast_1d(np.asarray(ids))
    if known.dtype.kind in "iu":
        try:
            ids = ids.astype(np.int64)
        except (ValueError, TypeError, OverflowError):
            return np.full(ids.size, known.size, dtype=np.int64)
    else:
        ids = ids.astype(str)
    return _lookup(known, ids)

