"""The three methods a user picks by name, built for a given problem.

- ``original``: the wide deep factorization (width max(m, n)), ε-orthogonal init.
- ``compressed``: width 2r̂, built from the wide model's first gradient
  (:func:`deeplora.factorization.compress`), outer factors at γ·η.
- ``narrow``: width 2r̂, random ε-orthogonal init, no construction (the paper's ablation).
"""

from __future__ import annotations

import time

import torch

from deeplora.checks import check_seed, is_integer
from deeplora.completion.problems import (
    MatrixCompletion,
    Problem,
    dense_target_bytes,
    random_entries_bytes,
)
from deeplora.completion.sparse import compressed_factorization
from deeplora.factorization import DeepFactorization, compress
from deeplora.factorization.optim import OPTIMIZERS
from deeplora.memory import check_fits, check_square_fits

METHODS = ("original", "compressed", "narrow")

DEFAULT_OPTIMIZER = "adam"
# Adam's (lr, γ) per method. Adam's scale invariance escapes the ε-small initialization in a
# few hundred steps, where GD at the paper's step sits on a ~19,000-step plateau; see
# BENCHMARKS.md for the measurements behind these values.
ADAM_DEFAULTS: dict[str, tuple[float, float]] = {
    "compressed": (3e-2, 1e-2),
    "narrow": (3e-2, 1.0),
    "original": (1e-3, 1.0),
}
# Adam's ε (the denominator guard, not the init scale). The mean-over-Ω loss makes the first
# gradients of the ε-small inner factors tiny (≈ ε^{L-1}·σ(Φ)·|Ω|/(m n)/|Ω|: 1e-13 at
# m = n = 50,000), far below torch's default 1e-8, which would turn Adam into slow SGD on the
# plateau; 1e-16 keeps its updates scale-invariant from the first step.
ADAM_EPS = 1e-16


def optimizer_options(optimizer: str) -> dict[str, float]:
    """Extra keyword arguments for :func:`~deeplora.factorization.make_optimizer`."""
    return {"eps": ADAM_EPS} if optimizer in ("adam", "adamw") else {}


# The authors' GD step on ½ Σ_Ω (X − Φ)² / (m n); on our mean-over-Ω loss it is
# PAPER_GD_STEP · |Ω| / (m n). Their γ for the compressed model is 0.01.
PAPER_GD_STEP = 5e3
PAPER_GD_GAMMA = 0.01


