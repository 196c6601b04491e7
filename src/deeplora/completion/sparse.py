"""Sparse deep matrix completion: cost O(|Ω|·k + (m + n)·k²) per step, never an m×n matrix.

Observed entries Ω = {(i_ω, j_ω)} of an m×n matrix are held as an :class:`ObservedIndex`, a CSR
sparsity pattern computed once. For a factorization ``X = A Bᵀ`` with A (m×k), B (n×k),
:func:`sampled_product` returns ``X[i_ω, j_ω]`` by a sampled dense-dense product
(:func:`torch.sparse.sampled_addmm`) and backpropagates a gradient ``g`` (|Ω|) as

    ∂/∂A = R B,    ∂/∂B = Rᵀ A,    R = Σ_ω g_ω e_{i_ω} e_{j_ωᵀ}  (m×n, CSR, |Ω| non-zeros),

two sparse-dense products, instead of autograd's scatter-based index backward.

:func:`compressed_factorization` builds the paper's compressed model from Ω alone, with the
first gradient as a sparse matrix and only its top-r̂ singular vectors (ARPACK), and
:class:`RandomDCT` is the implicit random orthogonal matrix that plays the wide model's
end-to-end initialization. :func:`random_observations` samples Ω without an m·n permutation.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, ClassVar

import numpy as np
import scipy.fft
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

from deeplora.factorization import DeepFactorization
from deeplora.factorization.init import check_scale
from deeplora.factorization.subspace import orthonormal_union


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta state"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _crow(sorted_rows: Tensor, rows: int) -> Tensor:
    crow = torch.zeros(rows + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(sorted_rows, minlength=rows), 0)
    return crow


def check_indices(rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``rows``, ``cols`` as int64 tensors, or ``ValueError`` unless 1-D, equal-length, in range."""
    rows = torch.as_tensor(rows)
    cols = torch.as_tensor(cols)
    for name, index in (("rows", rows), ("cols", cols)):
        if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
            raise ValueError(f"{name} must be integer indices, got dtype {index.dtype}")
    if rows.ndim != 1 or rows.shape != cols.shape:
        raise ValueError(f"rows and cols must be 1-D and of equal length, got "
                         f"{tuple(rows.shape)} and {tuple(cols.shape)}")
    m, n = shape
    rows, cols = rows.long(), cols.long()
    if rows.numel() and bool((rows.min() < 0) | (rows.max() >= m) | (cols.min() < 0)
                             | (cols.max() >= n)):
        raise ValueError(f"indices must lie in [0, {m}) × [0, {n})")
    return rows, cols


