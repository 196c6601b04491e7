"""``nlg-fewshot``: the paper's E2E NLG experiment (Deep LoRA vs vanilla LoRA, 16 examples).

Cells: zero-shot (seed 0), then Deep LoRA and vanilla LoRA per seed, run seed-major (so a sweep
stopped early holds complete pairs) and resumable (one result file per run). The report
(``nlg-fewshot.md`` / ``.json`` / ``.png``) names the preset that produced it and gives, per
metric, mean ± std over seeds per method, the paired Deep LoRA − LoRA difference (same seed =
same training MRs) with a 95% percentile bootstrap interval, how many runs left their
initialization, and a few test MRs with the outputs of zero-shot, LoRA and Deep LoRA side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.experiments import Arg, experiment, require_runs
from deeplora.nlg.config import PRESETS, NLGConfig, default_preset, nlg_preset
from deeplora.nlg.metrics import METRICS

PAPER_SEEDS = {"paper": 10, "cpu": 5}
METHOD_ORDER = ("zero-shot", "lora", "deep-lora", "peft-lora")
LABELS = {"zero-shot": "zero-shot", "lora": "vanilla LoRA", "deep-lora": "Deep LoRA",
          "peft-lora": "PEFT LoRA"}
COLORS = {"zero-shot": "gray", "lora": "tab:orange", "deep-lora": "tab:blue",
          "peft-lora": "tab:green"}
PRESET_TEXT = {
    "paper": "paper preset: 16 examples, batch 16, 400 steps, lr 1e-4, in/out 64 tokens padded, "
             "beam search (4 beams), every test MR",
    "cpu": "CPU preset: 16 examples, batch 4, 60 steps (15 epochs) at lr 1e-3, Adam eps "
           "1e-6·ε^(L-1), greedy decoding, 24 fixed test MRs (all their references), dynamic "
           "padding",
}
Cells = list[tuple[NLGConfig, tuple[int, ...]]]
FITTED_RATIO = 0.5


def nlg_cells(preset: str, seeds: Sequence[int], model: str | None = None,
              methods: Sequence[str] = ("deep-lora", "lora"), fast: bool = False) -> Cells:
    """Zero-shot (seed 0) plus each of ``methods`` over ``seeds``; ``fast``: 2 steps, 4 test
    MRs, greedy, 16 new tokens (a smoke test: the numbers mean nothing)."""
    extra: dict[str, Any] = {"model": model}
    if fast:
        extra.update(steps=2, test_mrs=4, num_beams=1, max_output_length=16,
                     pad_to_max_length=False)
    cells: Cells = [(nlg_preset(preset, method="zero-shot", **extra), (0,))]
    cells += [(nlg_preset(preset, method=m, **extra), tuple(seeds)) for m in methods]
    return cells


def run_nlg_experiment(cells: Cells, out: str | os.PathLike[str],
                       data_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                       train: bool = True, notice: str | None = None) -> dict[str, Any]:
    """Run (or resume) ``cells`` seed-major with runs under ``out/runs/`` and write the
    report into ``out``; ``train=False`` only reports the runs already finished.

    Once data and model are checked, ``notice`` (if any) goes to stderr, then, with
    ``progress``, the measured cost of the pending runs (:func:`deeplora.nlg.train.
    estimate_nlg`) and a progress bar per run's training and generation."""
    from deeplora.finetune.estimate import announce
    from deeplora.finetune.sweep import seed_major
    from deeplora.nlg.train import PreparedNLG, estimate_nlg, load_nlg_results, run_nlg_sweep

    root = Path(out)
    if train:
        PreparedNLG(cells[0][0], cells[0][1][0], data_dir)  # data and model, before any run
    if notice is not None:
        print(notice, file=sys.stderr)
    if train:
        pairs = seed_major(cells)
        if progress:
            announce(estimate_nlg(pairs, root / "runs", data_dir))
        for config, seed in pairs:
            run_nlg_sweep(config, [seed], root / "runs", data_dir, progress=progress)
    results = [(config, load_nlg_results(root / "runs", config, seeds))
               for config, seeds in cells]
    if not train:
        require_runs("nlg-fewshot", results, root / "runs")
    return write_nlg_report("nlg-fewshot", results, root)


def bootstrap_ci(values: Sequence[float]) -> tuple[float, float]:
    from deeplora.finetune.report import bootstrap_ci as ci

    return ci(values)


