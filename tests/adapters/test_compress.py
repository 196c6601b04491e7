import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import scipy.linalg
import torch
from peft import PeftModel, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from deeplora.adapters import (
    DeepLoraConfig,
    adapter_deltas,
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
    """The paper's construction on materialized full-width factors (width max(d_in, d_out)):
    from the input side (W_1) when d_out <= d_in, on the transposed layer (from W_L) otherwise.

    Returns (V₁ (d_in×r), U (d_out×r), G = ∂ℒ/∂ΔW at ΔW(0), Q = W_{L:1}(0)/ε^L).
    """
    width = max(d_out, d_in)
    shapes = [(width, d_in)] + [(width, width)] * (depth - 2) + [(d_out, width)]
    generator = torch.Generator().manual_seed(7)
    wide = [orthogonal_(torch.empty(s, dtype=F64), eps, generator).requires_grad_()
            for s in shapes]
    product = torch.linalg.multi_dot(wide[::-1]) if depth > 2 else wide[1] @ wide[0]
    tall = d_out > d_in
    outer = wide[-1] if tall else wide[0]
    (grad_outer,) = torch.autograd.grad(loss(product), outer)
    u_g, v_g = top(grad_outer, rank // 2)
    # tall: span(U_H) + span(W_L V_H); wide: span(V_G) + span(W₁ᵀU_G), each as the complement
    # of the intersection of the two complements (the authors' way)
    parts = [u_g, outer.detach() @ v_g] if tall else [v_g, outer.detach().T @ u_g]
    both_complements = scipy.linalg.null_space(torch.cat(parts, 1).T.numpy())
    basis = torch.from_numpy(scipy.linalg.null_space(both_complements.T))
    if tall:
        u, v1 = basis, product.detach().T @ basis / eps**depth
    else:
        u, v1 = product.detach() @ basis / eps**depth, basis
    delta0 = product.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(delta0), delta0)
    return v1, u, grad, product.detach() / eps**depth


def span(vectors: torch.Tensor) -> torch.Tensor:
    """Orthogonal projector onto the column span of ``vectors`` (full column rank)."""
    q = torch.linalg.qr(vectors.double()).Q
    return q @ q.T


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
    torch.testing.assert_close(span(first.T), span(v1), atol=1e-9, rtol=0)  # same V₁ span
    torch.testing.assert_close(span(last), span(u), atol=1e-9, rtol=0)  # same U span
    torch.testing.assert_close(last @ first, u @ v1.T, atol=1e-9, rtol=0)  # same ΔW(0)/ε^L


@pytest.mark.parametrize(("d_out", "d_in"), [(8, 8), (12, 6), (6, 12)])
def test_sampled_isometry_keeps_the_gradient_directions(d_out: int, d_in: int) -> None:
    rank, depth, eps = 4, 3, 1e-3
    grad = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(1), dtype=F64)
    factors = compressed_factors(grad, rank, depth, eps, generator=torch.Generator().manual_seed(2))
    v1, u = factors[0].T, factors[-1]
    # the larger side's basis is orthonormal, the other is its image under Q or Qᵀ
    orthonormal = u if d_out > d_in else v1
    torch.testing.assert_close(orthonormal.T @ orthonormal, torch.eye(rank, dtype=F64))
    left, right = top(grad, rank // 2)  # both of G's top singular spaces are kept
    assert outside(torch.linalg.qr(v1).Q, right) < 1e-10
    assert outside(torch.linalg.qr(u).Q, left) < 1e-10
    again = compressed_factors(grad, rank, depth, eps, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(factors, again, strict=True))


def captured_gradient(factors: list[torch.Tensor], grad: torch.Tensor) -> float:
    """‖P_U G P_V‖_F / ‖G‖_F for the compressed layer [V₁ᵀ, …, U]."""
    return float(torch.linalg.matrix_norm(span(factors[-1]) @ grad.double() @ span(factors[0].T))
                 / torch.linalg.matrix_norm(grad.double()))


def single_layer_gradient(d_out: int, d_in: int, inputs: torch.Tensor, weights: torch.Tensor
                          ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Compress a Deep LoRA on one Linear(d_in, d_out) under ℒ = Σ (y ⊙ weights), y the layer's
    output for ``inputs``: G = weightsᵀ inputs. Returns (the layer's factors, G)."""
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(d_in, d_out, bias=False)),
                           DeepLoraConfig(r=4, depth=3, init_scale=1e-3, target_modules=["0"]))
    compress_adapters(model, lambda m: torch.sum(m(inputs) * weights),
                      generator=torch.Generator().manual_seed(1))
    (factorization,) = adapter_factorizations(model).values()
    return [f.detach().double() for f in factorization.factors], weights.T @ inputs


def test_tall_layer_follows_its_gradient_as_well_as_the_transposed_layer() -> None:
    """A d_out > d_in layer (48×12) and the transposed layer (12×48) under the transposed
    gradient: ‖P_U G P_V‖/‖G‖ at initialization at least that of the transposed layer − 0.05,
    both through :func:`compress_adapters` (independent Haar Q) and with Q transposed."""
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(3, 12, generator=generator)  # G = weightsᵀ inputs has rank 3 > r/2
    weights = torch.randn(3, 48, generator=generator)
    tall, grad = single_layer_gradient(48, 12, inputs, weights)
    wide, grad_t = single_layer_gradient(12, 48, weights, inputs)
    torch.testing.assert_close(grad_t, grad.T)
    assert captured_gradient(tall, grad) >= captured_gradient(wide, grad_t) - 0.05
    q = orthogonal_(torch.empty(48, 12, dtype=F64), 1.0, torch.Generator().manual_seed(2))
    tall = compressed_factors(grad.double(), 4, 3, 1e-3, isometry=q)
    wide = compressed_factors(grad_t.double(), 4, 3, 1e-3, isometry=q.T)
    assert captured_gradient(tall, grad) >= captured_gradient(wide, grad_t) - 0.05


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
        stored_transposed = isinstance(layer, Conv1D | torch.nn.Embedding)
        grads[name] = layer.weight.grad.T if stored_transposed else layer.weight.grad
        layer.weight.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(("kind", "targets"), [("bert", "query-value"), ("gpt2", "all-linear"),
                                               ("bert", "all-dense")])
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
        assert outside(torch.linalg.qr(first.detach().double().T).Q, right) < 1e-4
        assert outside(torch.linalg.qr(last.detach().double()).Q, left) < 1e-4
        d_out, d_in = grads[name].shape
        orthonormal = last if d_out > d_in else first.T
        torch.testing.assert_close(orthonormal.T @ orthonormal, torch.eye(rank), atol=1e-5,
                                   rtol=0)
    compressed = logits(model, inputs)
    torch.testing.assert_close(compressed, reference, atol=1e-5, rtol=0)

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(TINY[kind](), tmp_path)
    assert loaded.peft_config["default"].init == "compressed"
    torch.testing.assert_close(logits(loaded, inputs), compressed)


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
    model.merge_adapter()  # new factors under a merged ΔW would break a later unmerge
    with pytest.raises(ValueError, match="unmerge_adapter"):
        compress_adapters(model, inputs)
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


# Which of this module's checks each wrong construction (tests/conftest.py) fails.
SHAPE_CHECKS = {
    "naive-wide-construction": lambda: [
        test_memory_light_construction_matches_the_naive_wide_one(d_out, d_in, depth)
        for d_out, d_in in ((6, 6), (9, 5), (5, 9)) for depth in (2, 3)],
    "gradient-directions": lambda: [
        test_sampled_isometry_keeps_the_gradient_directions(d_out, d_in)
        for d_out, d_in in ((8, 8), (12, 6), (6, 12))],
    "tall-vs-transposed": test_tall_layer_follows_its_gradient_as_well_as_the_transposed_layer,
    "adapter-construction": lambda: [
        test_compressed_adapter_is_the_documented_construction_of_its_gradient(d_out, d_in)
        for d_out, d_in in ((6, 10), (8, 8), (10, 6))],
}
ALL_CHECKS = {"naive-wide-construction", "gradient-directions", "tall-vs-transposed",
              "adapter-construction"}
FAILS_WITH = {"input-side": ALL_CHECKS, "stacked": ALL_CHECKS}


@pytest.mark.parametrize("construction", sorted(FAILS_WITH))
def test_wrong_constructions_fail_the_shape_checks(construction: str,
                                                   wrong_construction) -> None:
    assert wrong_construction(construction, SHAPE_CHECKS) == FAILS_WITH[construction]


def two_adapter_bert() -> PeftModel:
    """Tiny BERT with Deep LoRA adapters ``one`` (active, trainable, an O(1) ΔW that changes the
    gradient) and ``two`` (added, inactive, frozen), each with its own classifier copy."""
    config = DeepLoraConfig(r=4, depth=3, target_modules="query-value",
                            modules_to_save=["classifier"])
    model = get_peft_model(tiny_bert(), config, adapter_name="one")
    model.add_adapter("two", config)
    generator = torch.Generator().manual_seed(5)
    for factorization in adapter_factorizations(model, "one").values():
        with torch.no_grad():
            for factor in factorization.factors:
                factor.copy_(torch.randn(factor.shape, generator=generator))
    return model


def test_compress_named_inactive_adapter_takes_its_own_gradient() -> None:
    model = two_adapter_bert()
    inputs = inputs_for(model)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    alone = copy.deepcopy(model)
    alone.set_adapter("two")  # the gradient the named adapter's own model gives
    expected = compress_adapters(alone, inputs, "two", torch.Generator().manual_seed(3))
    assert compress_adapters(model, inputs, "two", torch.Generator().manual_seed(3)) == expected

    for name, factorization in adapter_factorizations(model, "two").items():
        for factor, want in zip(factorization.factors,
                                adapter_factorizations(alone, "two")[name].factors, strict=True):
            torch.testing.assert_close(factor, want, atol=1e-6, rtol=0)
    assert model.active_adapters == ["one"] and model.peft_config["two"].init == "compressed"
    # every flag as before; the new factors of the frozen adapter frozen too
    assert {name: p.requires_grad for name, p in model.named_parameters()
            if ".two." not in name} == {
        name: flag for name, flag in flags.items() if ".two." not in name}
    assert not any(p.requires_grad for name, p in model.named_parameters() if ".two." in name)


def test_compress_restores_the_active_adapter_after_an_error() -> None:
    model = two_adapter_bert()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    def failing(m: PeftModel) -> torch.Tensor:
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError, match="loss failed"):
        compress_adapters(model, failing, "two")
    assert model.active_adapters == ["one"] and model.peft_config["two"].init == "orthogonal"
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


