"""Scale benchmark: compressed deep matrix completion from sparse observations.

Target: rank-r m×n matrix ``P diag(σ) Qᵀ`` (Haar P, Q; σ from √m + √n down to 0.8 of it, the
scale of the paper's best-rank-r-of-a-Gaussian target); Ω: a uniform ``fraction`` of entries;
model: the compressed depth-3 factorization built by
:func:`deeplora.completion.sparse.compressed_factorization`, trained full-batch with Adam
(``--lr``, ``--gamma``; defaults from ``default_settings("compressed")``). Error:
``‖X_S − Φ_S‖ / ‖Φ_S‖`` on a held-out sample S of unobserved entries. Each size runs in its
own process so that its peak RSS is its own.

    python benchmarks/bench_completion_scale.py --sizes 5000 10000 20000 50000 \
        --steps 5 --out runs/bench_scale            # time per step vs |Ω|
    python benchmarks/bench_completion_scale.py --sizes 50000 --target-error 1e-2 \
        --out runs/bench_scale_full                 # time and memory to 1e-2
    python benchmarks/bench_completion_scale.py --shape 480189 17770 \
        --observed 1000000 10000000 --steps 5       # Netflix-prize shape, |Ω| given

With ``--shape M N`` the matrix is M×N and ``--observed`` lists |Ω| (one process each);
otherwise it is ``size × size`` for each of ``--sizes`` with |Ω| = ``fraction``·size².
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplora.completion import default_settings, random_low_rank
from deeplora.completion.methods import optimizer_options
from deeplora.completion.sparse import compressed_factorization, random_observations
from deeplora.factorization import discrepant_param_groups, make_optimizer
from deeplora.factorization.sampled import ObservedIndex


def _entries(target: Any, rows: torch.Tensor, cols: torch.Tensor, chunk: int = 1 << 21
             ) -> torch.Tensor:
    return torch.cat([target.entries(rows[i:i + chunk], cols[i:i + chunk]).float()
                      for i in range(0, rows.numel(), chunk)])


def run_one(shape: tuple[int, int], count: int, rank: int, steps: int, target_error: float,
            heldout: int, seed: int, eval_every: int, lr: float, gamma: float
            ) -> dict[str, Any]:
    """One process: build, train, measure. Returns a JSON-able record."""
    clock = time.perf_counter()
    m, n = shape
    sigma = ((math.sqrt(m) + math.sqrt(n)) * np.linspace(1.0, 0.8, rank)).tolist()
    target = random_low_rank(m, n, rank, sigma, seed=seed)
    rows, cols = random_observations(m, n, count, seed=seed + 1)
    values = _entries(target, rows, cols)
    h_rows, h_cols = random_observations(m, n, heldout, seed=seed + 2,
                                         exclude=rows * n + cols)
    h_values = _entries(target, h_rows, h_cols).double()
    del target
    data_seconds = time.perf_counter() - clock

    start = time.perf_counter()
    index = ObservedIndex(rows, cols, (m, n))
    del rows, cols  # the index holds Ω (sorted flat keys and columns)
    held = ObservedIndex(h_rows, h_cols, (m, n))
    model = compressed_factorization(index, values, rank, depth=3, scale=1e-3, seed=seed)
    build_seconds = time.perf_counter() - start
    groups = discrepant_param_groups(model.outer_parameters(), model.inner_parameters(), lr,
                                     gamma)
    opt = make_optimizer("adam", groups, **optimizer_options("adam"))
    norm = float(torch.linalg.vector_norm(h_values))
    curve: list[tuple[int, float, float]] = []
    step_seconds: list[float] = []
    eval_seconds = 0.0
    reached = None
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            tick = time.perf_counter()
            with torch.no_grad():
                error = float(torch.linalg.vector_norm(model.entries(held).double()
                                                       - h_values)) / norm
            eval_seconds += time.perf_counter() - tick
            curve.append((step, error, time.perf_counter() - start - eval_seconds))
            print(f"{m}x{n} |Ω|={count} step {step} held-out error {error:.3e} "
                  f"t={curve[-1][2]:.1f}s", file=sys.stderr, flush=True)
            if error <= target_error:
                reached = curve[-1]
                break
            if not math.isfinite(error) or step == steps:
                break
        tick = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * torch.mean((model.entries(index) - values) ** 2)
        loss.backward()
        opt.step()
        step_seconds.append(time.perf_counter() - tick)
    return {
        "size": m if m == n else None, "shape": [m, n], "observed": count,
        "fraction": count / (m * n), "rank": rank, "lr": lr,
        "gamma": gamma,
        "threads": torch.get_num_threads(), "data_seconds": data_seconds,
        "build_seconds": build_seconds,
        "median_step_seconds": float(np.median(step_seconds)) if step_seconds else None,
        "steps_run": len(step_seconds), "final_error": curve[-1][1],
        "target_error": target_error,
        "steps_to_target": reached[0] if reached else None,
        "seconds_to_target": reached[2] if reached else None,  # build + training, no eval
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "curve": curve,
    }


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| m × n | \\|Ω\\| | build s | s / step | s / step per 10⁶ obs | steps | "
             "error | s to target | peak RSS GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        per = r["median_step_seconds"]
        reached = r["seconds_to_target"]
        reached = "—" if reached is None else f"{reached:.0f}"
        lines.append(
            f"| {r['shape'][0]:,} × {r['shape'][1]:,} | {r['observed']:,} | "
            f"{r['build_seconds']:.1f} | "
            f"{per:.3f} | {per / r['observed'] * 1e6:.3f} | {r['steps_run']} | "
            f"{r['final_error']:.2e} | "
            f"{reached} | "
            f"{r['peak_rss_gib']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 50000])
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--shape", type=int, nargs=2, default=None, metavar=("M", "N"),
                   help="an M×N matrix (with --observed) instead of --sizes")
    p.add_argument("--observed", type=int, nargs="+", default=None,
                   help="|Ω| values to run with --shape")
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--steps", type=int, default=3000, help="maximum steps")
    p.add_argument("--target-error", type=float, default=0.0,
                   help="stop at this held-out error (0: run --steps)")
    _, lr, gamma = default_settings("compressed", "adam")
    p.add_argument("--lr", type=float, default=lr, help="Adam step η")
    p.add_argument("--gamma", type=float, default=gamma,
                   help="discrepant rate γ of the outer factors")
    p.add_argument("--heldout", type=int, default=200_000)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_completion_scale")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.shape is None) != (args.observed is None):
        p.error("--shape and --observed go together")
    runs = ([(tuple(args.shape), count) for count in args.observed] if args.shape
            else [((size, size), round(args.fraction * size * size)) for size in args.sizes])
    if args.one:
        record = run_one(*runs[0], args.rank, args.steps, args.target_error,
                         args.heldout, args.seed, args.eval_every, args.lr, args.gamma)
        print(json.dumps(record))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for (m, n), count in runs:
        child = [sys.executable, __file__, "--one", "--shape", str(m), str(n), "--observed",
                 str(count)]
        for flag in ("rank", "steps", "target_error", "lr", "gamma", "heldout",
                     "eval_every", "threads", "seed"):
            value = getattr(args, flag)
            if value is not None:
                child += [f"--{flag.replace('_', '-')}", str(value)]
        done = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True)
        records.append(json.loads(done.stdout.strip().splitlines()[-1]))
        (out / "results.json").write_text(json.dumps(records, indent=2) + "\n")
        (out / "table.md").write_text(table(records) + "\n")
        print(table(records), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
