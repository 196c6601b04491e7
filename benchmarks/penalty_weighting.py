"""How the ratings preset's penalty is spread over rows and columns (``reg_uniform``), measured
on validation splits only: behind the preset's ``reg_uniform=0.5`` (BENCHMARKS.md §3).

For each experiment split (MovieLens 100K ``u1``…``u5`` and the temporal split of ``u.data``;
FilmTrust and the Book-Crossing 10- and 5-core ``random_split(data, seed)``, seeds 0–4, as
``deeplora experiment movielens`` makes them), its training part is split again 80/20 (seed
+ 100; the temporal split: seed 107) and ``DeepMatrixCompletion.ratings(reg_uniform=β)`` is
fitted on the 80 % and scored on the 20 % (RMSE; ids unseen in the 80 % get the estimator's
bias-only prediction), for each β. No test file is read. One JSON per split in OUT:

    OMP_NUM_THREADS=1 python benchmarks/penalty_weighting.py OUT [--betas 0 0.25 0.5 0.75 1]
    python benchmarks/penalty_weighting.py OUT --report   # the summary table from OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from deeplora.completion.data import IdIndex, random_split
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import rmse
from deeplora.experiments.movielens import DATASETS, LOADERS, experiment_splits

SPLITS = ([("movielens", f"u{k}") for k in range(1, 6)] + [("movielens", "temporal")]
          + [(name, str(seed)) for name in LOADERS for seed in range(5)])


def _training_part(name: str, split: str) -> tuple[object, tuple[float, float], int]:
    """``(training ratings, clip range, seed of the inner split − 100)`` of one experiment
    split, as ``deeplora experiment movielens`` makes it."""
    if name != "movielens":
        seed = int(split)
        folds, seeds, temporal = [], [seed], False
    else:
        seed = 7 if split == "temporal" else int(split[1])
        folds, seeds, temporal = ([], [], True) if split == "temporal" else ([split], [], False)
    ((train, _),) = experiment_splits(name, folds, seeds, temporal).values()
    return train, DATASETS[name][1], seed


def measure(out: Path, betas: list[float]) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in SPLITS:
        train, clip, seed = _training_part(name, split)
        fit, val = random_split(train, seed + 100)
        ids = IdIndex.fit(fit)
        rows, cols = ids.transform(fit)
        val_rows, val_cols = ids.transform(val)
        record = {"dataset": name, "split": split, "ratings": int(rows.size), "fits": {}}
        for beta in betas:
            start = time.process_time()
            model = DeepMatrixCompletion.ratings(reg_uniform=beta, clip=clip).fit(
                rows, cols, fit.values, ids.shape)
            record["fits"][str(beta)] = {
                "val_rmse": rmse(model.predict(val_rows, val_cols), val.values),
                "selected": model.selected_, "steps": int(model.n_steps_),
                "cpu_seconds": time.process_time() - start}
            print(name, split, beta, round(record["fits"][str(beta)]["val_rmse"], 5), flush=True)
        (out / f"{name}-{split}.json").write_text(json.dumps(record, indent=1))


def report(out: Path) -> str:
    """Per dataset: mean validation RMSE of each β minus β = 0's, and on how many splits β is
    lower than β = 0."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    betas = list(records[0]["fits"])
    lines = ["| data | splits | " + " | ".join(f"β = {b}" for b in betas[1:]) + " |",
             "|---|---|" + "---|" * (len(betas) - 1)]
    groups = {}
    for record in records:
        groups.setdefault(record["dataset"], []).append(record)
    groups["all"] = records
    for name, group in groups.items():
        cells = []
        for beta in betas[1:]:
            gaps = [r["fits"][beta]["val_rmse"] - r["fits"][betas[0]]["val_rmse"] for r in group]
            cells.append(f"{np.mean(gaps):+.4f} ({sum(g < 0 for g in gaps)} lower)")
        lines.append(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--report", action="store_true", help="only print the summary")
    args = parser.parse_args()
    if not args.report:
        measure(args.out, args.betas)
    print(report(args.out))


if __name__ == "__main__":
    main()
