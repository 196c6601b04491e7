"""Subspace analysis: singular values, numerical rank, principal angles, and the paper's theorem.

Theorem (Yaras et al. 2024, Thm. 1). For ``W_L…W_1`` with every layer ε-scaled orthogonal at
t = 0 and gradient descent on a loss whose gradient w.r.t. the end-to-end matrix has rank <= r,
there are orthogonal ``U_l, V_l`` fixed at initialization with

    W_l(t) = U_l [[W̃_l(t), 0], [0, ρ_l(t) I]] V_lᵀ,      W̃_l(t) ∈ R^{2r×2r},

i.e. each layer changes only inside a 2r-dimensional left and right subspace; outside them it
stays a multiple ρ_l(t) of its initialization. :func:`invariant_subspace_deviation` measures how
far a trained layer is from that form.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from deeplora.checks import check_integer, is_finite_number


def _check_matrix(matrix: Tensor) -> None:
    """``ValueError`` unless ``matrix`` is a 2-D tensor."""
    if not (isinstance(matrix, Tensor) and matrix.ndim == 2):
        got = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(f"matrix must be a 2-D tensor, got {got}")


def singular_values(matrix: Tensor) -> Tensor:
    """Singular values of a 2-D tensor, descending, computed in float64 on the CPU (of the tall
    orientation: LAPACK is several times slower on very wide matrices, e.g. embedding ΔWs)."""
    _check_matrix(matrix)
    matrix = matrix.detach().to("cpu", torch.float64)
    return torch.linalg.svdvals(matrix.T if matrix.shape[0] < matrix.shape[1] else matrix)


def numerical_rank(matrix: Tensor, atol: float | None = None, rtol: float | None = None) -> int:
    """Number of singular values above ``max(atol, rtol · σ_max)``.

    Default: ``atol = 0`` and ``rtol = max(rows, cols) · eps`` with float64's eps whatever the
    input dtype, since the SVD runs in float64: NumPy's ``matrix_rank`` tolerance for a float64
    matrix. For a float32 one NumPy takes float32's eps; pass that ``rtol`` (as
    :func:`~deeplora.adapters.inspection.adapter_numerical_ranks` does), or the float32
    rounding of the entries counts as rank. The paper counts Deep LoRA ranks with
    ``atol = 1e-3`` on the spectral norm scale. ``ValueError`` unless each given tolerance is a
    finite number >= 0.
    """
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and not (is_finite_number(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    s = singular_values(matrix)
    if s.numel() == 0 or s[0] == 0:
        return 0
    if rtol is None:
        rtol = max(matrix.shape) * torch.finfo(torch.float64).eps
    threshold = max(atol or 0.0, rtol * float(s[0]))
    return int((s > threshold).sum())


def principal_angles(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> np.ndarray:
    """Principal angles (radians, descending) between the column spaces of ``a`` and ``b``.

    ``a`` (n×p) and ``b`` (n×q) need not be orthonormal; uses :func:`scipy.linalg.subspace_angles`.
    """
    a = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, float)
    b = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else np.asarray(b, float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"subspaces must be n×p and n×q, got {a.shape} and {b.shape}")
    return scipy.linalg.subspace_angles(a, b)


def top_singular_subspaces(matrix: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``rank`` singular triplets ``(U (m×r), S (r), V (n×r))`` of a dense 2-D tensor,
    r = min(rank, m, n); ``ValueError`` unless ``rank`` is an integer >= 1."""
    _check_matrix(matrix)
    rank = check_integer("rank", rank, 1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[:, :rank], s[:rank], vh[:rank].T


def largest_principal_angle_cos(a: Tensor, b: Tensor, rank: int) -> float:
    """cos of the largest principal angle between the top-``rank`` left singular subspaces,
    σ_min(U_aᵀ U_b): 1 means the subspaces coincide, 0 means some direction of one is
    orthogonal to the other. (The paper's Figure 1 plots the cosine of the *smallest* angle,
    σ_max(U_aᵀ U_b): :func:`~deeplora.adapters.inspection.adapter_subspace_cosines`.)
    """
    ua = top_singular_subspaces(a.detach().double(), rank)[0]
    ub = top_singular_subspaces(b.detach().double(), rank)[0]
    return float(np.cos(principal_angles(ua, ub).max()))


def largest_repeated_cluster(values: Tensor, rtol: float) -> int:
    """Size of the largest set of ``values`` lying within ``rtol`` (relative) of each other;
    ``ValueError`` unless ``rtol`` is a finite number >= 0."""
    if not (is_finite_number(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    s = torch.sort(values.detach().double().flatten(), descending=True).values
    best, start = 0, 0
    for stop in range(s.numel()):
        while s[start] - s[stop] > rtol * abs(float(s[start])):
            start += 1
        best = max(best, stop - start + 1)
    return best


def complement_projector(basis: Tensor) -> Tensor:
    """``I − Q Qᵀ`` for an orthonormal basis ``Q`` (n×p) of a subspace."""
    return torch.eye(basis.shape[0], dtype=basis.dtype, device=basis.device) - basis @ basis.T


def _check_orthonormal_columns(name: str, matrix: Tensor, atol: float = 1e-4) -> None:
    """``ValueError`` unless ``matrixᵀ matrix = I`` to ``atol`` (float32 round-off passes)."""
    eye = torch.eye(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    gap = float((matrix.T @ matrix - eye).abs().max()) if matrix.numel() else 0.0
    if not gap <= atol:
        raise ValueError(f"{name} must have orthonormal columns (|QᵀQ − I| up to {atol:g}), "
                         f"off by {gap:.3g}")


def invariant_subspace_deviation(
    layer: Tensor, layer_at_init: Tensor, right_basis: Tensor, scale: float
) -> float:
    """Relative distance of a trained layer from the theorem's block form.

    With ``O = W_l(0)/ε`` (k×n, orthonormal columns), right basis ``V`` (n×p, p = 2r,
    orthonormal) and left basis ``U = O V``, the theorem says
    ``W_l(t) = U Uᵀ W_l(t) V Vᵀ + ρ(t) · O (I − V Vᵀ)``. Returns
    ``‖W_l(t) − that‖_F / ‖W_l(t)‖_F`` with the best-fitting ρ(t) (ρ = 0 when p = n: there is
    no complement, every layer has the form). Computed in float64; ``ValueError`` for
    mismatched shapes, a non-orthonormal ``V`` or an ``O`` that is not (the ``scale`` of
    ``W_l(0)``).
    """
    if not (layer.ndim == right_basis.ndim == 2 and layer_at_init.shape == layer.shape
            and right_basis.shape[0] == layer.shape[1] <= layer.shape[0]
            and right_basis.shape[1] <= layer.shape[1]):
        raise ValueError(f"shapes must be layer k×n (k >= n), layer_at_init k×n and right_basis "
                         f"n×p (p <= n), got {tuple(layer.shape)}, {tuple(layer_at_init.shape)} "
                         f"and {tuple(right_basis.shape)}")
    layer, right_basis = layer.double(), right_basis.to(layer.device, torch.float64)
    orth = layer_at_init.to(layer.device, torch.float64) / scale
    _check_orthonormal_columns("right_basis", right_basis)
    _check_orthonormal_columns("layer_at_init / scale", orth)
    left_basis = orth @ right_basis
    outside = orth @ complement_projector(right_basis)
    inside = left_basis @ (left_basis.T @ layer @ right_basis) @ right_basis.T
    residual = layer - inside
    if right_basis.shape[1] < right_basis.shape[0]:
        residual = residual - torch.sum(layer * outside) / torch.sum(outside * outside) * outside
    return float(torch.linalg.matrix_norm(residual) / torch.linalg.matrix_norm(layer))


def orthonormal_union(a: Tensor, b: Tensor) -> Tensor:
    """Orthonormal basis (n×min(p+q, n)) of ``span(a) + span(b)`` for ``a`` (n×p), ``b``
    (n×q); callers keep p + q <= n (2r̂ <= min(m, n)), where it is n×(p+q).

    Each part is orthonormalized on its own first, so the result does not depend on the
    relative scale of ``a`` and ``b`` (stacking an ε-small block next to an O(1) one and taking
    the top singular vectors would let noise directions of the larger block win). If the spans
    overlap, the basis is completed with the next most significant directions.
    """
    qa = torch.linalg.qr(a).Q
    qb = torch.linalg.qr(b).Q
    basis = torch.linalg.svd(torch.cat([qa, qb], dim=1), full_matrices=False).U
    return basis[:, : a.shape[1] + b.shape[1]]
