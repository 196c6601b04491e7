"""Low-rank recovery problems: targets, observations and losses.

Every problem has a target Φ (m×n, rank r, kept as factors), a loss ℒ(model) on what is
observed, and :meth:`recovery_error`, ``‖X − Φ‖_F / ‖Φ‖_F`` over *all* entries (observed and
unobserved). Models are :class:`~deeplora.factorization.DeepFactorization` instances.

- :class:`MatrixFactorization`: every entry seen, ``ℒ = ½‖X − Φ‖²_F``.
- :class:`MatrixCompletion`: entries Ω seen, ``ℒ = ½ · mean_{(i,j)∈Ω} (X_ij − Φ_ij)²``. (The
  authors' code divides the sum by m·n instead of |Ω|: their step η equals ours times m·n/|Ω|.)
- :class:`MatrixSensing`: ``y = 𝒜(Φ)`` with ``𝒜(X)_i = ⟨A_i, X⟩``, ``A_i`` i.i.d. N(0, 1/p)
  entries (so ``E‖𝒜(X)‖² = ‖X‖²_F``), ``ℒ = ½‖𝒜(X) − y‖²``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from deeplora.checks import check_integer, check_seed, is_finite_number, is_integer
from deeplora.completion.observations import as_index
from deeplora.factorization import DeepFactorization
from deeplora.factorization.sampled import ObservedIndex, squared_loss_and_grads
from deeplora.memory import check_fits

# Bytes per observed entry while sampling Ω and indexing it (rows, cols, values, the CSR index
# and its transposed copy), rounded up.
OBSERVED_ENTRY_BYTES = 128


def dense_target_bytes(rows: int, cols: int) -> int:
    """Peak memory of :func:`random_low_rank`'s paper target: an m×n float64 Gaussian and its
    thin SVD (input, LAPACK's copy, U and Vᵀ: about four m×n float64 arrays)."""
    return 32 * rows * cols


def random_entries_bytes(rows: int, cols: int, fraction: float) -> int:
    """Peak memory of :func:`random_entries` and indexing its Ω: a permutation of all m·n
    positions (int64) plus :data:`OBSERVED_ENTRY_BYTES` per observed entry."""
    return 8 * rows * cols + OBSERVED_ENTRY_BYTES * max(1, round(fraction * rows * cols))


@dataclass(frozen=True)
class LowRankMatrix:
    """Φ = left · rightᵀ with ``left`` (m×r) and ``right`` (n×r)."""

    left: Tensor
    right: Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape[0], self.right.shape[0]

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    def dense(self) -> Tensor:
        return self.left @ self.right.T

    def entries(self, rows: Tensor, cols: Tensor) -> Tensor:
        return torch.sum(self.left[rows] * self.right[cols], dim=1)

    def frobenius_norm(self) -> float:
        gram = (self.left.T @ self.left) * (self.right.T @ self.right)
        return math.sqrt(float(gram.double().sum()))

    def to(self, dtype: torch.dtype) -> LowRankMatrix:
        return LowRankMatrix(self.left.to(dtype), self.right.to(dtype))


def _check_rank(rows: int, cols: int, rank: int) -> int:
    if not (is_integer(rank) and 1 <= rank <= min(rows, cols)):
        raise ValueError(f"rank must be an integer in [1, min(m, n)] = [1, {min(rows, cols)}], "
                         f"got {rank!r}")
    return int(rank)


def random_low_rank(
    rows: int,
    cols: int,
    rank: int,
    singular_values: Sequence[float] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> LowRankMatrix:
    """A random rank-r target.

    With ``singular_values=None`` (the paper's target): the best rank-r approximation of an
    m×n matrix of i.i.d. N(0, 1) entries (top singular values ≈ √m + √n). Otherwise
    ``P diag(σ) Qᵀ`` with Haar-random orthonormal P (m×r), Q (n×r) and the given σ.
    """
    rank, seed = _check_rank(rows, cols, rank), check_seed("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    if singular_values is None:
        check_fits(dense_target_bytes(rows, cols),
                   f"random_low_rank({rows}, {cols}): the dense Gaussian and its SVD",
                   "pass singular_values=… for a target built without dense m×n work")
        u, s, vh = torch.linalg.svd(
            torch.randn(rows, cols, dtype=torch.float64, generator=gen), full_matrices=False
        )
        left, right = u[:, :rank] * s[:rank], vh[:rank].T
    else:
        sigma = torch.as_tensor(singular_values, dtype=torch.float64)
        if sigma.shape != (rank,) or not bool(torch.all(torch.isfinite(sigma) & (sigma > 0))):
            raise ValueError(f"need {rank} finite positive singular values, got {singular_values}")
        left = torch.linalg.qr(torch.randn(rows, rank, dtype=torch.float64, generator=gen)).Q
        right = torch.linalg.qr(torch.randn(cols, rank, dtype=torch.float64, generator=gen)).Q
        left = left * sigma
    return LowRankMatrix(left.to(dtype), right.to(dtype))


def random_entries(
    rows: int, cols: int, fraction: float, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Ω: a uniformly random set of ``round(fraction·m·n)`` distinct entries, as (rows, cols)."""
    if not (is_finite_number(fraction) and 0 < fraction <= 1):
        raise ValueError(f"observed fraction must be in (0, 1], got {fraction!r}")
    seed = check_seed("seed", seed)
    count = max(1, round(fraction * rows * cols))
    check_fits(random_entries_bytes(rows, cols, fraction),
               f"sampling {count:,} of {rows}×{cols} entries")
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(rows * cols, generator=gen)[:count].sort().values
    return flat // cols, flat % cols


def _relative_error(model: DeepFactorization, target: LowRankMatrix) -> float:
    """‖X − Φ‖_F/‖Φ‖_F in float64; via k×k Gram matrices when the model is narrow."""
    with torch.no_grad():
        factors = [f.detach().double() for f in model.factors]
        m, n = target.shape
        if model.width * (m + n) >= m * n:
            diff = (torch.linalg.multi_dot(list(reversed(factors)))
                    - target.dense().to(factors[0].device).double())
            return float(torch.linalg.matrix_norm(diff)) / target.frobenius_norm()
        # X = A Bᵀ with A = W_L⋯W_2 (m×k), B = W_1ᵀ (n×k): ‖X−Φ‖² = ‖X‖² − 2⟨X,Φ⟩ + ‖Φ‖².
        a = factors[-1]
        for f in reversed(factors[1:-1]):
            a = a @ f
        b = factors[0].T
        left, right = target.left.to(a.device).double(), target.right.to(a.device).double()
        x_sq = torch.sum((a.T @ a) * (b.T @ b))
        cross = torch.sum((a.T @ left) * (b.T @ right))
        phi_sq = target.frobenius_norm() ** 2
        return math.sqrt(max(float(x_sq - 2 * cross) + phi_sq, 0.0) / phi_sq)


def _as_index(name: str, value: Tensor | Sequence[int]) -> Tensor:
    """``value`` as CPU int64 indices by :func:`~deeplora.completion.observations.as_index`
    (integral floats accepted, fractional, boolean or NaN ones refused)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
    return torch.from_numpy(as_index(name, value))


class Problem:
    """Base class: a target Φ and a loss on what is observed of it."""

    target: LowRankMatrix

    @property
    def shape(self) -> tuple[int, int]:
        return self.target.shape

    def check_model(self, model: DeepFactorization) -> None:
        """``ValueError`` unless ``model`` is m×n, the shape of Φ."""
        if tuple(model.shape) != tuple(self.shape):
            raise ValueError(f"model is {model.shape[0]}×{model.shape[1]}, the problem's matrix "
                             f"{self.shape[0]}×{self.shape[1]}")

    def loss(self, model: DeepFactorization) -> Tensor:
        """ℒ(model) (0-dim); ``ValueError`` for a model of another shape."""
        self.check_model(model)
        return self._loss(model)

    def _loss(self, model: DeepFactorization) -> Tensor:
        raise NotImplementedError

    def loss_and_grads(self, model: DeepFactorization) -> tuple[Tensor, list[Tensor]]:
        """The loss (0-dim, detached) and its gradient w.r.t. each of ``model.factors``."""
        loss = self.loss(model)
        return loss.detach(), list(torch.autograd.grad(loss, model.factors))

    def recovery_error(self, model: DeepFactorization) -> float:
        """``‖X − Φ‖_F / ‖Φ‖_F`` over all m·n entries."""
        self.check_model(model)
        return _relative_error(model, self.target)


class MatrixFactorization(Problem):
    """All entries observed; ``ℒ = ½‖X − Φ‖²_F``."""

    def __init__(self, target: LowRankMatrix) -> None:
        self.target = target
        self._dense = target.dense()

    def _loss(self, model: DeepFactorization) -> Tensor:
        first = model.factors[0]
        return 0.5 * torch.sum((model.product() - self._dense.to(first.device, first.dtype)) ** 2)


class MatrixCompletion(Problem):
    """Entries Ω = (rows, cols) observed with ``values``; ``ℒ = ½ mean_Ω (X_ij − y_ij)²``."""

    def __init__(self, target: LowRankMatrix, rows: Tensor, cols: Tensor,
                 values: Tensor | None = None) -> None:
        m, n = target.shape
        rows, cols = _as_index("rows", rows), _as_index("cols", cols)
        if rows.ndim != 1 or rows.shape != cols.shape or rows.numel() == 0:
            raise ValueError(f"rows and cols must be non-empty 1-D and of equal length, got "
                             f"{tuple(rows.shape)} and {tuple(cols.shape)}")
        if bool((rows < 0).any() | (rows >= m).any() | (cols < 0).any() | (cols >= n).any()):
            raise ValueError(f"observed indices must lie in [0, {m}) × [0, {n})")
        values = target.entries(rows, cols) if values is None else torch.as_tensor(values)
        if values.shape != rows.shape:
            raise ValueError(f"values must have shape {tuple(rows.shape)}, "
                             f"got {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("observed values must be finite (found NaN or inf)")
        self.target, self.rows, self.cols, self.values = target, rows, cols, values
        self._values_as = values
        self._index: ObservedIndex | None = None

    @classmethod
    def random(cls, target: LowRankMatrix, fraction: float, seed: int = 0) -> MatrixCompletion:
        """Observe a uniformly random ``fraction`` of Φ's entries, noiselessly."""
        return cls(target, *random_entries(*target.shape, fraction, seed))

    @property
    def observed_fraction(self) -> float:
        m, n = self.shape
        return self.rows.numel() / (m * n)

    @property
    def observed_index(self) -> ObservedIndex:
        """Ω as an :class:`~deeplora.factorization.sampled.ObservedIndex`, built once and the
        same object :meth:`DeepFactorization.entries` finds for ``(rows, cols)``."""
        if self._index is None:
            self._index = ObservedIndex.of(self.rows, self.cols, self.shape)
        return self._index

    def _observed(self, model: DeepFactorization) -> tuple[ObservedIndex, Tensor]:
        """Ω and the observed values in the model's dtype, on its device (moved once)."""
        first = model.factors[0]
        if self._values_as.dtype != first.dtype or self._values_as.device != first.device:
            self._values_as = self.values.to(first.device, first.dtype)
        if self.observed_index.col.device != first.device:
            self._index = self.observed_index.to(first.device)
        return self.observed_index, self._values_as

    def _loss(self, model: DeepFactorization) -> Tensor:
        index, values = self._observed(model)
        if model.factors[0].device.type == "cpu":
            return 0.5 * torch.mean((model.entries(self.rows, self.cols) - values) ** 2)
        rows, cols = self.rows.to(values.device), self.cols.to(values.device)
        entries = model.entries(index) if model.narrow else model.product()[rows, cols]
        return 0.5 * torch.mean((entries - values) ** 2)

    def loss_and_grads(self, model: DeepFactorization) -> tuple[Tensor, list[Tensor]]:
        """Closed form for a narrow model
        (:func:`~deeplora.factorization.sampled.squared_loss_and_grads`), autograd otherwise."""
        if not model.narrow:
            return super().loss_and_grads(model)
        self.check_model(model)
        index, values = self._observed(model)
        return squared_loss_and_grads(list(model.factors), index, values)


class MatrixSensing(Problem):
    """``p`` Gaussian measurements ``y_i = ⟨A_i, Φ⟩``; ``ℒ = ½‖𝒜(X) − y‖²``."""

    def __init__(self, target: LowRankMatrix, measurements: int, seed: int = 0) -> None:
        m, n = target.shape
        measurements = check_integer("measurements", measurements, 1)
        seed = check_seed("seed", seed)
        gen = torch.Generator().manual_seed(seed)
        self.target = target
        self.operator = torch.randn(measurements, m * n, dtype=torch.float64, generator=gen)
        self.operator /= math.sqrt(measurements)
        self.values = self.operator @ target.dense().double().reshape(-1)

    def _loss(self, model: DeepFactorization) -> Tensor:
        dtype = model.factors[0].dtype
        residual = self.operator.to(dtype) @ model.product().reshape(-1) - self.values.to(dtype)
        return 0.5 * torch.sum(residual**2)
