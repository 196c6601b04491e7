"""The factors of one adapted layer, as a core :class:`DeepFactorization` (d_out×d_in)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from deeplora.adapters.config import DeepLoraConfig
from deeplora.adapters.targets import layer_shape, unwrap
from deeplora.factorization.deep import DeepFactorization
from deeplora.factorization.init import orthogonal_, scaled_identity_


def adapter_dtype(base_dtype: torch.dtype) -> torch.dtype:
    """Adapters compute in float64 on a float64 base and in float32 otherwise.

    With ε = 1e-3 and L = 3, ΔW at initialization is about 1e-9: it would underflow in
    float16/bfloat16, so half-precision bases keep float32 adapters.
    """
    return torch.float64 if base_dtype == torch.float64 else torch.float32


def check_rank(r: int, d_out: int, d_in: int, name: str = "layer") -> None:
    """Raise unless ``1 <= r <= min(d_out, d_in)``."""
    if not 1 <= r <= min(d_out, d_in):
        raise ValueError(
            f"rank r={r} must be in [1, min(d_out, d_in)] = [1, {min(d_out, d_in)}] for {name} "
            f"(d_out={d_out}, d_in={d_in})"
        )


def checked_shapes(model: nn.Module, names: Iterable[str], r: int) -> dict[str, list[int]]:
    """``{name: [d_out, d_in]}`` of the named adaptable layers of ``model``, after
    :func:`check_rank` of ``r`` on each."""
    modules = dict(model.named_modules())
    shapes = {n: list(layer_shape(unwrap(modules[n]))) for n in names}
    for name, (d_out, d_in) in shapes.items():
        check_rank(r, d_out, d_in, name)
    return shapes


def init_factors(
    d_out: int,
    d_in: int,
    config: DeepLoraConfig,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> DeepFactorization:
    """Factors ``[W_1 (r×d_in), …, W_L (d_out×r)]`` initialized as ``config.init`` says.

    - ``"orthogonal"``: every factor ε·semi-orthogonal (all singular values ε), ΔW(0) has
      singular values ε^L;
    - ``"lora"`` (the authors' vanilla LoRA): ``A = W_1 = 0``, ``B = W_2 ~ N(0, 1)``;
    - ``"lora-hu"`` (Hu et al.'s LoRA): ``A = W_1 ~ N(0, 1)``, ``B = W_2 = 0``;
      either way ΔW(0) = B A = 0;
    - ``"compressed"``: placeholder until :func:`deeplora.adapters.compress_adapters`:
      ``[Vᵀ, εI, …, εI, U]`` with L inner ``εI`` and random orthonormal ``V`` (d_in×r), ``U``
      (d_out×r).

    Draws from torch's global generator.
    """
    check_rank(config.r, d_out, d_in)
    r, scale = config.r, config.init_scale
    if config.init == "orthogonal":
        return DeepFactorization(d_out, d_in, depth=config.depth, width=r, init="orthogonal",
                                 scale=scale, dtype=dtype, device=device)
    if config.init in ("lora", "lora-hu"):
        gaussian_b = config.init == "lora"
        a = torch.zeros if gaussian_b else torch.randn
        b = torch.randn if gaussian_b else torch.zeros
        factors = [a(r, d_in, dtype=dtype, device=device), b(d_out, r, dtype=dtype, device=device)]
    else:
        inner = scaled_identity_(torch.empty(r, r, dtype=dtype, device=device), scale)
        factors = [orthogonal_(torch.empty(r, d_in, dtype=dtype, device=device), 1.0),
                   *[inner] * config.depth,
                   orthogonal_(torch.empty(d_out, r, dtype=dtype, device=device), 1.0)]
    return DeepFactorization.from_factors(factors, init=config.init, scale=scale)


def balanced_factors(delta: Tensor, rank: int, depth: int) -> tuple[list[Tensor], float]:
    """``depth`` balanced factors of the best rank-``rank`` approximation of ΔW (d_out×d_in).

    With ΔW = U Σ Vᵀ: ``W_1 = Σ_r^{1/L} V_rᵀ`` (r×d_in), ``W_2 … W_{L-1} = Σ_r^{1/L}``
    (diagonal r×r), ``W_L = U_r Σ_r^{1/L}`` (d_out×r), so that W_L ⋯ W_1 = U_r Σ_r V_rᵀ and
    every factor has the same singular values (as gradient flow from a small balanced
    initialization keeps them). Directions beyond ΔW's rank get zero singular values. Returns
    the float64 factors and ``σ_{r+1}/σ_1`` (0 if nothing was cut or ΔW = 0).
    """
    check_rank(rank, *delta.shape)
    u, s, vh = torch.linalg.svd(delta.detach().to("cpu", torch.float64), full_matrices=False)
    top = float(s[0])
    cut = float(s[rank]) / top if top > 0 and rank < s.numel() else 0.0
    root = s[:rank] ** (1.0 / depth)
    inner = [torch.diag(root)] * (depth - 2)
    return [root[:, None] * vh[:rank], *inner, u[:, :rank] * root], cut
