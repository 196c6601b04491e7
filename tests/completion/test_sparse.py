"""Sparse path: sampled product and its CSR backward, sparse compressed init, sampling."""

import numpy as np
import pytest
import torch

from deeplora.completion import MatrixCompletion, fit, random_low_rank
from deeplora.completion.problems import LowRankMatrix
from deeplora.completion.sparse import RandomDCT, compressed_factorization, random_observations
from deeplora.factorization import DeepFactorization, compress, principal_angles
from deeplora.factorization.sampled import (
    ObservedIndex,
    sampled_product,
    squared_loss_and_grads,
)

# (DENSE_FRACTION, TRANSPOSE_LIMIT) that force each kernel pair: gather from A Bᵀ and torch's
# transposed CSR, or a sampled product and SciPy's column-wise CSR.
KERNELS = {"dense-torch": (1 << 30, 1 << 30), "sampled-scipy": (0, 0)}


@pytest.fixture(params=sorted(KERNELS))
def forward(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    dense_fraction, transpose_limit = KERNELS[request.param]
    monkeypatch.setattr(ObservedIndex, "DENSE_FRACTION", dense_fraction)
    monkeypatch.setattr(ObservedIndex, "TRANSPOSE_LIMIT", transpose_limit)
    return request.param


def _pair(m: int, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(m, k, dtype=torch.float64, generator=gen, requires_grad=True),
            torch.randn(n, k, dtype=torch.float64, generator=gen, requires_grad=True))


def test_sampled_product_matches_dense_unsorted_with_duplicates(forward: str) -> None:
    a, b = _pair(7, 5, 3)
    rows, cols = torch.tensor([3, 0, 0, 6, 2, 2, 0]), torch.tensor([1, 4, 4, 0, 3, 2, 4])
    got = sampled_product(a, b, rows, cols)
    want = (a @ b.T)[rows, cols]
    torch.testing.assert_close(got, want)
    weights = torch.arange(7, dtype=torch.float64)
    grads = torch.autograd.grad(got @ weights, (a, b))
    want_grads = torch.autograd.grad(want @ weights, (a, b))
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def test_sampled_product_gradcheck(forward: str) -> None:
    a, b = _pair(6, 4, 2, seed=1)
    rows, cols = torch.tensor([5, 0, 3, 3, 1]), torch.tensor([0, 3, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda x, y: sampled_product(x, y, rows, cols), (a, b))


def test_batched_sampled_product_is_each_product_with_its_gradient(forward: str) -> None:
    """A batch (K×m×k, K×n×k) gives each pair's product at the same entries, and each pair
    gets only its own gradient."""
    a, b = (torch.stack(t).detach().requires_grad_() for t in zip(
        _pair(7, 5, 3, seed=2), _pair(7, 5, 3, seed=3), strict=True))
    rows, cols = torch.tensor([3, 0, 0, 6, 2, 2, 0]), torch.tensor([1, 4, 4, 0, 3, 2, 4])
    got = sampled_product(a, b, rows, cols)
    assert got.shape == (2, 7)
    for k in range(2):
        torch.testing.assert_close(got[k], (a[k] @ b[k].T)[rows, cols])
    assert torch.autograd.gradcheck(lambda x, y: sampled_product(x, y, rows, cols), (a, b))
    with pytest.raises(ValueError, match="batches"):
        sampled_product(a, b[0], rows, cols)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_closed_form_loss_and_grads_match_autograd(forward: str, depth: int) -> None:
    gen = torch.Generator().manual_seed(depth)
    m, n, k = 9, 7, 3
    shapes = [(k, n), *[(k, k)] * (depth - 2), (m, k)]
    factors = [torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
               for shape in shapes]
    rows = torch.tensor([8, 0, 0, 4, 2, 2, 0, 5, 1])  # unsorted, (0, 6) twice
    cols = torch.tensor([1, 6, 6, 0, 3, 2, 5, 4, 4])
    values = torch.randn(9, dtype=torch.float64, generator=gen)
    loss, grads = squared_loss_and_grads(factors, ObservedIndex(rows, cols, (m, n)), values)
    product = torch.linalg.multi_dot(factors[::-1])
    want = 0.5 * torch.mean((product[rows, cols] - values) ** 2)
    torch.testing.assert_close(loss, want.detach())
    for got, expected in zip(grads, torch.autograd.grad(want, factors), strict=True):
        assert got.is_contiguous()
        torch.testing.assert_close(got, expected)


def _unique_entries(m: int, n: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` distinct entries in a random (not row-major) order."""
    flat = torch.randperm(m * n, generator=torch.Generator().manual_seed(seed))[:count]
    return flat // n, flat % n


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_dense_residual_path_matches_sparse_path_and_autograd(
        depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(depth)
    m, n, k = 9, 7, 3
    factors = [torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
               for shape in [(k, n), *[(k, k)] * (depth - 2), (m, k)]]
    rows, cols = _unique_entries(m, n, 30, seed=depth)
    values = torch.randn(30, dtype=torch.float64, generator=gen)
    product = torch.linalg.multi_dot(factors[::-1])
    want = 0.5 * torch.mean((product[rows, cols] - values) ** 2)
    want_grads = torch.autograd.grad(want, factors)
    index = ObservedIndex(rows, cols, (m, n))
    for dense in (True, False):  # 30 of 63 entries observed
        monkeypatch.setattr(ObservedIndex, "DENSE_RESIDUAL_FRACTION", 1 << 30 if dense else 1)
        assert index.dense_residual is dense
        loss, grads = squared_loss_and_grads(factors, index, values)
        torch.testing.assert_close(loss, want.detach())
        for got, expected in zip(grads, want_grads, strict=True):
            assert got.is_contiguous()
            torch.testing.assert_close(got, expected)


def test_dense_residual_path_needs_distinct_entries_and_follows_new_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ObservedIndex, "DENSE_RESIDUAL_FRACTION", 1 << 30)
    repeated = ObservedIndex(torch.tensor([1, 0, 1]), torch.tensor([2, 0, 2]), (3, 3))
    assert repeated.repeated and not repeated.dense_residual
    rows, cols = _unique_entries(6, 5, 12, seed=0)
    index = ObservedIndex(rows, cols, (6, 5))
    assert index.dense_residual
    factors = [torch.randn(2, 5, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)]
    values = torch.randn(12, dtype=torch.float64)
    product = factors[1] @ factors[0]

    def expected() -> torch.Tensor:
        return 0.5 * torch.mean((product[rows, cols] - values) ** 2)

    torch.testing.assert_close(squared_loss_and_grads(factors, index, values)[0], expected())
    values.mul_(-2.0)  # same tensor, new contents: the cached dense targets must not be reused
    torch.testing.assert_close(squared_loss_and_grads(factors, index, values)[0], expected())
    other = torch.zeros(12, dtype=torch.float64)
    torch.testing.assert_close(squared_loss_and_grads(factors, index, other)[0],
                               0.5 * torch.mean(product[rows, cols] ** 2))


def test_csr_views_are_the_arrays_themselves_and_give_r_b_and_rt_a() -> None:
    """``csr_views`` wraps the given value arrays without copying (written in place, the
    products follow) and its products are ``left``/``right``; a tall matrix, whose products
    SciPy computes, gets ``None``."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = torch.tensor([3, 0, 2, 0, 4]), torch.tensor([1, 2, 0, 0, 2])
    index = ObservedIndex(rows, cols, (5, 3))
    values, transposed = torch.zeros(5), torch.zeros(5)
    matrix, matrix_t = index.csr_views(values, transposed)
    values.copy_(torch.randn(5, generator=generator))
    transposed.copy_(values[index.transpose_order])
    a, b = torch.randn(5, 2, generator=generator), torch.randn(3, 2, generator=generator)
    torch.testing.assert_close(matrix @ b, index.left(values, b))
    torch.testing.assert_close(matrix_t @ a, index.right(values, a))
    torch.testing.assert_close(matrix.to_dense(), index.matrix(index.from_sorted(values))
                               .to_dense())
    tall = ObservedIndex(torch.arange(20), torch.zeros(20, dtype=torch.long), (20, 2))
    assert tall.csr_views(torch.zeros(20), torch.zeros(20)) is None


def test_index_cache_reuses_only_same_unmodified_tensors() -> None:
    rows, cols = torch.tensor([1, 0]), torch.tensor([0, 1])
    first = ObservedIndex.of(rows, cols, (2, 2))
    assert ObservedIndex.of(rows, cols, (2, 2)) is first
    assert ObservedIndex.of(rows.clone(), cols, (2, 2)) is not first
    rows[0] = 0
    assert ObservedIndex.of(rows, cols, (2, 2)) is not first


@pytest.mark.parametrize(("rows", "cols", "match"), [
    ([0, 3], [0, 0], r"\[0, 3\)"), ([-1, 0], [0, 0], r"\[0, 3\)"),
    ([0.5, 1.0], [0, 0], "integer"), ([0, 1], [0], "equal length")])
def test_index_rejects_bad_indices(rows: list, cols: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ObservedIndex(torch.tensor(rows), torch.tensor(cols), (3, 3))


def test_sparse_and_dense_paths_agree_on_completion_loss() -> None:
    problem = MatrixCompletion.random(random_low_rank(20, 30, 2, seed=0), 0.3, seed=1)
    model = DeepFactorization(20, 30, depth=3, width=6, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(0))
    sparse_loss = problem.loss(model)  # sampled path: 180 entries × width 6 < 600
    sparse_grads = torch.autograd.grad(sparse_loss, list(model.factors))
    dense = 0.5 * torch.mean((model.product()[problem.rows, problem.cols] - problem.values) ** 2)
    dense_grads = torch.autograd.grad(dense, list(model.factors))
    torch.testing.assert_close(sparse_loss, dense)
    for s, d in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(s, d)


def test_random_dct_is_semi_orthogonal_with_exact_entries() -> None:
    for m, n in ((6, 9), (9, 6)):
        q = RandomDCT(m, n, np.random.default_rng(0))
        dense = q.dense()
        gram = dense @ dense.T if m <= n else dense.T @ dense
        np.testing.assert_allclose(gram, np.eye(min(m, n)), atol=1e-12)
        np.testing.assert_allclose(q.rmatmul(np.eye(m)), dense.T, atol=1e-12)
        r, c = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
        np.testing.assert_allclose(q.entries(r.ravel(), c.ravel()), dense.ravel(), atol=1e-12)


@pytest.mark.parametrize(("m", "n"), [(24, 30), (30, 24)])
def test_sparse_compressed_init_matches_dense_compress(m: int, n: int) -> None:
    """Same Q in both: wide model W_1 = εM[:, :n], W_2 = εI, W_3 = ε[I_m 0], so W_{3:1} = ε³Q."""
    rank, eps, k = 2, 0.3, max(m, n)
    problem = MatrixCompletion.random(random_low_rank(m, n, rank, seed=3), 0.4, seed=4)
    q = RandomDCT(m, n, np.random.default_rng(7))
    full = torch.from_numpy(RandomDCT(k, k, np.random.default_rng(7)).dense())
    torch.testing.assert_close(full[:m, :n], torch.from_numpy(q.dense()))
    wide = DeepFactorization.from_factors(
        [eps * full[:, :n], eps * torch.eye(k, dtype=torch.float64),
         eps * torch.eye(m, k, dtype=torch.float64)], init="orthogonal", scale=eps)
    dense = compress(wide, problem.loss, rank)
    index = ObservedIndex(problem.rows, problem.cols, (m, n))
    sparse = compressed_factorization(index, problem.values, rank, depth=3, scale=eps,
                                      dtype=torch.float64, end_to_end=q)
    assert [f.shape for f in sparse.factors] == [f.shape for f in dense.factors]
    for d, s in ((dense.factors[0].T, sparse.factors[0].T), (dense.factors[-1],
                                                             sparse.factors[-1])):
        assert principal_angles(d.detach(), s.detach()).max() < 1e-8
    # Same trajectory under GD (equivariant to the basis choice inside the subspaces).
    for model in (dense, sparse):
        opt = torch.optim.SGD([{"params": model.outer_parameters(), "lr": 1e-2},
                               {"params": model.inner_parameters(), "lr": 1.0}])
        for _ in range(200):
            opt.zero_grad()
            problem.loss(model).backward()
            opt.step()
    torch.testing.assert_close(sparse.product(), dense.product(), rtol=1e-6, atol=1e-12)
    assert problem.recovery_error(sparse) < 0.95  # it left the initialization


def test_compressed_factorization_rejects_bad_rank() -> None:
    index = ObservedIndex(torch.tensor([0, 1]), torch.tensor([1, 0]), (3, 4))
    with pytest.raises(ValueError, match="rank"):
        compressed_factorization(index, torch.ones(2), rank=2)


def test_sparse_seeds_of_numpy_type_are_used_and_bad_ones_named() -> None:
    """random_observations(seed=np.int64(1)) was a TypeError of torch.Generator.manual_seed,
    seed=-1 in compressed_factorization numpy's 'expected non-negative integer'."""
    torch.testing.assert_close(random_observations(8, 6, 20, seed=np.int64(1)),
                               random_observations(8, 6, 20, seed=1))
    index = ObservedIndex(*random_observations(8, 6, 20, seed=0), (8, 6))
    values = torch.linspace(-1, 1, 20, dtype=torch.float64)
    torch.testing.assert_close(
        compressed_factorization(index, values, 2, seed=np.int64(3)).product(),
        compressed_factorization(index, values, 2, seed=3).product())
    for bad in (1.5, -1, 2**32, True):
        message = rf"seed must be an integer in \[0, 2\*\*32\), got {bad!r}"
        with pytest.raises(ValueError, match=message):
            random_observations(8, 6, 20, seed=bad)
        with pytest.raises(ValueError, match=message):
            compressed_factorization(index, values, 2, seed=bad)


def test_random_observations_distinct_sorted_and_excluding() -> None:
    rows, cols = random_observations(50, 40, 300, seed=0)
    flat = rows * 40 + cols
    assert flat.numel() == 300 == torch.unique(flat).numel()
    assert bool((flat[1:] > flat[:-1]).all())
    r2, c2 = random_observations(50, 40, 200, seed=1, exclude=flat)
    assert not np.intersect1d((r2 * 40 + c2).numpy(), flat.numpy()).size
    dense_rows, _ = random_observations(5, 4, 18, seed=0)
    assert dense_rows.numel() == 18


def test_random_observations_excludes_unsorted_or_repeated_positions() -> None:
    # exclude was searched as if sorted: [2, 0, 1] let position 0 through; repeats shrank the
    # count allowed below what is free
    for exclude in ([2, 0, 1], [0, 1, 2, 2, 0]):
        rows, cols = random_observations(3, 3, 6, seed=0, exclude=torch.tensor(exclude))
        assert sorted((rows * 3 + cols).tolist()) == [3, 4, 5, 6, 7, 8]
    for exclude in ([9], [-1]):
        with pytest.raises(ValueError, match=r"exclude must hold flat indices in \[0, 9\)"):
            random_observations(3, 3, 2, exclude=torch.tensor(exclude))


class TransposedIsometry:
    """Qᵀ of a :class:`RandomDCT` Q, with the same interface."""

    def __init__(self, q: RandomDCT) -> None:
        self.q, self.shape = q, q.shape[::-1]

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return self.q.rmatmul(x)

    def rmatmul(self, y: np.ndarray) -> np.ndarray:
        return self.q.matmul(y)

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.q.entries(cols, rows)


def _transposed(problem: MatrixCompletion) -> MatrixCompletion:
    """The same completion problem for Φᵀ: target transposed, Ω transposed."""
    target = LowRankMatrix(problem.target.right, problem.target.left)
    return MatrixCompletion(target, problem.cols, problem.rows)


def _captured(basis: torch.Tensor, matrix: torch.Tensor) -> float:
    """‖P matrix‖²_F / ‖matrix‖²_F, P the projector onto span(basis)."""
    q = torch.linalg.qr(basis.detach().double()).Q
    norm = torch.linalg.matrix_norm
    return float(norm(q.T @ matrix) ** 2 / norm(matrix) ** 2)


def _bases(model: DeepFactorization) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) of a compressed model [Vᵀ, εI, …, εI, U]."""
    return model.factors[-1].detach(), model.factors[0].detach().T


def test_sparse_compressed_keeps_both_gradient_spaces_under_partial_observations() -> None:
    """Ω 40 %: E = P_Ω(ε^L Q − Φ)/|Ω| has full rank. For every shape span(U) ⊇ U_E[:, :r̂] and
    span(V) ⊇ V_E[:, :r̂]."""
    rank, eps = 2, 1e-3
    for m, n in ((36, 14), (14, 36), (20, 20)):
        problem = MatrixCompletion.random(random_low_rank(m, n, 3, seed=m), 0.4, seed=n)
        q = RandomDCT(m, n, np.random.default_rng(1))
        model = compressed_factorization(problem.observed_index, problem.values, rank, 3, eps,
                                         dtype=torch.float64, end_to_end=q)
        observed = torch.zeros(m, n, dtype=torch.float64)
        observed[problem.rows, problem.cols] = 1.0
        grad = observed * (eps**3 * torch.from_numpy(q.dense()) - problem.target.dense())
        assert int(torch.linalg.matrix_rank(grad)) == min(m, n)
        u_e, _, vh_e = torch.linalg.svd(grad)
        u, v = _bases(model)
        assert principal_angles(u_e[:, :rank], u).max() < 1e-6, (m, n)
        assert principal_angles(vh_e[:rank].T, v).max() < 1e-6, (m, n)


def test_sparse_compressed_tall_and_transposed_completion_agree() -> None:
    """A 40×20 completion problem and its transpose (target and Ω transposed).

    Independent draws of Q (seeds 0–2): the mean fraction of Φ's column space captured at
    initialization by span(U) (40×20) and by the transposed problem's span(V) agree within
    0.05, likewise Φ's row space. The same Q transposed: GD with γ = 0.01 takes the same number
    of steps to recovery error 1e-2 (within 10 %)."""
    rank, eps = 2, 1e-2
    problem = MatrixCompletion.random(random_low_rank(40, 20, rank, seed=0), 0.5, seed=10)
    flipped = _transposed(problem)
    phi = problem.target.dense()
    fractions = np.zeros((2, 2))
    for seed in range(3):
        u, v = _bases(compressed_factorization(problem.observed_index, problem.values, rank, 3,
                                               eps, seed, torch.float64))
        u_t, v_t = _bases(compressed_factorization(flipped.observed_index, flipped.values, rank,
                                                   3, eps, seed, torch.float64))
        fractions += [[_captured(u, phi), _captured(v, phi.T)],
                      [_captured(v_t, phi), _captured(u_t, phi.T)]]
    fractions /= 3
    assert np.abs(fractions[0] - fractions[1]).max() < 0.05, fractions
    q = RandomDCT(40, 20, np.random.default_rng(3))
    steps: list[int] = []
    for prob, isometry in ((flipped, TransposedIsometry(q)), (problem, q)):
        model = compressed_factorization(prob.observed_index, prob.values, rank, 3, eps,
                                         dtype=torch.float64, end_to_end=isometry)
        budget = int(1.1 * steps[0]) + 1 if steps else 4000  # fail fast once 10 % over
        history = fit(model, prob, "gd", lr=10.0, gamma=0.01, steps=budget, target_error=1e-2,
                      eval_every=1, progress=False)
        reached = history.first_below(1e-2)
        assert reached is not None, (prob.shape, steps)
        steps.append(reached[0])
    assert abs(steps[0] - steps[1]) <= 0.1 * min(steps), steps


# Which of this module's checks each wrong construction (tests/conftest.py) fails.
SHAPE_CHECKS = {
    "partial-observations":
        test_sparse_compressed_keeps_both_gradient_spaces_under_partial_observations,
    "transposed-completion": test_sparse_compressed_tall_and_transposed_completion_agree,
}
FAILS_WITH = {
    "input-side": {"partial-observations", "transposed-completion"},
    "stacked": {"partial-observations", "transposed-completion"},
}


@pytest.mark.parametrize("construction", sorted(FAILS_WITH))
def test_wrong_constructions_fail_the_shape_checks(construction: str,
                                                   wrong_construction) -> None:
    assert wrong_construction(construction, SHAPE_CHECKS) == FAILS_WITH[construction]
