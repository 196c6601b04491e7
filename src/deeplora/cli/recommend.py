"""``deeplora recommend``: fit the ratings preset on a ratings file (or load a saved model) and
write the top-k items of every user (or of ``--users``) to a CSV file."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import numpy as np

from deeplora.cli import (
    Given,
    HelpFormatter,
    add_ratings_file_arguments,
    check_file_only,
    flag_of,
    given_options,
    parameters_as_flags,
    ratings_file_options,
    report_left_init,
)
from deeplora.completion.data import IdIndex, Ratings, read_ratings
from deeplora.experiments import random_seed
from deeplora.output import check_writable, write_atomic, write_json

FIT_ONLY = ("feedback", "positive_threshold", "alpha", "shrinkage", "save_model", "rank",
            "steps", "seed", "distributed")
"""Options of fitting, which a model loaded with ``--model`` has already had (refused with it
when given, at any value: their action is :class:`~deeplora.cli.Given`)."""


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recommend",
        help="top-k recommendations per user from a ratings file, to CSV",
        description="Fit DeepMatrixCompletion.ratings() (or, with --feedback implicit, "
        "DeepMatrixCompletion.implicit()) on --ratings, or load --model, and write the k "
        "best-ranked items of each user, excluding the items the user rated, to --output as "
        "CSV with columns user,item,rank,score and, for explicit feedback, predicted_rating "
        "(folders missing in --output's path are created, as for --json). With --test: also "
        "report precision/recall/NDCG/MAP@k (and, explicit, RMSE/MAE) on held-out ratings.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--ratings", metavar="PATH", required=True,
                   help="training ratings (with --model: the users and what each rated, "
                   "excluded as are the model's training items)")
    p.add_argument("--output", metavar="PATH|-", required=True,
                   help="CSV file to write (-: stdout)")
    p.add_argument("--k", type=int, default=10,
                   help="items per user (1 to the number of items; fewer when a user has "
                   "rated all but fewer than k)")
    p.add_argument("--users", nargs="+", default=None, metavar="ID",
                   help="recommend for these user ids only, each known to the model "
                   "(default: every user in --ratings)")
    p.add_argument("--feedback", action=Given, choices=("explicit", "implicit"),
                   default="explicit",
                   help="explicit: fit the ratings; implicit: fit rated-vs-unrated (clicks, "
                   "or ratings >= --positive-threshold) with confidence 1 + α·rating")
    p.add_argument("--positive-threshold", action=Given, type=float, default=None, metavar="T",
                   help="implicit: a rating >= T is a positive (default: every rating)")
    p.add_argument("--alpha", action=Given, type=float, default=None,
                   help="implicit: confidence slope α (default: the preset's)")
    p.add_argument("--shrinkage", action=Given, type=float, default=None,
                   help="explicit: λ_s of the ranking score, item terms × n/(n + λ_s) "
                   "(default: the preset's)")
    p.add_argument("--include-seen", action="store_true",
                   help="also recommend items the user already rated")
    p.add_argument("--test", metavar="PATH", default=None,
                   help="held-out ratings: report RMSE/MAE and ranking metrics @k")
    p.add_argument("--threshold", type=float, default=4.0,
                   help="a held-out rating >= this is relevant (ranking metrics)")
    p.add_argument("--model", metavar="PATH", default=None,
                   help="load a model saved with --save-model instead of fitting (the "
                   f"options of fitting, {', '.join(map(flag_of, FIT_ONLY))}, are "
                   "refused with it)")
    p.add_argument("--save-model", action=Given, metavar="PATH", default=None,
                   help="save the fitted model (a file)")
    p.add_argument("--rank", action=Given, type=int, default=None,
                   help="r̂ (default: the preset's)")
    p.add_argument("--steps", action=Given, type=int, default=None,
                   help="maximum steps (default: preset)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda, cuda:1, …")
    p.add_argument("--seed", action=Given, type=random_seed, default=0)
    p.add_argument("--distributed", action=Given, nargs=0, const=True, default=False,
                   help="shard the training ratings over the processes started by torchrun "
                   "(gloo on CPU, NCCL on GPUs); rank 0 writes the outputs")
    p.add_argument("--json", metavar="PATH|-", default=None, help="write a summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ratings_file_arguments(p.add_argument_group("ratings file format"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.model and (given := given_options(args, FIT_ONLY)):
        raise ValueError(f"{' '.join(given)}: options of fitting a model; --model "
                         f"{args.model} is already fitted")
    if args.feedback == "explicit":
        for flag, value in (("--positive-threshold", args.positive_threshold),
                            ("--alpha", args.alpha)):
            if value is not None:
                raise ValueError(f"{flag} applies to --feedback implicit")
    elif args.shrinkage is not None:
        raise ValueError("--shrinkage applies to --feedback explicit")
    if args.output == args.json == "-":
        raise ValueError("--output - and --json -: only one of them can go to stdout")
    check_file_only("--save-model", args.save_model, "a model")
    for path in (args.output, args.json, args.save_model):
        check_writable(path)
    if args.distributed:
        return _run_distributed(args)
    return _run(args)


def _run_distributed(args: argparse.Namespace) -> int:
    import os

    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise ValueError("--distributed needs the environment torchrun sets up (RANK, "
                         "WORLD_SIZE, MASTER_ADDR, …); launch with torchrun")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if dist.get_rank() != 0:  # the others train their shards and write nothing
            args.output = args.json = args.save_model = None
            args.quiet = True
        return _run(args)
    finally:
        dist.destroy_process_group()


def _run(args: argparse.Namespace) -> int:
    from deeplora.completion.estimator import DeepMatrixCompletion
    from deeplora.completion.training import NeverLeftInitWarning

    train = read_ratings(args.ratings, **ratings_file_options(args))
    test = read_ratings(args.test, **ratings_file_options(args)) if args.test else None
    frame = _frame(train)
    start = time.perf_counter()
    if args.model:
        estimator = DeepMatrixCompletion.load(args.model)
        if estimator.ids_ is None:
            raise ValueError(f"{args.model!r} was not fitted on raw ids (a DataFrame or file)")
        known = estimator.ids_
    else:
        known = IdIndex.fit(train)
    _check_request(args, known, "--model" if args.model else "--ratings", train.users)
    if not args.model:
        estimator = _estimator(args)
        with parameters_as_flags(), warnings.catch_warnings():
            # reported below, once (as for a loaded model)
            warnings.simplefilter("ignore", NeverLeftInitWarning)
            estimator.fit(frame)
    seconds = time.perf_counter() - start
    if args.output is None:  # a distributed worker other than rank 0
        return 0
    users = np.unique(train.users) if args.users is None else np.asarray(args.users)
    k = args.k
    exclude = frame if args.model and not args.include_seen else None  # what they rated
    items, scores = estimator.recommend(users, k, exclude_seen=not args.include_seen,
                                        exclude=exclude)
    found = np.array([[item is not None for item in row] for row in items], dtype=bool)
    user_column = np.repeat(users, k).reshape(len(users), k)
    rank_column = np.tile(np.arange(1, k + 1), (len(users), 1))
    out = {"user": user_column[found], "item": items[found], "rank": rank_column[found],
           "score": np.round(scores[found], 6)}
    if estimator.feedback == "explicit":
        out["predicted_rating"] = np.round(estimator.predict(out["user"], out["item"]), 6)
    result: dict[str, Any] = {"ratings": str(args.ratings), "users": len(users), "k": k,
                              "feedback": estimator.feedback,
                              "rows_written": int(found.sum()), "fit_seconds": seconds,
                              "shape": list(estimator.shape_), "output": str(args.output),
                              "left_init": estimator.left_init_,
                              "interaction_rms": estimator.interaction_rms_}
    if test is not None:
        held_out = _frame(test)
        result["test"] = {**({} if estimator.feedback == "implicit"
                             else estimator.evaluate(held_out)),
                          **estimator.ranking_metrics(held_out, k=k, threshold=args.threshold)}
    import pandas as pd

    if args.output == "-":
        pd.DataFrame(out).to_csv(sys.stdout, index=False)
    else:
        write_atomic(args.output, lambda tmp: pd.DataFrame(out).to_csv(tmp, index=False))
    if args.save_model:
        estimator.save(args.save_model)
    if args.json:
        write_json(args.json, result)
    report_left_init(estimator)
    if "-" not in (args.output, args.json):  # stdout holds the CSV or the JSON
        scores_line = "" if test is None else "; test " + ", ".join(
            f"{name} {result['test'][key]:.4f}" for name, key in (
                ("RMSE", "rmse"), (f"precision@{k}", f"precision@{k}"),
                (f"NDCG@{k}", f"ndcg@{k}")) if key in result["test"])
        print(f"wrote {result['rows_written']} recommendations ({len(users)} users × top {k}) "
              f"to {args.output}{scores_line}")
    return 0


def _estimator(args: argparse.Namespace) -> Any:
    """The preset of ``--feedback`` with the command line's overrides."""
    from deeplora.completion.estimator import DeepMatrixCompletion

    overrides = {key: value for key, value in (
        ("rank", args.rank), ("max_steps", args.steps), ("alpha", args.alpha),
        ("positive_threshold", args.positive_threshold), ("shrinkage", args.shrinkage))
        if value is not None}
    preset = (DeepMatrixCompletion.implicit if args.feedback == "implicit"
              else DeepMatrixCompletion.ratings)
    return preset(random_state=args.seed, device=args.device, distributed=args.distributed,
                  progress=not args.quiet, **overrides)


def _check_request(args: argparse.Namespace, known: IdIndex, source: str,
                   rated: np.ndarray) -> None:
    """``--k`` at most the number of items and every ``--users`` id (default: the users of
    ``--ratings``, ``rated``) known to ``source``."""
    if args.k > known.items.size:
        raise ValueError(f"--k {args.k} is more than the {known.items.size} items of {source}")
    flag, wanted = ("--users", args.users) if args.users is not None else ("--ratings", rated)
    names = {str(user) for user in known.users}
    unknown = list(dict.fromkeys(str(user) for user in wanted if str(user) not in names))
    if unknown:
        shown = " ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise ValueError(f"{flag}: {len(unknown)} id(s) not among the {known.users.size} users "
                         f"of {source}: {shown}" + ("" if args.users else " (give --users)"))


def _frame(ratings: Ratings) -> Any:
    import pandas as pd

    return pd.DataFrame({"user": ratings.users, "item": ratings.items, "rating": ratings.values})
