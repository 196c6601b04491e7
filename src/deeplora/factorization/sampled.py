"""Entries of a low-rank product at a sparse set of positions, with a sparse backward.

Observed entries Ω = {(i_ω, j_ω)} of an m×n matrix are held as an :class:`ObservedIndex`, a CSR
sparsity pattern computed once (and, up to 1 M entries, its transpose). For a factorization
``X = A Bᵀ`` with A (m×k), B (n×k), :func:`sampled_product` returns ``X[i_ω, j_ω]`` and
backpropagates a gradient ``g`` (|Ω|) as

    ∂/∂A = R B,    ∂/∂B = Rᵀ A,    R = Σ_ω g_ω e_{i_ω} e_{j_ωᵀ}  (m×n, CSR, |Ω| non-zeros),

two sparse-dense products (cost O(|Ω|·k)), instead of autograd's scatter-based index backward.
The forward is a sampled dense-dense product (:func:`torch.sparse.sampled_addmm`, O(|Ω|·k)),
or, when at least 1/16 of a not too large matrix is observed, one dense GEMM and a gather,
which is faster there. :func:`squared_loss_and_grads` gives ``½ mean_Ω (X − y)²`` of a deep
product and the gradient of every factor in closed form, without autograd's per-op overhead.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import scipy.sparse
import torch
from torch import Tensor

_Stamp = tuple[weakref.ref, int]


def _stamp(tensor: Tensor) -> _Stamp:
    """What identifies ``tensor`` as it is now: the object (weakly held) and its version."""
    return weakref.ref(tensor), tensor._version


def _same(stamp: _Stamp, tensor: object) -> bool:
    """Whether ``tensor`` is the stamped tensor, alive and not modified in place since."""
    return stamp[0]() is tensor and stamp[1] == getattr(tensor, "_version", None)


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta state"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _crow(sorted_rows: Tensor, rows: int) -> Tensor:
    crow = torch.zeros(rows + 1, dtype=torch.long, device=sorted_rows.device)
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
    pairs are allowed: each one is a separate term of the loss. Tensors are built on the CPU;
    :meth:`to` moves them (e.g. to a GPU, where the factors must live too).
    ``key`` holds the sorted flat positions ``i·n + j``.
    """

    # Gather from a dense A Bᵀ instead of a sampled product when |Ω| >= m·n / DENSE_FRACTION
    # and m·n <= DENSE_LIMIT (measured on one CPU core: 1.8× faster at 20 % of 500×500).
    DENSE_FRACTION: ClassVar[int] = 16
    DENSE_LIMIT: ClassVar[int] = 1 << 24
    # Rᵀa by torch with a transposed copy of Ω up to this many entries (0.4 ms of a 1.8 ms step
    # faster than SciPy at 50 k entries), by SciPy above (40 % faster at 4 M entries).
    TRANSPOSE_LIMIT: ClassVar[int] = 1 << 20
    # Rb and Rᵀa by SciPy also when m >= TALL·n: at 480,189 × 17,770 (Netflix-prize shape),
    # one core, 1 M entries: R b 0.43 s (torch) vs 0.11 s (SciPy); 10 M: 1.05 vs 0.69 s.
    TALL: ClassVar[int] = 4
    # In squared_loss_and_grads, the residual as a dense masked m×n matrix (three dense GEMMs
    # instead of a gather and two CSR products) when |Ω| >= m·n / DENSE_RESIDUAL_FRACTION,
    # m·n <= DENSE_RESIDUAL_LIMIT and no entry is repeated. Measured on one CPU core at 20 %
    # observed: loss and gradients 1.25× (500×500) and 1.6× (1000×1000) faster, a whole Adam
    # step of a width-10 model 1.1–1.2× (300×300 to 1400×1400); slower at 10 % of 1000×1000
    # or at 20 % of 2000×2000.
    DENSE_RESIDUAL_FRACTION: ClassVar[int] = 5
    DENSE_RESIDUAL_LIMIT: ClassVar[int] = 1 << 21

    _cache: ClassVar[list[tuple[_Stamp, _Stamp, tuple[int, int], ObservedIndex]]] = []

    def __init__(self, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> None:
        rows, cols = check_indices(rows, cols, shape)
        m, n = shape
        self.shape, self.nnz = (m, n), rows.numel()
        key = rows * n + cols
        if self.nnz and bool((key[1:] >= key[:-1]).all()):
            self.order = None
        else:
            key, self.order = torch.sort(key, stable=True)
        self.key = key
        sorted_rows, self.col = key // n, key % n
        self.crow = _crow(sorted_rows, m)
        self._dense_targets: tuple[_Stamp, Tensor, Tensor] | None = None
        self._zeros: Tensor | None = None

    @classmethod
    def of(cls, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> ObservedIndex:
        """Index for ``(rows, cols)``, reused while these same tensor objects are alive and
        unmodified (the last 4 are kept), so that a loss evaluated every step sorts once."""
        for stamp_r, stamp_c, cached_shape, index in cls._cache:
            if _same(stamp_r, rows) and _same(stamp_c, cols) and cached_shape == tuple(shape):
                return index
        index = cls(rows, cols, shape)
        if isinstance(rows, Tensor) and isinstance(cols, Tensor):
            cls._cache = [*cls._cache[-3:], (_stamp(rows), _stamp(cols), tuple(shape), index)]
        return index

    def to(self, device: torch.device | str) -> ObservedIndex:
        """This index with its tensors on ``device`` (``self`` if already there)."""
        device = torch.device(device)
        if self.col.device == device:
            return self
        moved = object.__new__(ObservedIndex)
        moved.shape, moved.nnz, moved._dense_targets, moved._zeros = (self.shape, self.nnz,
                                                                       None, None)
        moved.key, moved.col, moved.crow = (t.to(device) for t in (self.key, self.col, self.crow))
        moved.order = None if self.order is None else self.order.to(device)
        return moved

    @cached_property
    def repeated(self) -> bool:
        """Whether some entry of Ω occurs more than once."""
        return bool((self.key[1:] == self.key[:-1]).any())

    @property
    def dense_residual(self) -> bool:
        """Whether :func:`squared_loss_and_grads` forms the residual as a dense m×n matrix."""
        m, n = self.shape
        return (m * n <= self.DENSE_RESIDUAL_LIMIT
                and self.nnz * self.DENSE_RESIDUAL_FRACTION >= m * n and not self.repeated)

    def dense_targets(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask, target)`` (m×n each, dtype of ``values``): ``1/|Ω|`` and ``y_ω/|Ω|`` at Ω,
        0 elsewhere, for the caller-ordered ``values`` (no repeated entries). Kept for the last
        ``values`` tensor seen while it is alive and unmodified."""
        cached = self._dense_targets
        if cached is not None and _same(cached[0], values):
            return cached[1], cached[2]
        m, n = self.shape
        mask = values.new_zeros(m * n).index_fill_(0, self.key, 1.0 / self.nnz)
        target = values.new_zeros(m * n).index_copy_(0, self.key,
                                                     self.to_sorted(values) / self.nnz)
        mask, target = mask.view(m, n), target.view(m, n)
        self._dense_targets = (_stamp(values), mask, target)
        return mask, target

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

    @property
    def dense_sample(self) -> bool:
        """Whether :meth:`sample` gathers from a dense ``a bᵀ`` (at least 1/:attr:`DENSE_FRACTION`
        of a matrix of at most :attr:`DENSE_LIMIT` entries observed) instead of a sampled
        product."""
        m, n = self.shape
        return m * n <= self.DENSE_LIMIT and self.nnz * self.DENSE_FRACTION >= m * n

    def sample(self, a: Tensor, b: Tensor) -> Tensor:
        """``(a bᵀ)`` at Ω in row-major-sorted order, for a (m×k), b (n×k); no autograd."""
        if self.dense_sample:
            return (a @ b.T).view(-1).index_select(0, self.key)
        return torch.sparse.sampled_addmm(self._pattern(a.dtype), a, b.T, beta=0.0).values()

    def csr_views(self, values: Tensor, transposed: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(R, Rᵀ)``, CSR tensors (m×n and n×m) whose values are the arrays ``values``
        (|Ω|, row-major-sorted) and ``transposed`` (|Ω|, the same entries column-major:
        ``values[transpose_order]``) themselves, not copies, for torch's kernels writing in
        place (``out=``) on a CPU; ``None`` where :meth:`left` and :meth:`right` use SciPy
        (above :attr:`TRANSPOSE_LIMIT` entries or for a tall matrix) or on another device."""
        if self.col.device.type != "cpu" or self._use_scipy:
            return None
        _, crow, col = self._transposed
        return (_csr(*self._kernel, values, self.shape),
                _csr(crow, col, transposed, (self.shape[1], self.shape[0])))

    @property
    def transpose_order(self) -> Tensor:
        """Positions that re-sort row-major-sorted entries column-major (Ωᵀ's CSR order)."""
        return self._transposed[0]

    @cached_property
    def _kernel(self) -> tuple[Tensor, Tensor]:
        """``(crow, col)`` for torch's CSR kernels: int32 up to :attr:`TRANSPOSE_LIMIT` entries
        (on one CPU core at 80 k entries the sampled product 5 %, ``R b`` and ``Rᵀ a``
        20–30 % faster than with int64, the same arithmetic), else the int64 ones (no copy)."""
        if self.nnz <= self.TRANSPOSE_LIMIT:
            return self.crow.int(), self.col.int()
        return self.crow, self.col

    def _pattern(self, dtype: torch.dtype) -> Tensor:
        """Ω as a CSR matrix of zeros of ``dtype`` (the last one asked for is kept)."""
        if self._zeros is None or self._zeros.dtype != dtype:
            self._zeros = _csr(*self._kernel,
                               torch.zeros(self.nnz, dtype=dtype, device=self.col.device),
                               self.shape)
        return self._zeros

    @property
    def _use_scipy(self) -> bool:
        """Sparse-dense products by SciPy: on the CPU, above :attr:`TRANSPOSE_LIMIT` entries
        or for a tall matrix (m >= :attr:`TALL` · n), where torch's CSR product is slower."""
        m, n = self.shape
        return self.col.device.type == "cpu" and (self.nnz > self.TRANSPOSE_LIMIT
                                                  or m >= self.TALL * n)

    def left(self, sorted_values: Tensor, b: Tensor) -> Tensor:
        """``R b`` (m×k) for R with the row-major-sorted ``sorted_values`` at Ω, b (n×k)."""
        if self._use_scipy:
            product = self._scipy_sorted(sorted_values) @ b.detach().contiguous().numpy()
            return torch.from_numpy(product)
        return _csr(*self._kernel, sorted_values, self.shape) @ b

    def right(self, sorted_values: Tensor, a: Tensor) -> Tensor:
        """``Rᵀ a`` (n×k) for R with the row-major-sorted ``sorted_values`` at Ω, a (m×k).

        Up to :attr:`TRANSPOSE_LIMIT` entries: torch's CSR product with the transposed pattern
        (built once, 16 bytes per entry); above (or for a tall matrix, see
        :attr:`_use_scipy`): SciPy's column-wise product over the same pattern, which needs no
        copy of Ω and is the faster one there."""
        if self._use_scipy:
            product = self._scipy_sorted(sorted_values).T @ a.detach().contiguous().numpy()
            return torch.from_numpy(product)
        order, crow, col = self._transposed
        values = sorted_values.index_select(0, order)
        return _csr(crow, col, values, (self.shape[1], self.shape[0])) @ a

    @cached_property
    def _transposed(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(order, crow, col)`` of Ωᵀ as CSR (n×m), indices int32 (used up to
        :attr:`TRANSPOSE_LIMIT` entries): ``order`` re-sorts row-major-sorted entries
        column-major."""
        m, n = self.shape
        sorted_rows = torch.repeat_interleave(torch.arange(m, device=self.crow.device),
                                              torch.diff(self.crow))
        key, order = torch.sort(self.col * m + sorted_rows, stable=True)
        return order, _crow(key // m, n).int(), (key % m).int()


def _stack(parts: list[Tensor]) -> Tensor:
    """``torch.stack(parts)``, without a copy for one part."""
    return parts[0][None] if len(parts) == 1 else torch.stack(parts)


class _SampledProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, index: ObservedIndex) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.index = index
        if a.ndim == 3:  # a batch of products, one sparse product each
            return _stack([index.from_sorted(index.sample(x, y))
                           for x, y in zip(a, b, strict=True)])
        return index.from_sorted(index.sample(a, b))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b = ctx.saved_tensors
        index: ObservedIndex = ctx.index
        if a.ndim == 3:
            g = [index.to_sorted(x) for x in grad.contiguous()]
            grad_a = (_stack([index.left(x, y) for x, y in zip(g, b, strict=True)])
                      if ctx.needs_input_grad[0] else None)
            grad_b = (_stack([index.right(x, y) for x, y in zip(g, a, strict=True)])
                      if ctx.needs_input_grad[1] else None)
            return grad_a, grad_b, None
        g = index.to_sorted(grad.contiguous())
        grad_a = index.left(g, b) if ctx.needs_input_grad[0] else None
        grad_b = index.right(g, a) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def sampled_product(a: Tensor, b: Tensor, rows: Tensor | ObservedIndex,
                    cols: Tensor | None = None) -> Tensor:
    """``(a @ bᵀ)[rows, cols]`` (|Ω|,) for a (m×k), b (n×k), differentiable in a and b.

    A batch a (K×m×k), b (K×n×k) gives the K products at the same Ω, (K×|Ω|), one sparse
    product each (the pattern is shared). ``rows`` may be an :class:`ObservedIndex` (then
    ``cols`` is omitted). Cost O(|Ω|·k) forward and backward per product; memory O(|Ω|)
    beyond the inputs.
    """
    if not (a.ndim == b.ndim and a.ndim in (2, 3) and a.shape[:-2] == b.shape[:-2]
            and a.shape[-1] == b.shape[-1]):
        raise ValueError(f"need a (m×k) and b (n×k), or batches (K×m×k, K×n×k), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    shape = (a.shape[-2], b.shape[-2])
    if isinstance(rows, ObservedIndex):
        index = rows
        if index.shape != shape:
            raise ValueError(f"index is for shape {index.shape}, factors give {shape}")
    else:
        if cols is None:
            raise ValueError("cols is required when rows is a tensor")
        index = ObservedIndex.of(rows, cols, shape)
    return _SampledProduct.apply(a, b, index)


def suffix_products(factors: Sequence[Tensor]) -> tuple[list[Tensor | None], Tensor]:
    """``(suffix, A)`` for ``factors = [W_1, …, W_L]`` (L >= 2, each possibly with leading batch
    axes): ``suffix[i] = W_{i+1} ⋯ W_2`` for i = 1 … L−2 (``suffix[0] = None`` stands for I)
    and ``A = W_L ⋯ W_2`` (m×k)."""
    suffix: list[Tensor | None] = [None]
    for w in factors[1:-1]:
        suffix.append(w if suffix[-1] is None else w @ suffix[-1])
    last = factors[-1]
    return suffix, (last if suffix[-1] is None else last @ suffix[-1])


def chain_rule(factors: Sequence[Tensor], suffix: list[Tensor | None], grad_a: Tensor,
               grad_b: Tensor, first_as_b: bool = False) -> list[Tensor]:
    """``[∇_{W_1}, …, ∇_{W_L}]`` (contiguous) from the gradients in ``A = W_L ⋯ W_2`` (m×k)
    and ``B = W_1ᵀ`` (n×k), ``suffix`` from :func:`suffix_products`:
    ``∇W_1 = (∇B)ᵀ``, ``∇W_l = (W_L ⋯ W_{l+1})ᵀ ∇A (W_{l−1} ⋯ W_2)ᵀ`` (l >= 2).
    ``first_as_b``: the first one is ``∇B`` itself, for a first factor stored as B (``W_1``
    is not read)."""
    inner = []
    left = grad_a  # (W_L ⋯ W_{i+2})ᵀ ∇A, from W_L down to W_2 (= factors[i])
    for i in range(len(factors) - 1, 0, -1):
        inner.append(left if suffix[i - 1] is None else left @ suffix[i - 1].mT)
        if i > 1:
            left = factors[i].mT @ left
    return [g.contiguous() for g in (grad_b if first_as_b else grad_b.mT, *reversed(inner))]


def squared_loss_and_grads(
    factors: Sequence[Tensor], index: ObservedIndex, values: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """``ℒ = ½ mean_Ω (X_ω − y_ω)²`` for ``X = W_L ⋯ W_1`` and ``[∇_{W_1} ℒ, …, ∇_{W_L} ℒ]``.

    ``factors`` = ``[W_1 (k×n), W_2 … W_{L-1} (k×k), W_L (m×k)]``, L >= 2; ``values`` (|Ω|) in
    the caller's order of ``index``. With ``R = P_Ω(X − y)/|Ω|`` (m×n, sparse),
    ``A = W_L ⋯ W_2`` (m×k) and ``H = R W_1ᵀ`` (m×k):

        ∇W_1 = (Rᵀ A)ᵀ,    ∇W_l = (W_L ⋯ W_{l+1})ᵀ H (W_{l−1} ⋯ W_2)ᵀ   (l >= 2),

    the same arithmetic as autograd (two sparse products, O(|Ω|·k), the rest k×k products and
    O((m + n)·k²)) without its per-op overhead, which dominates the step of a narrow model.
    When much of a small matrix is observed (:attr:`ObservedIndex.dense_residual`), R is formed
    densely instead, as ``(A W_1) ⊙ M − Y`` with the cached mask M and targets Y of
    :meth:`ObservedIndex.dense_targets` (three dense GEMMs, O(m·n·k)), which is faster there.
    Computed without building an autograd graph; the loss is a 0-dim tensor.
    """
    depth = len(factors)
    if depth < 2:
        raise ValueError(f"need at least 2 factors, got {depth}")
    with torch.no_grad():
        first = factors[0]
        suffix, a = suffix_products(factors)
        if index.dense_residual:
            mask, target = index.dense_targets(values)
            residual = torch.mm(a, first).mul_(mask).sub_(target)
            flat = residual.view(-1)
            loss = 0.5 * index.nnz * torch.dot(flat, flat)
            grad_b = torch.mm(a.T, residual).T
            grad_a = torch.mm(first, residual.T).T  # R W_1ᵀ; this operand order is the fast GEMM
        else:
            residual = (index.sample(a, first.T) - index.to_sorted(values)) / index.nnz
            loss = 0.5 * index.nnz * torch.dot(residual, residual)
            grad_b = index.right(residual, a)
            grad_a = index.left(residual, first.T)
        return loss, chain_rule(factors, suffix, grad_a, grad_b)
