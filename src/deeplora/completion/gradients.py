"""Closed-form gradients of the explicit-feedback objective, on arrays allocated once.

:class:`ExplicitGradients` is the training step of
:class:`~deeplora.completion.estimator.DeepMatrixCompletion` for ratings: the data term and the
gradient of the objective of :meth:`~deeplora.completion.training.TrainingMixin._loss` for K
stacked candidates, computed without autograd. A step of this small model is dozens of small
array operations whose allocation and dispatch cost as much as their arithmetic, so every array
of the step (augmented factors, residual, its sparse products, bias gradients) is allocated once
per stacked parameter set and rewritten in place, and on a CPU the residual's CSR matrices are
built once around the residual's own storage, the sparse kernels writing into them (``out=``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from deeplora.factorization.sampled import ObservedIndex, chain_rule, suffix_products


@dataclass
class _BatchArrays:
    """The arrays of one batch ``index`` (its |Ω| entries; held, so that the ``id`` the arrays
    are found by stays its own) for K candidates: ``residual`` (K×|Ω|, row-major-sorted),
    ``target`` (row-major-sorted targets of the ``source`` tensor) and, where torch's CSR
    kernels apply, ``transposed`` (K×|Ω|, the residual column-major) and ``views``: per
    candidate ``(R, Rᵀ)`` over ``residual[j]`` and ``transposed[j]``
    (:meth:`~deeplora.factorization.sampled.ObservedIndex.csr_views`); both ``None`` where
    SciPy computes the products."""

    index: ObservedIndex
    source: Tensor
    target: Tensor
    residual: Tensor
    transposed: Tensor | None
    views: list[tuple[Tensor, Tensor]] | None


class ExplicitGradients:
    """Data term and gradients of the explicit objective for the stacked ``params``.

    ``params`` = ``[B = W_1ᵀ (K×n×k), W_2, …, W_L (K×m×k), μ (K,), b (K×m), c (K×n)]``, K
    candidates (:func:`~deeplora.completion.training.stack_candidates`);
    ``biased``: ``b``, ``c`` and μ are trained (``bias="all"``), else μ is a fixed offset and
    they get no gradient. ``bias_prior`` κ and ``share`` (1 / processes) as in
    :meth:`~deeplora.completion.training.TrainingMixin._loss`.

    With ``[A, b + μ, 1]`` and ``[B, 1, c]`` the augmented factors of each candidate and
    ``R = P_Ω(X − y) / size`` its residual (m×n, sparse): ``[R B, R 1, R c] = R [B, 1, c]``
    and ``[Rᵀ A, Rᵀ (b + μ), Rᵀ 1] = Rᵀ [A, b + μ, 1]`` (two sparse products) give the data
    term's gradients in A, b, B, c, and ``1ᵀ R 1`` in μ; the penalties add
    ``λ share w_row ⊙ A`` and the like; the factors follow by the chain rule through
    ``A = W_L ⋯ W_2`` and ``B = W_1ᵀ``. Valid while ``params`` are these tensors (a new stack
    needs a new instance)."""

    def __init__(self, params: list[Tensor], biased: bool, bias_prior: float = 0.0,
                 share: float = 1.0) -> None:
        factors, mean = params[:-3], params[-3]
        count, n, self.rank = factors[0].shape
        m = factors[-1].shape[-2]
        width = self.rank + 2 if biased else self.rank
        like = {"dtype": mean.dtype, "device": mean.device}
        self.params, self.biased, self.bias_prior, self.share = params, biased, bias_prior, share
        self.a_aug = torch.ones(count, m, width, **like)  # column k + 1 stays 1
        self.b_aug = torch.ones(count, n, width, **like)  # column k stays 1
        self.grad_a_aug = torch.empty(count, m, width, **like)
        self.grad_b_aug = torch.empty(count, n, width, **like)
        self.squares = torch.empty(count, **like)
        self.bias_grads = [torch.empty_like(p) for p in params[-3:]] if biased else []
        self._batches: dict[int, _BatchArrays] = {}

    def _arrays(self, index: ObservedIndex, target: Tensor) -> _BatchArrays:
        """The arrays of batch ``index`` with targets ``target``, built on first use."""
        arrays = self._batches.get(id(index))
        if arrays is not None and arrays.source is target:
            return arrays
        count, like = self.squares.shape[0], {"dtype": self.squares.dtype,
                                              "device": self.squares.device}
        residual = torch.zeros(count, index.nnz, **like)
        transposed = torch.zeros(count, index.nnz, **like)
        views = [index.csr_views(r, t) for r, t in zip(residual, transposed, strict=True)]
        if views[0] is None:  # SciPy's products: no CSR tensors, no column-major copy
            transposed, views = None, None
        arrays = _BatchArrays(index, target, index.to_sorted(target).contiguous(), residual,
                              transposed, views)
        self._batches[id(index)] = arrays
        return arrays

    def __call__(self, index: ObservedIndex, target: Tensor, size: int, total: int,
                 weights: tuple[Tensor, Tensor], reg: Tensor | None, bias_reg: Tensor | None
                 ) -> Tensor:
        """The data term (K,) of one batch of ``size`` observations (this process's part:
        ``index``, caller-ordered ``target``), with the gradient of the objective written to
        every trained parameter's ``.grad``; ``total`` training observations, penalty
        ``weights`` (rows (m,), columns (n,)), ``reg`` and ``bias_reg`` (K,) or ``None``."""
        arrays = self._arrays(index, target)
        residual, transposed, views = arrays.residual, arrays.transposed, arrays.views
        a_aug, b_aug, grad_a_aug, grad_b_aug = (self.a_aug, self.b_aug, self.grad_a_aug,
                                                self.grad_b_aug)
        factors, (mean, row_bias, col_bias) = self.params[:-3], self.params[-3:]
        k = self.rank
        with torch.no_grad():
            suffix, a = suffix_products(factors)
            b = factors[0]
            a_aug[..., :k] = a
            b_aug[..., :k] = b
            if self.biased:  # [A, b + μ, 1]·[B, 1, c]ᵀ
                torch.add(row_bias, mean[:, None], out=a_aug[..., k])
                b_aug[..., k + 1] = col_bias
            if views is None or index.dense_sample:
                for r, x, y in zip(residual, a_aug, b_aug, strict=True):
                    r.copy_(index.sample(x, y))
            else:
                residual.zero_()  # β = 0 in place would keep a NaN of the last step
                for (matrix, _), x, y in zip(views, a_aug, b_aug, strict=True):
                    torch.sparse.sampled_addmm(matrix, x, y.T, beta=0.0, out=matrix)
            residual -= arrays.target
            if not self.biased:  # μ fixed
                residual += mean[:, None]
            for j, r in enumerate(residual):
                torch.dot(r, r, out=self.squares[j])
            residual /= size
            if views is None or transposed is None:
                for j, (r, x, y) in enumerate(zip(residual, a_aug, b_aug, strict=True)):
                    grad_a_aug[j] = index.left(r, y)
                    grad_b_aug[j] = index.right(r, x)
            else:
                order = index.transpose_order
                for j, ((matrix, matrix_t), x, y) in enumerate(zip(views, a_aug, b_aug,
                                                                   strict=True)):
                    torch.mm(matrix, y, out=grad_a_aug[j])
                    torch.index_select(residual[j], 0, order, out=transposed[j])
                    torch.mm(matrix_t, x, out=grad_b_aug[j])
            grad_a, grad_b = grad_a_aug[..., :k], grad_b_aug[..., :k]
            row_weight, col_weight = weights
            if reg is not None:
                scale = (self.share * reg)[:, None, None]
                grad_a.addcmul_(scale * row_weight[:, None], a)
                grad_b.addcmul_(scale * col_weight[:, None], b)
            grads = chain_rule(factors, suffix, grad_a, grad_b, first_as_b=True)
            if self.biased:
                grad_mean, grad_row, grad_col = self.bias_grads
                prior = self.bias_prior * self.share / total
                torch.add(grad_a_aug[..., k], row_bias, alpha=prior, out=grad_row)
                torch.add(grad_b_aug[..., k + 1], col_bias, alpha=prior, out=grad_col)
                if bias_reg is not None:
                    scale = (self.share * bias_reg)[:, None]
                    grad_row.addcmul_(scale * row_weight, row_bias)
                    grad_col.addcmul_(scale * col_weight, col_bias)
                torch.sum(residual, 1, out=grad_mean)
                grads += self.bias_grads
        for param, grad in zip(self.params, grads, strict=False):
            param.grad = grad
        return self.squares * (0.5 / size)
