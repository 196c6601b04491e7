"""The paper's theorem and compression, checked through a whole training run."""

import numpy as np
import pytest
import torch

from deeplora.completion import (
    MatrixCompletion,
    MatrixFactorization,
    fit,
    random_low_rank,
)
from deeplora.completion.problems import LowRankMatrix
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
    # a plateau, then recovery (it ends near step 7700 here; the last 2000 steps are margin)
    assert errors[4000] > 0.5 and errors[10_000] < 1e-6
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
    with pytest.raises(ValueError, match="assumed rank"):
        compress(wide, problem.loss, True)
    assert compress(wide, problem.loss, np.int64(2)).width == 4  # was refused as no integer
    gaussian = DeepFactorization(10, 10, 3, init="gaussian", dtype=torch.float64)
    with pytest.raises(ValueError, match="orthogonal"):
        compress(gaussian, problem.loss, 2)
    deep = DeepFactorization(10, 10, 15, scale=1e-3)  # ε^L = 1e-45: float32 reads Q as 0
    with pytest.raises(ValueError, match="underflows; use float64"):
        compress(deep, problem.loss, 2)
    assert compress(deep.double(), problem.loss, 2).factors[-1].abs().sum() > 0


def transposed_problem(problem: MatrixCompletion) -> MatrixCompletion:
    """The same completion problem for Φᵀ: target transposed, Ω transposed."""
    target = LowRankMatrix(problem.target.right, problem.target.left)
    return MatrixCompletion(target, problem.cols, problem.rows)


def transposed_model(wide: DeepFactorization) -> DeepFactorization:
    """``Xᵀ = W_1ᵀ ⋯ W_Lᵀ``: the same wide model for the transposed problem."""
    return DeepFactorization.from_factors([f.detach().T for f in reversed(wide.factors)],
                                          init="orthogonal", scale=wide.scale)


def captured(basis: torch.Tensor, matrix: torch.Tensor) -> float:
    """‖P matrix‖²_F / ‖matrix‖²_F, P the projector onto span(basis)."""
    q = torch.linalg.qr(basis.detach().double()).Q
    norm = torch.linalg.matrix_norm
    return float(norm(q.T @ matrix) ** 2 / norm(matrix) ** 2)


def first_gradient(wide: DeepFactorization, problem, rank: int):
    """Top-``rank`` left/right singular vectors of E = ∇_X ℒ at the wide model's X(0)."""
    start = wide.product().detach().requires_grad_()
    probe = DeepFactorization.from_factors([torch.eye(start.shape[1], dtype=start.dtype), start])
    (grad,) = torch.autograd.grad(problem.loss(probe), probe.factors[1])
    u, _, vh = torch.linalg.svd(grad)
    return u[:, :rank], vh[:rank].T, grad


def test_compress_follows_the_wide_model_on_a_tall_factorization():
    """The theorem's setting (γ = 0, full observations) on a tall 30×12 matrix: the compressed
    model's product stays on the wide model's through the whole run. (Off the square case the
    wide model's outer layer has a null space and the match is not exact, ~1e-3 at ε = 1e-2 on
    either side — the same for the paper's input-side formula on the 12×30 transpose.)"""
    problem = MatrixFactorization(random_low_rank(30, 12, 2, [1.0, 0.8], seed=4))
    phi_norm = problem.target.frobenius_norm()
    wide = DeepFactorization(30, 12, 3, scale=1e-2, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(4))
    small = compress(wide, problem.loss, 2)
    wide_opt = torch.optim.SGD(wide.parameters(), lr=0.6)
    small_opt = torch.optim.SGD(small.inner_parameters(), lr=0.6)  # U, V frozen
    max_gap = 0.0
    for _ in range(800):
        with torch.no_grad():
            max_gap = max(max_gap, float(torch.linalg.matrix_norm(wide.product() - small.product())
                                         / phi_norm))
        for model, opt in ((wide, wide_opt), (small, small_opt)):
            opt.zero_grad()
            problem.loss(model).backward()
            opt.step()
    assert problem.recovery_error(wide) < 1e-5 and problem.recovery_error(small) < 1e-5
    assert max_gap < 1e-2


def test_compress_keeps_both_gradient_spaces_under_partial_observations():
    """Ω 40 %: E = ∇_X ℒ(X(0)) has full rank. For every shape span(U) ⊇ U_E[:, :r̂] and
    span(V) ⊇ V_E[:, :r̂], independently of ε."""
    rank = 2
    for m, n in ((30, 12), (12, 30), (20, 20)):
        problem = MatrixCompletion.random(random_low_rank(m, n, 3, seed=m), 0.4, seed=n)
        spans = []
        for eps in (1e-2, 1e-4):
            wide = DeepFactorization(m, n, 3, scale=eps, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(5))
            left, right, grad = first_gradient(wide, problem, rank)
            assert int(torch.linalg.matrix_rank(grad)) == min(m, n)
            small = compress(wide, problem.loss, rank)
            u, v = small.factors[-1].detach(), small.factors[0].detach().T
            assert principal_angles(left, u).max() < 1e-6, (m, n, eps)
            assert principal_angles(right, v).max() < 1e-6, (m, n, eps)
            spans.append(v)
        assert principal_angles(*spans).max() < 1e-4


def test_compress_tall_and_transposed_completion_agree():
    """A 40×20 completion problem and its transpose (target, Ω and wide model transposed),
    trained by GD with γ = 0.01: the same fractions of Φ's column space (in span(U), resp. the
    transposed problem's span(V)) and row space at initialization, the same steps to 1e-2."""
    rank = 2
    problem = MatrixCompletion.random(random_low_rank(40, 20, rank, seed=0), 0.5, seed=10)
    flipped = transposed_problem(problem)
    wide = DeepFactorization(40, 20, 3, scale=1e-2, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(0))
    phi = problem.target.dense()
    fractions, steps = [], []
    for prob, model in ((flipped, transposed_model(wide)), (problem, wide)):
        small = compress(model, prob.loss, rank)
        u, v = small.factors[-1], small.factors[0].T
        column_side, row_side = (u, v) if prob is problem else (v, u)
        fractions.append((captured(column_side, phi), captured(row_side, phi.T)))
        budget = int(1.1 * steps[0]) + 1 if steps else 4000  # fail fast once 10 % over
        history = fit(small, prob, "gd", lr=10.0, gamma=0.01, steps=budget, target_error=1e-2,
                      eval_every=1, progress=False)
        reached = history.first_below(1e-2)
        assert reached is not None, (prob.shape, steps)
        steps.append(reached[0])
    (column, row), (column_t, row_t) = fractions
    assert abs(column - column_t) < 0.05 and abs(row - row_t) < 0.05, fractions
    assert abs(steps[0] - steps[1]) <= 0.1 * min(steps), steps


# Which of this module's checks each wrong construction (tests/conftest.py) fails.
SHAPE_CHECKS = {
    "tall-theorem": test_compress_follows_the_wide_model_on_a_tall_factorization,
    "partial-observations": test_compress_keeps_both_gradient_spaces_under_partial_observations,
    "transposed-completion": test_compress_tall_and_transposed_completion_agree,
}
FAILS_WITH = {
    "input-side": {"tall-theorem", "partial-observations", "transposed-completion"},
    "stacked": {"tall-theorem", "partial-observations", "transposed-completion"},
}


@pytest.mark.parametrize("construction", sorted(FAILS_WITH))
def test_wrong_constructions_fail_the_shape_checks(construction, wrong_construction):
    assert wrong_construction(construction, SHAPE_CHECKS) == FAILS_WITH[construction]
