"""``movielens``: compressed deep matrix completion vs baselines on MovieLens 100K's folds.

Every method is trained on ``uK.base`` and scored on ``uK.test`` (K = 1…5, the official 80/20
folds), with the same re-indexing (users/items first seen in a test file get the bias
fallback) and predictions clipped to [1, 5]. Writes ``movielens.json`` (per fold),
``movielens.md`` (RMSE and MAE, mean ± std over folds) and ``movielens.png``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.cli.output import write_atomic, write_json
from deeplora.completion.baselines import BiasedALS, Biases, GlobalMean, SoftImpute
from deeplora.completion.data import IdIndex, movielens_100k
from deeplora.completion.estimator import DeepMatrixCompletion, mae, rmse
from deeplora.experiments import Arg, experiment
from deeplora.plotting import new_figure, save_figure

CLIP = (1.0, 5.0)
SOURCES = {
    "deep compressed (ours)": "deeplora.completion.DeepMatrixCompletion",
    "global mean": "deeplora.completion.baselines.GlobalMean",
    "user/item biases": "deeplora.completion.baselines.Biases",
    "SoftImpute": "deeplora.completion.baselines.SoftImpute (Mazumder et al. 2010)",
    "biased MF (ALS)": "deeplora.completion.baselines.BiasedALS (ALS-WR)",
}


def _methods(args: argparse.Namespace, steps: int) -> dict[str, Callable[[], Any]]:
    return {
        "deep compressed (ours)": lambda: DeepMatrixCompletion(
            depth=args.depth, rank=args.rank, lr=args.lr, gamma=args.gamma, max_steps=steps,
            clip=CLIP, random_state=args.seed),
        "global mean": lambda: GlobalMean(clip=CLIP),
        "user/item biases": lambda: Biases(clip=CLIP),
        "SoftImpute": lambda: SoftImpute(clip=CLIP, random_state=args.seed),
        "biased MF (ALS)": lambda: BiasedALS(clip=CLIP, random_state=args.seed),
    }


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table: method, RMSE and MAE (mean ± std over folds), seconds per fold."""
    lines = ["| method | RMSE | MAE | s / fold | folds |", "|---|---|---|---|---|"]
    for name, folds in results.items():
        cells = []
        for key in ("rmse", "mae"):
            values = np.array([f[key] for f in folds])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{values.mean():.4f} ± {spread:.4f}")
        seconds = np.mean([f["seconds"] for f in folds])
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {seconds:.1f} | {len(folds)} |")
    return "\n".join(lines)


@experiment(
    "movielens",
    help="MovieLens 100K, official folds u1…u5: compressed deep factorization vs baselines",
    arguments=[
        Arg("--root", default=None, help="ml-100k folder (default: see deeplora.completion.data)"),
        Arg("--splits", nargs="+", default=["u1", "u2", "u3", "u4", "u5"]),
        Arg("--rank", type=int, default=10, help="r̂ (width 2r̂)"),
        Arg("--depth", type=int, default=3),
        Arg("--lr", type=float, default=3e-2, help="Adam step"),
        Arg("--gamma", type=float, default=1e-2, help="discrepant rate of the outer factors"),
        Arg("--steps", type=int, default=3000, help="maximum steps (early stopping on 10%%)"),
        Arg("--seed", type=int, default=0),
    ],
)
def movielens(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    splits, steps = (["u1"], 100) if args.fast else (args.splits, args.steps)
    data = {split: movielens_100k(split, args.root) for split in splits}  # fail before work
    methods = _methods(args, steps)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for split, (train, test) in data.items():
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)
        for name, make in methods.items():
            start = time.perf_counter()
            model = make().fit(rows, cols, train.values, ids.shape)
            predicted = model.predict(test_rows, test_cols)
            results[name].append({"split": split, "rmse": rmse(predicted, test.values),
                                  "mae": mae(predicted, test.values),
                                  "seconds": time.perf_counter() - start})
            print(f"{split} {name}: RMSE {results[name][-1]['rmse']:.4f}", flush=True)
    text = table(results)
    fig, (ax,) = new_figure(width=7.5, height=3.8)
    names = list(results)
    means = [np.mean([f["rmse"] for f in results[n]]) for n in names]
    stds = [np.std([f["rmse"] for f in results[n]], ddof=1) if len(splits) > 1 else 0.0
            for n in names]
    ax.barh(names, means, xerr=stds, color="tab:blue", alpha=0.8)
    for i, name in enumerate(names):
        ax.scatter([f["rmse"] for f in results[name]], [i] * len(results[name]), color="k", s=8,
                   zorder=3)
    ax.set_xlim(0.85, max(means) + 0.05)
    ax.set_xlabel(f"test RMSE (mean ± std over {', '.join(splits)}; dots: folds)")
    ax.invert_yaxis()
    ax.set_title("MovieLens 100K, official folds")
    save_figure(fig, out / "movielens.png")
    summary = {"splits": splits, "rank": args.rank, "depth": args.depth, "lr": args.lr,
               "gamma": args.gamma, "max_steps": steps, "clip": list(CLIP), "sources": SOURCES,
               "results": results, "table": text}
    write_json(out / "movielens.json", summary)
    write_atomic(out / "movielens.md", lambda tmp: tmp.write_text(text + "\n"))
    return summary
