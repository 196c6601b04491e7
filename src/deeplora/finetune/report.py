"""Summary tables of fine-tuning sweeps (``deeplora finetune`` and the paper's experiments).

Table rows: mean ± sample std (ddof = 1) of the task's main dev metric over seeds per method and
setting; paired differences: Deep LoRA − LoRA per seed (same seed = same few-shot subset and
head), their mean and a 95% percentile bootstrap interval (``scipy.stats.bootstrap``, 10,000
resamples, fixed random state). Fewer than two pairs give no interval.

A run "did not train" when every adapted layer ends with σ₁(ΔW) < 10·ε^L (ε the init scale, L
the adapter depth; 2 for LoRA): it never left its initialization, so it is no evidence. Rows
count such runs; paired differences leave out every seed where either run did not train. A run
without a main metric (diverged, or a constant prediction: NaN correlation) counts in its row's
seeds, said beside them, but not in the mean; paired differences leave its seed out, saying so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from deeplora.finetune.data import get_task
from deeplora.finetune.sweep import Cell

Results = list[tuple[Cell, list[dict[str, Any]]]]


def untrained_threshold(config: dict[str, Any]) -> float:
    """10·ε^L for the run's adapter: L = ``depth`` for Deep LoRA, 2 for LoRA."""
    depth = config["depth"] if config["method"].startswith("deep-lora") else 2
    return 10 * config["init_scale"] ** depth


def did_not_train(result: dict[str, Any]) -> bool:
    """Whether every adapted layer of ``result`` ends with σ₁(ΔW) below
    :func:`untrained_threshold` (``False`` for runs without adapters, e.g. zero-shot)."""
    layers = result.get("layers") or {}
    if not layers:
        return False
    threshold = untrained_threshold(result["config"])
    return all(layer.get("sigma_max", (layer["singular_values"] or [0.0])[0]) < threshold
               for layer in layers.values())


def _median_sigma(runs: list[dict[str, Any]]) -> float | None:
    """Median over runs and adapted layers of σ₁(ΔW) at the end (``None`` without adapters)."""
    values = [layer.get("sigma_max", (layer["singular_values"] or [0.0])[0])
              for r in runs for layer in (r.get("layers") or {}).values()]
    return float(np.median(values)) if values else None


def main_metric(result: dict[str, Any]) -> float:
    """The task's main dev metric of a result (NaN if it was undefined, e.g. constant output)."""
    value = result["metrics"].get(get_task(result["config"]["task"]).main_metric)
    return float("nan") if value is None else float(value)


def bootstrap_ci(values: Sequence[float]) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean; NaNs if fewer than two finite values."""
    data = np.asarray([v for v in values if np.isfinite(v)], float)
    if data.size < 2 or np.ptp(data) == 0:
        mean = float(data.mean()) if data.size else float("nan")
        return (mean, mean) if data.size >= 2 else (float("nan"), float("nan"))
    res = stats.bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=10_000,
                          method="percentile", random_state=0)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the finite values; NaNs when there are none (std NaN
    for one)."""
    data = [v for v in values if v is not None and np.isfinite(v)]
    if not data:
        return float("nan"), float("nan")
    return float(np.mean(data)), float(np.std(data, ddof=1)) if len(data) > 1 else float("nan")


def paired_difference(a: dict[int, float | None], b: dict[int, float | None]
                      ) -> dict[str, Any]:
    """Per seed ``a[s] − b[s]`` over the seeds where both are known and finite: ``{"seeds",
    "values", "n", "mean", "ci_low", "ci_high"}`` (:func:`bootstrap_ci` of the differences),
    plus ``"undefined_seeds"``: the seeds of both where either value is ``None`` or NaN (a
    diverged run, a constant prediction), left out."""
    both = sorted(s for s in a if s in b)
    seeds = [s for s in both if _known(a[s]) and _known(b[s])]
    values = [a[s] - b[s] for s in seeds]
    low, high = bootstrap_ci(values)
    return {"seeds": seeds, "values": values, "n": len(values),
            "mean": float(np.mean(values)) if values else None, "ci_low": low, "ci_high": high,
            "undefined_seeds": [s for s in both if s not in seeds]}


def _known(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def _setting(labels: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "method"))


def _fmt_setting(setting: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting) or "-"


