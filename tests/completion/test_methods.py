import numpy as np
import pytest
import torch

from deeplora.completion import (
    METHODS,
    MatrixCompletion,
    build_model,
    default_settings,
    random_low_rank,
)


@pytest.mark.parametrize("method", METHODS)
def test_adamw_gets_adams_defaults(method: str) -> None:
    # adamw fell through to the GD branch: the paper's GD step (5e3 · observed fraction, here
    # 1000) as AdamW's learning rate; the estimator with optimizer="adamw" fit nothing
    assert default_settings(method, "adamw", observed_fraction=0.2)[1:] == \
        default_settings(method, "adam", observed_fraction=0.2)[1:]
    assert default_settings(method, "sgd", observed_fraction=0.2)[1:] == \
        default_settings(method, "gd", observed_fraction=0.2)[1:]


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'Adam'; choose one of \['gd', "):
        default_settings("compressed", "Adam")


@pytest.mark.parametrize("method", METHODS)
def test_build_model_takes_numpy_seeds_and_names_bad_ones(method: str) -> None:
    """seed=np.int64(1) was a TypeError of torch.Generator.manual_seed, 1.5 its RuntimeError,
    -1 was taken (as 2**64 - 1)."""
    problem = MatrixCompletion.random(random_low_rank(12, 10, 2), 0.5)
    model, _ = build_model(method, problem, rank=2, seed=np.int64(1), dtype=torch.float64)
    same, _ = build_model(method, problem, rank=2, seed=1, dtype=torch.float64)
    torch.testing.assert_close(model.product(), same.product())
    for bad in (1.5, -1, 2**32, True):
        with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 2\*\*32\), "
                                             rf"got {bad!r}"):
            build_model(method, problem, rank=2, seed=bad)