@pytest.mark.parametrize(("d_out", "d_in"), [(6, 10), (8, 8), (10, 6)])
def test_compressed_adapter_is_the_documented_construction_of_its_gradient(
    d_out: int, d_in: int
) -> None:
    """float64 Linear, r = 4 (k = 2), L = 3: G = ∂ℒ/∂ΔW at ΔW(0), by autograd through a
    materialized ΔW, and Q, redrawn from the same generator. As the module docstring says, the
    layer becomes [V₁ᵀ, εI, εI, εI, U] with V₁ = orth[V_G[:, :k], Qᵀ U_G[:, :k]], U = Q V₁
    (d_out <= d_in) or U = orth[U_G[:, :k], Q V_G[:, :k]], V₁ = Qᵀ U (d_out > d_in), so
    ΔW(0) = ε³ U V₁ᵀ: the projection of ε³ Q onto the kept subspace."""
    eps, rank, depth, k = 1e-3, 4, 3, 2
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(5, d_in, generator=generator, dtype=F64)
    weights = torch.randn(5, d_out, generator=generator, dtype=F64)

    def loss(output: torch.Tensor) -> torch.Tensor:
        return torch.sum(torch.tanh(output) * weights)

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(d_in, d_out)).double()
    model = get_peft_model(copy.deepcopy(base), DeepLoraConfig(
        r=rank, depth=depth, init_scale=eps, target_modules=["0"]))
    delta0 = next(iter(adapter_factorizations(model).values())).product().detach()
    materialized = delta0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(
        loss(nn.functional.linear(x, base[0].weight + materialized, base[0].bias)), materialized)
    u_g, _, vh_g = torch.linalg.svd(grad)
    q = orthogonal_(torch.empty(d_out, d_in, dtype=F64), 1.0, torch.Generator().manual_seed(9))

    compress_adapters(model, lambda m: loss(m(x)), generator=torch.Generator().manual_seed(9))
    first, *inner, last = (f.detach() for f in adapter_factorizations(model)["0"].factors)
    assert first.dtype == F64 and len(inner) == depth
    for factor in inner:
        assert torch.equal(factor, eps * torch.eye(rank, dtype=F64))
    v1 = first.T
    if d_out <= d_in:
        torch.testing.assert_close(v1.T @ v1, torch.eye(rank, dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(span(v1), span(torch.cat([vh_g[:k].T, q.T @ u_g[:, :k]], 1)),
                                   atol=1e-9, rtol=0)
        torch.testing.assert_close(last, q @ v1, atol=1e-12, rtol=0)
    else:
        torch.testing.assert_close(last.T @ last, torch.eye(rank, dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(span(last), span(torch.cat([u_g[:, :k], q @ vh_g[:k].T], 1)),
                                   atol=1e-9, rtol=0)
        torch.testing.assert_close(v1, q.T @ last, atol=1e-12, rtol=0)
    projected = span(last) @ q if d_out > d_in else q @ span(v1)
    torch.testing.assert_close(adapter_deltas(model)["0"], eps**depth * projected,
                               atol=1e-20, rtol=1e-9)
