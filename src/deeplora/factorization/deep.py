"""Deep factorization ``X = W_L ⋯ W_1`` of an m×n matrix.

Shapes: ``W_1`` (k×n), ``W_2 … W_{L-1}`` (k×k), ``W_L`` (m×k) for width k. The paper's
"original" overparameterized model has ``k = max(m, n)``; its "narrow" ablation has ``k = 2r``.
The compressed model of :func:`deeplora.factorization.compress` is also a ``DeepFactorization``
(depth L + 2, width 2r), built from explicit factors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deeplora.checks import check_integer
from deeplora.factorization.init import check_scale, init_
from deeplora.factorization.sampled import ObservedIndex, sampled_product


def _check_shape(rows: int, cols: int, depth: int, width: int) -> tuple[int, int, int, int]:
    """``(rows, cols, depth, width)`` as ``int`` s (numpy's integers accepted)."""
    return (check_integer("rows", rows, 1), check_integer("cols", cols, 1),
            check_integer("depth", depth, 2), check_integer("width", width, 1))


class DeepFactorization(nn.Module):
    """End-to-end matrix ``X = W_L ⋯ W_1`` (m×n) with trainable factors.

    Args:
        rows, cols: m and n.
        depth: L >= 2.
        width: k; default ``max(m, n)`` (the overparameterized model).
        init: ``"orthogonal"`` (paper: every factor ε·semi-orthogonal, singular values exactly ε)
            or ``"gaussian"``.
        scale: ε.
        generator: seeds the draw.
        dtype, device: of the factors.
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        depth: int = 3,
        width: int | None = None,
        init: str = "orthogonal",
        scale: float = 1e-3,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        width = max(rows, cols) if width is None else width
        rows, cols, depth, width = _check_shape(rows, cols, depth, width)
        self.init, self.scale = init, check_scale(scale)
        shapes = [(width, cols)] + [(width, width)] * (depth - 2) + [(rows, width)]
        self.factors = nn.ParameterList(
            nn.Parameter(init_(torch.empty(s, dtype=dtype, device=device), init, scale, generator))
            for s in shapes
        )

    @classmethod
    def from_factors(
        cls, factors: Sequence[Tensor], init: str = "given", scale: float = 1e-3
    ) -> DeepFactorization:
        """Wrap explicit factors ``[W_1, …, W_L]`` (2-D tensors, copied; shapes must chain)."""
        if len(factors) < 2:
            raise ValueError(f"need at least 2 factors, got {len(factors)}")
        for i, factor in enumerate(factors):
            if not (isinstance(factor, Tensor) and factor.ndim == 2):
                shape = tuple(factor.shape) if isinstance(factor, Tensor) else type(factor).__name__
                raise ValueError(f"factors[{i}] (W_{i + 1}) must be a 2-D tensor, got {shape}")
        for low, high in itertools.pairwise(factors):
            if high.shape[1] != low.shape[0]:
                raise ValueError(
                    f"factor shapes do not chain: {tuple(low.shape)} then {tuple(high.shape)}"
                )
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.init, model.scale = init, check_scale(scale)
        model.factors = nn.ParameterList(
            nn.Parameter(f.detach().clone(memory_format=torch.contiguous_format)) for f in factors)
        return model

    @property
    def depth(self) -> int:
        return len(self.factors)

    @property
    def shape(self) -> tuple[int, int]:
        return self.factors[-1].shape[0], self.factors[0].shape[1]

    @property
    def width(self) -> int:
        """Largest inner dimension k."""
        return max(f.shape[0] for f in list(self.factors)[:-1])  # a slice would build a Module

    @property
    def narrow(self) -> bool:
        """Width below min(m, n): entries are sampled from the factors, the m×n product is
        never formed (:meth:`entries`, closed-form completion gradients)."""
        m, n = self.shape
        return self.width < min(m, n)

    def outer_parameters(self) -> list[nn.Parameter]:
        """``[W_1, W_L]``: the factors that get γ·η under discrepant learning rates."""
        return [self.factors[0], self.factors[-1]]

    def inner_parameters(self) -> list[nn.Parameter]:
        """``[W_2, …, W_{L-1}]`` (empty for L = 2)."""
        return list(self.factors[1:-1])

    def product(self) -> Tensor:
        """The end-to-end matrix ``W_L ⋯ W_1`` (m×n), multiplied in the cheapest order."""
        return _chain(list(reversed(self.factors)))

    forward = product

    def matmul(self, x: Tensor) -> Tensor:
        """``W_L ⋯ W_1 x`` for ``x`` (n×p), layer by layer, never forming the product."""
        for factor in self.factors:
            x = factor @ x
        return x

    def rmatmul(self, y: Tensor) -> Tensor:
        """``W_1ᵀ ⋯ W_Lᵀ y`` for ``y`` (m×p), layer by layer, never forming the product."""
        for factor in reversed(self.factors):
            y = factor.T @ y
        return y

    def entries(self, rows: Tensor | ObservedIndex, cols: Tensor | None = None) -> Tensor:
        """``X[rows, cols]`` (|Ω|,) for index tensors of equal length, or for a precomputed
        :class:`~deeplora.factorization.sampled.ObservedIndex` passed as ``rows`` (no ``cols``).

        With ``A = W_L ⋯ W_2`` (m×k) and ``B = W_1ᵀ`` (n×k), returns ``⟨A[i], B[j]⟩`` by
        :func:`~deeplora.factorization.sampled.sampled_product` (cost O(|Ω|·k + (m + n)·k²), sparse
        CSR backward) when the model is narrow (k < min(m, n)); a wide model forms the m×n
        product (cost O(m·n·k), as forming A already costs O(m·k²)) and indexes it.
        """
        first = self.factors[0]
        if not isinstance(rows, ObservedIndex) and not self.narrow:
            return self.product()[rows, cols]
        return sampled_product(_chain(list(reversed(self.factors[1:]))), first.T, rows, cols)


def _chain(matrices: list[Tensor]) -> Tensor:
    """Product of one or more matrices, in the cheapest order."""
    return matrices[0] if len(matrices) == 1 else torch.linalg.multi_dot(matrices)
