"""GLUE metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deeplora.finetune.data import get_task
from deeplora.finetune.metrics import compute_metrics


def test_stsb_pearson_and_spearman() -> None:
    # x = (1, 2, 3), y = (1, 2, 4): cov sum 3, var sums 2 and 42/9 -> r = 3 / sqrt(2 * 42 / 9)
    out = compute_metrics(get_task("stsb"), np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert out["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert out["spearman"] == pytest.approx(1.0)
    assert out["score"] == pytest.approx((out["pearson"] + 1.0) / 2)
    # ranks (1, 3, 2) vs (1, 2, 3): 1 - 6 * 2 / (3 * 8) = 0.5
    swapped = compute_metrics(get_task("stsb"), np.array([1.0, 3.0, 2.0]), np.array([1, 2, 3.0]))
    assert swapped["spearman"] == pytest.approx(0.5)


def test_classification_metrics() -> None:
    gold, pred = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])  # TP 1, FN 1, TN 2, FP 0
    mrpc = compute_metrics(get_task("mrpc"), pred, gold)
    assert mrpc["accuracy"] == pytest.approx(0.75)
    assert mrpc["f1"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    cola = compute_metrics(get_task("cola"), pred, gold)
    assert cola["matthews"] == pytest.approx(2 / math.sqrt(12))  # (1·2 − 0·1)/√(1·2·2·3)
    assert set(compute_metrics(get_task("rte"), pred, gold)) == {"accuracy", "score"}


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute_metrics(get_task("sst2"), np.array([0, 1, 1]), np.array([0, 1]))
