"""Summary tables and figures of the Deep LoRA experiments.

The tables themselves (mean ± std per cell, paired Deep LoRA − LoRA differences with bootstrap
intervals) are :mod:`deeplora.finetune.report`'s; this module adds the figures and the
experiment-specific sections (rank counts, train loss over steps, the GLUE overall
difference).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.finetune.checkpoints import window_loss
from deeplora.finetune.report import (
    Results,
    bootstrap_ci,
    did_not_train,
    main_metric,
    markdown,
    summarize,
)
from deeplora.output import write_atomic, write_json
from deeplora.plotting import new_figure, save_figure

LABELS = {"deep-lora": "Deep LoRA", "lora": "vanilla LoRA"}
COLORS = {"deep-lora": "tab:blue", "lora": "tab:orange", "zero-shot": "gray",
          "wide": "tab:green", "narrow random": "tab:red", "compressed": "tab:blue"}


def _by_head(results: Results) -> dict[str, Results]:
    heads: dict[str, Results] = defaultdict(list)
    for cell, runs in results:
        heads[cell.labels["head"]].append((cell, runs))
    return heads


def _zero_shot(results: Results) -> float | None:
    values = [main_metric(r) for cell, runs in results if cell.labels["method"] == "zero-shot"
              for r in runs]
    return values[0] if values else None


def plot_curve(results: Results, axis: str, xlabel: str, path: Path) -> None:
    """Main metric (mean ± std over seeds) against ``axis`` per method, one panel per head."""
    zero = _zero_shot(results)
    heads = {h: r for h, r in _by_head(results).items()
             if any(c.labels["method"] != "zero-shot" for c, _ in r)}
    fig, axes = new_figure(ncols=len(heads))
    for ax, (head, cells) in zip(axes, heads.items(), strict=True):
        ticks: set[Any] = set()
        for method in ("deep-lora", "lora"):
            points = sorted((c.labels[axis], [main_metric(r) for r in runs])
                            for c, runs in cells if c.labels["method"] == method and runs)
            if points:
                xs = [x for x, _ in points]
                ax.errorbar(xs, [np.nanmean(v) for _, v in points],
                            yerr=[np.nanstd(v, ddof=1) if len(v) > 1 else 0 for _, v in points],
                            marker="o", capsize=3, label=LABELS[method], color=COLORS[method])
                ax.set_xscale("log", base=2)
                ticks.update(xs)
                ax.set_xticks(sorted(ticks), [str(x) for x in sorted(ticks)])
        if zero is not None:
            ax.axhline(zero, ls="--", color=COLORS["zero-shot"], label="zero-shot (bi)")
        ax.set(xlabel=xlabel, ylabel="dev Pearson (mean ± std over seeds)",
               title=f"STS-B, {head} head")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend()
    save_figure(fig, path)


AUTHORS_RANK_CAP = 8
AUTHORS_NORM_FLOOR = 1e-3


def layer_rank(method: str, layer: dict[str, Any]) -> int:
    """A layer's rank as the authors count it: Deep LoRA (full width) min(matrix_rank, 8) when
    ‖ΔW‖₂ > 1e-3, else 0; LoRA ``matrix_rank`` at its default tolerance."""
    rank = layer.get("matrix_rank", layer["numerical_rank"])
    if method.startswith("deep-lora"):
        return min(rank, AUTHORS_RANK_CAP) if layer["sigma_max"] > AUTHORS_NORM_FLOOR else 0
    return rank


def rank_counts(results: Results) -> list[dict[str, Any]]:
    """Histogram of the ranks of ΔW (:func:`layer_rank`) over layers and seeds, per head and
    method; runs that did not train are left out."""
    out = []
    for cell, runs in results:
        if cell.labels["method"] in ("deep-lora", "lora"):
            trained = [r for r in runs if not did_not_train(r)]
            counts = Counter(layer_rank(cell.labels["method"], layer) for r in trained
                             for layer in r["layers"].values())
            out.append({"head": cell.labels["head"], "method": cell.labels["method"],
                        "counts": {str(k): v for k, v in sorted(counts.items())},
                        "runs": len(trained), "did_not_train": len(runs) - len(trained)})
    return out


def _rank_count_section(summary: dict[str, Any]) -> str:
    if "rank_counts" not in summary:
        return ""
    lines = ["", "Ranks of ΔW, layers × seeds (Deep LoRA at full width: min(matrix_rank, 8) "
             "where ‖ΔW‖₂ > 1e-3, else 0; LoRA: matrix_rank), runs that trained only:", "",
             "| head | method | runs | rank: count |", "|---|---|---|---|"]
    for item in summary["rank_counts"]:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(item["counts"].items(), key=lambda
                                                          kv: int(kv[0]))) or "-"
        runs = f"{item['runs']}" + (f" ({item['did_not_train']} did not train)"
                                    if item["did_not_train"] else "")
        lines.append(f"| {item['head']} | {item['method']} | {runs} | {counts} |")
    return "\n".join(lines) + "\n"


def plot_rank_histogram(counts: list[dict[str, Any]], max_rank: int, path: Path) -> None:
    heads = sorted({c["head"] for c in counts})
    fig, axes = new_figure(ncols=len(heads))
    ranks = np.arange(max_rank + 1)
    for ax, head in zip(axes, heads, strict=True):
        items = [c for c in counts if c["head"] == head]
        for i, item in enumerate(items):
            heights = [item["counts"].get(str(k), 0) for k in ranks]
            ax.bar(ranks + (i - 0.5) * 0.4, heights, width=0.4, label=LABELS[item["method"]],
                   color=COLORS[item["method"]])
        ax.set(xlabel="rank of ΔW (authors' count)", ylabel="layers × seeds",
               title=f"STS-B, 256 samples, {head} head", xticks=ranks)
        ax.legend()
    save_figure(fig, path)


LOSS_CHECKPOINTS = (10, 50, 100)
LOSS_WINDOW = 10


def loss_checkpoints(results: Results) -> list[dict[str, Any]]:
    """Per head and variant, the train loss at steps s ∈ ``LOSS_CHECKPOINTS`` below the run
    length and at its last step, each the mean of the ``LOSS_WINDOW`` steps ending at s
    (minibatch losses are noisy); mean and std over the runs that trained."""
    out = []
    for cell, runs in results:
        trained = [r for r in runs if not did_not_train(r) and r.get("train_loss")]
        if not trained:
            continue
        last = cell.config.steps
        steps = [s for s in LOSS_CHECKPOINTS if s < last] + [last]
        windows = np.array([[window_loss(r["train_loss"], s, LOSS_WINDOW) for s in steps]
                            for r in trained], dtype=float)
        out.append({"head": cell.labels["head"], "method": cell.labels["method"],
                    "runs": len(trained), "steps": steps, "mean": windows.mean(axis=0).tolist(),
                    "std": windows.std(axis=0, ddof=1).tolist() if len(trained) > 1 else None})
    return out


def _loss_section(summary: dict[str, Any]) -> str:
    if not summary.get("train_loss"):
        return ""
    steps = summary["train_loss"][0]["steps"]
    lines = ["", f"Train loss at step s (mean of the {LOSS_WINDOW} steps ending at s), mean ± std "
             "over the runs that trained:", "",
             "| head | method | runs | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|---|---|" + "---|" * len(steps)]
    for item in summary["train_loss"]:
        stds = item["std"] or [None] * len(item["mean"])
        values = " | ".join(f"{m:.2e}" + (f" ± {s:.1e}" if s is not None else "")
                            for m, s in zip(item["mean"], stds, strict=True))
        lines.append(f"| {item['head']} | {item['method']} | {item['runs']} | {values} |")
    return "\n".join(lines) + "\n"


def plot_narrow_vs_wide(results: Results, path: Path) -> None:
    """Train loss and dev Pearson over steps (mean over seeds) per variant, a row per head."""
    heads = _by_head(results)
    fig, axes = new_figure(ncols=2, nrows=len(heads))
    for row, (head, cells) in enumerate(heads.items()):
        loss_ax, dev_ax = axes[2 * row], axes[2 * row + 1]
        for cell, runs in cells:
            if not runs:
                continue
            label, color = cell.labels["method"], COLORS[cell.labels["method"]]
            losses = np.mean([r["train_loss"] for r in runs], axis=0)
            loss_ax.plot(np.arange(1, len(losses) + 1), losses, label=label, color=color)
            steps = [h["step"] for h in runs[0]["history"]]
            dev = np.nanmean([[main_metric({**r, "metrics": h["metrics"]}) for h in r["history"]]
                              for r in runs], axis=0)
            dev_ax.plot(steps, dev, marker=".", label=label, color=color)
        loss_ax.set(xlabel="step", ylabel="train loss", yscale="log", title=f"{head} head")
        dev_ax.set(xlabel="step", ylabel="dev Pearson", title=f"{head} head")
        dev_ax.ticklabel_format(axis="y", useOffset=False)
        loss_ax.legend()
        dev_ax.legend()
    save_figure(fig, path)


def plot_subspace(results: Results, path: Path) -> None:
    """Per head: singular values of every ΔW at the end, and the authors' cosine σ_max(U_tᵀU_T)
    (smallest principal angle) between its top-8 left subspace at each saved step and at the
    end (one line per layer)."""
    cells = [(c, runs[0]) for c, runs in results if runs]
    fig, axes = new_figure(ncols=2, nrows=len(cells))
    for row, (cell, run) in enumerate(cells):
        sv_ax, cos_ax = axes[2 * row], axes[2 * row + 1]
        for layer in run["layers"].values():
            sv_ax.plot(np.arange(1, len(layer["singular_values"]) + 1), layer["singular_values"],
                       color="tab:blue", alpha=0.4, lw=1)
        for layer in run.get("subspace", {}).values():
            cos_ax.plot(layer["steps"], layer["cos_smallest_angle"], color="tab:blue",
                        alpha=0.4, lw=1, marker=".")
        head = cell.labels["head"]
        sv_ax.set(xlabel="index i", ylabel="σ_i(ΔW) at the end", yscale="log",
                  title=f"{head} head, {len(run['layers'])} layers")
        last = max(cell.config.snapshot_steps, default=1)
        ticks = sorted({t for t in (0, 1, 10, 100, 1000) if t <= last} | {last})
        cos_ax.set_xscale("symlog", linthresh=1)
        cos_ax.set_xticks(ticks, [str(t) for t in ticks])
        cos_ax.set(xlabel="step", ylabel="cos smallest principal angle vs end",
                   ylim=(-0.02, 1.02), title=f"{head} head, top-{cell.config.subspace_rank}")
    save_figure(fig, path)


def overall_difference(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per head: per seed the mean over tasks of Deep LoRA − LoRA, its mean and bootstrap CI."""
    out = {}
    for head in sorted({d["head"] for d in summary["differences"]}):
        per_seed: dict[int, list[float]] = defaultdict(list)
        items = [d for d in summary["differences"] if d["head"] == head]
        for d in items:
            for seed, value in zip(d["seeds"], d["values"], strict=True):
                per_seed[seed].append(value)
        values = [np.mean(v) for s, v in sorted(per_seed.items()) if len(v) == len(items)]
        low, high = bootstrap_ci(values)
        out[head] = {"n": len(values), "mean": float(np.mean(values)) if values else float("nan"),
                     "ci_low": low, "ci_high": high}
    return out


