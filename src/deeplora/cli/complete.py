"""``deeplora complete``: recover a synthetic low-rank matrix from a fraction of its entries,
or (``--ratings``) complete a ratings file."""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

from deeplora.checks import SEED_LIMIT
from deeplora.cli import (
    Given,
    HelpFormatter,
    add_ratings_file_arguments,
    check_file_only,
    given_options,
    parameters_as_flags,
    ratings_file_options,
    report_left_init,
)
from deeplora.completion import (
    METHODS,
    MatrixCompletion,
    build_model,
    default_settings,
    fit,
)
from deeplora.completion.data import IdIndex, read_ratings
from deeplora.completion.methods import check_synthetic_fits
from deeplora.completion.observations import check_clip
from deeplora.completion.problems import random_low_rank
from deeplora.experiments import random_seed
from deeplora.output import check_writable, write_json

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Defaults of the synthetic problem; with --ratings, unset options take the ratings preset's.
SYNTHETIC_DEFAULTS = {"rank": 5, "steps": 5000, "depth": 3, "init_scale": 1e-3, "eval_every": 10}
_RATINGS = "with --ratings: DeepMatrixCompletion.ratings()'s"
# Options of one kind of run only, refused with the other when given, at any value (destinations;
# their action is Given).
SYNTHETIC_ONLY = ("size", "cols", "observed", "lr_patience", "tol", "target_error", "plot")
RATINGS_ONLY = ("test", "format", "sep", "user_col", "item_col", "rating_col", "clip")


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "complete",
        help="deep matrix completion of a synthetic rank-r matrix",
        description="Recover a random rank-r m×n matrix (the best rank-r approximation of a "
        "Gaussian matrix) from a uniformly random fraction of its entries with a deep "
        "factorization, and report the recovery error on all entries.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--size", action=Given, type=int, default=1000, help="rows m")
    p.add_argument("--cols", action=Given, type=int, default=None,
                   help="columns n (default: --size)")
    p.add_argument("--rank", type=int, default=None,
                   help=f"rank r of the target (default: 5; {_RATINGS} r̂)")
    p.add_argument("--assumed-rank", type=int, default=None,
                   help="r̂: compressed/narrow width is 2r̂ (default: --rank)")
    p.add_argument("--observed", action=Given, type=float, default=0.2,
                   help="fraction of entries observed")
    p.add_argument("--depth", type=int, default=None,
                   help=f"number of layers L (default: 3; {_RATINGS})")
    p.add_argument("--method", choices=METHODS, default="compressed",
                   help="original: the full m×n deep factorization; compressed: width 2r̂ from "
                   "the compressed initialization; narrow: width 2r̂, random orthogonal init")
    p.add_argument("--optimizer", choices=("gd", "adam"), default=None,
                   help="(default: adam)")
    p.add_argument("--lr", type=float, default=None,
                   help="step size η (default: per method and optimizer; for gd the paper's "
                   "step, 5e3 · observed on our mean-over-Ω loss)")
    p.add_argument("--gamma", type=float, default=None,
                   help="discrepant rate γ of the outer factors (default 0.01 for compressed, "
                   "1 otherwise)")
    p.add_argument("--lr-patience", action=Given, type=int, default=None, metavar="P",
                   help="halve the step sizes whenever the train loss has gone more than P "
                   "steps without a new minimum (default: fixed step sizes)")
    p.add_argument("--init-scale", type=float, default=None,
                   help=f"ε (default: 1e-3; {_RATINGS})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"maximum number of steps (default: 5000; {_RATINGS} max_steps)")
    p.add_argument("--tol", action=Given, type=float, default=1e-12,
                   help="stop when the train loss <= tol")
    p.add_argument("--target-error", action=Given, type=float, default=0.0,
                   help="stop when the recovery error <= this")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"steps between evaluations (default: 10; {_RATINGS})")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 for compressed/narrow, whose steps are too "
                   "small to gain from more and slow down badly on a busy machine; torch's "
                   "default for original and with --ratings)")
    p.add_argument("--json", metavar="PATH|-", default=None, help="write the result as JSON")
    p.add_argument("--plot", action=Given, metavar="PATH", default=None,
                   help="write a figure of the run, in the format of PATH's suffix (.png, .pdf, "
                   ".svg, …; PNG without one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ratings = p.add_argument_group(
        "ratings file", "with --ratings: fit DeepMatrixCompletion.ratings() (the preset tuned "
        "for ratings; options given here override it) on a (user, item, rating) file instead "
        "of a synthetic matrix; --rank is r̂. The synthetic problem's --size, --cols, "
        "--observed, --lr-patience, --tol, --target-error and --plot are refused with "
        "--ratings, the options below without it")
    ratings.add_argument("--ratings", metavar="PATH", default=None, help="training ratings")
    ratings.add_argument("--test", action=Given, metavar="PATH", default=None,
                         help="ratings to report RMSE/MAE on (default: the training file)")
    add_ratings_file_arguments(ratings)
    ratings.add_argument("--clip", action=Given, type=float, nargs=2, metavar=("LOW", "HIGH"),
                         default=None,
                         help="clip predictions (default: the training ratings' range)")
    p.set_defaults(func=run)