class ObservedIndex:
    """The pattern Ω of an m×n matrix as CSR (built once, O(|Ω| log|Ω|)).

    Entries keep the caller's order in :func:`sampled_product`; internally they are sorted
    row-major (``order``), which costs nothing when the caller's entries already are. Duplicate
    pairs are allowed: each one is a separate term of the loss. Tensors live on the CPU.
    """

    _cache: ClassVar[list[tuple[Any, Any, int, int, tuple[int, int], ObservedIndex]]] = []

    def __init__(self, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> None:
        rows, cols = check_indices(rows, cols, shape)
        m, n = shape
        self.shape, self.nnz = (m, n), rows.numel()
        key = rows * n + cols
        if self.nnz and bool((key[1:] >= key[:-1]).all()):
            self.order = None
        else:
            key, self.order = torch.sort(key, stable=True)
        sorted_rows, self.col = key // n, key % n
        self.crow = _crow(sorted_rows, m)

    @classmethod
    def of(cls, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> ObservedIndex:
        """Index for ``(rows, cols)``, reused while these same tensor objects are alive and
        unmodified (the last 4 are kept), so that a loss evaluated every step sorts once."""
        versions = (getattr(rows, "_version", -1), getattr(cols, "_version", -1))
        for ref_r, ref_c, ver_r, ver_c, cached_shape, index in cls._cache:
            if (ref_r() is rows and ref_c() is cols and (ver_r, ver_c) == versions
                    and cached_shape == tuple(shape) and versions != (-1, -1)):
                return index
        index = cls(rows, cols, shape)
        if isinstance(rows, Tensor) and isinstance(cols, Tensor):
            cls._cache = [*cls._cache[-3:],
                          (weakref.ref(rows), weakref.ref(cols), *versions, tuple(shape), index)]
        return index

    def to_sorted(self, values: Tensor) -> Tensor:
        """Per-entry ``values`` from the caller's order into row-major order."""
        return values if self.order is None else values[self.order]

    def from_sorted(self, values: Tensor) -> Tensor:
        """Inverse of :meth:`to_sorted`."""
        if self.order is None:
            return values
        out = torch.empty_like(values)
        out[self.order] = values
        return out

    def matrix(self, values: Tensor) -> Tensor:
        """``R`` (m×n sparse CSR) with the caller-ordered ``values`` at Ω (duplicates add up)."""
        return _csr(self.crow, self.col, self.to_sorted(values), self.shape)

    def scipy(self, values: Tensor) -> scipy.sparse.csr_array:
        """:meth:`matrix` as a SciPy CSR array (same dtype as ``values``)."""
        return self._scipy_sorted(self.to_sorted(values))

    def _scipy_sorted(self, sorted_values: Tensor) -> scipy.sparse.csr_array:
        return scipy.sparse.csr_array(
            (sorted_values.detach().numpy(), self.col.numpy(), self.crow.numpy()),
            shape=self.shape)


class _SampledProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, index: ObservedIndex) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.index = index
        pattern = _csr(index.crow, index.col, a.new_zeros(index.nnz), index.shape)
        sampled = torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()
        return index.from_sorted(sampled)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b = ctx.saved_tensors
        index: ObservedIndex = ctx.index
        g = index.to_sorted(grad.contiguous())
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _csr(index.crow, index.col, g, index.shape) @ b
        if ctx.needs_input_grad[1]:  # SciPy's CSR.T @ dense runs column-wise, no transpose copy
            grad_b = torch.from_numpy(index._scipy_sorted(g).T @ a.detach().contiguous().numpy())
        return grad_a, grad_b, None


def sampled_product(a: Tensor, b: Tensor, rows: Tensor | ObservedIndex,
                    cols: Tensor | None = None) -> Tensor:
    """``(a @ bᵀ)[rows, cols]`` (|Ω|,) for a (m×k), b (n×k), differentiable in a and b.

    ``rows`` may be an :class:`ObservedIndex` (then ``cols`` is omitted). Cost O(|Ω|·k) forward
    and backward; memory O(|Ω|) beyond the inputs.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need a (m×k) and b (n×k), got {tuple(a.shape)} and {tuple(b.shape)}")
    shape = (a.shape[0], b.shape[0])
    if isinstance(rows, ObservedIndex):
        index = rows
        if index.shape != shape:
            raise ValueError(f"index is for shape {index.shape}, factors give {shape}")
    else:
        if cols is None:
            raise ValueError("cols is required when rows is a tensor")
        index = ObservedIndex.of(rows, cols, shape)
    return _SampledProduct.apply(a, b, index)


class RandomDCT:
    """An m×n random semi-orthogonal matrix Q that is never formed.

    With k = max(m, n), ``Q = M[:m, :n]`` where ``M[i, j] = s_i t_j C[σ(i), τ(j)]``, C the
    orthonormal k×k DCT-II matrix, σ, τ random permutations and s, t random signs; M is
    orthogonal, so Q has orthonormal rows (m <= n) or columns (m >= n). ``Q x`` and ``Qᵀ y``
    cost O(k log k) per column (FFT), one entry costs O(1). Any such Q is the end-to-end
    initialization ``W_L(0)⋯W_1(0)/ε^L`` of a valid wide ε-orthogonal model (e.g.
    ``W_1 = ε M[:, :n]``, ``W_l = ε I``, ``W_L = ε [I_m 0]``), which is all the compressed
    construction needs.
    """

    def __init__(self, rows: int, cols: int, generator: np.random.Generator) -> None:
        self.shape = (rows, cols)
        self.size = k = max(rows, cols)
        self.row_perm, self.col_perm = generator.permutation(k), generator.permutation(k)
        self.row_sign = generator.choice([-1.0, 1.0], size=k)
        self.col_sign = generator.choice([-1.0, 1.0], size=k)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``Q x`` for x (n×p), float64."""
        m, n = self.shape
        z = np.zeros((self.size, x.shape[1]))
        z[self.col_perm[:n]] = self.col_sign[:n, None] * x
        y = scipy.fft.dct(z, type=2, norm="ortho", axis=0, workers=-1)
        return self.row_sign[:m, None] * y[self.row_perm[:m]]

    def rmatmul(self, y: np.ndarray) -> np.ndarray:
        """``Qᵀ y`` for y (m×p), float64."""
        m, n = self.shape
        w = np.zeros((self.size, y.shape[1]))
        w[self.row_perm[:m]] = self.row_sign[:m, None] * y
        u = scipy.fft.idct(w, type=2, norm="ortho", axis=0, workers=-1)
        return self.col_sign[:n, None] * u[self.col_perm[:n]]

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``Q[rows, cols]`` in O(1) each: C[a, b] = √(2/k) cos(π a (2b+1) / 2k), row 0 /√2."""
        k = self.size
        a, b = self.row_perm[rows], self.col_perm[cols]
        phase = (a * (2 * b + 1)) % (4 * k)  # exact integer reduction of the angle
        c = math.sqrt(2 / k) * np.cos(np.pi * phase / (2 * k))
        c[a == 0] /= math.sqrt(2)
        return self.row_sign[rows] * self.col_sign[cols] * c

    def dense(self) -> np.ndarray:
        """Q itself (m×n), for tests and small problems."""
        return self.matmul(np.eye(self.shape[1]))


def compressed_factorization(
    index: ObservedIndex,
    values: Tensor,
    rank: int,
    depth: int = 3,
    scale: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    end_to_end: RandomDCT | None = None,
) -> DeepFactorization:
    """The compressed model of :func:`deeplora.factorization.compress`, from Ω alone.

    Loss ``ℒ(X) = ½ mean_ω (X_ω − y_ω)²``. Wide model (width k = max(m, n), depth L, every
    layer ε-orthogonal): ``W_{L:2}(0)ᵀ = ε^{L-1} P`` with P (k×m) orthonormal columns, and
    ``X(0) = ε^L Q`` with ``Q = Pᵀ W_1(0)/ε`` (m×n, semi-orthogonal). With
    ``E = ∇_X ℒ(X(0)) = (1/|Ω|) P_Ω(ε^L Q − y)`` (sparse m×n, SVD ``U_E S V_Eᵀ``):

        G = ∇_{W_1} ℒ = W_{L:2}ᵀ E = ε^{L-1} P E  ⇒  U_G = P U_E,  V_G = V_E,
        W_1(0)ᵀ U_G = W_1(0)ᵀ P U_E = ε Qᵀ U_E,

    so ``V = orth[V_E[:, :r̂], Qᵀ U_E[:, :r̂]]`` (n×2r̂) and ``U = W_{L:1}(0) V / ε^L = Q V``.
    Only E's top-r̂ singular vectors (ARPACK on the sparse E) and products of Q with thin
    matrices are computed. Q is ``end_to_end`` or a :class:`RandomDCT` drawn from ``seed``.

    Returns a :class:`DeepFactorization` with factors ``[Vᵀ, εI, …, εI, U]`` (depth L + 2).
    """
    m, n = index.shape
    scale = check_scale(scale)
    if not (isinstance(rank, int) and rank >= 1 and 2 * rank <= min(m, n)):
        raise ValueError(f"rank must be an integer with 1 <= rank and 2*rank <= min(m, n) = "
                         f"{min(m, n)}, got {rank!r}")
    if not (isinstance(depth, int) and depth >= 2):
        raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
    values = torch.as_tensor(values).double()
    if values.shape != (index.nnz,) or index.nnz == 0:
        raise ValueError(f"need {index.nnz} > 0 values, got shape {tuple(values.shape)}")
    rng = np.random.default_rng(seed)
    q = RandomDCT(m, n, rng) if end_to_end is None else end_to_end
    if q.shape != (m, n):
        raise ValueError(f"end_to_end has shape {q.shape}, need {(m, n)}")
    sorted_rows = torch.repeat_interleave(torch.arange(m), torch.diff(index.crow)).numpy()
    x0 = scale**depth * q.entries(sorted_rows, index.col.numpy())
    residual = torch.from_numpy(x0) - index.to_sorted(values)
    grad = index._scipy_sorted(residual / index.nnz)
    left_e, _, right_e_t = scipy.sparse.linalg.svds(grad, k=rank, v0=rng.standard_normal(min(m, n)))
    right = orthonormal_union(torch.from_numpy(right_e_t.T.copy()),
                              torch.from_numpy(q.rmatmul(left_e)))
    left = torch.from_numpy(q.matmul(right.numpy()))
    eye = torch.eye(2 * rank, dtype=dtype)
    return DeepFactorization.from_factors([right.T.to(dtype), *[scale * eye] * depth,
                                           left.to(dtype)], init="compressed", scale=scale)


def random_observations(rows: int, cols: int, count: int, seed: int = 0,
                        exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``count`` distinct entries drawn uniformly, sorted row-major, as (rows, cols).

    Memory O(count), not O(m·n). ``exclude``: sorted flat indices ``i·n + j`` to avoid.
    """
    total = rows * cols - (0 if exclude is None else exclude.numel())
    if not (isinstance(count, int) and 1 <= count <= total):
        raise ValueError(f"count must be an integer in [1, {total}], got {count!r}")
    gen = torch.Generator().manual_seed(seed)
    if exclude is None and 2 * count > total:  # dense sample: a permutation is cheaper
        flat = torch.randperm(total, generator=gen)[:count].sort().values
        return flat // cols, flat % cols
    flat = torch.empty(0, dtype=torch.long)
    while flat.numel() < count:
        need = count - flat.numel()
        draw = torch.randint(0, rows * cols, (int(need * 1.1) + 16,), generator=gen)
        if exclude is not None and exclude.numel():
            pos = torch.searchsorted(exclude, draw).clamp(max=exclude.numel() - 1)
            draw = draw[exclude[pos] != draw]
        flat = torch.unique(torch.cat([flat, draw]))
    keep = torch.randperm(flat.numel(), generator=gen)[:count].sort().values
    flat = flat[keep]
    return flat // cols, flat % cols
