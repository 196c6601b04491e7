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


@pytest.mark.parametrize(("method", "gamma"), [("original", 1.0), ("compressed", 0.01),
                                               ("narrow", 1.0)])
def test_gd_defaults_are_the_papers_step_and_gamma(method: str, gamma: float) -> None:
    """PAPER.md: η = 5e3 on ½ Σ_Ω / d², i.e. 5e3 · |Ω| / d² on our ½ mean_Ω loss (1e3 at 20 %
    observed), γ = 0.01 on the compressed model's outer factors."""
    assert default_settings(method, "gd", observed_fraction=0.2) == ("gd", 1e3, gamma)


def test_gd_step_is_the_authors_step_on_their_loss() -> None:
    from deeplora.completion.problems import random_entries

    d, fraction = 20, 0.2
    target = random_low_rank(d, d, 2, seed=0)
    problem = MatrixCompletion(target, *random_entries(d, d, fraction, seed=0))
    model, _ = build_model("narrow", problem, rank=2, scale=0.5, dtype=torch.float64)
    ours = torch.autograd.grad(problem.loss(model), list(model.parameters()))
    entries = model.entries(problem.rows, problem.cols)
    authors = 0.5 * torch.sum((entries - target.entries(problem.rows, problem.cols)) ** 2) / d**2
    theirs = torch.autograd.grad(authors, list(model.parameters()))
    lr = default_settings("narrow", "gd", observed_fraction=fraction)[1]
    for mine, their in zip(ours, theirs, strict=True):
        torch.testing.assert_close(lr * mine, 5e3 * their)


@pytest.mark.parametrize(("method", "width", "depth"), [("original", 12, 3), ("narrow", 4, 3),
                                                        ("compressed", 4, 5)])
def test_models_have_the_papers_widths_and_eps_init(method: str, width: int, depth: int) -> None:
    """PAPER.md: original width d, every layer ε-orthogonal; narrow width 2r̂ ε-orthogonal;
    compressed V₁ᵀ, L inner 2r̂×2r̂ layers ε·I, then U."""
    from deeplora.completion.problems import random_entries

    problem = MatrixCompletion(random_low_rank(12, 12, 2, seed=0),
                               *random_entries(12, 12, 0.5, seed=0))
    model, _ = build_model(method, problem, depth=3, rank=2, dtype=torch.float64)
    factors = list(model.factors)
    assert len(factors) == depth
    inner = factors[1:-1] if method == "compressed" else factors
    for factor in inner:
        assert min(factor.shape) == width
        values = torch.linalg.svdvals(factor.detach())
        torch.testing.assert_close(values, torch.full_like(values, 1e-3))
    if method == "compressed":
        assert all(torch.equal(f.detach(), 1e-3 * torch.eye(width, dtype=torch.float64))
                   for f in inner)
