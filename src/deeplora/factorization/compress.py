"""Compressed deep factorization: width 2r̂ instead of max(m, n), same trajectory.

Construction (Yaras et al. 2024, Sec. 3). Let the wide model ``W_L ⋯ W_1`` have every layer
ε-orthogonal at t = 0 and let ``G = ∇_{W_1} ℒ(0)`` (k×n) with SVD ``U_G Σ V_Gᵀ``. Take

    V = orth[ V_G[:, :r̂] ,  W_1(0)ᵀ U_G[:, :r̂] ]              (n×2r̂)
    U = W_L(0) ⋯ W_1(0) V / ε^L                             (m×2r̂)

— the top-r̂ right singular directions of G plus the first layer's preimage of its top-r̂ left
singular directions, each part orthonormalized separately (:func:`orthonormal_union`). The
compressed model is the depth-(L+2) factorization

    X = U · W̃_L ⋯ W̃_1 · Vᵀ,    W̃_l(0) = ε I_{2r̂},

so ``X(0) = W_{L:1}(0) V Vᵀ``. When the gradient of ℒ w.r.t. X has rank r̂ throughout (e.g.
factorization of a rank-r̂ target), the theorem in :mod:`deeplora.factorization.subspace` says
the wide model evolves as ``U_l diag(W̃_l, ρ_l I) V_lᵀ`` with ``V_1 = V`` and ``U_L ∝ U``, so
with U, V frozen (γ = 0) gradient descent on the compressed model reproduces the wide model's
end-to-end trajectory up to the ``ρ_L ⋯ ρ_1`` part (≈ ε^L) outside the subspaces. In completion
the gradient is only approximately low rank, and training U, V at a small discrepant learning
rate γ·η (γ ≈ 0.01) lets the subspaces follow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from deeplora.factorization.deep import DeepFactorization
from deeplora.factorization.subspace import orthonormal_union, top_singular_subspaces


def compress(
    wide: DeepFactorization,
    loss: Callable[[DeepFactorization], Tensor],
    rank: int,
) -> DeepFactorization:
    """Build the width-2r̂ compressed model from a wide model at initialization.

    Args:
        wide: the overparameterized model, untrained, with ``init="orthogonal"``.
        loss: ℒ(model) -> scalar; one backward pass gives ``G = ∇_{W_1} ℒ``.
        rank: r̂, the assumed rank; needs ``2 r̂ <= min(m, n, k)``.

    Returns:
        A :class:`DeepFactorization` with factors ``[Vᵀ, εI, …, εI, U]`` (depth L + 2);
        its :meth:`~DeepFactorization.outer_parameters` are ``Vᵀ`` and ``U``.
    """
    if wide.init != "orthogonal":
        raise ValueError(f"compression needs an orthogonal initialization, got {wide.init!r}")
    m, n = wide.shape
    if not (isinstance(rank, int) and rank >= 1 and 2 * rank <= min(m, n, wide.width)):
        raise ValueError(
            f"assumed rank must be an integer with 1 <= rank and 2*rank <= min(m, n, width) = "
            f"{min(m, n, wide.width)}, got {rank!r}"
        )
    first = wide.factors[0]
    (grad,) = torch.autograd.grad(loss(wide), first)
    with torch.no_grad():
        left_g, _, right_g = top_singular_subspaces(grad, rank)
        right = orthonormal_union(right_g, first.T @ left_g)
        left = wide.matmul(right) / wide.scale**wide.depth
    eye = torch.eye(2 * rank, dtype=first.dtype, device=first.device)
    inner = [wide.scale * eye] * wide.depth
    return DeepFactorization.from_factors([right.T, *inner, left], init="compressed",
                                          scale=wide.scale)
