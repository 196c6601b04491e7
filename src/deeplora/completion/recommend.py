"""Top-k recommendation from a fitted :class:`~deeplora.completion.estimator.DeepMatrixCompletion`.

:class:`RecommenderMixin` gives the estimator :meth:`~RecommenderMixin.recommend` and
:meth:`~RecommenderMixin.ranking_metrics`. The ranking score of item j for user u is

    s_uj = μ + b_u + w_j · (c_j + (A Bᵀ)_uj),   w_j = n_j / (n_j + λ_s),

with n_j the item's training count and λ_s the estimator's ``shrinkage`` (explicit feedback;
w_j = 1 for implicit feedback or λ_s = 0): an item rated once by one enthusiast has w_j ≈
1/(1 + λ_s) and no longer tops every list, and the scores are never clipped, so they do not
tie. μ + b_u is the same for all of a user's items and does not change the order. Scores are
computed for a block of users at a time, so memory is O(block·n), never m×n; the training
entries of each user (kept as a CSR pattern ``_seen = (crow, col)``) can be excluded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from deeplora.checks import check_integer
from deeplora.completion.ranking import ranking_metrics


def seen_crow(rows: np.ndarray, m: int) -> np.ndarray:
    """CSR row pointer (m + 1,) of row-major-sorted ``rows``."""
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))]).astype(np.int64)


class RecommenderMixin:
    """Top-k items per user for a fitted estimator with ``shape_``, ``ids_``, ``bias``,
    ``feedback``, ``shrinkage``, ``_mean``, ``_row_bias``, ``_col_bias``, ``_seen``,
    ``_end_to_end()``, ``_lookup_users()``, ``_indices()`` and ``_targets()``."""

    def recommend(self, users: Any, k: int = 10, exclude_seen: bool = True,
                  batch_size: int | None = None, exclude: Any = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each of ``users``: ``(items, scores)``, each (len(users), k),
        best first.

        Scores ``μ + b_u + w_j (c_j + (A Bᵀ)_uj)`` (unclipped, item terms shrunk by their
        training counts, see the module docstring; for implicit feedback the preference
        ``b_u + c_j + (A Bᵀ)_uj``) for a block of users at a time (``batch_size`` users;
        default: as many as fit in ~2²² scores), so memory is O(batch·n), never m×n;
        ``exclude_seen`` drops the user's training items; ``exclude`` (a DataFrame with user
        and item columns, or ``(users, items)``) drops its entries too, e.g. ratings made
        since the fit (those of users or items unknown to the model are ignored).
        :meth:`predict` gives the (clipped) predicted ratings of the items. A user unknown to
        the model gets the items with the highest ``w_j c_j``. Slots left empty (fewer than k
        unseen items) hold index -1 (or ``None`` for raw ids) and score NaN. ``users`` are
        indices, or raw ids when the model was fitted on a DataFrame; so are the returned
        items.
        """
        check_is_fitted(self, "model_")
        k = check_integer("k", k, 1, self.shape_[1])
        if batch_size is not None:
            batch_size = check_integer("batch_size", batch_size, 1)
        self._check_seen(exclude_seen)
        seen = None if exclude is None else self._excluded(exclude, exclude_seen)
        items, scores = self._top_k(self._lookup_users(np.atleast_1d(np.asarray(users))), k,
                                    exclude_seen or seen is not None, batch_size, seen)
        if self.ids_ is None:
            return items, scores
        raw = np.empty(items.shape, dtype=object)
        raw[items >= 0] = self.ids_.items[items[items >= 0]]
        return raw, scores

    def _check_seen(self, exclude_seen: bool) -> None:
        """``ValueError`` if ``exclude_seen`` but the training entries are not known (a model
        loaded from a format-1 file)."""
        if exclude_seen and getattr(self, "_seen", None) is None:
            raise ValueError("this model does not know its training entries (saved before "
                             "format 2); pass exclude_seen=False")

    def _excluded(self, exclude: Any, exclude_seen: bool) -> tuple[Tensor, Tensor]:
        """CSR ``(crow, col)`` of the known entries of ``exclude`` (a DataFrame or ``(users,
        items)``), and of the training entries if ``exclude_seen``."""
        rows, cols = (self._indices(*exclude) if isinstance(exclude, tuple)
                      else self._indices(exclude, None))
        m, n = self.shape_
        known = (rows < m) & (cols < n)
        rows, cols = rows[known].astype(np.int64), cols[known].astype(np.int64)
        if exclude_seen:
            crow, col = self._seen
            rows = np.concatenate([np.repeat(np.arange(m), np.diff(crow.numpy())), rows])
            cols = np.concatenate([col.numpy(), cols])
        order = np.argsort(rows, kind="stable")
        return torch.from_numpy(seen_crow(rows[order], m)), torch.from_numpy(cols[order])

    def _item_weights(self) -> Tensor:
        """w_j = n_j / (n_j + λ_s) (n,); ones for implicit feedback, λ_s = 0 or no ``_seen``."""
        n = self.shape_[1]
        seen = getattr(self, "_seen", None)
        if self.feedback == "implicit" or not self.shrinkage or seen is None:
            return torch.ones(n, dtype=self._mean.dtype, device=self._mean.device)
        counts = torch.bincount(seen[1], minlength=n).to(self._mean.device, self._mean.dtype)
        return counts / (counts + self.shrinkage)

    def _top_k(self, rows: np.ndarray, k: int, exclude_seen: bool, batch_size: int | None,
               seen: tuple[Tensor, Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` for row indices (>= m: unknown), item indices out; ``seen``
        (CSR ``(crow, col)``) replaces the training entries to exclude."""
        m, n = self.shape_
        block = batch_size or max(1, (1 << 22) // n)
        items = np.full((rows.size, k), -1, dtype=np.int64)
        scores = np.full((rows.size, k), np.nan)
        device = self._mean.device
        with torch.no_grad():
            a, b = self._end_to_end()
            row_bias, col_bias = self._row_bias, self._col_bias
            if self.bias != "all":
                row_bias, col_bias = torch.zeros_like(row_bias), torch.zeros_like(col_bias)
            weights = self._item_weights()
            for start in range(0, rows.size, block):
                part = rows[start:start + block]
                known = torch.from_numpy(part < m).to(device)
                index = torch.from_numpy(np.minimum(part, m - 1)).to(device)
                block_scores = (a[index] @ b.T * known[:, None] + col_bias[None, :]) * weights
                block_scores += (self._mean + row_bias[index] * known)[:, None]
                if exclude_seen:
                    seen_rows, seen_cols = self._seen_entries(
                        part, self._seen if seen is None else seen)
                    block_scores[seen_rows.to(device), seen_cols.to(device)] = -math.inf
                top = torch.topk(block_scores, k, dim=1)
                found = torch.isfinite(top.values).cpu().numpy()
                items[start:start + part.size][found] = top.indices.cpu().numpy()[found]
                scores[start:start + part.size][found] = top.values.double().cpu().numpy()[found]
        return items, scores

    def _seen_entries(self, rows: np.ndarray, seen: tuple[Tensor, Tensor]
                      ) -> tuple[Tensor, Tensor]:
        """``(positions in rows, columns)`` of the entries of the given rows in the CSR
        pattern ``seen``."""
        crow, col = seen
        m = self.shape_[0]
        known = rows < m
        safe = torch.from_numpy(np.where(known, rows, 0))
        starts = crow[safe]
        counts = torch.where(torch.from_numpy(known), crow[safe + 1] - starts, 0)
        position = torch.repeat_interleave(torch.arange(rows.size), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        return position, col[starts[position] + offsets]

    def ranking_metrics(self, rows: Any, cols: Any = None, values: Any = None, k: int = 10,
                        threshold: float = 4.0, exclude_seen: bool = True) -> dict[str, float]:
        """Precision@k, recall@k, NDCG@k and MAP@k on held-out ratings (or a DataFrame).

        The relevant items of a user are its held-out items rated ``>= threshold``; every user
        with at least one, and known to the model, gets :meth:`recommend` (k, excluding its
        training items) and :func:`~deeplora.completion.ranking.ranking_metrics` averages over
        them. Also returns ``users`` (evaluated) and ``skipped_unknown`` (relevant users the
        model never saw)."""
        check_is_fitted(self, "model_")
        self._check_seen(exclude_seen)
        rows, cols, values = self._targets(rows, cols, values)
        rows, cols = self._indices(rows, cols)
        relevant = values >= threshold
        m = self.shape_[0]
        keep = relevant & (rows < m)
        users, inverse = np.unique(rows[keep], return_inverse=True)
        if users.size == 0:
            raise ValueError(f"no held-out rating >= {threshold} by a known user")
        truth = [cols[keep][inverse == u] for u in range(users.size)]
        k = check_integer("k", k, 1, self.shape_[1])
        recommended, _ = self._top_k(users, k, exclude_seen, None)
        metrics = ranking_metrics(recommended, truth, k)
        skipped = np.unique(rows[relevant & (rows >= m)]).size
        return {**metrics, "users": int(users.size), "skipped_unknown": int(skipped)}

    def _ranking_quality(self, users: np.ndarray, truth: list[np.ndarray], k: int,
                         seen: tuple[Tensor, Tensor]) -> float:
        """NDCG@k of ``users`` (row indices) against their relevant items ``truth``, ranking
        all items but those in ``seen`` (early stopping of implicit feedback)."""
        recommended, _ = self._top_k(users, k, True, None, seen)
        return ranking_metrics(recommended, truth, k)[f"ndcg@{k}"]
