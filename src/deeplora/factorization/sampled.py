"""Entries of a low-rank product at a sparse set of positions, with a sparse backward.

Observed entries Ω = {(i_ω, j_ω)} of an m×n matrix are held as an :class:`ObservedIndex`, a CSR
sparsity pattern computed once. For a factorization ``X = A Bᵀ`` with A (m×k), B (n×k),
:func:`sampled_product` returns ``X[i_ω, j_ω]`` by a sampled dense-dense product
(:func:`torch.sparse.sampled_addmm`) and backpropagates a gradient ``g`` (|Ω|) as

    ∂/∂A = R B,    ∂/∂B = Rᵀ A,    R = Σ_ω g_ω e_{i_ω} e_{j_ωᵀ}  (m×n, CSR, |Ω| non-zeros),

two sparse-dense products (cost O(|Ω|·k)), instead of autograd's scatter-based index backward.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, ClassVar

import scipy.sparse
import torch
from torch import Tensor


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
