"""GLUE metrics, computed with scipy and scikit-learn.

STS-B: Pearson and Spearman correlation of predicted and gold scores; CoLA: Matthews
correlation; MRPC and QQP: accuracy (the main metric, as the paper reports them) and F1 of the
positive class beside it; the rest: accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from deeplora.finetune.data import GlueTask


def _pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(stats.pearsonr(pred, gold).statistic)


def _spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(stats.spearmanr(pred, gold).statistic)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": _pearson,
    "spearman": _spearman,
    "accuracy": lambda pred, gold: float(skm.accuracy_score(gold, pred)),
    "f1": lambda pred, gold: float(skm.f1_score(gold, pred)),
    "matthews": lambda pred, gold: float(skm.matthews_corrcoef(gold, pred)),
}


def compute_metrics(
    task: GlueTask, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The task's GLUE metrics plus ``score`` (their mean, the GLUE leaderboard convention).

    ``predictions``: class ids (n,) or, for STS-B, real-valued scores (n,) on any scale
    (correlations are scale-free). A constant prediction gives NaN correlations.
    """
    pred, gold = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {gold.shape[0]} labels")
    values = {name: METRICS[name](pred, gold) for name in task.metrics}
    values["score"] = float(np.mean(list(values.values())))
    return values
