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


def test_recommend_excludes_given_entries_too() -> None:
    """``exclude`` (ratings made since the fit, raw ids) drops its entries besides the
    training ones (or alone, without ``exclude_seen``); unknown users and items are ignored."""
    import pandas as pd

    rows, cols, values, _full, _ = low_rank_ratings(m=12, n=8, fraction=0.5, seed=6)
    frame = pd.DataFrame({"user": rows + 100, "item": cols, "rating": values})
    est = DeepMatrixCompletion(rank=2, max_steps=50).fit(frame)
    user, seen = 100, set(cols[rows == 0])
    unseen = [item for item in range(8) if item not in seen]
    newer = pd.DataFrame({"user": [user, user, 999], "item": [unseen[0], 77, unseen[1]]})
    items, _ = est.recommend([user], k=8, exclude=newer)
    assert set(items[0][items[0] != None]) == set(unseen[1:])  # noqa: E711
    items, _ = est.recommend([user], k=8, exclude_seen=False, exclude=(newer.user, newer.item))
    assert set(items[0][items[0] != None]) == set(range(8)) - {unseen[0]}  # noqa: E711


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


def test_single_five_star_item_does_not_top_the_list() -> None:
    """Items 0–18 of rising quality rated by ~70 % of 40 users; item 19 rated once, 5 stars.
    With shrinkage, every user who has not rated item 18 (the best well-rated item) gets it
    above item 19; scores are unclipped, so a list has no ties. Without shrinkage, the lone
    5-star item wins (the failure the shrinkage fixes)."""
    rng = np.random.default_rng(0)
    m, n = 40, 20
    quality = np.linspace(2.5, 4.2, n - 1)
    rows, cols = np.nonzero(rng.random((m, n - 1)) < 0.7)
    values = np.clip(np.rint(quality[cols] + 0.7 * rng.standard_normal(rows.size)), 1, 5)
    rows, cols, values = np.append(rows, 0), np.append(cols, n - 1), np.append(values, 5.0)
    users = np.setdiff1d(np.arange(1, m), rows[cols == n - 2])
    assert users.size >= 5
    for shrinkage, lone_first in ((25.0, False), (0.0, True)):
        est = DeepMatrixCompletion.ratings(rank=2, max_steps=300, shrinkage=shrinkage,
                                           bias_prior=0.0)  # the ranking's shrinkage alone
        items, scores = est.fit(rows, cols, values, shape=(m, n)).recommend(users, n - 1)
        position = {item: (items == item).argmax(1) for item in (n - 2, n - 1)}
        assert np.all((position[n - 1] < position[n - 2]) == lone_first)
        assert np.all(np.diff(scores[:, :5], axis=1) < 0)
        seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
        assert not any((u, i) in seen for u, row in zip(users, items, strict=True) for i in row)


def test_integer_arguments_of_any_integer_type_but_bool() -> None:
    """recommend and ranking_metrics refused k = np.int64(3) ('k must be an integer'),
    ranking_metrics took k=True for 1 and then failed with a TypeError, and recommend
    refused batch_size=np.int64(2) but took batch_size=True."""
    rows, cols, values, *_ = low_rank_ratings(m=12, n=8, fraction=0.7, seed=6)
    est = DeepMatrixCompletion(rank=2, max_steps=5).fit(rows, cols, values, shape=(12, 8))
    items, _ = est.recommend(np.arange(12), k=np.int64(3), batch_size=np.int64(5))
    np.testing.assert_array_equal(items, est.recommend(np.arange(12), k=3)[0])
    metrics = est.ranking_metrics(rows, cols, values, k=np.int64(3), exclude_seen=False)
    assert "ndcg@3" in metrics
    for call in (lambda: est.recommend([0], k=True),
                 lambda: est.ranking_metrics(rows, cols, values, k=True)):
        with pytest.raises(ValueError, match="k must be an integer"):
            call()
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        est.recommend([0], k=3, batch_size=True)
