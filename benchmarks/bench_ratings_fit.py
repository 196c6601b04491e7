"""Fit time of the ratings preset vs Surprise's SVD on MovieLens 100K, in one run.

For each official fold (``u1``…``u5``), ``--repeats`` times in alternation: Surprise SVD at its
defaults (trainset construction + ``fit``) and ``DeepMatrixCompletion.ratings()`` (``fit`` on
re-indexed triples: validation split, compressed construction, training with early stopping),
both single-threaded, after one untimed warm-up of each. Reports median seconds per fold, the
ratio ours / SVD, test RMSE, and where our time goes: the compressed construction (a sparse
top-r̂ SVD), the training steps, and the validation evaluations.

    OMP_NUM_THREADS=1 python benchmarks/bench_ratings_fit.py --out runs/bench_ratings_fit.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from deeplora.completion.baselines import Surprise
from deeplora.completion.data import IdIndex, movielens_100k
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import rmse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["u1", "u2", "u3", "u4", "u5"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the measurements")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    for split in args.splits:
        train, test = movielens_100k(split, args.root)
        ids = IdIndex.fit(train)
        rows, cols = ids.transform(train)
        test_rows, test_cols = ids.transform(test)
        times: dict[str, list[float]] = {"svd": [], "ours": [], "build": [], "eval": []}
        for repeat in range(args.repeats + 1):  # repeat 0: warm-up, not timed
            start = time.perf_counter()
            svd = Surprise("SVD", clip=(1.0, 5.0)).fit(rows, cols, train.values, ids.shape)
            svd_seconds = time.perf_counter() - start
            start = time.perf_counter()
            ours = DeepMatrixCompletion.ratings().fit(rows, cols, train.values, ids.shape)
            ours_seconds = time.perf_counter() - start
            if repeat:
                times["svd"].append(svd_seconds)
                times["ours"].append(ours_seconds)
                times["build"].append(ours.build_seconds_)
                times["eval"].append(ours.eval_seconds_)
        median = {key: statistics.median(value) for key, value in times.items()}
        record = {
            "split": split, "svd_seconds": median["svd"], "ours_seconds": median["ours"],
            "ratio": median["ours"] / median["svd"], "build_seconds": median["build"],
            "eval_seconds": median["eval"],
            "step_seconds": median["ours"] - median["build"] - median["eval"],
            "steps": ours.n_steps_, "best_step": ours.best_step_,
            "svd_rmse": rmse(svd.predict(test_rows, test_cols), test.values),
            "ours_rmse": rmse(ours.predict(test_rows, test_cols), test.values),
            "all_seconds": times,
        }
        records.append(record)
        print(f"{split}: SVD {record['svd_seconds']:.2f} s, ours {record['ours_seconds']:.2f} s "
              f"(ratio {record['ratio']:.2f}; construction {record['build_seconds']:.2f} s, "
              f"{record['steps']} steps {record['step_seconds']:.2f} s, validation "
              f"{record['eval_seconds']:.2f} s); RMSE SVD {record['svd_rmse']:.4f}, ours "
              f"{record['ours_rmse']:.4f}", flush=True)
    total = {key: sum(r[key] for r in records) for key in ("svd_seconds", "ours_seconds")}
    print(f"all folds: ratio {total['ours_seconds'] / total['svd_seconds']:.2f} "
          f"(ours {total['ours_seconds']:.2f} s / SVD {total['svd_seconds']:.2f} s), "
          f"median per-fold ratio {np.median([r['ratio'] for r in records]):.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"records": records, "total": total,
                                              "threads": 1}, indent=1))


if __name__ == "__main__":
    main()