def loss_quarters(losses: Sequence[float]) -> tuple[float, float]:
    """Mean training loss over the first and over the last quarter of the steps (at least one
    step each)."""
    q = max(1, len(losses) // 4)
    return float(np.mean(losses[:q])), float(np.mean(losses[-q:]))


def fitted(run: dict[str, Any]) -> bool:
    """Whether a run fitted its training examples: last-quarter loss at most half the first
    quarter's. Runs that did not (e.g. never left the plateau of a small initialization) enter
    no comparison."""
    if not run.get("train_loss"):
        return False
    first, last = loss_quarters(run["train_loss"])
    return last <= FITTED_RATIO * first


def summarize_nlg(results: list[tuple[NLGConfig, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per method and metric mean ± std over seeds; paired Deep LoRA − LoRA per metric over
    the seeds where both runs :func:`fitted`."""
    rows, by_method = [], {}
    zero = next((runs[0] for config, runs in results if config.method == "zero-shot" and runs),
                None)
    for config, runs in results:
        by_method[config.method] = {r["seed"]: r for r in runs}
        same = [_same_as(r, zero) for r in runs] if zero is not None else []
        row: dict[str, Any] = {"method": config.method, "preset": config.preset,
                               "seeds": [r["seed"] for r in runs], "n": len(runs),
                               "left_init": sum(bool(r.get("left_init")) for r in runs),
                               "fitted": sum(fitted(r) for r in runs),
                               "loss_quarters": [loss_quarters(r["train_loss"]) for r in runs
                                                 if r.get("train_loss")],
                               "same_as_zero_shot": float(np.mean(same)) if same else None,
                               "wall_time_s": float(np.mean([r["wall_time_s"] for r in runs]))
                               if runs else None}
        for name in METRICS:
            values = [r["metrics"][name] for r in runs]
            row[name] = {"values": values,
                         "mean": float(np.mean(values)) if values else float("nan"),
                         "std": float(np.std(values, ddof=1)) if len(values) > 1
                         else float("nan")}
        rows.append(row)
    diffs = []
    if "deep-lora" in by_method and "lora" in by_method:
        seeds = sorted(s for s in set(by_method["deep-lora"]) & set(by_method["lora"])
                       if fitted(by_method["deep-lora"][s]) and fitted(by_method["lora"][s]))
        for name in METRICS:
            values = [by_method["deep-lora"][s]["metrics"][name]
                      - by_method["lora"][s]["metrics"][name] for s in seeds]
            low, high = bootstrap_ci(values)
            diffs.append({"metric": name, "n": len(values), "seeds": seeds, "values": values,
                          "mean": float(np.mean(values)) if values else float("nan"),
                          "ci_low": low, "ci_high": high})
    return {"rows": rows, "differences": diffs, "examples": examples(by_method)}


def _same_as(run: dict[str, Any], zero: dict[str, Any]) -> float:
    """Fraction of ``run``'s test MRs whose output equals the zero-shot output."""
    theirs = dict(zip(zero["mrs"], zero["predictions"], strict=True))
    pairs = [(p, theirs[m]) for m, p in zip(run["mrs"], run["predictions"], strict=True)
             if m in theirs]
    return float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")


def examples(by_method: dict[str, dict[int, dict[str, Any]]], count: int = 3
             ) -> list[dict[str, str]]:
    """The first ``count`` test MRs with the output of each method (its lowest seed)."""
    firsts = {m: runs[min(runs)] for m, runs in by_method.items() if runs}
    if not firsts:
        return []
    mrs = next(iter(firsts.values()))["mrs"][:count]
    out = []
    for i, mr in enumerate(mrs):
        item = {"mr": mr}
        for method in METHOD_ORDER:
            run = firsts.get(method)
            if run is not None and i < len(run["mrs"]) and run["mrs"][i] == mr:
                item[f"{LABELS[method]} (seed {run['seed']})"] = run["predictions"][i]
        out.append(item)
    return out


def _pm(stat: dict[str, float], scale: float) -> str:
    if not np.isfinite(stat["mean"]):
        return "n/a"
    mean = stat["mean"] * scale
    return f"{mean:.2f} ± {stat['std'] * scale:.2f}" if np.isfinite(stat["std"]) else f"{mean:.2f}"


SCALE = {"bleu": 1.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "rougeLsum": 100.0}


def markdown_nlg(name: str, summary: dict[str, Any]) -> str:
    """The summary as Markdown: per-method table, paired differences, example outputs."""
    presets = sorted({row["preset"] for row in summary["rows"]})
    lines = [f"# {name} ({', '.join(presets)} preset)", ""]
    lines += [f"Settings: {PRESET_TEXT[p]}." for p in presets]
    lines += ["", "BLEU (sacrebleu, all references) and ROUGE F1 (×100), mean ± std over seeds. "
              "'left init': runs whose largest ‖ΔW‖₂ exceeds 1e-3; '= zero-shot': share of test "
              "outputs identical to the zero-shot output; 'train loss': mean over seeds of the "
              "first → last quarter of the steps; 'fitted': runs whose last-quarter loss is at "
              "most half the first quarter's (only seeds where both methods fitted are "
              "paired).", "",
              "| method | seeds | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | train loss "
              "| fitted | left init | = zero-shot | s/run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        cells = " | ".join(_pm(row[m], SCALE[m]) for m in METRICS)
        zero = row["method"] == "zero-shot"
        left = "-" if zero else f"{row['left_init']}/{row['n']}"
        fit = "-" if zero else f"{row['fitted']}/{row['n']}"
        quarters = np.array(row["loss_quarters"]).reshape(-1, 2)
        loss = (f"{quarters[:, 0].mean():.2f} → {quarters[:, 1].mean():.2f}"
                if len(quarters) else "-")
        wall = f"{row['wall_time_s']:.0f}" if row["wall_time_s"] is not None else "-"
        same = row["same_as_zero_shot"]
        same_text = "-" if same is None or row["method"] == "zero-shot" else f"{same:.0%}"
        lines.append(f"| {LABELS.get(row['method'], row['method'])} | {row['n']} | {cells} | "
                     f"{loss} | {fit} | {left} | {same_text} | {wall} |")
    if summary["differences"]:
        lines += ["", "Paired difference Deep LoRA − vanilla LoRA (same seeds, both fitted), "
                  "bootstrap 95% interval:", "", "| metric | pairs | mean difference | 95% CI |",
                  "|---|---|---|---|"]
        for d in summary["differences"]:
            s = SCALE[d["metric"]]
            ci = (f"[{d['ci_low'] * s:+.2f}, {d['ci_high'] * s:+.2f}]"
                  if np.isfinite(d["ci_low"]) else "n/a (< 2 pairs)")
            mean = f"{d['mean'] * s:+.2f}" if np.isfinite(d["mean"]) else "n/a"
            lines.append(f"| {d['metric']} | {d['n']} | {mean} | {ci} |")
    if summary["examples"]:
        lines += ["", "Example test MRs and outputs:", ""]
        for item in summary["examples"]:
            lines.append(f"- **MR** `{item['mr']}`")
            lines += [f"  - {key}: {text}" for key, text in item.items() if key != "mr"]
    return "\n".join(lines) + "\n"


def plot_nlg(summary: dict[str, Any], path: Path) -> None:
    """Bars per metric and method (mean ± std over seeds)."""
    from deeplora.plotting import new_figure, save_figure

    fig, axes = new_figure(ncols=2, width=5.5)
    rows = sorted(summary["rows"], key=lambda r: METHOD_ORDER.index(r["method"]))
    for ax, metrics, ylabel in [(axes[0], ("bleu",), "BLEU"),
                                (axes[1], METRICS[1:], "ROUGE F1 (×100)")]:
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            xs = np.arange(len(metrics)) + (i - (len(rows) - 1) / 2) * width
            means = [row[m]["mean"] * SCALE[m] for m in metrics]
            stds = [np.nan_to_num(row[m]["std"]) * SCALE[m] for m in metrics]
            ax.bar(xs, means, width=width, yerr=stds, capsize=3, color=COLORS[row["method"]],
                   label=f"{LABELS[row['method']]} ({row['n']})")
        ax.set_xticks(np.arange(len(metrics)), list(metrics))
        ax.set(ylabel=ylabel, title=f"E2E NLG, {rows[0]['preset'] if rows else ''} preset")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def write_nlg_report(name: str, results: list[tuple[NLGConfig, list[dict[str, Any]]]],
                     out: Path) -> dict[str, Any]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out``; the summary."""
    from deeplora.output import write_atomic, write_json

    summary = summarize_nlg(results)
    plot_nlg(summary, out / f"{name}.png")
    write_json(out / f"{name}.json", summary)
    text = markdown_nlg(name, summary)
    write_atomic(out / f"{name}.md", lambda tmp: tmp.write_text(text))
    return summary


ARGUMENTS = (
    Arg("--preset", choices=PRESETS, default=None,
        help="paper: the authors' settings (for a GPU); cpu: batch 4, 60 steps at lr 1e-3, "
        "Adam eps 1e-6·ε^(L-1), greedy, 24 test MRs (what a 2-core CPU can run); unset: "
        "paper with a GPU, cpu without (said in one line)"),
    Arg("--seeds", default=None, help="seeds, e.g. 0-4; unset: 10 (paper), 5 (cpu), 2 (--fast)"),
    Arg("--model", default=None,
        help="causal-LM or seq2seq model id or folder; unset: the embedded "
        "SmolLM2-135M-Instruct (e.g. t5-base online)"),
    Arg("--data-dir", default=None,
        help="E2E folder with devset.csv and testset_w_refs.csv (or one holding e2e/); unset: "
        "$DEEPLORA_E2E_DIR, else the hub GEM/e2e_nlg"),
    Arg("--report-only", action="store_true",
        help="write the report from the runs already finished under --out; train nothing"),
    Arg("--quiet", action="store_true", help="no progress bars"),
)


@experiment("nlg-fewshot", help="E2E NLG with 16 examples: BLEU/ROUGE of Deep LoRA vs LoRA "
            "vs zero-shot", arguments=ARGUMENTS)
def nlg_fewshot(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from deeplora.finetune.models import quiet_transformers
    from deeplora.finetune.sweep import parse_seeds

    quiet_transformers()
    preset, notice = (args.preset, None) if args.preset else default_preset()
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
    else:
        seeds = tuple(range(2 if args.fast else PAPER_SEEDS[preset]))
    cells = nlg_cells(preset, seeds, args.model, fast=args.fast)
    summary = run_nlg_experiment(cells, out, args.data_dir, progress=not args.quiet,
                                 train=not args.report_only, notice=notice)
    print((out / "nlg-fewshot.md").read_text())
    return summary
