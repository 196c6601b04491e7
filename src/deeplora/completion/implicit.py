"""Implicit feedback (clicks, plays, or ratings above a threshold) in the spirit of
Hu, Koren & Volinsky (2008), for :class:`~deeplora.completion.estimator.DeepMatrixCompletion`
with ``feedback="implicit"``.

Every entry of the m×n matrix is an observation: ``p_ui = 1`` on the positives P (observed
entries with value >= the threshold) with confidence ``c_ui = 1 + α·r_ui``, and ``p_ui = 0``
with confidence 1 everywhere else. With ``X = A' B'ᵀ`` (the end-to-end factors, biases as two
extra columns), the loss per positive is

    J / |P| = (1/|P|) [ Σ_{(u,i) ∈ P} (c_ui (1 − x_ui)² − x_ui²) + ‖A' B'ᵀ‖_F² ],

since ``Σ_all c (p − x)² = Σ_P (c (1 − x)² − x²) + Σ_all x²``. The last term is the Gramian
trick ``‖A' B'ᵀ‖_F² = ⟨A'ᵀA', B'ᵀB'⟩``, O((m + n)·k²) for width k, so the m·n unobserved
entries are never formed. Its first gradient at X ≈ 0 is ``−(1/|P|) P_P(c)``: the compressed
construction takes its singular subspaces from the confidences on the positives.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def positives(values: np.ndarray, threshold: float | None, alpha: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, confidence)``: which observations are positive (``values >= threshold``; all
    when ``threshold`` is None) and their confidence ``1 + α·r`` (values as given)."""
    mask = (np.ones(values.shape, dtype=bool) if threshold is None
            else values >= threshold)
    return mask, 1.0 + alpha * values[mask]


def check_positives(count: int, total: int, threshold: float | None) -> None:
    """``ValueError`` when no observation counts as positive."""
    if count == 0:
        raise ValueError(f"feedback='implicit' needs at least one positive, but none of the "
                         f"{total} observations is >= positive_threshold={threshold}")


def check_confidences(values: np.ndarray, confidence: np.ndarray, alpha: float) -> None:
    """``ValueError`` when a positive's confidence ``1 + α·r`` (``confidence``, of the positives'
    ``values``) is negative: its term ``c (1 − x)²`` would make the loss unbounded below."""
    if confidence.size and confidence.min() < 0:
        i = int(np.argmin(confidence))
        raise ValueError(f"feedback='implicit' needs confidences 1 + alpha·r >= 0, but value "
                         f"{values[i]:g} gives {confidence[i]:g} (alpha={alpha:g}); use a "
                         f"positive_threshold >= {-1 / alpha:g} or non-negative values")


def gramian_norm(a: Tensor, b: Tensor) -> Tensor:
    """``‖A Bᵀ‖_F² = ⟨AᵀA, BᵀB⟩`` for A (m×k), B (n×k), in O((m + n)·k²)."""
    return torch.sum((a.T @ a) * (b.T @ b))


def implicit_loss(predicted: Tensor, confidence: Tensor, size: int, gram: Tensor,
                  positives_total: int, share: float) -> Tensor:
    """``½ J / |P|`` estimated on one batch of positives: the batch's terms
    ``Σ (c (1 − x)² − x²) / size`` plus this process's ``share`` of ``‖X‖² / |P|``."""
    observed = torch.sum(confidence * (1 - predicted) ** 2 - predicted**2) / size
    return 0.5 * (observed + share * gram / positives_total)
