"""Low-rank matrix recovery: factorization, completion and sensing with deep factorizations."""

from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.methods import METHODS, build_model, default_settings
from deeplora.completion.problems import (
    LowRankMatrix,
    MatrixCompletion,
    MatrixFactorization,
    MatrixSensing,
    Problem,
    random_entries,
    random_low_rank,
)
from deeplora.completion.train import History, fit

__all__ = [
    "METHODS",
    "DeepMatrixCompletion",
    "History",
    "LowRankMatrix",
    "MatrixCompletion",
    "MatrixFactorization",
    "MatrixSensing",
    "Problem",
    "build_model",
    "default_settings",
    "fit",
    "random_entries",
    "random_low_rank",
]