def summarize(results: Results) -> dict[str, Any]:
    """Per-cell statistics and paired Deep LoRA − LoRA differences per setting."""
    rows, by_setting = [], defaultdict(dict)
    for cell, runs in results:
        values = [main_metric(r) for r in runs]
        mean, std = mean_std(values)
        task = get_task(cell.config.task)
        metric = task.main_metric
        others = {name: [r["metrics"].get(name) for r in runs] for name in task.metrics
                  if name != metric}
        rows.append({
            **cell.labels, "metric": metric, "seeds": [r["seed"] for r in runs],
            "values": values, "n": len(runs),
            "mean": mean, "std": std, "no_metric": sum(not _known(v) for v in values),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])) if runs else None,
            "did_not_train": sum(did_not_train(r) for r in runs),
            "sigma_max_median": _median_sigma(runs),
            "other_metrics": {name: float(np.mean([v for v in vs if v is not None]))
                              for name, vs in others.items() if any(v is not None for v in vs)},
        })
        by_setting[_setting(cell.labels)][cell.labels["method"]] = runs
    diffs = []
    for setting, methods in by_setting.items():
        if "deep-lora" not in methods or "lora" not in methods:
            continue
        deep, lora = ({r["seed"]: main_metric(r) for r in methods[m] if not did_not_train(r)}
                      for m in ("deep-lora", "lora"))
        untrained = sorted({r["seed"] for runs in (methods["lora"], methods["deep-lora"])
                            for r in runs if did_not_train(r)})
        diffs.append({**dict(setting), **paired_difference(deep, lora),
                      "untrained_seeds": untrained})
    return {"rows": rows, "differences": diffs}


def _pm(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _others(row: dict[str, Any]) -> str:
    """The task's other metrics (mean over seeds), e.g. ``" (f1 0.8123)"`` for MRPC."""
    others = row.get("other_metrics") or {}
    return " (" + ", ".join(f"{k} {v:.4f}" for k, v in others.items()) + ")" if others else ""


def markdown(name: str, summary: dict[str, Any]) -> str:
    """The summary as Markdown: per-method table, then the paired-difference table."""
    lines = [f"# {name}", "",
             "| setting | method | metric | seeds | mean ± std | s/run | median σ₁(ΔW) "
             "| did not train |", "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        setting = _fmt_setting(_setting({k: row[k] for k in row if k in _LABEL_KEYS}))
        wall = f"{row['wall_time_s']:.0f}" if row["wall_time_s"] is not None else "-"
        stuck = row.get("did_not_train", 0)
        flag = ("-" if row["method"] == "zero-shot" or not row["n"] else
                f"**all {stuck}: no conclusion**" if stuck and stuck == row["n"] else
                f"{stuck} of {row['n']}")
        sigma = row.get("sigma_max_median")
        sigma = "-" if sigma is None else f"{sigma:.1e}"
        seeds = f"{row['n']}" + (f" ({row['no_metric']} without a metric)"
                                 if row.get("no_metric") else "")
        lines.append(f"| {setting} | {row['method']} | {row['metric']} | {seeds} | "
                     f"{_pm(row['mean'], row['std'])}{_others(row)} | {wall} | {sigma} "
                     f"| {flag} |")
    if summary["differences"]:
        lines += ["", "Paired difference Deep LoRA − LoRA (same seeds, both runs trained), "
                  "bootstrap 95% interval:",
                  "", "| setting | pairs | mean difference | 95% CI |", "|---|---|---|---|"]
        for d in summary["differences"]:
            setting = _fmt_setting(_setting({k: d[k] for k in d if k in _LABEL_KEYS}))
            mean = "n/a" if d["mean"] is None else f"{d['mean']:+.4f}"
            ci = (f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
                  if np.isfinite(d["ci_low"]) else "n/a (< 2 pairs)")
            if d.get("untrained_seeds"):
                ci += f"; left out, did not train: seeds {d['untrained_seeds']}"
            if d.get("undefined_seeds"):
                ci += (f"; left out, no metric (diverged or constant output): seeds "
                       f"{d['undefined_seeds']}")
            lines.append(f"| {setting} | {d['n']} | {mean} | {ci} |")
    return "\n".join(lines) + "\n"


_LABEL_KEYS = ("head", "samples", "rank", "task")
