"""Sparse deep matrix completion: cost O(|Ω|·k + (m + n)·k²) per step, never an m×n matrix.

Training gathers the observed entries with
:func:`deeplora.factorization.sampled.sampled_product` (sparse CSR backward).

:func:`compressed_factorization` builds the paper's compressed model from Ω alone, with the
first gradient as a sparse matrix and only its top-r̂ singular vectors (ARPACK), and
:class:`RandomDCT` is the implicit random orthogonal matrix that plays the wide model's
end-to-end initialization. :func:`random_observations` samples Ω without an m·n permutation.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from deeplora.checks import check_integer, check_seed, is_integer
from deeplora.factorization import DeepFactorization
from deeplora.factorization.compress import compressed_bases
from deeplora.factorization.init import check_scale
from deeplora.factorization.sampled import ObservedIndex


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

    Loss ``ℒ(X) = ½ mean_ω (X_ω − y_ω)²``. The wide model (width max(m, n), depth L, every
    layer ε-orthogonal) starts at ``X(0) = ε^L Q`` with Q (m×n) a partial isometry, so only
    ``E = ∇_X ℒ(X(0)) = (1/|Ω|) P_Ω(ε^L Q − y)`` (sparse m×n) and Q are needed:
    :func:`~deeplora.factorization.compress.compressed_bases` takes E's top-r̂ singular
    vectors ``U_E, V_E`` (ARPACK on the sparse E) and builds

        m <= n:  V = orth[V_E, Qᵀ U_E],  U = Q V;      m > n:  U = orth[U_E, Q V_E],  V = Qᵀ U,

    i.e. the paper's input-side construction, or the same on the transposed problem when the
    matrix is tall (see :mod:`deeplora.factorization.compress` for why). Only products of Q with
    thin matrices are computed. Q is ``end_to_end`` or a :class:`RandomDCT` drawn from ``seed``.

    Returns a :class:`DeepFactorization` with factors ``[Vᵀ, εI, …, εI, U]`` (depth L + 2).
    """
    m, n = index.shape
    scale = check_scale(scale)
    if not (is_integer(rank) and rank >= 1 and 2 * rank <= min(m, n)):
        raise ValueError(f"rank must be an integer with 1 <= rank and 2*rank <= min(m, n) = "
                         f"{min(m, n)}, got {rank!r}")
    rank, depth = int(rank), check_integer("depth", depth, 2)
    seed = check_seed("seed", seed)
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
    left, right = compressed_bases(grad, rank,
                                   lambda x: torch.from_numpy(q.matmul(x.numpy())),
                                   lambda y: torch.from_numpy(q.rmatmul(y.numpy())), rng)
    eye = torch.eye(2 * rank, dtype=dtype)
    return DeepFactorization.from_factors([right.T.to(dtype), *[scale * eye] * depth,
                                           left.to(dtype)], init="compressed", scale=scale)


def random_observations(rows: int, cols: int, count: int, seed: int = 0,
                        exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``count`` distinct entries drawn uniformly, sorted row-major, as (rows, cols).

    Memory O(count), not O(m·n). ``exclude``: flat indices ``i·n + j`` to avoid (any order,
    repeats allowed).
    """
    if exclude is not None:
        exclude = torch.unique(torch.as_tensor(exclude))
        if exclude.numel() and not (int(exclude[0]) >= 0 and int(exclude[-1]) < rows * cols):
            raise ValueError(f"exclude must hold flat indices in [0, {rows * cols}), got "
                             f"{int(exclude[0])} to {int(exclude[-1])}")
    total = rows * cols - (0 if exclude is None else exclude.numel())
    count, seed = check_integer("count", count, 1, total), check_seed("seed", seed)
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
