"""Per-layer analysis of adapter updates ΔW (the inputs of the paper's figures).

Take ``deltas = adapter_deltas(model)`` (``{name: ΔW (d_out×d_in)}``) at checkpoints, then:
singular values, numerical ranks, and principal angles between the top-r singular subspaces of
two checkpoints. All computed in float64 on the CPU by :mod:`deeplora.factorization.subspace`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from deeplora.factorization.subspace import (
    numerical_rank,
    principal_angles,
    singular_values,
    top_singular_subspaces,
)


def adapter_singular_values(deltas: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Singular values of each ΔW, descending (float64)."""
    return {name: singular_values(delta) for name, delta in deltas.items()}


def adapter_numerical_ranks(
    deltas: Mapping[str, Tensor], atol: float | None = None, rtol: float | None = None
) -> dict[str, int]:
    """Numerical rank of each ΔW: the number of singular values above ``max(atol, rtol·σ_max)``.

    Defaults (NumPy's ``matrix_rank``): ``atol = 0``, ``rtol = max(d_out, d_in)·eps`` with eps
    of ΔW's dtype (1.2e-7 for the float32 adapters, 2.2e-16 for float64): the singular values
    below are rounding of the product. The paper counts LoRA ranks this way and Deep LoRA
    ranks with ``atol=1e-3`` (singular values above 1e-3).
    """
    ranks = {}
    for name, delta in deltas.items():
        tol = max(delta.shape) * torch.finfo(delta.dtype).eps if rtol is None else rtol
        ranks[name] = numerical_rank(delta, atol=atol, rtol=tol)
    return ranks


def adapter_subspaces(
    deltas: Mapping[str, Tensor], rank: int = 8, side: str = "left"
) -> dict[str, Tensor]:
    """Orthonormal bases of the top-``rank`` left (d_out×rank) or right (d_in×rank) singular
    subspace of each ΔW, float64 on the CPU: what a checkpoint needs to keep for the angles
    below (a training run keeps these instead of every ΔW)."""
    if side not in ("left", "right"):
        raise ValueError(f'side must be "left" or "right", got {side!r}')
    index = 0 if side == "left" else 2
    return {name: top_singular_subspaces(delta.detach().cpu().double(), rank)[index]
            for name, delta in deltas.items()}


def subspace_principal_angles(
    bases_a: Mapping[str, Tensor], bases_b: Mapping[str, Tensor]
) -> dict[str, np.ndarray]:
    """Principal angles (radians, descending) between the bases (n×p, n×q) of every layer
    present in both, in the order of ``bases_a``."""
    return {name: principal_angles(basis, bases_b[name])
            for name, basis in bases_a.items() if name in bases_b}


def principal_angle_cosines(
    angles: Mapping[str, np.ndarray], angle: str = "smallest"
) -> dict[str, float]:
    """Per layer, cos of the smallest (σ_max(U_aᵀ U_b), default) or the largest
    (σ_min(U_aᵀ U_b)) of its principal angles."""
    if angle not in ("smallest", "largest"):
        raise ValueError(f'angle must be "smallest" or "largest", got {angle!r}')
    pick = np.min if angle == "smallest" else np.max
    return {name: float(np.cos(pick(values))) for name, values in angles.items()}


def adapter_principal_angles(
    deltas_a: Mapping[str, Tensor],
    deltas_b: Mapping[str, Tensor],
    rank: int = 8,
    side: str = "left",
) -> dict[str, np.ndarray]:
    """Principal angles (radians, descending) between the top-``rank`` left (or right)
    singular subspaces of ΔW at two checkpoints, for every layer present in both."""
    return subspace_principal_angles(adapter_subspaces(deltas_a, rank, side),
                                     adapter_subspaces(deltas_b, rank, side))


def adapter_subspace_cosines(
    deltas_a: Mapping[str, Tensor],
    deltas_b: Mapping[str, Tensor],
    rank: int = 8,
    angle: str = "smallest",
) -> dict[str, float]:
    """cos of the smallest (default) or the largest principal angle between the top-``rank``
    left singular subspaces U_a, U_b of ΔW at two checkpoints, for every layer present in both.

    ``"smallest"``: σ_max(U_aᵀ U_b), what the authors' code plots in the paper's Figure 1
    (PAPER.md, corrected 2026-11-30): 1 as soon as the subspaces share a direction.
    ``"largest"``: σ_min(U_aᵀ U_b), the stricter one: 1 only when they coincide, 0 when some
    direction of one is orthogonal to the other.
    """
    return principal_angle_cosines(adapter_principal_angles(deltas_a, deltas_b, rank), angle)
