"""``deeplora complete``: recover a synthetic low-rank matrix from a fraction of its entries."""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from deeplora.cli.output import check_writable, write_json
from deeplora.completion import (
    METHODS,
    MatrixCompletion,
    build_model,
    default_settings,
    fit,
)
from deeplora.completion.problems import random_low_rank

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "complete",
        help="deep matrix completion of a synthetic rank-r matrix",
        description="Recover a random rank-r m×n matrix (the best rank-r approximation of a "
        "Gaussian matrix) from a uniformly random fraction of its entries with a deep "
        "factorization, and report the recovery error on all entries.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--size", type=int, default=1000, help="rows m")
    p.add_argument("--cols", type=int, default=None, help="columns n (default: --size)")
    p.add_argument("--rank", type=int, default=5, help="rank r of the target")
    p.add_argument("--assumed-rank", type=int, default=None,
                   help="r̂: compressed/narrow width is 2r̂ (default: --rank)")
    p.add_argument("--observed", type=float, default=0.2, help="fraction of entries observed")
    p.add_argument("--depth", type=int, default=3, help="number of layers L")
    p.add_argument("--method", choices=METHODS, default="compressed")
    p.add_argument("--optimizer", choices=("gd", "adam"), default=None,
                   help="default: adam")
    p.add_argument("--lr", type=float, default=None,
                   help="step size η (default: per method and optimizer; for gd the paper's "
                   "step, 5e3 · observed on our mean-over-Ω loss)")
    p.add_argument("--gamma", type=float, default=None,
                   help="discrepant rate γ of the outer factors (default for compressed: 0.1 "
                   "with adam, 0.01 with gd; 1 otherwise)")
    p.add_argument("--init-scale", type=float, default=1e-3, help="ε")
    p.add_argument("--steps", type=int, default=5000, help="maximum number of steps")
    p.add_argument("--tol", type=float, default=1e-12, help="stop when the train loss <= tol")
    p.add_argument("--target-error", type=float, default=0.0,
                   help="stop when the recovery error <= this")
    p.add_argument("--eval-every", type=int, default=10, help="steps between evaluations")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH|-", default=None, help="write the result as JSON")
    p.add_argument("--plot", metavar="PATH", default=None, help="write a PNG of the run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cols = args.size if args.cols is None else args.cols
    rank_hat = args.rank if args.assumed_rank is None else args.assumed_rank
    for name, value in (("--size", args.size), ("--cols", cols), ("--steps", args.steps + 1)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if args.depth < 2:
        raise ValueError(f"--depth must be >= 2, got {args.depth}")
    if args.rank <= 0 or rank_hat <= 0:
        raise ValueError(f"--rank must be >= 1, got {min(args.rank, rank_hat)}")
    if 2 * rank_hat > min(args.size, cols):
        raise ValueError(f"2 × rank must be <= min(size, cols) = {min(args.size, cols)}, "
                         f"got rank {rank_hat}")
    if not 0 < args.observed <= 1:
        raise ValueError(f"--observed must be in (0, 1], got {args.observed}")
    if not (math.isfinite(args.init_scale) and args.init_scale > 0):
        raise ValueError(f"--init-scale must be > 0, got {args.init_scale}")
    optimizer, lr, gamma = default_settings(args.method, args.optimizer, args.lr, args.gamma,
                                            args.observed)
    check_writable(args.json)
    check_writable(args.plot)

    target = random_low_rank(args.size, cols, args.rank, seed=args.seed)
    problem = MatrixCompletion.random(target, args.observed, seed=args.seed + 1)
    model, build_seconds = build_model(args.method, problem, args.depth, rank_hat,
                                       args.init_scale, args.seed, DTYPES[args.dtype])
    history = fit(model, problem, optimizer, lr, gamma, args.steps, args.tol,
                  args.target_error, args.eval_every, progress=not args.quiet,
                  build_seconds=build_seconds)
    reached = history.first_below(1e-2)
    result: dict[str, Any] = {
        "method": args.method, "size": args.size, "cols": cols, "rank": args.rank,
        "assumed_rank": rank_hat, "depth": args.depth, "observed": args.observed,
        "optimizer": optimizer, "lr": lr, "gamma": gamma, "init_scale": args.init_scale,
        "dtype": args.dtype, "seed": args.seed,
        "steps": history.steps[-1], "seconds": history.seconds[-1],
        "build_seconds": build_seconds,
        "recovery_error": history.recovery_error[-1], "train_loss": history.train_loss[-1],
        "steps_to_1e-2": reached[0] if reached else None,
        "seconds_to_1e-2": reached[1] if reached else None,
    }
    if args.plot:
        from deeplora.experiments.plots import plot_runs

        plot_runs({args.method: history}, args.plot,
                  title=f"{args.size}×{cols}, rank {args.rank}, {args.observed:.0%} observed")
    if args.json:
        write_json(args.json, result)
    if args.json != "-":
        print(f"{args.method}: recovery error {result['recovery_error']:.3e} after "
              f"{result['steps']} steps, {result['seconds']:.2f} s; 1e-2 reached at "
              f"{f'step {reached[0]}' if reached else 'no step'}")
    return 0
