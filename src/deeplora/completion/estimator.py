"""Scikit-learn style estimator for deep matrix completion on sparse observations.

Prediction for entry (i, j): ``μ + b_i + c_j + X_ij`` with ``X = W_L ⋯ W_1`` the compressed (or
narrow) deep factorization of width 2r̂ and optional biases. Training minimizes
``½ mean_{ω ∈ batch} (prediction_ω − y_ω)²`` through the sparse path of
:mod:`deeplora.completion.sparse` (cost per step O(|batch|·r̂ + (m + n)·r̂²)); the biases ride
along as two extra columns, ``[A, b, 1]·[B, 1, c]ᵀ = A Bᵀ + b 1ᵀ + 1 cᵀ``.

With ``feedback="implicit"`` the observations are positives against all other entries instead
(:mod:`~deeplora.completion.implicit`: confidence weights, the Gramian trick for the unobserved
entries).

Fitting (data preparation, the penalty search, the refit) and prediction live here; the
training loop and validation scores in :mod:`~deeplora.completion.training`, observation
checks in :mod:`~deeplora.completion.observations`, data-parallel training in
:mod:`~deeplora.completion.distributed`, top-k recommendation in
:mod:`~deeplora.completion.recommend` and save/load in :mod:`~deeplora.completion.persistence`.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from deeplora.checks import check_integer, check_seed, is_finite_number
from deeplora.completion.data import IdIndex, _lookup, ratings_from_frame
from deeplora.completion.distributed import DataParallel, check_process_group, local_cuda_index
from deeplora.completion.implicit import check_confidences, check_positives, positives
from deeplora.completion.observations import as_index, check_clip, check_observations, mae, rmse
from deeplora.completion.persistence import PersistenceMixin
from deeplora.completion.recommend import RecommenderMixin, seen_crow
from deeplora.completion.selection import search_penalty
from deeplora.completion.sparse import compressed_factorization
from deeplora.completion.training import TrainingMixin, end_to_end
from deeplora.factorization import DeepFactorization
from deeplora.factorization.optim import OPTIMIZERS
from deeplora.factorization.sampled import ObservedIndex, sampled_product
from deeplora.memory import check_fits

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class DeepMatrixCompletion(TrainingMixin, RecommenderMixin, PersistenceMixin,
                           BaseEstimator):
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
            regularization does): ``+ ½λ Σ_ω (‖a_{i_ω}‖² + ‖b_{j_ω}‖²) / |Ω|``, with
            ``reg_uniform`` of the weight spread evenly instead. ``"auto"``:
            chosen on the validation split by a pattern search over a grid of penalties,
            each a fit from the same initialization, several trained together as one
            stacked model, a fit that trails an earlier-listed one by more than it still
            gains raced out (:mod:`deeplora.completion.selection`; ``selected_``,
            ``path_``).
        bias_reg: the same penalty on the row and column biases; ``"auto"`` (only with
            ``reg="auto"``): a fixed fraction of λ along the path.
        reg_uniform: β ∈ [0, 1], the share of the penalties' weight spread evenly over rows
            and columns: row i weighs ``(1 − β) n_i / |Ω| + β / m`` (n_i: its training
            observations), column j likewise with ``1 / n``. 0: count-weighted (per-rating
            SGD regularization); 1: ``½λ (‖A‖² / m + ‖B‖² / n)``, a plain nuclear-norm-like
            penalty (as Soft-Impute's). Explicit feedback only.
        bias_prior: κ, an unweighted ridge penalty on the biases, ``+ ½κ (‖b‖² + ‖c‖²) / |Ω|``:
            a row seen n times gets ``b ≈ Σ residuals / (n + κ)`` (Koren's baseline
            predictors), so rarely seen rows and columns are shrunk most.
        refit: after early stopping (and the λ search) on the validation split, train again
            from a fresh initialization on all observations with the chosen λ for the number
            of steps that was best (about one more fit; ``selected_`` keeps the choice).
        clip: ``(low, high)`` to clip predictions to (e.g. ``(1, 5)`` for ratings), ``"auto"``
            (the training ratings' range, ``clip_`` after fit), or ``None``. A ``(low, high)``
            that shares at most one point with the training ratings' range is refused at fit
            (:func:`~deeplora.completion.observations.check_clip`).
        validation_fraction: share of the observations held out for early stopping (0: none;
            the fit then runs ``max_steps`` steps and keeps the last step's parameters).
        patience: stop after this many evaluations without a better validation RMSE; the best
            parameters are restored.
        eval_every: steps between evaluations.
        duplicates: ``"raise"`` or ``"mean"`` (see :func:`check_observations`).
        unknown: at predict time, a row id >= m or column id >= n is unknown. ``"bias"``: predict
            μ plus the known side's bias (X's term is 0); ``"raise"``: error.
        dtype: ``"float32"`` or ``"float64"``.
        random_state: seeds the split, the batches and the initialization; an integer in
            [0, 2**32).
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
        feedback: ``"explicit"`` (fit the ratings) or ``"implicit"`` (fit positives against
            all other entries with confidence weights, Hu–Koren–Volinsky style: see
            :mod:`~deeplora.completion.implicit`). Implicit: μ is fixed at 0, predictions are
            preference scores (not clipped; ``clip`` must be ``None`` or ``"auto"``), ``reg``
            and ``bias_reg`` are plain (not count-weighted) L2 penalties ``½λ‖A‖² / |P|``,
            and early stopping uses the validation NDCG@10 of the held-out positives
            (``history_["val_ndcg"]``); not with ``distributed``.
        alpha: confidence ``c = 1 + α·r`` of a positive with value r (implicit); fit refuses
            a positive with ``c < 0``.
        positive_threshold: an observation with value >= this is positive (implicit); ``None``:
            every observation (clicks, plays).
        shrinkage: λ_s of :meth:`recommend`'s explicit ranking score, which shrinks each item's
            term towards the user's mean by its training count n_j:
            ``μ + b_u + (c_j + a_u·b_j)·n_j / (n_j + λ_s)`` (0: no shrinkage).

    :meth:`ratings` gives the settings tuned for explicit ratings (:data:`RATINGS_PRESET`),
    :meth:`implicit` those for implicit feedback (:data:`IMPLICIT_PRESET`).
    Observations come as triples of 0-based indices, a SciPy sparse matrix, or a pandas
    DataFrame with user/item/rating columns (raw ids of any kind, re-indexed:
    ``ids_`` holds them; predict/recommend then take and return raw ids).

    Attributes after :meth:`fit`: ``model_``, ``shape_``, ``global_bias_``, ``row_bias_``,
    ``col_bias_``, ``history_`` (lists ``step``, ``train_loss``, ``val_rmse`` or, implicit,
    ``val_ndcg``, ``seconds``),
    ``best_step_``, ``n_steps_``, ``build_seconds_`` (the compressed construction),
    ``eval_seconds_`` (validation and best-state copies), ``fit_seconds_`` (all),
    ``diverged_`` (the train loss became non-finite; training stopped, a warning was issued
    and the best parameters before it were kept), ``interaction_rms_`` (RMS over the final
    fit's training entries, the positives for implicit feedback, of the change of ``X``
    from its initialization) and ``left_init_`` (whether that exceeds
    :data:`~deeplora.completion.training.LEFT_INIT_RTOL` × the spread of the targets: the
    standard deviation of the ratings, 1 for implicit feedback; if not, a warning says the
    fit is a model of its biases alone), ``clip_``, ``ids_`` (an
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
        reg: float | str = 0.0,
        bias_reg: float | str = 0.0,
        bias_prior: float = 0.0,
        reg_uniform: float = 0.0,
        refit: bool = False,
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
        feedback: str = "explicit",
        alpha: float = 1.0,
        positive_threshold: float | None = None,
        shrinkage: float = 0.0,
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
        self.bias_prior = bias_prior
        self.reg_uniform = reg_uniform
        self.refit = refit
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
        self.feedback = feedback
        self.alpha = alpha
        self.positive_threshold = positive_threshold
        self.shrinkage = shrinkage

    def _check_params(self) -> None:
        """Raise ``ValueError`` for any invalid parameter (the only place they are checked);
        a message about one parameter's value starts ``"<name> must be"`` (the CLI puts its
        flag in place of the name: :func:`deeplora.cli.parameters_as_flags`)."""

        def integer(name: str, low: int) -> None:
            check_integer(name, getattr(self, name), low)

        def number(name: str, low: float, *, strict: bool, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not (is_finite_number(value) and (value > low if strict else value >= low)):
                bound = "" if low == -math.inf else f" {'>' if strict else '>='} {low}"
                raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {list(options)}, "
                                 f"got {getattr(self, name)!r}")

        integer("depth", 2)
        integer("rank", 1)
        integer("max_steps", 0)
        integer("patience", 1)
        integer("eval_every", 1)
        check_seed("random_state", self.random_state)
        if self.batch_size is not None:
            integer("batch_size", 1)
        number("init_scale", 0, strict=True)
        number("lr", 0, strict=True, optional=True)
        number("gamma", 0, strict=False, optional=True)
        number("weight_decay", 0, strict=False)
        if self.reg == "auto":
            if self.feedback == "implicit":
                raise ValueError("reg='auto' chooses the penalty by validation RMSE; "
                                 "feedback='implicit' needs a number")
            if self.validation_fraction <= 0:
                raise ValueError("reg='auto' chooses the penalty on a validation split: "
                                 "validation_fraction must be > 0")
        else:
            number("reg", 0, strict=False)
            if self.bias_reg == "auto":
                raise ValueError("bias_reg='auto' needs reg='auto'")
        if self.bias_reg != "auto":
            number("bias_reg", 0, strict=False)
        number("bias_prior", 0, strict=False)
        number("reg_uniform", 0, strict=False)
        if self.reg_uniform > 1:
            raise ValueError(f"reg_uniform must be in [0, 1], got {self.reg_uniform}")
        if self.reg_uniform and self.feedback == "implicit":
            raise ValueError("reg_uniform spreads the explicit-feedback penalty; "
                             "feedback='implicit' already penalizes every row evenly")
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit must be True or False, got {self.refit!r}")
        number("validation_fraction", 0, strict=False)
        number("alpha", 0, strict=False)
        number("shrinkage", 0, strict=False)
        if self.positive_threshold is not None:
            number("positive_threshold", -math.inf, strict=True)
        if self.validation_fraction >= 1:
            raise ValueError(f"validation_fraction must be < 1, got {self.validation_fraction}")
        choice("method", ("compressed", "narrow"))
        choice("optimizer", OPTIMIZERS)
        choice("bias", ("none", "global", "all"))
        choice("duplicates", ("raise", "mean"))
        choice("unknown", ("bias", "raise"))
        choice("dtype", tuple(DTYPES))
        choice("feedback", ("explicit", "implicit"))
        if self.feedback == "implicit" and self.clip not in (None, "auto"):
            raise ValueError(f"clip={self.clip!r} clips ratings; feedback='implicit' predicts "
                             f"preference scores (use clip=None)")
        if self.feedback == "implicit" and self.distributed:
            raise ValueError("feedback='implicit' does not support distributed=True")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")
        self._device()
        if self.distributed:
            check_process_group()
        if self.clip is not None and self.clip != "auto":
            clip = tuple(self.clip)
            if not (len(clip) == 2 and all(is_finite_number(c) for c in clip)
                    and clip[0] < clip[1]):
                raise ValueError(f"clip must be None, 'auto' or (low, high) with low < high, got "
                                 f"{self.clip!r}")

    # ----------------------------------------------------------------------------------------
    @classmethod
    def ratings(cls, **overrides: Any) -> DeepMatrixCompletion:
        """An estimator with :data:`RATINGS_PRESET` (explicit ratings), ``overrides`` on top."""
        return cls(**{**RATINGS_PRESET, **overrides})

    @classmethod
    def implicit(cls, **overrides: Any) -> DeepMatrixCompletion:
        """An estimator with :data:`IMPLICIT_PRESET` (implicit feedback), ``overrides`` on
        top."""
        return cls(**{**IMPLICIT_PRESET, **overrides})

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
        implicit = self.feedback == "implicit"
        if implicit:
            mask, confidence = positives(values, self.positive_threshold, self.alpha)
            check_positives(int(mask.sum()), values.size, self.positive_threshold)
            check_confidences(values[mask], confidence, self.alpha)
        self.clip_: tuple[float, float] | None = None  # implicit: scores are not clipped
        if self.clip == "auto" and not implicit:  # the training range; none if all are equal
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
        if implicit:  # positives with their confidences; μ stays 0
            mask, targets = positives(values[train], self.positive_threshold, self.alpha)
            check_positives(int(mask.sum()), train.size, self.positive_threshold)
            fit_rows, fit_cols = rows[train][mask], cols[train][mask]
        else:
            fit_rows, fit_cols, targets = rows[train], cols[train], values[train]
        batches = self._start(fit_rows, fit_cols, targets, rng, torch_dtype)
        origin = self._origin()
        self.build_seconds_ = time.perf_counter() - start
        validation = (self._ndcg_validation(rows, cols, values, train, val, rng) if implicit
                      else self._rmse_validation(rows, cols, values, val))
        key = "val_ndcg" if implicit else "val_rmse"
        self.history_: dict[str, list[float]] = {"step": [], "train_loss": [], key: [],
                                                 "seconds": []}
        self.eval_seconds_, self.diverged_ = 0.0, False
        args = (batches, validation, rng, start)
        if self.reg == "auto":
            def stage(penalties: list[tuple[float, float]],
                      drop: Callable[[dict[int, float]], set[int]]
                      ) -> list[tuple[float, int, int, list[Tensor]] | None]:
                out: list[tuple[float, int, int, list[Tensor]] | None] = []
                for candidate in self._train(*args, penalties, drop=drop):
                    if candidate.dropped:
                        out.append(None)
                        continue
                    first = self.n_steps_ + 1 if self.history_["step"] else 0
                    self._record(candidate, first)
                    out.append((candidate.score, first, self.best_step_, candidate.state))
                return out

            self.selected_, self.path_ = search_penalty(stage, self._restore, self.bias_reg)
            self.best_step_ = int(self.selected_["step"])
        else:
            score = self._train_one(*args, (float(self.reg), float(self.bias_reg)), 0)
            self.selected_ = {"reg": float(self.reg), "bias_reg": float(self.bias_reg),
                              "first_step": 0, "step": self.best_step_,
                              key: -score if implicit else score}
            self.path_ = []
        if self.refit and n_val:  # the chosen λ and number of steps, on all observations
            steps = self.selected_["step"] - self.selected_["first_step"]
            if implicit:
                mask, targets = positives(values, self.positive_threshold, self.alpha)
                batches = self._start(rows[mask], cols[mask], targets, rng, torch_dtype)
            else:
                targets = values
                batches = self._start(rows, cols, values, rng, torch_dtype)
            origin = self._origin()
            self._train_one(batches, None, rng, start,
                            (self.selected_["reg"], self.selected_["bias_reg"]),
                            self.n_steps_ + 1, steps)
        self.fit_seconds_ = time.perf_counter() - start
        # implicit: a positive's preference is 1
        self._check_left_init(batches, origin, 1.0 if implicit else float(np.std(targets)))
        return self

    def _start(self, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray,
               rng: np.random.Generator, dtype: torch.dtype
               ) -> list[tuple[ObservedIndex, Tensor, int]]:
        """Initialize the model (μ: the mean of ``targets``, 0 for implicit feedback; the
        compressed construction) on these observations; return their batches."""
        m, n = self.shape_
        device = self._device()
        mean = (float(targets.mean()) if self.bias != "none" and self.feedback == "explicit"
                else 0.0)
        self._set_model(self._init_model(rows, cols, targets - mean, dtype).to(device), mean,
                        torch.zeros(m, dtype=dtype, device=device),
                        torch.zeros(n, dtype=dtype, device=device))
        self._parallel.broadcast(self._parameters_list())
        return self._batches(rows, cols, targets, rng, dtype)

    def _origin(self) -> tuple[Tensor, Tensor]:
        """A copy of the end-to-end factors ``(A₀, B₀)`` a fit starts from."""
        a, b = self._end_to_end()
        return a.detach().clone(), b.detach().clone()

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
        gen = torch.Generator().manual_seed(int(self.random_state))
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
        return end_to_end(list(self.model_.factors))

    def _augmented(self, a: Tensor, b: Tensor, row_bias: Tensor | None = None,
                   col_bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``([A, b, 1], [B, 1, c])`` when ``bias="all"``, so that their product is
        ``A Bᵀ + b 1ᵀ + 1 cᵀ``; else ``(A, B)``. The biases default to the estimator's; with
        leading batch axes (``a`` (…, m, k), ``row_bias`` (…, m)) each batch is augmented."""
        if self.bias != "all":
            return a, b
        row_bias = self._row_bias if row_bias is None else row_bias
        col_bias = self._col_bias if col_bias is None else col_bias
        return (torch.cat([a, row_bias[..., None], torch.ones_like(a[..., :1])], dim=-1),
                torch.cat([b, torch.ones_like(b[..., :1]), col_bias[..., None]], dim=-1))

    def _raw_predict(self, index: ObservedIndex,
                     end_to_end: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``μ + b_i + c_j + X_ij`` at the entries of ``index`` (no clipping)."""
        a, b = self._augmented(*(self._end_to_end() if end_to_end is None else end_to_end))
        return sampled_product(a, b, index) + self._mean

    def _clip(self, predicted: np.ndarray) -> np.ndarray:
        return predicted if self.clip_ is None else np.clip(predicted, *self.clip_)

    def _state(self) -> list[Tensor]:
        return [p.detach().clone() for p in self._parameters_list()]

    def _restore(self, state: list[Tensor]) -> None:
        with torch.no_grad():
            for param, saved in zip(self._parameters_list(), state, strict=True):
                param.copy_(saved)

    def _parameters_list(self) -> list[nn.Parameter]:
        return [*self.model_.factors, self._mean, self._row_bias, self._col_bias]

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
        """Held-out ``(rows, cols, values)`` from triples or a DataFrame; ``ValueError`` on
        unequal lengths or values that are not finite."""
        if _is_frame(rows):
            if cols is not None or values is not None:
                raise ValueError("pass either a DataFrame or (rows, cols, values)")
            ratings = ratings_from_frame(rows, duplicates="keep")
            return ratings.users, ratings.items, ratings.values
        values = np.asarray(values, dtype=np.float64)
        if not np.shape(rows) == np.shape(cols) == values.shape:
            raise ValueError(f"rows, cols and values must have equal length, got "
                             f"{np.shape(rows)}, {np.shape(cols)} and {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("values must be finite (found NaN or inf)")
        return rows, cols, values

    def evaluate(self, rows: Any, cols: Any = None, values: Any = None) -> dict[str, float]:
        """``{"rmse": …, "mae": …}`` of :meth:`predict` against ``values`` (or a DataFrame);
        explicit feedback only. ``ValueError`` on unequal lengths and on no or non-finite
        values."""
        check_is_fitted(self, "model_")
        if self.feedback == "implicit":
            raise ValueError("feedback='implicit' predicts preference scores, not ratings: "
                             "use ranking_metrics, not evaluate or score")
        rows, cols, values = self._targets(rows, cols, values)
        if values.size == 0:
            raise ValueError("no observations to evaluate on")
        predicted = self.predict(rows, cols)
        return {"rmse": rmse(predicted, values), "mae": mae(predicted, values)}

    def score(self, rows: Any, cols: Any = None, values: Any = None) -> float:
        """Coefficient of determination R² of the predictions (scikit-learn's regressor score;
        higher is better). Use :meth:`evaluate` for RMSE/MAE."""
        rows, cols, values = self._targets(rows, cols, values)
        residual = self.evaluate(rows, cols, values)["rmse"] ** 2
        return 1.0 - residual / float(np.var(values)) if np.var(values) > 0 else 0.0


RATINGS_PRESET: dict[str, Any] = {
    "rank": 10, "depth": 3, "lr": 0.1, "reg": "auto", "bias_reg": 0.0, "bias_prior": 5.0,
    "reg_uniform": 0.5, "refit": True, "max_steps": 2000, "validation_fraction": 0.1,
    "patience": 5, "eval_every": 10, "clip": "auto", "shrinkage": 1e4,
}
"""Settings of :meth:`DeepMatrixCompletion.ratings`: L2 on the factors, half per rating and half
spread evenly over rows and columns (``reg_uniform=0.5``: on validation splits carved from
the training parts of 21 MovieLens, FilmTrust and Book-Crossing splits, RMSE 0.0009 lower on
average than count-weighted alone, lower on 15 of them; BENCHMARKS.md §3), with λ chosen per
dataset on a 10 % validation split of the training ratings
(:mod:`deeplora.completion.selection`), ridge shrinkage of the biases worth κ = 5
pseudo-ratings (``bias_prior``), early stopping on the same split, then a refit on all
training ratings with the chosen λ and number of steps, Adam at η = 0.1 (rank,
depth and η chosen on MovieLens 100K's ``u1.base`` validation split, ``docs/results.md``;
rank 10 checked on the validation splits of all 21 splits: ranks 8, 6, 4 are level or
worse, BENCHMARKS.md §3).
``reg=<number>`` gives one fit at that penalty instead. ``shrinkage`` (ranking only) is the
best validation NDCG@10 of ``deeplora experiment topk`` on ``u1.base`` and on FilmTrust: with
λ_s far above every item count, ``recommend`` ranks by ``n_j · (c_j + a_u·b_j)``."""


IMPLICIT_PRESET: dict[str, Any] = {
    "feedback": "implicit", "rank": 10, "depth": 3, "lr": 0.03, "reg": 3.0, "alpha": 1.0,
    "positive_threshold": None, "max_steps": 1000, "validation_fraction": 0.1, "patience": 5,
    "eval_every": 10,
}
"""Settings of :meth:`DeepMatrixCompletion.implicit`, chosen on a validation split carved from
MovieLens 100K's ``u1.base`` (``deeplora experiment topk``, ``docs/results.md``): every rating
a positive with confidence 1 + α·r, plain L2 λ on the end-to-end factors, Adam at η = 0.03,
early stopping on the validation NDCG@10."""


def _is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _lookup_raw(known: np.ndarray, ids: Any) -> np.ndarray:
    """Positions of raw ``ids`` in the sorted ``known`` ids; unknown ones map to len(known).
    Against integer ``known`` ids each id is converted on its own (``3``, ``3.0`` and ``"3"``
    are 3; ``"new"`` and ``2.5`` are unknown)."""
    ids = np.atleast_1d(np.asarray(ids))
    if known.dtype.kind not in "iu":
        return _lookup(known, ids.astype(str))
    if ids.dtype.kind in "iu":
        return _lookup(known, ids.astype(np.int64))
    parsed = [_integer(x) for x in ids]
    found = np.array([x is not None for x in parsed], dtype=bool)
    positions = _lookup(known, np.array([x or 0 for x in parsed], dtype=np.int64))
    return np.where(found, positions, known.size)


def _integer(value: Any) -> int | None:
    """``value`` as an int64-sized ``int`` if it is an integer (``3``, ``3.0``, ``" 3"``), else
    ``None``."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = int(value) if math.isfinite(value) and float(value).is_integer() else None
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            return None
    return number if number is not None and -2**63 <= number < 2**63 else None
