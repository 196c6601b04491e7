"""DeepMatrixCompletion.recommend and ranking_metrics: top-k without seen items, batching,
padding and ranking quality on held-out ratings."""

import numpy as np
import pytest

from deeplora.completion.estimator import DeepMatrixCompletion

from .helpers import low_rank_ratings


def test_recommend_batches_exclude_seen_and_padding() -> None:
    rows, cols, values, _full, _ = low_rank_ratings(m=12, n=8, fraction=0.7, seed=6)
    est = DeepMatrixCompletion(rank=2, max_steps=50).fit(rows, cols, values, shape=(12, 8))
    one, _r1 = est.recommend(np.arange(12), k=8, batch_size=1)
    all_, r2 = est.recommend(np.arange(12), k=8)
    np.testing.assert_array_equal(one, all_)
    for user in range(12):
        seen = set(cols[rows == user])
        left = [i for i in all_[user] if i >= 0]
        assert not seen & set(left) and len(left) == 8 - len(seen)
        assert np.isnan(r2[user, len(left):]).all()
    with_seen, _ = est.recommend([0], k=8, exclude_seen=False)
    assert sorted(with_seen[0]) == list(range(8))
    with pytest.raises(ValueError, match="k must be"):
        est.recommend([0], k=9)


def test_ranking_metrics_of_estimator() -> None:
    rows, cols, values, full, mask = low_rank_ratings(m=30, n=25, fraction=0.5, seed=7)
    est = DeepMatrixCompletion(rank=2, gamma=0.1, max_steps=300).fit(rows, cols, values)
    hidden_rows, hidden_cols = np.nonzero(~mask)
    hidden = full[hidden_rows, hidden_cols]
    metrics = est.ranking_metrics(hidden_rows, hidden_cols, hidden, k=5, threshold=4.0)
    assert {"precision@5", "recall@5", "ndcg@5", "map@5", "users"} <= set(metrics)
    assert all(0 <= metrics[key] <= 1 for key in ("precision@5", "recall@5", "ndcg@5", "map@5"))
    # a well-fitted low-rank model ranks far better than chance
    chance = np.mean(hidden >= 4.0)
    assert metrics["precision@5"] > 2 * chance
    with pytest.raises(ValueError, match="no held-out rating"):
        est.ranking_metrics(hidden_rows, hidden_cols, hidden, threshold=100.0)
