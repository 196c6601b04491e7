import numpy as np
import pytest
import torch

from deeplora.factorization import (
    invariant_subspace_deviation,
    largest_principal_angle_cos,
    largest_repeated_cluster,
    numerical_rank,
    orthonormal_union,
    principal_angles,
    singular_values,
    top_singular_subspaces,
)


def test_principal_angles_known_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[1.0], [0.0], [1.0]])
    assert principal_angles(a, b) == pytest.approx([np.pi / 4])
    assert principal_angles(a, a * 3) == pytest.approx([0.0, 0.0], abs=1e-7)
    with pytest.raises(ValueError, match="n×p"):
        principal_angles(a, torch.ones(4, 1))


def test_numerical_rank_and_cos():
    x = torch.diag(torch.tensor([1.0, 1e-2, 1e-17], dtype=torch.float64))
    assert numerical_rank(x) == 2
    assert numerical_rank(x, atol=1e-1) == 1
    # float64 eps by default also for float32: a float32 rank-2 product reads as full rank
    # (rounding ~1e-7·σ₁), float32's eps (NumPy's default for it) gives 2
    product = (torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
               @ torch.randn(2, 8, generator=torch.Generator().manual_seed(1)))
    assert numerical_rank(product) > 2
    assert numerical_rank(product, rtol=8 * torch.finfo(torch.float32).eps) == 2
    # atol = NaN gave rank 0 (every σ > NaN is False), a negative or NaN rtol the count of σ > 0
    for name in ("atol", "rtol"):
        for tol in (-1e-3, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got {tol}"):
                numerical_rank(x, **{name: tol})
    assert largest_principal_angle_cos(x, 2 * x, 2) == pytest.approx(1.0)


def test_largest_repeated_cluster():
    s = torch.tensor([3.0, 1.0, 1.0 + 1e-12, 1.0 - 1e-12, 0.5], dtype=torch.float64)
    assert largest_repeated_cluster(s, 1e-9) == 3
    assert largest_repeated_cluster(s, 1e-15) == 1
    assert largest_repeated_cluster(s, 0) == 1
    # rtol < 0 was an IndexError past the end; NaN counted every value as one cluster (5)
    for rtol in (-0.1, float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match=f"rtol must be a finite number >= 0, got {rtol}"):
            largest_repeated_cluster(s, rtol)


def test_orthonormal_union_is_scale_invariant():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 2, dtype=torch.float64, generator=gen)
    b = torch.randn(20, 2, dtype=torch.float64, generator=gen)
    q = orthonormal_union(a, 1e-9 * b)
    torch.testing.assert_close(q.T @ q, torch.eye(4, dtype=torch.float64))
    assert principal_angles(q, torch.cat([a, b], 1)).max() < 1e-8


def test_deviation_zero_for_block_form_and_positive_otherwise():
    gen = torch.Generator().manual_seed(1)
    d, p, eps = 8, 2, 1e-3
    orth = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(d, p, dtype=torch.float64, generator=gen)).Q
    u = orth @ v
    inner = torch.randn(p, p, dtype=torch.float64, generator=gen)
    block = u @ inner @ v.T + 0.7 * eps * orth @ (torch.eye(d, dtype=torch.float64) - v @ v.T)
    assert invariant_subspace_deviation(block, eps * orth, v, eps) < 1e-12
    off = block + 1e-3 * torch.randn(d, d, dtype=torch.float64, generator=gen)
    assert invariant_subspace_deviation(off, eps * orth, v, eps) > 1e-5


def test_deviation_with_a_basis_of_the_whole_space_and_bad_bases():
    # 2r = n: every layer has the block form (no complement); the best-fitting ρ was 0/0 of
    # round-off and the deviation came out O(1) at random
    gen = torch.Generator().manual_seed(2)
    d, eps = 6, 1e-2
    orth = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen)).Q
    v = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen)).Q
    layer = torch.randn(d, d, dtype=torch.float64, generator=gen)
    assert invariant_subspace_deviation(layer, eps * orth, v, eps) < 1e-12
    assert invariant_subspace_deviation(layer.float(), eps * orth.float(), v, eps) < 1e-6
    with pytest.raises(ValueError, match="orthonormal columns"):
        invariant_subspace_deviation(layer, eps * orth, 3 * v[:, :2], eps)
    with pytest.raises(ValueError, match="layer_at_init / scale"):
        invariant_subspace_deviation(layer, eps * orth, v[:, :2], 10 * eps)
    with pytest.raises(ValueError, match="shapes"):
        invariant_subspace_deviation(layer, eps * orth, v[:5, :2], eps)


def test_top_singular_subspaces_refuses_a_rank_below_one():
    # rank -1 sliced u[:, :-1]: every direction but the last, and a cosine of 1 for any pair
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for rank in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"rank must be an integer >= 1, got {rank!r}"):
            top_singular_subspaces(x, rank)
        with pytest.raises(ValueError, match="rank must be an integer >= 1"):
            largest_principal_angle_cos(x, x.flip(0), rank)
    u, s, v = top_singular_subspaces(x, np.int64(2))
    assert u.shape == (6, 2) and s.shape == (2,) and v.shape == (5, 2)
    assert top_singular_subspaces(x, 9)[0].shape == (6, 5)  # capped at min(m, n), as documented


def test_a_vector_is_refused_as_no_matrix():
    """A 1-D tensor was an IndexError in singular_values and numerical_rank, a RuntimeError of
    torch in top_singular_subspaces."""
    for call in (singular_values, numerical_rank, lambda v: top_singular_subspaces(v, 1)):
        with pytest.raises(ValueError, match=r"matrix must be a 2-D tensor, got \(4,\)"):
            call(torch.ones(4))
