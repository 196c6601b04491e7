"""Top-k ranking metrics with binary relevance.

For one user with recommended list ``r_1 … r_k`` (item indices, -1 for an empty slot) and
relevant set R (|R| >= 1), with ``hit_i = [r_i ∈ R]``:

- precision@k = Σ hit_i / k,  recall@k = Σ hit_i / |R|;
- NDCG@k = DCG / IDCG with DCG = Σ hit_i / log₂(i + 1) and IDCG the DCG of min(|R|, k) hits;
- AP@k = Σ_i hit_i · precision@i / min(|R|, k); MAP@k is its mean.

:func:`ranking_metrics` averages each over users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deeplora.checks import check_integer


def ranking_metrics(recommended: np.ndarray, relevant: Sequence[np.ndarray], k: int
                    ) -> dict[str, float]:
    """Mean precision/recall/NDCG/MAP@k; ``recommended`` (u×k'), k' >= k, ``relevant[i]`` the
    relevant item indices of user i (non-empty). Keys ``precision@k``, ``recall@k``,
    ``ndcg@k``, ``map@k``."""
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or recommended.shape[0] != len(relevant):
        raise ValueError(f"recommended must be (users × k) with {len(relevant)} users, got "
                         f"shape {recommended.shape}")
    k = check_integer("k", k, 1, recommended.shape[1])
    if not relevant or any(len(r) == 0 for r in relevant):
        raise ValueError("every user needs at least one relevant item")
    top = recommended[:, :k]
    hits = np.stack([np.isin(row, np.asarray(rel)) & (row >= 0)
                     for row, rel in zip(top, relevant, strict=True)]).astype(np.float64)
    sizes = np.array([len(np.unique(r)) for r in relevant], dtype=np.float64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(sizes, k).astype(int) - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        f"precision@{k}": float(np.mean(hits.sum(1) / k)),
        f"recall@{k}": float(np.mean(hits.sum(1) / sizes)),
        f"ndcg@{k}": float(np.mean(hits @ discount / ideal)),
        f"map@{k}": float(np.mean((hits * precision_at).sum(1) / np.minimum(sizes, k))),
    }
