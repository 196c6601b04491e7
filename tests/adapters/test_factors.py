import pytest
import torch

from deeplora.adapters import DeepLoraConfig
from deeplora.adapters.factors import adapter_dtype, check_rank, init_factors


def svals(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix.detach().double())


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_orthogonal_init_has_every_singular_value_eps(depth: int) -> None:
    eps = 1e-2
    factors = init_factors(12, 20, DeepLoraConfig(r=4, depth=depth, init_scale=eps),
                           dtype=torch.float64)
    shapes = [tuple(f.shape) for f in factors.factors]
    assert shapes == [(4, 20)] + [(4, 4)] * (depth - 2) + [(12, 4)]
    for factor in factors.factors:
        torch.testing.assert_close(svals(factor), torch.full((4,), eps, dtype=torch.float64))
    delta = svals(factors.product())
    torch.testing.assert_close(delta[:4], torch.full((4,), eps**depth, dtype=torch.float64))
    assert delta[4:].max() < 1e-12 * eps**depth


@pytest.mark.parametrize(("init", "gaussian"), [("lora", "B"), ("lora-hu", "A")])
def test_lora_inits_put_the_gaussian_on_the_documented_side(init: str, gaussian: str) -> None:
    """Rectangular layer (d_out 64 ≠ d_in 128): "lora" (the authors') draws B (d_out×r)
    ~ N(0, 1) and A = 0, "lora-hu" (Hu et al.) the reverse."""
    config = DeepLoraConfig(r=8, depth=2, init=init)
    a, b = (f.detach() for f in init_factors(64, 128, config).factors)
    assert a.shape == (8, 128) and b.shape == (64, 8)
    drawn, zero = (b, a) if gaussian == "B" else (a, b)
    assert abs(float(drawn.mean())) < 0.1 and abs(float(drawn.std()) - 1.0) < 0.1
    assert torch.count_nonzero(zero) == 0


def test_compressed_placeholder_is_orthonormal_outside_eps_identity_inside() -> None:
    eps = 1e-3
    factors = init_factors(10, 6, DeepLoraConfig(r=4, depth=3, init="compressed",
                                                 init_scale=eps), dtype=torch.float64).factors
    assert len(factors) == 5
    first, *inner, last = factors
    torch.testing.assert_close(first @ first.T, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(last.T @ last, torch.eye(4, dtype=torch.float64))
    for factor in inner:
        torch.testing.assert_close(factor, eps * torch.eye(4, dtype=torch.float64))


def test_rank_must_fit_the_layer() -> None:
    check_rank(6, 6, 9)
    for r in (0, 7):
        with pytest.raises(ValueError, match=r"= \[1, 6\] for q \(d_out=6, d_in=9\)"):
            check_rank(r, 6, 9, "q")


def test_adapters_stay_fp32_on_half_bases() -> None:
    assert adapter_dtype(torch.float16) == adapter_dtype(torch.bfloat16) == torch.float32
    assert adapter_dtype(torch.float64) == torch.float64
