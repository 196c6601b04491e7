from collections.abc import Callable
from pathlib import Path

import pytest
import scipy.linalg
import torch
from peft import PeftModel, get_peft_model
from transformers.pytorch_utils import Conv1D

from deeplora.adapters import (
    DeepLoraConfig,
    adapter_factorizations,
    adapter_param_groups,
    compress_adapters,
    compressed_factors,
)
from deeplora.factorization.init import orthogonal_

from .helpers import TINY, inputs_for, logits, tiny_bert

F64 = torch.float64


def top(matrix: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, _, vh = torch.linalg.svd(matrix.double())
    return u[:, :k], vh[:k].T


def outside(basis: torch.Tensor, vectors: torch.Tensor) -> float:
    """Norm of the part of ``vectors`` outside the span of ``basis`` (orthonormal columns)."""
    return float(torch.linalg.matrix_norm(vectors - basis @ (basis.T @ vectors)))


def naive_compression(d_out: int, d_in: int, rank: int, depth: int, eps: float,
                      loss: Callable[[torch.Tensor], torch.Tensor]):
    """The paper's construction on materialized full-width factors (width max(d_in, d_out)).

    Returns (V₁ (d_in×r), U (d_out×r), G = ∂ℒ/∂ΔW at ΔW(0), Q = W_{L:1}(0)/ε^L).
    """
    width = max(d_out, d_in)
    shapes = [(width, d_in)] + [(width, width)] * (depth - 2) + [(d_out, width)]
    generator = torch.Generator().manual_seed(7)
    wide = [orthogonal_(torch.empty(s, dtype=F64), eps, generator).requires_grad_()
            for s in shapes]
    product = torch.linalg.multi_dot(wide[::-1]) if depth > 2 else wide[1] @ wide[0]
    (grad_first,) = torch.autograd.grad(loss(product), wide[0])
    u_g, v_g = top(grad_first, rank // 2)
    preimage = wide[0].detach().T @ u_g
    # span(V_G) + span(W₁ᵀU_G) as the complement of the intersection of the two complements
    both_complements = scipy.linalg.null_space(torch.cat([v_g, preimage], 1).T.numpy())
    v1 = torch.from_numpy(scipy.linalg.null_space(both_complements.T))
    u = product.detach() @ v1 / eps**depth
    delta0 = product.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(delta0), delta0)
    return v1, u, grad, product.detach() / eps**depth


@pytest.mark.parametrize(("d_out", "d_in"), [(6, 6), (9, 5), (5, 9)])
@pytest.mark.parametrize("depth", [2, 3])
def test_memory_light_construction_matches_the_naive_wide_one(
    d_out: int, d_in: int, depth: int
) -> None:
    eps, rank = 1e-3, 4
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(d_out, d_in, generator=generator, dtype=F64)
    data = torch.randn(d_in, 7, generator=generator, dtype=F64)

    def loss(delta: torch.Tensor) -> torch.Tensor:
        residual = (delta - target) @ data
        return 0.5 * residual.square().sum() + torch.tanh(3 * delta).sum()

    v1, u, grad, isometry = naive_compression(d_out, d_in, rank, depth, eps, loss)
    first, *inner, last = compressed_factors(grad, rank, depth, eps, isometry=isometry)
    assert len(inner) == depth
    for factor in inner:
        torch.testing.assert_close(factor, eps * torch.eye(rank, dtype=F64))
    torch.testing.assert_close(first.T @ first, v1 @ v1.T, atol=1e-9, rtol=0)  # same V₁ span
    torch.testing.assert_close(last @ first, u @ v1.T, atol=1e-9, rtol=0)  # same U (up to basis)


@pytest.mark.parametrize(("d_out", "d_in"), [(8, 8), (12, 6), (6, 12)])
def test_sampled_isometry_keeps_the_gradient_directions(d_out: int, d_in: int) -> None:
    rank, depth, eps = 4, 3, 1e-3
    grad = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(1), dtype=F64)
    factors = compressed_factors(grad, rank, depth, eps, generator=torch.Generator().manual_seed(2))
    v1, u = factors[0].T, factors[-1]
    torch.testing.assert_close(v1.T @ v1, torch.eye(rank, dtype=F64))
    left, right = top(grad, rank // 2)
    assert outside(v1, right) < 1e-10
    if d_out <= d_in:  # Q Qᵀ = I: U = Q V₁ holds Q Qᵀ U_G = U_G
        assert outside(torch.linalg.qr(u).Q, left) < 1e-10
    if d_out >= d_in:  # QᵀQ = I: U has orthonormal columns
        torch.testing.assert_close(u.T @ u, torch.eye(rank, dtype=F64))
    again = compressed_factors(grad, rank, depth, eps, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(factors, again, strict=True))


def test_construction_refuses_odd_or_oversized_rank() -> None:
    for rank in (3, 8):
        with pytest.raises(ValueError, match="rank must be even"):
            compressed_factors(torch.ones(6, 6), rank, 3, 1e-3)


def true_gradients(model: PeftModel, loss: Callable[[PeftModel], torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """∂ℒ/∂ΔW (d_out×d_in) of every adapted layer, from the base weights' own gradients."""
    layers = {n: model.get_base_model().get_submodule(n).get_base_layer()
              for n in adapter_factorizations(model)}
    for layer in layers.values():
        layer.weight.requires_grad_(True)
    loss(model).backward()
    grads = {}
    for name, layer in layers.items():
        grads[name] = layer.weight.grad.T if isinstance(layer, Conv1D) else layer.weight.grad
        layer.weight.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(("kind", "targets"), [("bert", "query-value"), ("gpt2", "all-linear")])
def test_compress_adapters_builds_narrow_factors_from_one_gradient(
    kind: str, targets: str, tmp_path: Path
) -> None:
    rank, depth, eps = 4, 3, 1e-3
    torch.manual_seed(0)
    model = get_peft_model(TINY[kind](), DeepLoraConfig(r=rank, depth=depth, init_scale=eps,
                                                        target_modules=targets))
    inputs = inputs_for(model)
    reference = logits(model.get_base_model(), inputs)

    def loss(m: PeftModel) -> torch.Tensor:
        return m(**inputs).loss

    grads = true_gradients(model, loss)
    source = inputs if kind == "bert" else loss  # a batch, or a loss function
    names = compress_adapters(model, source, generator=torch.Generator().manual_seed(3))

    assert names == sorted(grads)
    assert model.peft_config["default"].init == "compressed"
    assert all(p.grad is None for p in model.parameters())
    for name, factorization in adapter_factorizations(model).items():
        first, *inner, last = factorization.factors
        assert len(inner) == depth
        assert all(p.requires_grad and p.dtype == torch.float32 for p in factorization.factors)
        torch.testing.assert_close(inner[0], eps * torch.eye(rank))
        left, right = top(grads[name], rank // 2)
        v1 = first.detach().double().T
        assert outside(v1, right) < 1e-4
        d_out, d_in = grads[name].shape
        if d_out <= d_in:
            assert outside(torch.linalg.qr(last.detach().double()).Q, left) < 1e-4
        else:
            torch.testing.assert_close(last.T @ last, torch.eye(rank), atol=1e-5, rtol=0)
    compressed = logits(model, inputs)
    torch.testing.assert_close(compressed, reference, atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(TINY[kind](), tmp_path)
    assert loaded.peft_config["default"].init == "compressed"
    assert torch.equal(logits(loaded, inputs), compressed)


def test_compress_refuses_lora_and_odd_rank_and_unused_layers() -> None:
    inputs = inputs_for(tiny_bert())
    for config in (DeepLoraConfig(r=4, depth=2, init="lora"), DeepLoraConfig(r=3)):
        model = get_peft_model(tiny_bert(), config)
        with pytest.raises(ValueError, match="compression needs"):
            compress_adapters(model, inputs)
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=4))

    def unrelated(m: PeftModel) -> torch.Tensor:
        m(**inputs)
        return torch.ones((), requires_grad=True) * 2

    with pytest.raises(ValueError, match="does not depend on the adapted layers"):
        compress_adapters(model, unrelated)
    assert model.peft_config["default"].init == "orthogonal"


def test_param_groups_give_outer_factors_gamma_lr() -> None:
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=4, init="compressed",
                                                       modules_to_save=["classifier"]))
    outer, inner = adapter_param_groups(model, lr=1e-2, gamma=0.01)
    assert (outer["name"], outer["lr"]) == ("outer", 1e-4)
    assert (inner["name"], inner["lr"]) == ("inner", 1e-2)
    factorizations = adapter_factorizations(model).values()
    assert {id(p) for p in outer["params"]} == {
        id(p) for f in factorizations for p in (f.factors[0], f.factors[-1])}
    inner_ids = {id(p) for p in inner["params"]}
    assert all(id(p) in inner_ids for f in factorizations for p in f.factors[1:-1])
    assert len(inner["params"]) == 4 * 3 + 2  # L = 3 inner factors per layer, classifier w and b
