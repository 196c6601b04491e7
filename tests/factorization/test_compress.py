"""The paper's theorem and compression, checked through a whole training run."""

import pytest
import torch

from deeplora.completion import MatrixFactorization, random_low_rank
from deeplora.factorization import (
    DeepFactorization,
    compress,
    invariant_subspace_deviation,
    largest_repeated_cluster,
    principal_angles,
    singular_values,
)

D, R, EPS, LR = 60, 3, 1e-3, 0.2


def wide_model(seed=0, depth=3, dtype=torch.float64):
    return DeepFactorization(D, D, depth, init="orthogonal", scale=EPS, dtype=dtype,
                             generator=torch.Generator().manual_seed(seed))


def test_theorem_and_compressed_trajectory_through_whole_run():
    problem = MatrixFactorization(random_low_rank(D, D, R, [1.0, 0.9, 0.8], seed=0))
    phi_norm = problem.target.frobenius_norm()
    wide = wide_model()
    small = compress(wide, problem.loss, R)
    assert [tuple(f.shape) for f in small.factors] == [(6, 60), (6, 6), (6, 6), (6, 6), (60, 6)]
    at_init = [f.detach().clone() for f in wide.factors]
    bases, right = [], small.factors[0].detach().T
    for layer in at_init:
        bases.append(right)
        right = layer @ right / EPS
    wide_opt = torch.optim.SGD(wide.parameters(), lr=LR)
    small_opt = torch.optim.SGD(small.inner_parameters(), lr=LR)  # γ = 0: U, V frozen
    errors, max_gap, max_deviation = {}, 0.0, 0.0
    for step in range(10_001):
        with torch.no_grad():
            gap = torch.linalg.matrix_norm(wide.product() - small.product()) / phi_norm
            max_gap = max(max_gap, float(gap))
            if step % 100 == 0:
                errors[step] = problem.recovery_error(wide)
                for layer, init, basis in zip(wide.factors, at_init, bases, strict=False):
                    s = singular_values(layer)
                    assert largest_repeated_cluster(s, 1e-9) >= D - 2 * R, (step, s)
                    max_deviation = max(max_deviation, invariant_subspace_deviation(
                        layer.detach(), init, basis, EPS))
        for model, opt in ((wide, wide_opt), (small, small_opt)):
            opt.zero_grad()
            problem.loss(model).backward()
            opt.step()
    assert errors[0] == pytest.approx(1.0, abs=1e-6)
    assert errors[4000] > 0.5 and errors[8000] < 1e-6 and errors[10_000] < 1e-6
    assert max_gap < 1e-6
    assert max_deviation < 1e-9


def test_compressed_init_reproduces_projected_product():
    problem = MatrixFactorization(random_low_rank(D, D, R, seed=1))
    wide = wide_model(seed=1)
    small = compress(wide, problem.loss, R)
    v = small.factors[0].detach().T
    torch.testing.assert_close(v.T @ v, torch.eye(2 * R, dtype=torch.float64))
    torch.testing.assert_close(small.product(), wide.product() @ v @ v.T)
    # V contains the target's row space (the top right singular space of ∇W_1).
    _, _, vh = torch.linalg.svd(problem.target.dense())
    assert principal_angles(vh[:R].T, v).max() < 1e-6


def test_compress_is_invariant_to_init_scale_direction():
    problem = MatrixFactorization(random_low_rank(D, D, R, seed=2))
    spans = []
    for eps in (1e-2, 1e-4):
        wide = DeepFactorization(D, D, 3, scale=eps, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(5))
        spans.append(compress(wide, problem.loss, R).factors[0].detach().T)
    assert principal_angles(*spans).max() < 1e-4


def test_compress_bad_input():
    problem = MatrixFactorization(random_low_rank(10, 10, 2, seed=0))
    wide = DeepFactorization(10, 10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="assumed rank"):
        compress(wide, problem.loss, 6)
    with pytest.raises(ValueError, match="assumed rank"):
        compress(wide, problem.loss, 0)
    gaussian = DeepFactorization(10, 10, 3, init="gaussian", dtype=torch.float64)
    with pytest.raises(ValueError, match="orthogonal"):
        compress(gaussian, problem.loss, 2)
