r"""Compressed deep factorization: width 2r̂ instead of max(m, n), same trajectory.

**Setting** (Yaras et al. 2024, Sec. 3). The wide model ``X = W_L ⋯ W_1`` (m×n, width
k = max(m, n)) has every layer ε times a (semi-)orthogonal matrix at t = 0, so
``Q = W_{L:1}(0)/ε^L`` (m×n) is a partial isometry: ``Q Qᵀ = I_m`` if m <= n, ``Qᵀ Q = I_n``
if m >= n. Let ``E = ∇_X ℒ(X(0))`` (m×n) with top-r̂ singular vectors ``U_E`` (m×r̂),
``V_E`` (n×r̂). Since ``W_{L:2}(0) = ε^{L-1} P`` with ``P Pᵀ = I_m`` and
``W_{L-1:1}(0) = ε^{L-1} R`` with ``Rᵀ R = I_n``, the chain rule gives the outer factors'
gradients ``G_1 = ε^{L-1} Pᵀ E`` and ``G_L = ε^{L-1} E Rᵀ``, whose SVDs share E's singular
vectors: ``V_{G_1} = V_E``, ``U_{G_1} = Pᵀ U_E`` and ``U_{G_L} = U_E``, ``V_{G_L} = R V_E``.

**The construction.** The compressed model ``X = U · W̃_L ⋯ W̃_1 · Vᵀ``, ``W̃_l(0) = ε I_{2r̂}``,
starts at ``X(0) = ε^L U Vᵀ``, the wide model's ``X(0)`` restricted to the subspaces. The wide
model's first steps move X along E, so U and V must hold both of E's top singular spaces,
span(U) ⊇ span(U_E) and span(V) ⊇ span(V_E), plus their images under Q. For m = n and a
gradient of rank <= r̂ throughout, GD on the compressed model with U, V frozen (γ = 0) then
reproduces the wide model's trajectory up to the ε^L part outside the subspaces (the theorem in
:mod:`deeplora.factorization.subspace`); for m ≠ n the wide model's rectangular outer layer adds
a small leak (~1e-3 relative at ε = 1e-2, tests/factorization/test_compress.py). Q or Qᵀ maps the
larger side *onto* the smaller one, so the basis is orthonormalized on the larger side and
mapped:

- m <= n (wide; the paper's d×d case and its formula, built from the input side)::

      V = orth[ V_{G_1}[:, :r̂],  W_1(0)ᵀ U_{G_1}[:, :r̂] ] = orth[ V_E, Qᵀ U_E ]   (n×2r̂)
      U = W_{L:1}(0) V / ε^L = Q V                                               (m×2r̂)

  span(U) ⊇ Q Qᵀ U_E = U_E because Q Qᵀ = I_m.

- m > n (tall; the same construction on the transposed problem ``Xᵀ = W_1ᵀ ⋯ W_Lᵀ``, whose
  input-side factor is W_Lᵀ, i.e. built from the output side)::

      U = orth[ U_{G_L}[:, :r̂],  W_L(0) V_{G_L}[:, :r̂] ] = orth[ U_E, Q V_E ]     (m×2r̂)
      V = W_{L:1}(0)ᵀ U / ε^L = Qᵀ U                                             (n×2r̂)

  span(V) ⊇ Qᵀ Q V_E = V_E because Qᵀ Q = I_n.

The input-side formula on a tall matrix gives span(U) ⊇ Q Qᵀ U_E only, the projection of the
gradient's column space onto the n-dimensional range of Q: most of it is lost when m ≫ n. Each
part is orthonormalized on its own (:func:`orthonormal_union`), so the result does not depend on
ε; taking the top-2r̂ right singular vectors of G_1 stacked over G_1ᵀ W_1(0) (an ε-times smaller
block) would let G's noise directions win whenever E has more than r̂ significant directions.
For m = n both sides give the same spans. In completion E has full rank and the theorem only
holds approximately; training U, V at a small discrepant rate γ·η (γ ≈ 0.01) lets them follow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

from deeplora.checks import is_integer
from deeplora.factorization.deep import DeepFactorization
from deeplora.factorization.subspace import orthonormal_union, top_singular_subspaces

LinearMap = Callable[[Tensor], Tensor]


def _top_singular_vectors(grad: Tensor | scipy.sparse.sparray | scipy.sparse.spmatrix,
                          rank: int, generator: np.random.Generator | None
                          ) -> tuple[Tensor, Tensor]:
    """Top-``rank`` left (m×r̂) and right (n×r̂) singular vectors, float64: a dense SVD for a
    tensor, ARPACK (started from ``generator``) for a SciPy sparse matrix."""
    if isinstance(grad, Tensor):
        left, _, right = top_singular_subspaces(grad.detach().double(), rank)
        return left, right
    v0 = None if generator is None else generator.standard_normal(min(grad.shape))
    left, _, right_t = scipy.sparse.linalg.svds(grad, k=rank, v0=v0)
    return torch.from_numpy(left.copy()), torch.from_numpy(right_t.T.copy())


def compressed_bases(
    grad: Tensor | scipy.sparse.sparray | scipy.sparse.spmatrix,
    rank: int,
    isometry: LinearMap,
    isometry_t: LinearMap,
    generator: np.random.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(U (m×2r̂), V (n×2r̂))`` of the construction in the module docstring, float64.

    Args:
        grad: E = ∇_X ℒ at the wide model's initialization (m×n), dense or SciPy sparse.
        rank: r̂; ``2 r̂ <= min(m, n)``.
        isometry, isometry_t: ``x ↦ Q x`` (n×p → m×p) and ``y ↦ Qᵀ y`` (m×p → n×p) for the
            partial isometry ``Q = W_{L:1}(0)/ε^L``.
        generator: starts ARPACK for a sparse ``grad`` (reproducible runs).

    The larger side's basis is orthonormal; the smaller side's is its image under Q or Qᵀ.
    """
    m, n = grad.shape
    left, right = _top_singular_vectors(grad, rank, generator)
    if m <= n:
        right = orthonormal_union(right, isometry_t(left))
        return isometry(right), right
    left = orthonormal_union(left, isometry(right))
    return left, isometry_t(left)


