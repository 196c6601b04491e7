import numpy as np
import pytest
import torch

from deeplora.factorization import gaussian_, init_, orthogonal_, scaled_identity_, singular_values


@pytest.mark.parametrize("shape", [(5, 8), (8, 5), (6, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthogonal_singular_values_equal_scale(shape, dtype):
    w = orthogonal_(torch.empty(shape, dtype=dtype), 1e-3, torch.Generator().manual_seed(0))
    s = singular_values(w)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert s.shape == (min(shape),)
    torch.testing.assert_close(s, torch.full_like(s, 1e-3), rtol=tol, atol=0)


def test_orthogonal_is_seeded():
    a = orthogonal_(torch.empty(4, 4), 1.0, torch.Generator().manual_seed(3))
    b = orthogonal_(torch.empty(4, 4), 1.0, torch.Generator().manual_seed(3))
    c = orthogonal_(torch.empty(4, 4), 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gaussian_and_identity():
    w = gaussian_(torch.empty(200, 400, dtype=torch.float64), 2.0, torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx(2.0 / 20.0, rel=0.02)
    torch.testing.assert_close(scaled_identity_(torch.empty(3, 3), 0.5), 0.5 * torch.eye(3))


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="init scale"):
        orthogonal_(torch.empty(2, 2), scale)


def test_numpy_float_scale_is_accepted_bool_refused():
    """np.float32(0.5) (a float32 grid) was refused as 'not a finite number'; True was 1.0."""
    torch.testing.assert_close(scaled_identity_(torch.empty(2, 2), np.float32(0.5)),
                               0.5 * torch.eye(2))
    with pytest.raises(ValueError, match="init scale must be a finite number > 0, got True"):
        orthogonal_(torch.empty(2, 2), True)


def test_bad_shapes_and_names():
    with pytest.raises(ValueError, match="2-D"):
        orthogonal_(torch.empty(2, 2, 2))
    with pytest.raises(ValueError, match="square"):
        scaled_identity_(torch.empty(2, 3))
    with pytest.raises(ValueError, match="unknown init"):
        init_(torch.empty(2, 2), "xavier")