def run_ratings(args: argparse.Namespace) -> int:
    """Fit on ``--ratings``, report RMSE/MAE on ``--test`` (or on the training file).

    Options left unset take :meth:`DeepMatrixCompletion.ratings`' preset (tuned for ratings), not
    the synthetic problem's."""
    from deeplora.completion.estimator import DeepMatrixCompletion

    if args.method == "original":
        raise ValueError("--ratings supports --method compressed or narrow (the wide model "
                         "is m×n)")
    if args.clip and not (all(math.isfinite(c) for c in args.clip)
                          and args.clip[0] < args.clip[1]):
        raise ValueError(f"--clip LOW HIGH needs finite LOW < HIGH, got {args.clip[0]:g} "
                         f"{args.clip[1]:g}")
    check_writable(args.json)
    train = read_ratings(args.ratings, **ratings_file_options(args))
    test = read_ratings(args.test, **ratings_file_options(args)) if args.test else train
    if args.clip:
        check_clip(args.clip, train.values, "--clip")
    ids = IdIndex.fit(train)
    rows, cols = ids.transform(train)
    clip = tuple(args.clip) if args.clip else (float(train.values.min()),
                                                float(train.values.max()))
    rank_flag = "--rank" if args.assumed_rank is None else "--assumed-rank"
    given = {"rank": args.rank if args.assumed_rank is None else args.assumed_rank,
             "depth": args.depth,
             "init_scale": args.init_scale, "optimizer": args.optimizer, "lr": args.lr,
             "gamma": args.gamma, "max_steps": args.steps, "eval_every": args.eval_every}
    estimator = DeepMatrixCompletion.ratings(
        method=args.method, clip=clip if clip[0] < clip[1] else None, dtype=args.dtype,
        random_state=args.seed, progress=not args.quiet,
        **{key: value for key, value in given.items() if value is not None})
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with warnings.catch_warnings(), parameters_as_flags(rank=rank_flag):
        # divergence and a fit that never left its initialization are reported below, once
        warnings.simplefilter("ignore", RuntimeWarning)
        estimator.fit(rows, cols, train.values, ids.shape)
    seconds = time.perf_counter() - start
    test_rows, test_cols = ids.transform(test)
    fallback = int(np.count_nonzero((test_rows == ids.shape[0]) | (test_cols == ids.shape[1])))
    metrics = estimator.evaluate(test_rows, test_cols, test.values)
    result: dict[str, Any] = {
        **metrics, "seconds": seconds, "method": args.method, "rank": estimator.rank,
        "depth": estimator.depth, "ratings": str(args.ratings),
        "test": str(args.test) if args.test else None, "evaluated_on": "test" if args.test
        else "train", "shape": list(ids.shape), "n_train": len(train), "n_test": len(test),
        "steps": estimator.n_steps_, "best_step": estimator.best_step_,
        "selected": estimator.selected_,
        "clip": list(clip) if clip[0] < clip[1] else None, "seed": args.seed,
        "n_fallback": fallback, "diverged": estimator.diverged_,
        "left_init": estimator.left_init_, "interaction_rms": estimator.interaction_rms_}
    if args.json:
        write_json(args.json, result)
    if estimator.diverged_:
        return report_divergence(f"the train loss became non-finite at step "
                                 f"{estimator.n_steps_}", estimator.lr)
    if fallback:
        print(f"{fallback} of {len(test)} {result['evaluated_on']} ratings "
              f"({fallback / len(test):.0%}) have a user or item not in {args.ratings} and "
              "were predicted from the biases alone", file=sys.stderr)
    report_left_init(estimator)
    if args.json != "-":
        print(f"{args.method}: RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f} on "
              f"{result['evaluated_on']} ({len(test)} ratings), {seconds:.1f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    other = SYNTHETIC_ONLY if args.ratings else RATINGS_ONLY
    given = given_options(args, other)
    if given:
        raise ValueError(f"{' '.join(given)}: only for the synthetic problem, not with "
                         f"--ratings" if args.ratings else f"{' '.join(given)}: only with "
                         "--ratings")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.ratings:
        return run_ratings(args)
    for name, value in SYNTHETIC_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    cols = args.size if args.cols is None else args.cols
    rank_hat = args.rank if args.assumed_rank is None else args.assumed_rank
    for name, value in (("--size", args.size), ("--cols", cols)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("--steps", args.steps), ("--eval-every", args.eval_every - 1)):
        if value < 0:
            raise ValueError(f"{name} must be >= {0 if name == '--steps' else 1}, got "
                             f"{value if name == '--steps' else args.eval_every}")
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
    if args.lr_patience is not None and args.lr_patience < 0:
        raise ValueError(f"--lr-patience must be >= 0, got {args.lr_patience}")
    optimizer, lr, gamma = default_settings(args.method, args.optimizer, args.lr, args.gamma,
                                            args.observed)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {lr}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"--gamma must be a finite number >= 0, got {gamma}")
    check_synthetic_fits(args.method, (args.size, cols), args.observed, args.depth, rank_hat,
                         DTYPES[args.dtype].itemsize, what=f"--size {args.size} --cols {cols} "
                         f"({args.method}): the synthetic problem", size_name="--size")
    check_writable(args.json)
    if args.plot is not None:
        from deeplora.plotting import figure_format

        check_file_only("--plot", args.plot, "a figure")
        figure_format(args.plot)
        check_writable(args.plot)

    if args.threads or args.method != "original":
        torch.set_num_threads(args.threads or 1)
    target = random_low_rank(args.size, cols, args.rank, seed=args.seed)
    problem = MatrixCompletion.random(target, args.observed, seed=(args.seed + 1) % SEED_LIMIT)
    model, build_seconds = build_model(args.method, problem, args.depth, rank_hat,
                                       args.init_scale, args.seed, DTYPES[args.dtype])
    with warnings.catch_warnings():  # divergence is reported below, once
        warnings.simplefilter("ignore", RuntimeWarning)
        history = fit(model, problem, optimizer, lr, gamma, args.steps, args.tol,
                      args.target_error, args.eval_every, progress=not args.quiet,
                      build_seconds=build_seconds, lr_patience=args.lr_patience)
    reached = history.first_below(1e-2)
    result: dict[str, Any] = {
        "method": args.method, "size": args.size, "cols": cols, "rank": args.rank,
        "assumed_rank": rank_hat, "depth": args.depth, "observed": args.observed,
        "optimizer": optimizer, "lr": lr, "gamma": gamma, "lr_patience": args.lr_patience,
        "init_scale": args.init_scale,
        "dtype": args.dtype, "seed": args.seed,
        "steps": history.steps[-1], "seconds": history.seconds[-1],
        "build_seconds": build_seconds,
        "recovery_error": history.recovery_error[-1], "train_loss": history.train_loss[-1],
        "steps_to_1e-2": reached[0] if reached else None,
        "seconds_to_1e-2": reached[1] if reached else None,
        "diverged": history.diverged,
    }
    if args.plot:
        from deeplora.experiments.plots import plot_runs

        plot_runs({args.method: history}, args.plot,
                  title=f"{args.size}×{cols}, rank {args.rank}, {args.observed:.0%} observed")
    if args.json:
        write_json(args.json, result)
    if history.diverged:
        return report_divergence(f"the train loss became {history.train_loss[-1]} at step "
                                 f"{result['steps']}", lr)
    if args.json != "-":
        print(f"{args.method}: recovery error {result['recovery_error']:.3e} after "
              f"{result['steps']} steps, {result['seconds']:.2f} s; 1e-2 reached at "
              f"{f'step {reached[0]}' if reached else 'no step'}")
    return 0


def report_divergence(what: str, lr: float | None) -> int:
    """Say on stderr that the run diverged; the exit status 1."""
    print(f"deeplora: run diverged: {what}; no result to report (the JSON says "
          f'"diverged": true). Try a smaller --lr'
          + (f" than {lr:g}" if lr is not None else ""), file=sys.stderr)
    return 1

