"""Where a training step of the ratings preset spends its time (MovieLens 100K u1, FilmTrust).

One process, one torch thread, the preset's model of each training set at λ = 0.1, one
candidate (a plain fit's step; the search stacks up to three), for each dataset:

- ``step_ms``: CPU milliseconds per step of the estimator's own training loop (``--steps``
  steps without validation, fastest of 3), and within it, by wrapping the two calls, the part
  spent in the closed-form objective and gradients (``loss_and_grads_ms``), in the three
  sparse products within it (``in_loop_ms``: the sampled product ``X`` at Ω, ``R B`` and
  ``Rᵀ A``) and in the optimizer (``optimizer_ms``: Adam's step and zero_grad);
- ``kernels_ms``: each sparse product alone, repeated on warm caches (median of 5 blocks of
  200 calls): the same three with torch's CSR kernels (what the estimator uses), and the
  alternatives a user could reach for: SciPy's CSR (``R B``, ``Rᵀ A``) and torch's
  transposed CSR (``R.t() @ A``); with ``--fused`` (needs ``pip install numba``, not a
  dependency of deeplora) also ``fused_numba``: one compiled pass over the ratings that
  computes all three (``x = a_i·b_j``, ``r = x − y``, ``R B`` and ``Rᵀ A`` accumulated in the
  same loop, fastmath), the cheapest a hand-written CPU kernel for this step's sparse part
  gets, against the sum of torch's three (``fused_max_abs_diff``: its largest difference
  from them).

``step_ms`` minus the products in the loop is the rest of the step (factor products,
penalties, Adam); a product's cost in the loop against its cost alone shows what it pays for
reloading what the other operations evicted from the cache.

    OMP_NUM_THREADS=1 python benchmarks/bench_ratings_step.py --out runs/bench_ratings_step.json
    OMP_NUM_THREADS=1 python benchmarks/bench_ratings_step.py --fused --out runs/fused.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplora.completion.data import IdIndex, filmtrust, movielens_100k, random_split
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.factorization.sampled import _csr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--root", default=None, help="MovieLens 100K folder")
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    parser.add_argument("--fused", action="store_true",
                        help="also time a fused numba kernel of the three products")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    records = {"movielens-u1": movielens_100k("u1", args.root)[0],
               "filmtrust-0": random_split(filmtrust(), 0)[0]}
    out: dict[str, Any] = {}
    for name, train in records.items():
        out[name] = _measure(train, args.steps, args.fused)
        step, kernels = out[name]["step_ms"], out[name]["kernels_ms"]
        in_loop = out[name]["in_loop_ms"]
        alone = sum(kernels[k] for k in in_loop)
        print(f"{name}: {out[name]['ratings']} ratings, step {step:.3f} ms (loss and gradients "
              f"{out[name]['loss_and_grads_ms']:.3f}, optimizer {out[name]['optimizer_ms']:.3f});"
              f" sparse products in the loop {sum(in_loop.values()):.3f} ms "
              f"({sum(in_loop.values()) / step:.0%}), alone {alone:.3f} ms ({alone / step:.0%});"
              f" alone: {', '.join(f'{k} {v:.3f}' for k, v in kernels.items())}", flush=True)
        if args.fused:
            print(f"{name}: fused numba kernel {kernels['fused_numba']:.3f} ms against "
                  f"torch's three products alone {alone:.3f} ms "
                  f"(×{kernels['fused_numba'] / alone:.2f}; largest difference "
                  f"{out[name]['fused_max_abs_diff']:.1e})", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"steps": args.steps, "fused": args.fused,
                                              "records": out,
                                              "load_average": [load, os.getloadavg()]},
                                             indent=1))


def _measure(train: Any, steps: int, fused: bool = False) -> dict[str, Any]:
    """The step's CPU time and its parts for the preset's model of ``train`` (see above)."""
    ids = IdIndex.fit(train)
    rows, cols = ids.transform(train)
    with warnings.catch_warnings():  # max_steps=0: it never left its initialization
        warnings.simplefilter("ignore", RuntimeWarning)
        est = DeepMatrixCompletion.ratings(reg=0.1, refit=False, max_steps=0).fit(
            rows, cols, train.values, ids.shape)
    rng = np.random.default_rng(0)
    batches = est._start(rows, cols, train.values, rng, torch.float32)
    index = batches[0][0]
    products = ("sampled", "left", "right")
    spent = dict.fromkeys(("loss_and_grads", "optimizer", *products), 0.0)

    def timed(function: Callable[..., Any], key: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            cpu = time.process_time()
            result = function(*args, **kwargs)
            spent[key] += time.process_time() - cpu
            return result
        return call

    make_optimizer = est._optimizer

    def optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        opt = make_optimizer(*args, **kwargs)
        opt.step = timed(opt.step, "optimizer")
        opt.zero_grad = timed(opt.zero_grad, "optimizer")
        return opt

    est._loss_and_grads = timed(est._loss_and_grads, "loss_and_grads")
    for key, method in zip(products, ("sample", "left", "right"), strict=True):
        setattr(index, method, timed(getattr(index, method), key))
    est._optimizer = optimizer
    est.max_steps = steps
    best = (np.inf, {})
    for _ in range(3):
        spent.update(dict.fromkeys(spent, 0.0))
        cpu = time.process_time()
        est._train(batches, None, rng, 0.0, [(0.1, 0.0)])
        best = min(best, (time.process_time() - cpu, dict(spent)), key=lambda item: item[0])
    per_step = 1000 / (steps + 1)
    for method in ("sample", "left", "right"):  # the unwrapped methods, timed alone below
        delattr(index, method)
    a, b = est._augmented(*est._end_to_end())
    a, b = a.detach().contiguous(), b.detach().contiguous()
    residual = index.sample(a, b)
    crow, col = index._kernel
    matrix = index._scipy_sorted(residual)
    a_np, b_np = a.numpy(), b.numpy()
    kernels = {
        "sampled": lambda: index.sample(a, b),
        "left": lambda: index.left(residual, b),
        "right": lambda: index.right(residual, a),
        "scipy_left": lambda: matrix @ b_np,
        "scipy_right": lambda: matrix.T @ a_np,
        "torch_transposed_right": lambda: _csr(crow, col, residual, index.shape).t() @ a,
    }
    extra: dict[str, Any] = {}
    if fused:
        kernel = _fused_kernel()
        row_ptr, columns = index.crow.numpy(), index.col.numpy()
        target = np.zeros(index.nnz, np.float32)  # R = X at Ω, as ``residual`` above
        grad_a, grad_b = np.empty_like(a_np), np.empty_like(b_np)
        kernels["fused_numba"] = lambda: kernel(a_np, b_np, row_ptr, columns, target, grad_a,
                                                grad_b)
        kernels["fused_numba"]()
        extra["fused_max_abs_diff"] = float(max(
            np.abs(grad_a - index.left(residual, b).numpy()).max(),
            np.abs(grad_b - index.right(residual, a).numpy()).max()))
    return {"ratings": index.nnz, "shape": list(index.shape), "width": int(a.shape[1]), **extra,
            "step_ms": best[0] * per_step,
            **{f"{key}_ms": best[1][key] * per_step for key in ("loss_and_grads", "optimizer")},
            "in_loop_ms": {key: best[1][key] * per_step for key in products},
            "kernels_ms": {key: _alone_ms(call) for key, call in kernels.items()}}


def _fused_kernel() -> Callable[..., None]:
    """``kernel(a, b, crow, col, y, grad_a, grad_b)``: ``r_ω = a_i·b_j − y_ω`` over the CSR
    pattern, ``grad_a = R b`` and ``grad_b = Rᵀ a`` in the same pass (numba, compiled here)."""
    import numba

    @numba.njit(fastmath=True, nogil=True)
    def kernel(a: np.ndarray, b: np.ndarray, crow: np.ndarray, col: np.ndarray,
               y: np.ndarray, grad_a: np.ndarray, grad_b: np.ndarray) -> None:
        m, k = a.shape
        grad_a[:] = 0
        grad_b[:] = 0
        for i in range(m):
            a_i, g_i = a[i], grad_a[i]
            for e in range(crow[i], crow[i + 1]):
                j = col[e]
                b_j, g_j = b[j], grad_b[j]
                x = a_i[0] * b_j[0]
                for t in range(1, k):
                    x += a_i[t] * b_j[t]
                r = x - y[e]
                for t in range(k):
                    g_i[t] += r * b_j[t]
                    g_j[t] += r * a_i[t]

    return kernel


def _alone_ms(call: Callable[[], Any], blocks: int = 5, calls: int = 200) -> float:
    """Median over ``blocks`` of the CPU milliseconds per call of ``calls`` repeated calls."""
    call()
    times = []
    for _ in range(blocks):
        cpu = time.process_time()
        for _ in range(calls):
            call()
        times.append(1000 * (time.process_time() - cpu) / calls)
    return statistics.median(times)


if __name__ == "__main__":
    main()
