r"""Compressed Deep LoRA: narrow width-r factors from one gradient, without the wide factors.

**The wide model.** A full-width depth-L Deep LoRA on a layer with weight d_out×d_in has width
w = max(d_in, d_out): ``W_1`` (w×d_in), ``W_2 … W_{L-1}`` (w×w), ``W_L`` (d_out×w), each
``W_l(0) = ε O_l`` with ``O_l`` Haar (semi-)orthogonal. All layers but one outer layer are
square, so ``P = O_L ⋯ O_2`` (d_out×w) has orthonormal rows, ``P Pᵀ = I``. Write
``Q = O_L ⋯ O_1 = W_{L:1}(0)/ε^L`` (d_out×d_in).

**The construction** (PAPER.md, Sec. 3–4; :mod:`deeplora.factorization.compress`), with
k = r/2 and ``G = ∂ℒ/∂ΔW = U' Σ' V'ᵀ`` (d_out×d_in): the narrow net is ``[V₁ᵀ, εI, …, εI, U]``
with L inner ``εI`` (r×r), so that ΔW(0) = ε^L U V₁ᵀ, and

- d_out <= d_in (the paper's formula, from the input side): with ``G₁ = ∇_{W_1} ℒ(0) = U_G Σ
  V_Gᵀ``, ``V₁ = orth[V_G[:, :k], W_1(0)ᵀ U_G[:, :k]]`` (d_in×r), ``U = W_{L:1}(0) V₁ / ε^L``;
- d_out > d_in (the same on the transposed layer, from the output side): with
  ``G_L = ∇_{W_L} ℒ(0) = U_H Σ V_Hᵀ``, ``U = orth[U_H[:, :k], W_L(0) V_H[:, :k]]`` (d_out×r),
  ``V₁ = W_{L:1}(0)ᵀ U / ε^L``.

The input-side formula on a tall layer would only keep Q Qᵀ U' — the gradient's column space
projected onto the d_in-dimensional range of Q — in span(U).

**Derivation of the memory-light form.** By the chain rule ``G₁ = W_{L:2}(0)ᵀ G
= ε^{L-1} (Pᵀ U') Σ' V'ᵀ``, and ``Pᵀ U'`` has orthonormal columns because ``P Pᵀ = I``, so this
*is* an SVD of G₁: ``V_G = V'`` and ``U_G = Pᵀ U'`` (up to signs, which do not change spans).
Likewise ``G_L = G W_{L-1:1}(0)ᵀ = ε^{L-1} U' Σ' (R V')ᵀ`` with ``R = O_{L-1} ⋯ O_1``
(orthonormal columns), so ``U_H = U'`` and ``V_H = R V'``. Hence

    W_1(0)ᵀ U_G[:, :k] = ε Qᵀ U'[:, :k],     W_L(0) V_H[:, :k] = ε Q V'[:, :k],

and the two cases read ``V₁ = orth[V', Qᵀ U']``, ``U = Q V₁`` and ``U = orth[U', Q V']``,
``V₁ = Qᵀ U`` (:func:`~deeplora.factorization.compress.compressed_bases`).
Everything depends on G only through its top-k singular vectors and on the wide factors only
through Q applied to thin matrices. As a product of independent Haar factors, Q is itself a
Haar-distributed semi-orthogonal d_out×d_in matrix (orthonormal columns if d_out >= d_in, rows
otherwise): one such matrix is sampled per layer instead of L wide factors. (A width above
max(d_in, d_out) would make Q a truncated Haar matrix, no longer a partial isometry; below
max(d_in, d_out), ``P Pᵀ ≠ I`` or ``Rᵀ R ≠ I`` and the singular vectors would no longer be G's.)
G is evaluated where the wide model sits at initialization, ΔW(0) = O(ε^L): we take it at the
adapter's current ΔW, also O(ε^L).

**Memory.** One backward pass; each layer's G = δᵀX (δ the gradient at the layer output, X its
input, tokens flattened) is formed in a hook the moment the layer's last gradient arrives,
turned into r-wide factors and freed, so at most one d_out×d_in G (and its thin SVD, then one
Q, in float64) exists at a time, besides the activations of the pass. The reference
implementation instead keeps L wide factors (w×w) and their gradients for every layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from deeplora.adapters.peft_integration import (
    active_adapter_name,
    adapter_activated,
    adapter_factorizations,
    deeplora_config,
    deeplora_layers,
)
from deeplora.factorization.compress import compressed_bases
from deeplora.factorization.init import orthogonal_
from deeplora.factorization.optim import discrepant_param_groups

LossSource = Callable[[nn.Module], Tensor] | Mapping[str, Any]


def compressed_factors(
    grad: Tensor,
    rank: int,
    depth: int,
    scale: float,
    isometry: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Narrow factors ``[V₁ᵀ (r×d_in), εI, …, εI (L of them), U (d_out×r)]``, float64.

    Args:
        grad: G = ∂ℒ/∂ΔW (d_out×d_in) of the layer.
        rank: r, even; r/2 directions come from G, r/2 from the initialization.
        depth: L, the depth of the full-width Deep LoRA being compressed.
        scale: ε.
        isometry: Q = W_{L:1}(0)/ε^L of a given wide model; by default a Haar semi-orthogonal
            d_out×d_in matrix is drawn from ``generator``.

    V₁ has orthonormal columns when d_out <= d_in, U when d_out > d_in (module docstring).
    """
    d_out, d_in = grad.shape
    if rank % 2 or not 2 <= rank <= min(d_out, d_in):
        raise ValueError(f"rank must be even and in [2, {min(d_out, d_in)}], got {rank}")
    if isometry is None:
        q = orthogonal_(torch.empty(d_out, d_in, dtype=torch.float64, device=grad.device), 1.0,
                        generator)
    else:
        q = isometry.detach().to(dtype=torch.float64, device=grad.device)
    u, v1 = compressed_bases(grad, rank // 2, lambda x: q @ x, lambda y: q.T @ y)
    inner = scale * torch.eye(rank, dtype=torch.float64, device=grad.device)
    return [v1.T.contiguous(), *[inner] * depth, u.contiguous()]


def _loss(model: nn.Module, source: LossSource) -> Tensor:
    if callable(source):
        return source(model)
    loss = model(**source).loss
    if loss is None:
        raise ValueError("the batch gives no loss: include labels or pass a loss function")
    return loss


def compress_adapters(
    model: nn.Module,
    loss_fn_or_batch: LossSource,
    adapter_name: str | None = None,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Replace every Deep LoRA layer of the adapter by its compressed narrow form, in place.

    Each layer's config (r, depth L, ε) describes the full-width Deep LoRA to compress; the
    layer then holds ``[V₁ᵀ, εI × L, U]`` (L + 2 factors, width r) and the config's ``init``
    becomes ``"compressed"`` so that save/load rebuilds that shape. Call before building the
    optimizer; train with :func:`adapter_param_groups` (outer factors at γ·η).

    Args:
        model: a PEFT model with a Deep LoRA adapter of ``init`` ``"orthogonal"`` or
            ``"compressed"`` and even r, not merged into the base weights (``ValueError``).
        loss_fn_or_batch: ``loss_fn(model) -> scalar`` or a batch for ``model(**batch).loss``;
            one backward pass of it gives each layer's G = ∂ℒ/∂ΔW (see module docstring).
            Call ``model.eval()`` first for a gradient without dropout.
        adapter_name: the adapter to compress, by default the one active adapter. The pass
            runs with only this adapter active (its ΔW and its ``modules_to_save`` copies);
            the adapters active before, and every ``requires_grad``, are restored afterwards.
        generator: draws the Haar partial isometries Q.

    Returns:
        The names of the compressed layers.
    """
    adapter_name = active_adapter_name(model, adapter_name)
    config = deeplora_config(model, adapter_name)
    if config.init not in ("orthogonal", "compressed") or config.r % 2:
        raise ValueError(
            f"compression needs an orthogonal or compressed Deep LoRA with even r, "
            f"got init={config.init!r}, r={config.r}"
        )
    layers = dict(deeplora_layers(model, adapter_name))
    merged = [name for name, layer in layers.items() if adapter_name in layer.merged_adapters]
    if merged:  # new factors under a merged ΔW: a later unmerge would subtract the wrong one
        raise ValueError(f"adapter {adapter_name!r} is merged into {len(merged)} layers (e.g. "
                         f"{merged[0]!r}); call unmerge_adapter() before compressing it")
    pending = dict.fromkeys(layers, 0)  # forward calls whose gradient has not arrived yet
    grads: dict[str, Tensor] = {}
    built: dict[str, list[Tensor]] = {}
    probes: list[Tensor] = []

    def capture(name: str) -> Callable[..., Tensor]:
        def forward_hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
            x = args[0].detach()
            pending[name] += 1
            probe = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
            probes.append(probe)
            output = output + probe  # lets the gradient reach every layer, adapters frozen or not
            output.register_hook(lambda delta: accumulate(name, x, delta))
            return output

        return forward_hook

    def accumulate(name: str, x: Tensor, delta: Tensor) -> None:
        grad = layers[name].delta_weight_gradient(x, delta)
        grads[name] = grads[name] + grad if name in grads else grad
        pending[name] -= 1
        if not pending[name]:  # last use of this layer in the pass: compress it, free G
            built[name] = compressed_factors(grads.pop(name), config.r, config.depth,
                                             config.init_scale, generator=generator)

    handles = [layer.register_forward_hook(capture(name)) for name, layer in layers.items()]
    try:
        with adapter_activated(model, adapter_name):  # ℒ at this adapter's ΔW, not another's
            loss = _loss(model, loss_fn_or_batch)
            if probes:
                torch.autograd.grad(loss, probes, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(layers) - set(built))
    if missing:
        raise ValueError(f"the loss does not depend on the adapted layers {missing}")
    for name, factors in built.items():
        layers[name].set_factors(adapter_name, factors, "compressed", config.init_scale)
    config.init = "compressed"
    return sorted(built)


def adapter_param_groups(
    model: nn.Module, lr: float, gamma: float, adapter_name: str | None = None
) -> list[dict[str, Any]]:
    """Optimizer groups: outer factors (W_1, W_L) of every adapted layer at γ·η, everything
    else that requires grad (inner factors, ``modules_to_save``) at η.

    Built with :func:`deeplora.factorization.optim.discrepant_param_groups`; γ = 1 is ordinary
    training, the paper trains compressed Deep LoRA with γ = 0.01.
    """
    outer = [p for fac in adapter_factorizations(model, adapter_name).values()
             for p in fac.outer_parameters() if p.requires_grad]
    outer_ids = {id(p) for p in outer}
    inner = [p for p in model.parameters() if p.requires_grad and id(p) not in outer_ids]
    return discrepant_param_groups(outer, inner, lr, gamma)
