import math

import numpy as np
import pytest
import torch

from deeplora.completion import (
    MatrixCompletion,
    MatrixFactorization,
    MatrixSensing,
    random_entries,
    random_low_rank,
)
from deeplora.factorization import DeepFactorization, singular_values


def test_random_low_rank_given_singular_values():
    target = random_low_rank(30, 20, 3, [3.0, 2.0, 1.0], seed=0)
    s = singular_values(target.dense())
    torch.testing.assert_close(s[:3], torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert s[3] < 1e-12
    assert target.frobenius_norm() == pytest.approx(math.sqrt(14))


def test_random_low_rank_is_best_approximation_of_gaussian():
    target = random_low_rank(30, 20, 2, seed=4)
    gaussian = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    s = singular_values(gaussian)
    torch.testing.assert_close(singular_values(target.dense())[:2], s[:2])


def test_random_entries_distinct_and_seeded():
    rows, cols = random_entries(10, 7, 0.3, seed=1)
    assert rows.numel() == 21
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=False))) == 21
    again = random_entries(10, 7, 0.3, seed=1)
    assert torch.equal(rows, again[0]) and torch.equal(cols, again[1])


def test_completion_loss_by_hand():
    target = random_low_rank(4, 3, 1, [1.0], seed=0)
    problem = MatrixCompletion(target, torch.tensor([0, 3]), torch.tensor([2, 0]))
    model = DeepFactorization(4, 3, 2, scale=0.5, dtype=torch.float64)
    x, phi = model.product().detach(), target.dense()
    expected = 0.5 * ((x[0, 2] - phi[0, 2]) ** 2 + (x[3, 0] - phi[3, 0]) ** 2) / 2
    assert float(problem.loss(model)) == pytest.approx(float(expected))
    assert problem.observed_fraction == pytest.approx(2 / 12)


@pytest.mark.parametrize("width", [2, 40])
def test_recovery_error_gram_and_dense_paths(width):
    target = random_low_rank(40, 30, 2, seed=0)
    model = DeepFactorization(40, 30, 3, width, scale=1.0, dtype=torch.float64)
    phi = target.dense()
    expected = torch.linalg.matrix_norm(model.product() - phi) / torch.linalg.matrix_norm(phi)
    problem = MatrixFactorization(target)
    assert problem.recovery_error(model) == pytest.approx(float(expected), rel=1e-8)


def test_sensing_loss_matches_operator():
    target = random_low_rank(5, 4, 1, seed=0)
    problem = MatrixSensing(target, 30, seed=0)
    model = DeepFactorization(5, 4, 2, scale=1.0, dtype=torch.float64)
    residual = problem.operator @ (model.product().detach() - target.dense()).reshape(-1)
    assert float(problem.loss(model)) == pytest.approx(0.5 * float(residual @ residual))


def test_bad_input():
    target = random_low_rank(4, 3, 1, seed=0)
    with pytest.raises(ValueError, match="rank"):
        random_low_rank(4, 3, 4)
    with pytest.raises(ValueError, match="rank"):
        random_low_rank(4, 3, 0)
    with pytest.raises(ValueError, match="singular values"):
        random_low_rank(4, 3, 2, [1.0, -1.0])
    for fraction in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            random_entries(4, 3, fraction)
    with pytest.raises(ValueError, match="finite"):
        MatrixCompletion(target, torch.tensor([0]), torch.tensor([0]), torch.tensor([math.nan]))
    with pytest.raises(ValueError, match="equal length"):
        MatrixCompletion(target, torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        MatrixCompletion(target, torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="values must have shape"):
        MatrixCompletion(target, torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0, 2.0]))


