"""Settings of the ratings preset compared on validation splits only: behind its
``reg_uniform=0.5`` and ``rank=10`` (BENCHMARKS.md §3).

For each experiment split (MovieLens 100K ``u1``…``u5`` and the temporal split of ``u.data``;
FilmTrust and the Book-Crossing 10- and 5-core ``random_split(data, seed)``, seeds 0–4, as
``deeplora experiment movielens`` makes them), its training part is split again 80/20 (seed
+ 100; the temporal split: seed 107) and ``DeepMatrixCompletion.ratings(**{PARAM: value},
random_state=seed)`` is fitted on the 80 % and scored on the 20 % (RMSE; ids unseen in the 80 %
get the estimator's bias-only prediction), for each value and each ``--seeds`` entry (the
estimator's own validation split and initialization). No test file is read. One JSON per split
in OUT; the report compares every value with the first one, seeds averaged per split:

    OMP_NUM_THREADS=1 python benchmarks/preset_choices.py OUT --param reg_uniform \
        --values 0 0.25 0.5 0.75 1
    OMP_NUM_THREADS=1 python benchmarks/preset_choices.py OUT --param rank --values 10 8 6 4 \
        --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/preset_choices.py OUT --param batching \
        --values '{}' '{"batch_size": 10000, "eval_every": 8}'   # several settings per value
    python benchmarks/preset_choices.py OUT --report   # the summary table from OUT

``--set KEY=VALUE`` (repeatable) changes another setting for every fit (e.g. ``--set rank=8``
compares penalties at that rank).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

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


def measure(out: Path, param: str, values: list[float], seeds: list[int],
            overrides: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in SPLITS:
        train, clip, seed = _training_part(name, split)
        fit, val = random_split(train, seed + 100)
        ids = IdIndex.fit(fit)
        rows, cols = ids.transform(fit)
        val_rows, val_cols = ids.transform(val)
        record = {"dataset": name, "split": split, "ratings": int(rows.size), "param": param,
                  "overrides": overrides, "fits": {}}
        for value in values:
            fits = record["fits"][_label(value)] = []
            settings = value if isinstance(value, dict) else {param: value}
            for random_state in seeds:
                start = time.process_time()
                model = DeepMatrixCompletion.ratings(
                    **{**overrides, **settings}, clip=clip, random_state=random_state).fit(
                    rows, cols, fit.values, ids.shape)
                fits.append({"random_state": random_state,
                             "val_rmse": rmse(model.predict(val_rows, val_cols), val.values),
                             "selected": model.selected_, "steps": int(model.n_steps_),
                             "cpu_seconds": time.process_time() - start})
                print(name, split, f"{param}={_label(value)}", random_state,
                      round(fits[-1]["val_rmse"], 5), flush=True)
        (out / f"{name}-{split}.json").write_text(json.dumps(record, indent=1))


def _label(value: Any) -> str:
    """A value's key in the files: ``str(value)``, or for a JSON object of several settings
    (``--values '{"batch_size": 10000, "eval_every": 8}'``) its compact JSON."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)


def _mean(fits: list[dict] | dict, key: str) -> float:
    """``key`` averaged over a value's fits (one per seed; a single fit is one dict, as in
    files written before ``--seeds``)."""
    return float(np.mean([f[key] for f in ([fits] if isinstance(fits, dict) else fits)]))


def report(out: Path) -> str:
    """Per dataset: mean validation RMSE of each value minus the first value's (seeds averaged
    per split), on how many splits it is lower, and the CPU seconds of all its fits relative to
    the first value's."""
    records = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    param = records[0].get("param", "reg_uniform")
    values = list(records[0]["fits"])
    lines = ["| data | splits | " + " | ".join(f"{param} = {v}" for v in values[1:]) + " |",
             "|---|---|" + "---|" * (len(values) - 1)]
    groups = {}
    for record in records:
        groups.setdefault(record["dataset"], []).append(record)
    groups["all"] = records
    for name, group in groups.items():
        cells = []
        for value in values[1:]:
            gaps = [_mean(r["fits"][value], "val_rmse") - _mean(r["fits"][values[0]], "val_rmse")
                    for r in group]
            time_ratio = (sum(_mean(r["fits"][value], "cpu_seconds") for r in group)
                          / sum(_mean(r["fits"][values[0]], "cpu_seconds") for r in group))
            cells.append(f"{np.mean(gaps):+.4f} ({sum(g < 0 for g in gaps)} lower), "
                         f"time ×{time_ratio:.2f}")
        lines.append(f"| {name} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--param", default="reg_uniform",
                        help="the preset's setting to vary (an estimator parameter)")
    parser.add_argument("--values", type=json.loads, nargs="+",
                        default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="its values, each read as JSON (10 an integer, 0.5 a float; an "
                             "object sets several settings at once, {} the preset's own); the "
                             "first is the reference")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="the estimator's random_state values, each fitted")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another preset setting changed for every fit (VALUE read as "
                             "JSON), e.g. rank=10")
    parser.add_argument("--report", action="store_true", help="only print the summary")
    args = parser.parse_args()
    if not args.report:
        overrides = {key: json.loads(value)
                     for key, value in (item.split("=", 1) for item in args.set)}
        measure(args.out, args.param, args.values, args.seeds, overrides)
    print(report(args.out))


if __name__ == "__main__":
    main()
