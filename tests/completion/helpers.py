"""Synthetic ratings shared by the estimator tests."""

from __future__ import annotations

import numpy as np


def low_rank_ratings(m: int = 40, n: int = 30, fraction: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    full = 3.0 + rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
    mask = rng.random((m, n)) < fraction
    rows, cols = np.nonzero(mask)
    """``(rows, cols, values, full, mask)``: a rank-2 m×n matrix around 3 observed on a
    random ``fraction`` of its entries."""
    return rows, cols, full[rows, cols], full, mask
