"""Summary tables of fine-tuning sweeps (``deeplora finetune`` and the paper's experiments).

Table rows: mean ± sample std (ddof = 1) of the task's main dev metric over seeds per method and
setting; paired differences: Deep LoRA − LoRA per seed (same seed = same few-shot subset and
head), their mean and a 95% percentile bootstrap interval (``scipy.stats.bootstrap``, 10,000
resamples, fixed random state). Fewer than two pairs give no interval.
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


def _setting(labels: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "method"))


def _fmt_setting(setting: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting) or "-"


def summarize(results: Results) -> dict[str, Any]:
    """Per-cell statistics and paired Deep LoRA − LoRA differences per setting."""
    rows, by_setting = [], defaultdict(dict)
    for cell, runs in results:
        values = [main_metric(r) for r in runs]
        finite = [v for v in values if np.isfinite(v)]
        metric = get_task(cell.config.task).main_metric
        rows.append({
            **cell.labels, "metric": metric, "seeds": [r["seed"] for r in runs],
            "values": values, "n": len(runs),
            "mean": float(np.mean(finite)) if finite else float("nan"),
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan"),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs])) if runs else None,
        })
        by_setting[_setting(cell.labels)][cell.labels["method"]] = runs
    diffs = []
    for setting, methods in by_setting.items():
        if "deep-lora" not in methods or "lora" not in methods:
            continue
        lora = {r["seed"]: main_metric(r) for r in methods["lora"]}
        paired = {r["seed"]: main_metric(r) - lora[r["seed"]]
                  for r in methods["deep-lora"] if r["seed"] in lora}
        values = [paired[s] for s in sorted(paired)]
        low, high = bootstrap_ci(values)
        diffs.append({**dict(setting), "seeds": sorted(paired), "values": values,
                      "n": len(values), "mean": float(np.nanmean(values)) if values else None,
                      "ci_low": low, "ci_high": high})
    return {"rows": rows, "differences": diffs}


def _pm(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def markdown(name: str, summary: dict[str, Any]) -> str:
    """The summary as Markdown: per-method table, then the paired-difference table."""
    lines = [f"# {name}", "", "| setting | method | metric | seeds | mean ± std | s/run |",
             "|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        setting = _fmt_setting(_setting({k: row[k] for k in row if k in _LABEL_KEYS}))
        wall = f"{row['wall_time_s']:.0f}" if row["wall_time_s"] is not None else "-"
        lines.append(f"| {setting} | {row['method']} | {row['metric']} | {row['n']} | "
                     f"{_pm(row['mean'], row['std'])} | {wall} |")
    if summary["differences"]:
        lines += ["", "Paired difference Deep LoRA − LoRA (same seeds), bootstrap 95% interval:",
                  "", "| setting | pairs | mean difference | 95% CI |", "|---|---|---|---|"]
        for d in summary["differences"]:
            setting = _fmt_setting(_setting({k: d[k] for k in d if k in _LABEL_KEYS}))
            mean = "n/a" if d["mean"] is None else f"{d['mean']:+.4f}"
            ci = (f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
                  if np.isfinite(d["ci_low"]) else "n/a (< 2 pairs)")
            lines.append(f"| {setting} | {d['n']} | {mean} | {ci} |")
    return "\n".join(lines) + "\n"


_LABEL_KEYS = ("head", "samples", "rank", "task")
