import numpy as np
import pytest
import torch

from deeplora.factorization import DeepFactorization


def make(depth=3, width=None, dtype=torch.float64):
    return DeepFactorization(7, 5, depth, width, scale=0.7, dtype=dtype,
                             generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_shapes_and_product(depth):
    model = make(depth)
    assert [tuple(f.shape) for f in model.factors] == (
        [(7, 5)] + [(7, 7)] * (depth - 2) + [(7, 7)])
    assert model.shape == (7, 5) and model.width == 7 and model.depth == depth
    expected = model.factors[0]
    for f in model.factors[1:]:
        expected = f @ expected
    torch.testing.assert_close(model.product(), expected)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(model.matmul(x), expected @ x)


@pytest.mark.parametrize("width", [2, None])
def test_entries_gather_and_dense_paths_agree(width):
    model = make(3, width)
    rows, cols = torch.tensor([0, 6, 3, 3]), torch.tensor([4, 0, 2, 1])
    torch.testing.assert_close(model.entries(rows, cols), model.product()[rows, cols])


def test_gradients_match_finite_differences():
    model = make(3, 4)
    target = torch.randn(7, 5, dtype=torch.float64)

    def loss(*factors):
        x = factors[0]
        for f in factors[1:]:
            x = f @ x
        return 0.5 * ((x - target) ** 2).sum()

    factors = tuple(f.detach().clone().requires_grad_() for f in model.factors)
    assert torch.autograd.gradcheck(loss, factors)
    (0.5 * ((model.product() - target) ** 2).sum()).backward()
    expected = torch.autograd.grad(loss(*factors), factors)
    for param, grad in zip(model.factors, expected, strict=False):
        torch.testing.assert_close(param.grad, grad)


def test_outer_and_inner_parameters():
    model = make(4)
    assert model.outer_parameters() == [model.factors[0], model.factors[3]]
    assert model.inner_parameters() == [model.factors[1], model.factors[2]]
    assert make(2).inner_parameters() == []


def test_bad_input():
    with pytest.raises(ValueError, match="depth"):
        DeepFactorization(3, 3, depth=1)
    with pytest.raises(ValueError, match="width"):
        DeepFactorization(3, 3, width=0)
    with pytest.raises(ValueError, match="chain"):
        DeepFactorization.from_factors([torch.zeros(2, 3), torch.zeros(4, 5)])


@pytest.mark.parametrize(("factors", "message"), [
    ([torch.zeros(3), torch.zeros(4, 3)], r"factors\[0\] \(W_1\) must be a 2-D tensor, got \(3,\)"),
    ([torch.zeros(3, 4), torch.zeros(3)], r"factors\[1\] \(W_2\) must be a 2-D tensor, got \(3,\)"),
    ([torch.zeros(2, 3, 4), torch.zeros(4, 3)], r"factors\[0\] .* got \(2, 3, 4\)"),
    ([np.zeros((3, 4)), torch.zeros(4, 3)], r"factors\[0\] .* got ndarray"),
])
def test_from_factors_names_a_factor_that_is_no_matrix(factors, message):
    """A 1-D factor was an IndexError (tuple index out of range), a 3-D one 'do not chain'."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        DeepFactorization.from_factors(factors)


def test_numpy_integer_sizes_and_scale_are_accepted_bools_refused():
    """DeepFactorization(np.int64(7), …) and scale=np.float32(0.7) were refused as 'not an
    integer' / 'not a finite number'; rows=True was taken as 1."""
    model = DeepFactorization(np.int64(7), np.int32(5), np.int64(3), np.int64(6),
                              scale=np.float32(0.5))
    assert (model.shape, model.depth, model.width) == ((7, 5), 3, 6)
    assert type(model.scale) is float and model.scale == 0.5
    for args in ((True, 5), (7, 5, True), (7, 5, 3, 6.0)):
        with pytest.raises(ValueError, match="must be an integer"):
            DeepFactorization(*args)


def test_from_factors_stores_contiguous_parameters():
    """Transposed (strided) inputs are copied contiguously: fused Adam reads a grad in its
    parameter's layout, and ``fit`` hands it contiguous grads."""
    first, last = torch.randn(5, 3, dtype=torch.float64).T, torch.randn(3, 4, dtype=torch.float64).T
    assert not first.is_contiguous()
    model = DeepFactorization.from_factors([first, last], init="given")
    assert all(f.is_contiguous() for f in model.factors)
    torch.testing.assert_close(model.product(), last @ first)
