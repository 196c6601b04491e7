"""``movielens``: compressed deep matrix completion vs baselines on MovieLens 100K.

Splits: the official 80/20 folds ``u1``…``u5`` (``uK.base``/``uK.test``) and random 80/20
splits of ``u.data`` (``random-S``, seed S). On every split each method is trained on the same
training ratings and scored on the same test ratings, with the same re-indexing (users/items
first seen in a test file get the bias fallback) and predictions clipped to [1, 5]. Settings
are never chosen on a test file: ours is :meth:`DeepMatrixCompletion.ratings` (chosen on a
validation split carved from ``u1.base``), the Surprise baselines run at the library's
defaults. Writes ``movielens-<split>.json`` per split, ``movielens.json`` (all),
``movielens.md`` (RMSE, MAE, fit seconds: mean ± std per split family) and ``movielens.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.completion.baselines import BiasedALS, SoftImpute, Surprise
from deeplora.completion.data import (
    IdIndex,
    Ratings,
    find_movielens_100k,
    movielens_100k,
    read_ratings,
)
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import mae, rmse
from deeplora.experiments import Arg, experiment
from deeplora.output import write_atomic, write_json
from deeplora.plotting import new_figure, save_figure

CLIP = (1.0, 5.0)
OURS = "deep compressed (ours)"
SOURCES = {
    OURS: "deeplora.completion.estimator.DeepMatrixCompletion.ratings()",
    "Surprise BaselineOnly": "surprise.BaselineOnly (ALS baselines, defaults)",
    "Surprise SVD": "surprise.SVD (Funk SVD by SGD, defaults: 100 factors, 20 epochs)",
    "Surprise SVD++": "surprise.SVDpp (defaults: 20 factors, 20 epochs)",
    "Surprise KNNBaseline": "surprise.KNNBaseline (defaults: user-based, MSD, k = 40)",
    "SoftImpute": "deeplora.completion.baselines.SoftImpute (Mazumder et al. 2010)",
    "biased MF (ALS-WR)": "deeplora.completion.baselines.BiasedALS (Zhou et al. 2008)",
}
SURPRISE = {"Surprise BaselineOnly": ("BaselineOnly", {"verbose": False}),
            "Surprise SVD": ("SVD", {}), "Surprise SVD++": ("SVDpp", {}),
            "Surprise KNNBaseline": ("KNNBaseline", {"verbose": False})}


def _methods(args: argparse.Namespace, seed: int, steps: int | None
             ) -> dict[str, Callable[[], Any]]:
    extra = {} if steps is None else {"max_steps": steps}
    methods: dict[str, Callable[[], Any]] = {
        OURS: lambda: DeepMatrixCompletion.ratings(clip=CLIP, random_state=seed, **extra)}
    if importlib.util.find_spec("surprise") is not None:
        for name, (algorithm, params) in SURPRISE.items():
            methods[name] = (lambda a=algorithm, p=params:
                             Surprise(a, clip=CLIP, random_state=seed, **p))
    methods["SoftImpute"] = lambda: SoftImpute(clip=CLIP, random_state=seed)
    methods["biased MF (ALS-WR)"] = lambda: BiasedALS(clip=CLIP, random_state=seed)
    return {name: make for name, make in methods.items()
            if args.methods is None or name in args.methods}


def random_split(ratings: Ratings, seed: int, test_fraction: float = 0.2
                 ) -> tuple[Ratings, Ratings]:
    """A uniformly random ``test_fraction`` of the ratings as test set, the rest as train."""
    test = np.random.default_rng(seed).permutation(len(ratings))[
        : round(test_fraction * len(ratings))]
    mask = np.zeros(len(ratings), bool)
    mask[test] = True

    def part(keep: np.ndarray) -> Ratings:
        times = None if ratings.times is None else ratings.times[keep]
        return Ratings(ratings.users[keep], ratings.items[keep], ratings.values[keep], times)

    return part(~mask), part(mask)


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    """Markdown table: per split family and method, RMSE, MAE and fit seconds (mean ± std)."""
    lines = ["| splits | method | RMSE | MAE | fit s | runs |", "|---|---|---|---|---|---|"]
    for family, methods in results.items():
        for name, runs in methods.items():
            cells = []
            for key, digits in (("rmse", 4), ("mae", 4), ("fit_seconds", 2)):
                values = np.array([r[key] for r in runs])
                spread = values.std(ddof=1) if len(values) > 1 else 0.0
                cells.append(f"{values.mean():.{digits}f} ± {spread:.{digits}f}")
            lines.append(f"| {family} | {name} | {' | '.join(cells)} | {len(runs)} |")
    return "\n".join(lines)


@experiment(
    "movielens",
    help="MovieLens 100K (official folds u1…u5 and random 80/20 splits): ours vs Surprise and "
    "other baselines, same run, same splits",
    arguments=[
        Arg("--root", default=None, help="ml-100k folder (default: see deeplora.completion.data)"),
        Arg("--splits", nargs="*", default=["u1", "u2", "u3", "u4", "u5"],
            help="official folds"),
        Arg("--random-seeds", nargs="*", type=int, default=[0, 1, 2],
            help="seeds of random 80/20 splits of u.data"),
        Arg("--methods", nargs="+", default=None, choices=list(SOURCES),
            help="run only these (default: all; Surprise rows need scikit-surprise)"),
        Arg("--steps", type=int, default=None, help="maximum steps of ours (default: preset)"),
    ],
)
def movielens(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    splits, seeds, steps = ((["u1"], [], 100) if args.fast
                            else (args.splits, args.random_seeds, args.steps))
    data = {split: movielens_100k(split, args.root) for split in splits}  # fail before work
    if seeds:
        everything = read_ratings(find_movielens_100k(args.root) / "u.data", "movielens")
        data.update({f"random-{seed}": random_split(everything, seed) for seed in seeds})
    if not data:
        raise ValueError("no splits: give --splits and/or --random-seeds")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for split, (train, test) in data.items():
        family = "random 80/20 of u.data" if split.startswith("random") else "official folds"
        seed = int(split.split("-")[1]) if split.startswith("random") else 0
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)
        per_split: dict[str, dict[str, float]] = {}
        for name, make in _methods(args, seed, steps).items():
            start = time.perf_counter()
            model = make().fit(rows, cols, train.values, ids.shape)
            fitted = time.perf_counter()
            predicted = model.predict(test_rows, test_cols)
            record = {"split": split, "rmse": rmse(predicted, test.values),
                      "mae": mae(predicted, test.values), "fit_seconds": fitted - start,
                      "predict_seconds": time.perf_counter() - fitted}
            if isinstance(model, DeepMatrixCompletion):
                record.update(steps=model.n_steps_, best_step=model.best_step_,
                              build_seconds=model.build_seconds_)
            per_split[name] = record
            results.setdefault(family, {}).setdefault(name, []).append(record)
            print(f"{split} {name}: RMSE {record['rmse']:.4f} ({record['fit_seconds']:.1f} s)",
                  flush=True)
        write_json(out / f"movielens-{split}.json",
                   {"split": split, "n_train": len(train), "n_test": len(test),
                    "shape": list(ids.shape), "results": per_split})
    text = table(results)
    _plot(results, out / "movielens.png")
    summary = {"splits": list(data), "preset": DeepMatrixCompletion.ratings().get_params(),
               "max_steps": steps, "clip": list(CLIP), "sources": SOURCES,
               "results": results, "table": text}
    write_json(out / "movielens.json", summary)
    write_atomic(out / "movielens.md", lambda tmp: tmp.write_text(text + "\n"))
    return summary


def _plot(results: dict[str, dict[str, list[dict[str, float]]]], path: Path) -> None:
    fig, axes = new_figure(ncols=len(results), width=6.0, height=3.8)
    for ax, (family, methods) in zip(axes, results.items(), strict=True):
        names = list(methods)
        means = [np.mean([r["rmse"] for r in methods[n]]) for n in names]
        ax.barh(names, means, color=["tab:red" if n == OURS else "tab:blue" for n in names],
                alpha=0.8)
        for i, name in enumerate(names):
            ax.scatter([r["rmse"] for r in methods[name]], [i] * len(methods[name]),
                       color="k", s=8, zorder=3)
        ax.set_xlim(min(means) - 0.02, max(means) + 0.02)
        ax.set_xlabel("test RMSE (bars: mean; dots: splits)")
        ax.invert_yaxis()
        ax.set_title(f"MovieLens 100K, {family}")
    save_figure(fig, path)
