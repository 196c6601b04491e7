"""Ranking metrics against hand-computed values."""

import math

import numpy as np
import pytest

from deeplora.completion.ranking import ranking_metrics


def test_hand_computed_user() -> None:
    # hits at ranks 1 and 3 of 4; 3 relevant items
    metrics = ranking_metrics(np.array([[5, 1, 7, 2]]), [np.array([5, 7, 9])], k=4)
    assert metrics["precision@4"] == pytest.approx(2 / 4)
    assert metrics["recall@4"] == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg@4"] == pytest.approx(dcg / idcg)
    assert metrics["map@4"] == pytest.approx((1 + 2 / 3) / 3)


def test_average_padding_and_errors() -> None:
    metrics = ranking_metrics(np.array([[1, -1], [3, 2]]), [np.array([1]), np.array([4])], k=2)
    assert metrics["precision@2"] == pytest.approx(0.25)
    assert metrics["ndcg@2"] == pytest.approx(0.5) and metrics["map@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="relevant"):
        ranking_metrics(np.array([[1]]), [np.array([])], k=1)
    with pytest.raises(ValueError, match="k must"):
        ranking_metrics(np.array([[1]]), [np.array([1])], k=2)


def test_k_of_any_integer_type_but_bool() -> None:
    """k = np.int64(2) (from numpy arithmetic) was refused as 'not an integer'; k=True was
    taken as k = 1 and gave keys like 'precision@True'."""
    metrics = ranking_metrics(np.array([[1, 2]]), [np.array([2])], k=np.int64(2))
    assert metrics["precision@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k must be an integer"):
        ranking_metrics(np.array([[1, 2]]), [np.array([2])], k=True)