def compress(
    wide: DeepFactorization,
    loss: Callable[[DeepFactorization], Tensor],
    rank: int,
) -> DeepFactorization:
    """Build the width-2r̂ compressed model from a wide model at initialization.

    Args:
        wide: the overparameterized model (width >= max(m, n)), untrained, with
            ``init="orthogonal"``.
        loss: ℒ(model) -> scalar, a function of the model's end-to-end matrix only
            (:meth:`~DeepFactorization.product` / :meth:`~DeepFactorization.entries`); one
            backward pass at ``X(0)`` gives E = ∇_X ℒ.
        rank: r̂, the assumed rank; needs ``2 r̂ <= min(m, n)``.

    Returns:
        A :class:`DeepFactorization` with factors ``[Vᵀ, εI, …, εI, U]`` (depth L + 2) from
        :func:`compressed_bases`; its :meth:`~DeepFactorization.outer_parameters` are ``Vᵀ``
        and ``U``.
    """
    if wide.init != "orthogonal":
        raise ValueError(f"compression needs an orthogonal initialization, got {wide.init!r}")
    m, n = wide.shape
    if wide.width < max(m, n):
        raise ValueError(f"compression needs the wide model (width >= max(m, n) = {max(m, n)}), "
                         f"got width {wide.width}")
    if not (is_integer(rank) and rank >= 1 and 2 * rank <= min(m, n)):
        raise ValueError(f"assumed rank must be an integer with 1 <= rank and 2*rank <= "
                         f"min(m, n) = {min(m, n)}, got {rank!r}")
    rank = int(rank)
    first = wide.factors[0]
    dtype, device, scale = first.dtype, first.device, wide.scale**wide.depth
    if scale < torch.finfo(dtype).tiny:  # X(0) = ε^L Q underflows: Q read back as 0
        raise ValueError(f"ε^L = {wide.scale:g}^{wide.depth} = {scale:.3g} is below the "
                         f"smallest normal {dtype} ({torch.finfo(dtype).tiny:.3g}): the wide "
                         f"model's product underflows; use float64, a larger ε or fewer layers")
    with torch.no_grad():
        start = wide.product()
    # X itself as the trainable factor of a 2-factor model X·I: its gradient is E = ∇_X ℒ.
    at_start = DeepFactorization.from_factors(
        [torch.eye(n, dtype=dtype, device=device), start], init="given", scale=wide.scale)
    (grad,) = torch.autograd.grad(loss(at_start), at_start.factors[1])
    with torch.no_grad():
        left, right = compressed_bases(
            grad, rank,
            lambda x: wide.matmul(x.to(dtype)).double() / scale,
            lambda y: wide.rmatmul(y.to(dtype)).double() / scale)
    eye = torch.eye(2 * rank, dtype=dtype, device=device)
    inner = [wide.scale * eye] * wide.depth
    return DeepFactorization.from_factors([right.T.to(dtype), *inner, left.to(dtype)],
                                          init="compressed", scale=wide.scale)
