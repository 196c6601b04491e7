"""Validation RMSE behind docs/results.md, "Why ours trails SoftImpute" (issue 22, item 1).

One experiment split's training ratings (``random_split(data, SEED)``, as ``deeplora
experiment movielens --random-seeds SEED``; its test part is never read) are split again
80/20 with seed SEED + 100; every model is fitted on the 80 % and scored on the 20 %.
LABEL='{json}' arguments: ``softimpute*`` → ``SoftImpute(**json)``; ``biases*`` →
``Biases(**json)`` (κ = ``reg``); ``twostage*`` → ``Biases(κ = kappa, default 5)`` first, then
ours with ``bias="none"`` on its residuals; any other label →
``DeepMatrixCompletion.ratings(**json)``. Entries are added to OUT.json:

    PYTHONPATH=src python benchmarks/rmse_gap.py DATASET SEED OUT.json LABEL='{json}' ...
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deeplora.completion.baselines import Biases, SoftImpute
from deeplora.completion.data import IdIndex, random_split
from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.observations import rmse
from deeplora.experiments.movielens import DATASETS, LOADERS

name, seed, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
clip = DATASETS[name][1]
train, _ = random_split(LOADERS[name](), seed)  # the experiment's training part
fit, val = random_split(train, seed + 100)  # a validation split of it
ids = IdIndex.fit(fit)
rows, cols = ids.transform(fit)
vr, vc = ids.transform(val)
m, n = ids.shape
known = (vr < m) & (vc < n)
results = json.loads(out.read_text()) if out.exists() else {}


class TwoStage:
    """``Biases(κ)`` first, ours (no biases of its own) on their residuals."""

    def __init__(self, kappa: float = 5.0, **params: object) -> None:
        self.base = Biases(reg=kappa).fit(rows, cols, fit.values, ids.shape)
        residual = fit.values - self.base.predict(rows, cols)
        self.inner = DeepMatrixCompletion.ratings(**{
            "random_state": seed, "bias": "none", "clip": None, "bias_prior": 0.0, **params}
        ).fit(rows, cols, residual, ids.shape)

    def predict(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.clip(self.base.predict(r, c) + self.inner.predict(r, c), *clip)


for label, text in (arg.split("=", 1) for arg in sys.argv[4:]):
    params = json.loads(text)
    start = time.perf_counter()
    if label.startswith("softimpute"):
        model = SoftImpute(clip=clip, random_state=seed, **params).fit(rows, cols, fit.values,
                                                                      ids.shape)
        spectrum = model.factors_[1]
        extra = {"sv": [round(float(x), 3) for x in spectrum[:12]], "lambda": model.lambda_,
                 "rank": int(np.sum(spectrum > 0)), "inner_val": model.validation_rmse_}
    elif label.startswith("biases"):
        model, extra = Biases(clip=clip, **params).fit(rows, cols, fit.values, ids.shape), {}
    elif label.startswith("twostage"):
        model = TwoStage(**params)
        extra = {"steps": int(model.inner.n_steps_), "selected": model.inner.selected_}
    else:
        model = DeepMatrixCompletion.ratings(**{"clip": clip, "random_state": seed, **params}
                                             ).fit(rows, cols, fit.values, ids.shape)
        bias = (model.global_bias_ + model.row_bias_[np.minimum(vr, m - 1)] * (vr < m)
                + model.col_bias_[np.minimum(vc, n - 1)] * (vc < n))
        with torch.no_grad():
            a, b = (t.double().numpy() for t in model._end_to_end())
        sv = np.linalg.svd(np.linalg.qr(a)[1] @ np.linalg.qr(b)[1].T, compute_uv=False)
        extra = {"steps": int(model.n_steps_), "best_step": int(model.best_step_),
                 "sv": [round(float(x), 3) for x in sv[:12]], "selected": model.selected_,
                 "bias_part_rmse": rmse(np.clip(bias, *clip), val.values)}
    predicted = model.predict(vr, vc)
    results[label] = {"val_rmse": rmse(predicted, val.values),
                      "val_rmse_known": rmse(predicted[known], val.values[known]),
                      "params": params, **extra, "seconds": time.perf_counter() - start}
    print(label, results[label], flush=True)
    out.write_text(json.dumps(results, indent=1))