def default_settings(method: str, optimizer: str | None = None, lr: float | None = None,
                     gamma: float | None = None, observed_fraction: float = 1.0
                     ) -> tuple[str, float, float]:
    """``(optimizer, lr, γ)`` for ``method``, each taken from the arguments when given.

    Adam and AdamW: :data:`ADAM_DEFAULTS`. GD/SGD: the paper's step (:data:`PAPER_GD_STEP`
    rescaled to our loss) and γ = 0.01 for ``compressed``. γ is 1 for ``original`` and
    ``narrow``. ``ValueError`` for an unknown method or optimizer.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    optimizer = optimizer or DEFAULT_OPTIMIZER
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if optimizer in ("adam", "adamw"):
        default_lr, default_gamma = ADAM_DEFAULTS[method]
    else:
        default_lr = PAPER_GD_STEP * observed_fraction
        default_gamma = PAPER_GD_GAMMA if method == "compressed" else 1.0
    return (optimizer, default_lr if lr is None else lr,
            default_gamma if gamma is None else gamma)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_dtype(dtype: torch.dtype) -> None:
    """``ValueError`` for half precision: the product of L ε-small factors (ε^L = 1e-9 at the
    defaults) underflows float16 to exactly 0 and is lost in bfloat16's 8-bit mantissa, so
    training never leaves the initialization (adapters keep fp32 factors for the same reason)."""
    if dtype in HALF_DTYPES:
        raise ValueError(f"dtype {dtype} cannot train a deep factorization (the product of "
                         f"ε-small factors underflows); use torch.float32 or torch.float64")


def model_bytes(method: str, shape: tuple[int, int], depth: int, rank: int,
                itemsize: int = 4) -> int:
    """Training memory of ``method``'s model: every factor with its gradient and two Adam
    moments, plus (``original``) three dense m×n arrays (product, residual, its gradient)."""
    m, n = shape
    width = max(m, n) if method == "original" else 2 * rank
    depth = depth if method != "compressed" else depth + 2
    params = width * n + (depth - 2) * width * width + m * width
    dense = 3 * m * n if method == "original" else 0
    return (4 * params + dense) * itemsize


def synthetic_bytes(method: str, shape: tuple[int, int], observed: float, depth: int,
                    rank: int, itemsize: int = 4) -> int:
    """Peak memory of a synthetic completion run: the largest of the dense target
    (:func:`~deeplora.completion.problems.dense_target_bytes`), sampling Ω
    (:func:`~deeplora.completion.problems.random_entries_bytes`) and the model
    (:func:`model_bytes`)."""
    m, n = shape
    return max(dense_target_bytes(m, n), random_entries_bytes(m, n, observed),
               model_bytes(method, (m, n), depth, rank, itemsize))


def check_synthetic_fits(method: str, shape: tuple[int, int], observed: float, depth: int,
                         rank: int, itemsize: int = 4, what: str | None = None,
                         size_name: str = "size") -> None:
    """:class:`~deeplora.memory.TooLargeError` naming the largest square size that fits, unless
    the synthetic problem (:func:`synthetic_bytes`) fits in the available memory. ``what``
    starts the message (default ``"a m×n synthetic problem (method)"``)."""
    check_square_fits(
        lambda m, n: synthetic_bytes(method, (m, n), observed, depth, rank, itemsize), shape,
        what or f"a {shape[0]}×{shape[1]} synthetic problem ({method})", minimum=2 * rank,
        size_name=size_name)


def build_model(
    method: str,
    problem: Problem,
    depth: int = 3,
    rank: int = 5,
    scale: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[DeepFactorization, float]:
    """Return ``(model, seconds it took to build)`` for ``method`` on ``problem``, on ``device``
    (default: the CPU; e.g. ``"cuda"``: the problem's observations follow the model there).

    ``rank`` is r̂, the assumed rank (compressed and narrow have width 2r̂). For matrix
    completion the compressed model is built from Ω alone
    (:func:`~deeplora.completion.sparse.compressed_factorization`: the first gradient as a
    sparse matrix, its top-r̂ singular vectors, an implicit random orthogonal end-to-end
    initialization), without forming the wide model; otherwise by
    :func:`~deeplora.factorization.compress` from a wide ε-orthogonal model.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    m, n = problem.shape
    if not (is_integer(rank) and rank >= 1 and 2 * rank <= min(m, n)):
        raise ValueError(f"rank must be an integer with 1 <= rank and 2*rank <= min(m, n) = "
                         f"{min(m, n)}, got {rank!r}")
    rank, seed = int(rank), check_seed("seed", seed)
    check_dtype(dtype)
    check_fits(model_bytes(method, (m, n), depth, rank, torch.finfo(dtype).bits // 8),
               f"the {method} model of a {m}×{n} matrix (depth {depth})",
               "use method 'compressed' or 'narrow'" if method == "original" else "")
    start = time.perf_counter()
    if method == "compressed" and isinstance(problem, MatrixCompletion):
        index, values = problem.observed_index, problem.values
        model = compressed_factorization(index, values, rank, depth, scale, seed, dtype)
        return model.to(device or "cpu"), time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed)
    width = 2 * rank if method == "narrow" else None
    model = DeepFactorization(m, n, depth, width, "orthogonal", scale, gen, dtype)
    model = model.to(device or "cpu")
    if method == "compressed":
        model = compress(model, problem.loss, rank)
    return model, time.perf_counter() - start
