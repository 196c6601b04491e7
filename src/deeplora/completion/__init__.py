"""Low-rank matrix recovery: factorization, completion and sensing with deep factorizations."""

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
from deeplora.completion.train import History, Plateau, fit

__all__ = [
    "METHODS",
    "DeepMatrixCompletion",
    "History",
    "LowRankMatrix",
    "MatrixCompletion",
    "MatrixFactorization",
    "MatrixSensing",
    "Plateau",
    "Problem",
    "build_model",
    "default_settings",
    "fit",
    "random_entries",
    "random_low_rank",
]


def __getattr__(name: str) -> object:
    """``DeepMatrixCompletion`` is imported on first use (it pulls in scikit-learn, which
    ``deeplora complete`` on a synthetic matrix does not need)."""
    if name == "DeepMatrixCompletion":
        from deeplora.completion.estimator import DeepMatrixCompletion

        return DeepMatrixCompletion
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