def plot_glue(summary: dict[str, Any], path: Path) -> None:
    heads = sorted({d["head"] for d in summary["differences"]})
    fig, axes = new_figure(ncols=len(heads), width=6.0)
    for ax, head in zip(axes, heads, strict=True):
        items = [d for d in summary["differences"] if d["head"] == head]
        overall = summary["overall_by_head"][head]
        names = [d["task"] for d in items] + ["overall"]
        means = [d["mean"] for d in items] + [overall["mean"]]
        lows = [d["ci_low"] for d in items] + [overall["ci_low"]]
        highs = [d["ci_high"] for d in items] + [overall["ci_high"]]
        err = np.nan_to_num([np.subtract(means, lows), np.subtract(highs, means)])
        ax.bar(names, means, yerr=err, capsize=4, color="tab:blue")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="GLUE task (1024 samples)", ylabel="Deep LoRA − LoRA (main metric)",
               title=f"{head} head, 95% bootstrap CI")
    save_figure(fig, path)


def write_report(name: str, results: Results, out: Path) -> dict[str, Any]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out``; return the
    summary. Named after the experiment, so experiments sharing ``out`` (and its runs, e.g.
    ``rank-histogram`` and the 256-sample cells of ``stsb-fewshot``) keep their reports."""
    summary = summarize(results)
    png = out / f"{name}.png"
    if name == "stsb-fewshot":
        plot_curve(results, "samples", "training samples", png)
    elif name == "stsb-ranks":
        plot_curve(results, "rank", "adapter rank r", png)
    elif name == "rank-histogram":
        summary["rank_counts"] = rank_counts(results)
        max_rank = max([AUTHORS_RANK_CAP, *(int(k) for item in summary["rank_counts"]
                                            for k in item["counts"])])
        plot_rank_histogram(summary["rank_counts"], max_rank, png)
    elif name == "narrow-vs-wide":
        summary["train_loss"] = loss_checkpoints(results)
        plot_narrow_vs_wide(results, png)
    elif name == "subspace-dynamics":
        plot_subspace(results, png)
    elif name == "glue-fewshot":
        summary["overall_by_head"] = overall_difference(summary)
        plot_glue(summary, png)
    write_json(out / f"{name}.json", summary)
    text = markdown(name, summary) + _rank_count_section(summary) + _loss_section(summary)
    for head, o in summary.get("overall_by_head", {}).items():
        text += (f"\nOverall ({head} head): mean over tasks of Deep LoRA − LoRA "
                 f"{o['mean']:+.4f}, 95% CI [{o['ci_low']:+.4f}, {o['ci_high']:+.4f}], "
                 f"{o['n']} seeds\n")
    write_atomic(out / f"{name}.md", lambda tmp: tmp.write_text(text))
    return summary
