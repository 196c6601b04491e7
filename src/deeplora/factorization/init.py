"""Initializations for factor matrices.

The paper's initialization is *scaled orthogonal*: every factor W (rows × cols) is ε times a
semi-orthogonal matrix, i.e. ``W Wᵀ = ε² I`` if rows <= cols, ``Wᵀ W = ε² I`` otherwise, so that
all ``min(rows, cols)`` singular values equal ε exactly. This is a slice of a Haar-random
orthogonal matrix, drawn with :func:`torch.nn.init.orthogonal_`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deeplora.checks import is_finite_number


def check_scale(scale: float) -> float:
    """Return ``scale`` as a float, or raise if it is not a finite positive number."""
    if not (is_finite_number(scale) and scale > 0):
        raise ValueError(f"init scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def orthogonal_(
    tensor: Tensor, scale: float = 1e-3, generator: torch.Generator | None = None
) -> Tensor:
    """Fill a 2-D ``tensor`` in place with ε · (semi-)orthogonal; all singular values = ε.

    Drawn in float64 and cast, so that the singular values are ε to the tensor's precision.
    """
    if tensor.ndim != 2:
        raise ValueError(f"orthogonal init needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    scale = check_scale(scale)
    draw = torch.empty(tensor.shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(draw, gain=scale, generator=generator)
    with torch.no_grad():
        tensor.copy_(draw.to(device=tensor.device, dtype=tensor.dtype))
    return tensor


def gaussian_(
    tensor: Tensor, scale: float = 1e-3, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``tensor`` in place with i.i.d. N(0, scale² / cols) entries (comparison init)."""
    scale = check_scale(scale)
    std = scale / math.sqrt(tensor.shape[-1])
    draw = torch.randn(tensor.shape, dtype=torch.float64, generator=generator) * std
    with torch.no_grad():
        tensor.copy_(draw.to(device=tensor.device, dtype=tensor.dtype))
    return tensor


def scaled_identity_(tensor: Tensor, scale: float = 1e-3) -> Tensor:
    """Fill a square ``tensor`` in place with ε · I (the compressed model's inner factors)."""
    if tensor.ndim != 2 or tensor.shape[0] != tensor.shape[1]:
        raise ValueError(f"scaled identity needs a square matrix, got {tuple(tensor.shape)}")
    scale = check_scale(scale)
    with torch.no_grad():
        tensor.copy_(torch.eye(tensor.shape[0], dtype=tensor.dtype, device=tensor.device) * scale)
    return tensor


INITIALIZERS = {"orthogonal": orthogonal_, "gaussian": gaussian_}


def init_(
    tensor: Tensor,
    kind: str = "orthogonal",
    scale: float = 1e-3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Initialize ``tensor`` in place by name: ``"orthogonal"`` (paper) or ``"gaussian"``."""
    try:
        initializer = INITIALIZERS[kind]
    except KeyError:
        raise ValueError(f"unknown init {kind!r}; choose one of {sorted(INITIALIZERS)}") from None
    return initializer(tensor, scale, generator)