def test_completion_refuses_fractional_or_boolean_indices():
    # torch.as_tensor(..., dtype=long) truncated 0.7 to 0 and read a mask as indices 1/0: the
    # problem silently observed other entries than the ones given
    target = random_low_rank(4, 3, 1, seed=0)
    with pytest.raises(ValueError, match="rows must be integer indices, got dtype float"):
        MatrixCompletion(target, torch.tensor([0.7, 1.2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="cols must be integer indices, got dtype bool"):
        MatrixCompletion(target, [0, 1], [True, False])
    with pytest.raises(ValueError, match="cols must be integer indices, found NaN"):
        MatrixCompletion(target, [0, 1], [0.0, math.nan])
    integral = MatrixCompletion(target, torch.tensor([0.0, 3.0]), [2, 1])  # as the estimator
    assert integral.rows.tolist() == [0, 3] and integral.rows.dtype == torch.int64


@pytest.mark.parametrize("width", [None, 2])
def test_a_model_of_another_shape_is_refused(width):
    # a 40×40 model on a 30×20 completion problem got a loss (its entries at Ω are in range)
    # and trained; fit then failed with a broadcasting error at the first recovery error
    target = random_low_rank(30, 20, 1, seed=0)
    completion = MatrixCompletion.random(target, 0.5, seed=1)
    problems = (completion, MatrixFactorization(target), MatrixSensing(target, 10))
    for shape in ((40, 40), (20, 30)):
        model = DeepFactorization(*shape, depth=3, width=width)
        for problem in problems:
            for measure in (problem.loss, problem.loss_and_grads, problem.recovery_error):
                with pytest.raises(ValueError, match=rf"model is {shape[0]}×{shape[1]}, the "
                                                     r"problem's matrix 30×20"):
                    measure(model)


def test_huge_synthetic_targets_refused_before_allocating(monkeypatch):
    import deeplora.memory
    from deeplora.completion.problems import random_entries

    monkeypatch.setattr(deeplora.memory, "available_bytes", lambda device=None: 2**30)
    with pytest.raises(deeplora.memory.TooLargeError,
                       match=r"random_low_rank\(100000, 100000\): the dense Gaussian and its SVD "
                             r"needs about 298.0 GiB, 1.0 GiB available; pass singular_values"):
        random_low_rank(100_000, 100_000, 5)
    target = random_low_rank(100_000, 100_000, 5, singular_values=[1.0] * 5)  # no dense work
    assert target.shape == (100_000, 100_000)
    with pytest.raises(deeplora.memory.TooLargeError, match="sampling 2,000,000,000 of"):
        random_entries(100_000, 100_000, 0.2)


def test_numpy_integer_and_float_sizes_are_accepted():
    """rank=np.int64(2), fraction=np.float32(0.5), measurements=np.int64(30) (from numpy grids)
    were refused as 'not an integer' / 'not in (0, 1]'; rank=True was taken as 1."""
    target = random_low_rank(10, 8, np.int64(2), seed=0)
    assert target.rank == 2
    assert random_entries(10, 8, np.float32(0.5))[0].numel() == 40
    assert MatrixSensing(target, np.int64(30)).operator.shape == (30, 80)
    with pytest.raises(ValueError, match=r"rank must be an integer in .*, got True"):
        random_low_rank(10, 8, True)
    with pytest.raises(ValueError, match="measurements must be an integer >= 1, got True"):
        MatrixSensing(target, True)



def test_seeds_of_numpy_integer_type_draw_as_ints():
    """seed=np.int64(1) was a TypeError of torch.Generator.manual_seed ('an integer is
    required')."""
    target = random_low_rank(10, 8, 2, seed=np.int64(1))
    torch.testing.assert_close(target.dense(), random_low_rank(10, 8, 2, seed=1).dense())
    torch.testing.assert_close(random_entries(10, 8, 0.5, seed=np.int64(1)),
                               random_entries(10, 8, 0.5, seed=1))
    torch.testing.assert_close(MatrixSensing(target, 5, seed=np.int64(1)).operator,
                               MatrixSensing(target, 5, seed=1).operator)


@pytest.mark.parametrize("bad", [1.5, -1, 2**32, True])
def test_bad_seeds_are_named(bad):
    """1.5 was torch's RuntimeError 'manual_seed expected a long', -1 was taken (as
    2**64 - 1)."""
    target = random_low_rank(10, 8, 2)
    message = rf"seed must be an integer in \[0, 2\*\*32\), got {bad!r}"
    with pytest.raises(ValueError, match=message):
        random_low_rank(10, 8, 2, seed=bad)
    with pytest.raises(ValueError, match=message):
        random_entries(10, 8, 0.5, seed=bad)
    with pytest.raises(ValueError, match=message):
        MatrixCompletion.random(target, 0.5, seed=bad)
    with pytest.raises(ValueError, match=message):
        MatrixSensing(target, 5, seed=bad)
