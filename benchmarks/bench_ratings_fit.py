"""Fit time of the ratings preset vs Surprise's SVD on MovieLens 100K, FilmTrust or Book-Crossing.

For each official fold (``u1``…``u5``; with ``--dataset filmtrust``, ``book-crossing`` or
``book-crossing-5`` random 80/20 splits of :mod:`deeplora.experiments.movielens`' data,
``--splits`` are seeds), ``--repeats`` times in alternation: Surprise SVD at its defaults
(trainset construction + ``fit``), ``DeepMatrixCompletion.ratings()`` (``fit`` on re-indexed
triples: validation split, compressed construction, the penalty search of
:mod:`deeplora.completion.selection` with early stopping) and the same preset at the fixed λ
the search chose (one fit), all single-threaded (``--threads N``: N torch threads for ours;
Surprise's SVD has one whatever it is given), after one untimed warm-up of each. Reports
median wall-clock seconds per split and the ratio ours / SVD (and fixed-λ / SVD), the same in
CPU seconds of the process (``time.process_time``: less sensitive to other jobs on a shared
machine, which stretch wall time), test RMSE, the λ chosen and where our time goes: the
compressed construction (a sparse top-r̂ SVD), the training steps, and the validation
evaluations. The load average before and after the run is recorded. ``--stacked K …`` also
times, on the first split, the CPU milliseconds per step of K candidate penalties trained as one
stacked model (the search's batches; K = 1 is a plain fit), 60 steps each, fastest of 3.

    OMP_NUM_THREADS=1 python benchmarks/bench_ratings_fit.py --out runs/bench_ratings_fit.json

``--set rank=10`` (repeatable) times the preset with that setting changed instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplora.completion.baselines import Surprise
from deeplora.completion.data import IdIndex, movielens_100k, random_split
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import rmse
from deeplora.experiments.movielens import DATASETS, LOADERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="movielens")
    parser.add_argument("--splits", nargs="+", default=None,
                        help="official folds (default u1…u5); for the others seeds (default 0…4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    parser.add_argument("--stacked", type=int, nargs="*", default=[],
                        help="numbers K of stacked candidates to time per step")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for ours (default 1, as Surprise's SVD)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a preset setting changed (VALUE read as JSON), e.g. rank=10")
    args = parser.parse_args()
    overrides = {key: json.loads(value)
                 for key, value in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    records = []
    everything = LOADERS[args.dataset]() if args.dataset in LOADERS else None
    splits = args.splits or (["0", "1", "2", "3", "4"] if everything
                             else ["u1", "u2", "u3", "u4", "u5"])
    clip = DATASETS[args.dataset][1]
    for split in splits:
        train, test = (random_split(everything, int(split)) if everything
                       else movielens_100k(split, args.root))
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)
        if args.stacked and not records:
            stacked = _stacked_step_ms(rows, cols, train.values, ids.shape, args.stacked,
                                       overrides)
            print(f"{split}: CPU ms per step of K stacked candidates: {stacked}", flush=True)
        times: dict[str, list[float]] = {key: [] for key in (
            "svd", "ours", "fixed", "svd_cpu", "ours_cpu", "fixed_cpu", "build", "eval")}
        for repeat in range(args.repeats + 1):  # repeat 0: warm-up, not timed
            data = (rows, cols, train.values, ids.shape)
            svd, svd_seconds = _timed(Surprise("SVD", clip=clip), data)
            ours, ours_seconds = _timed(DeepMatrixCompletion.ratings(**overrides), data)
            _, fixed_seconds = _timed(
                DeepMatrixCompletion.ratings(**{**overrides, "reg": ours.selected_["reg"]}), data)
            if repeat:
                for key, (wall, cpu) in (("svd", svd_seconds), ("ours", ours_seconds),
                                         ("fixed", fixed_seconds)):
                    times[key].append(wall)
                    times[f"{key}_cpu"].append(cpu)
                times["build"].append(ours.build_seconds_)
                times["eval"].append(ours.eval_seconds_)
        median = {key: statistics.median(value) for key, value in times.items()}
        record = {
            "split": split, "svd_seconds": median["svd"], "ours_seconds": median["ours"],
            "ratio": median["ours"] / median["svd"], "fixed_seconds": median["fixed"],
            "fixed_ratio": median["fixed"] / median["svd"], "svd_cpu": median["svd_cpu"],
            "ours_cpu": median["ours_cpu"], "fixed_cpu": median["fixed_cpu"],
            "cpu_ratio": median["ours_cpu"] / median["svd_cpu"],
            "fixed_cpu_ratio": median["fixed_cpu"] / median["svd_cpu"],
            "selected": ours.selected_,
            "visited": [p["reg"] for p in ours.path_], "build_seconds": median["build"],
            "eval_seconds": median["eval"],
            "step_seconds": median["ours"] - median["build"] - median["eval"],
            "steps": ours.n_steps_, "best_step": ours.best_step_,
            "svd_rmse": rmse(svd.predict(test_rows, test_cols), test.values),
            "ours_rmse": rmse(ours.predict(test_rows, test_cols), test.values),
            "all_seconds": times,
        }
        records.append(record)
        print(f"{split}: SVD {record['svd_seconds']:.2f} s, ours {record['ours_seconds']:.2f} s "
              f"(ratio {record['ratio']:.2f}; one fit at the chosen λ = "
              f"{ours.selected_['reg']:g}: {record['fixed_seconds']:.2f} s, ratio "
              f"{record['fixed_ratio']:.2f}; CPU ratio {record['cpu_ratio']:.2f}, fixed λ "
              f"{record['fixed_cpu_ratio']:.2f}; construction {record['build_seconds']:.2f} s, "
              f"{record['steps']} steps {record['step_seconds']:.2f} s, validation "
              f"{record['eval_seconds']:.2f} s); RMSE SVD {record['svd_rmse']:.4f}, ours "
              f"{record['ours_rmse']:.4f}", flush=True)
    total = {key: sum(r[key] for r in records)
             for key in ("svd_seconds", "ours_seconds", "fixed_seconds", "svd_cpu", "ours_cpu",
                         "fixed_cpu")}
    print(f"all splits: ratio {total['ours_seconds'] / total['svd_seconds']:.2f} "
          f"(one fit at the chosen λ: {total['fixed_seconds'] / total['svd_seconds']:.2f}) "
          f"(ours {total['ours_seconds']:.2f} s / SVD {total['svd_seconds']:.2f} s), "
          f"median per-fold ratio {np.median([r['ratio'] for r in records]):.2f}; CPU ratio "
          f"{total['ours_cpu'] / total['svd_cpu']:.2f} (one fit "
          f"{total['fixed_cpu'] / total['svd_cpu']:.2f}); load average {load} → "
          f"{os.getloadavg()}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"dataset": args.dataset, "overrides": overrides,
                                              "records": records,
                                              "total": total, "threads": args.threads,
                                              "stacked_step_ms": stacked if args.stacked else {},
                                              "load_average": [load, os.getloadavg()]},
                                             indent=1))


def _stacked_step_ms(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                     shape: tuple[int, int], counts: list[int], overrides: dict[str, Any]
                     ) -> dict[int, float]:
    """CPU milliseconds per step of ``K`` stacked candidates (λ = 0.1 each, no early stopping:
    60 steps, fastest of 3), for each K in ``counts``, on the preset's model of these ratings
    (with ``overrides``)."""
    est = DeepMatrixCompletion.ratings(**{**overrides, "reg": 0.1, "refit": False,
                                          "max_steps": 0}).fit(rows, cols, values, shape)
    rng = np.random.default_rng(0)
    batches = est._start(rows, cols, values, rng, torch.float32)
    est.max_steps = 60
    out = {}
    for count in counts:
        best = np.inf
        for _ in range(3):
            cpu = time.process_time()
            est._train(batches, None, rng, 0.0, [(0.1, 0.0)] * count)
            best = min(best, time.process_time() - cpu)
        out[count] = 1000 * best / (est.max_steps + 1)
    return out


def _timed(model: Any, data: tuple[Any, ...]) -> tuple[Any, tuple[float, float]]:
    """``(model.fit(*data), (wall-clock seconds, CPU seconds of this process))``."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(*data)
    return model, (time.perf_counter() - wall, time.process_time() - cpu)


if __name__ == "__main__":
    main()
