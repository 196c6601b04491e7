"""``prompt-fewshot``: prompt-based (verbalizer) few-shot fine-tuning of a causal LM, Deep LoRA vs
vanilla LoRA vs PEFT LoRA, with checkpoints and a learning-rate grid chosen on held-out rows.

Every run (``head="prompt"``, see :mod:`deeplora.finetune.prompt`) holds out
``heldout_samples`` training rows (the dev set; the same rows for every run, never among the
few-shot examples nor repeating one's text, see :func:`~deeplora.finetune.data.hold_out`) and
scores them and ``dev_samples`` rows of the GLUE dev split (the test set) every ``eval_every``
steps. Per (task, samples, rank, method) the report gives, with
:mod:`deeplora.finetune.checkpoints`:

- each learning rate of the grid: test score at the last step and at the best held-out
  checkpoint, the best held-out score, the best step, the final training loss;
- the learning rate chosen on held-out rows (the same grid for every method), and at it the
  paired differences Deep LoRA − other method (same seed = same examples and initial weights)
  at the best held-out checkpoint, at the last step, and at matched training loss (each run's
  first checkpoint at the lowest loss both runs reach), with 95% bootstrap intervals over seeds;
- a zero-shot row per task (test and held-out scores, the test split's majority-class rate and
  the test score against chance: for accuracy its 95% Wilson interval and the one-sided binomial
  p-value against that rate, for Pearson r its 95% Fisher-z interval and the p-value of r > 0);
- a figure of the learning curves (training loss, held-out and test score against the step,
  mean over seeds at the chosen learning rate).

Runs whose every adapted layer kept σ₁(ΔW) below 10·ε^L did not train
(:func:`deeplora.finetune.report.did_not_train`): they are counted and left out of the
paired differences.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.experiments import Arg, Fast, experiment, require_runs
from deeplora.finetune.checkpoints import best_checkpoint, choose_lr, matched_checkpoints
from deeplora.finetune.config import preset
from deeplora.finetune.data import DATA_DIR_ENV, get_task
from deeplora.finetune.sweep import Cell, check_jobs, parse_seeds, seed_major

NAME = "prompt-fewshot"
METHODS = ("deep-lora", "lora", "peft-lora")
LABELS = {"deep-lora": "Deep LoRA", "lora": "vanilla LoRA", "peft-lora": "PEFT LoRA"}
COLORS = {"deep-lora": "tab:blue", "lora": "tab:orange", "peft-lora": "tab:green"}
SETTING = ("task", "samples", "rank")


def plan(tasks: Sequence[str], samples: Sequence[int], ranks: Sequence[int],
         lrs: Sequence[float], methods: Sequence[str], seeds: Sequence[int],
         **common: Any) -> list[Cell]:
    """Zero-shot (seed 0) per task, then every (task, samples, rank, lr, method) over ``seeds``;
    ``common``: :class:`~deeplora.finetune.config.FinetuneConfig` fields shared by all
    (``steps``, ``eval_every``, ``heldout_samples``, ``dev_samples``, ``template``, …), on the
    ``practical`` preset (Adam eps scaled to Deep LoRA's factor gradients, for every method).
    Trained runs keep σ₁ and the ranks of each ΔW but no singular-value list
    (``singular_values=0`` unless ``common`` says otherwise): with ~211 adapted layers the lists
    made most of a result file, and the report reads σ₁ only."""
    common = {"head": "prompt", **common}
    cells = []
    for task in tasks:
        zero = preset("practical", task=task, method="zero-shot", samples=1,
                      **{**common, "steps": 0})
        cells.append(Cell(zero, (0,), {"method": "zero-shot", "task": zero.task}))
        for n in samples:
            for rank in ranks:
                for lr in lrs:
                    for method in methods:
                        config = preset("practical", task=task, method=method, samples=n,
                                        rank=rank, lr=lr, **{"singular_values": 0, **common})
                        cells.append(Cell(config, tuple(seeds),
                                          {"method": method, "task": config.task, "samples": n,
                                           "rank": rank, "lr": lr}))
    return cells


def _metric(run: dict[str, Any]) -> str:
    return get_task(run["config"]["task"]).main_metric


def run_scores(run: dict[str, Any]) -> dict[str, Any]:
    """One run's numbers: test score at the last step and at the best held-out checkpoint
    (chosen on held-out rows only), that checkpoint's step and held-out score, final loss."""
    from deeplora.finetune.checkpoints import window_loss
    from deeplora.finetune.report import did_not_train

    metric, history = _metric(run), run["history"]
    best = best_checkpoint(history, metric) if history else None
    window = run["config"]["eval_every"] or len(run["train_loss"])
    return {
        "seed": run["seed"],
        "final": run["metrics"].get(metric),
        "best": None if best is None else history[best]["metrics"].get(metric),
        "best_heldout": None if best is None else history[best]["heldout"].get(metric),
        "best_step": None if best is None else history[best]["step"],
        "final_loss": window_loss(run["train_loss"], len(run["train_loss"]), window),
        "trained": not did_not_train(run),
    }


def _above_chance(metric: str, value: float | None, majority: float | None,
                  rows: int | None) -> dict[str, Any]:
    """A zero-shot test score on ``rows`` rows against chance, ``{}`` when it cannot be said.
    Accuracy: its 95% Wilson interval and the one-sided exact binomial p-value of scoring at
    least as many rows right when each is right with the majority-class rate (what a constant
    guess scores). Pearson r: its 95% Fisher-z interval and the one-sided p-value of the t test
    of r > 0."""
    from scipy import stats

    if None in (value, rows) or not np.isfinite(value):
        return {}
    if metric == "accuracy" and majority is not None:
        right = round(value * rows)
        ci = stats.binomtest(right, rows).proportion_ci(method="wilson")
        return {"ci_low": float(ci.low), "ci_high": float(ci.high),
                "p_above_chance": float(stats.binomtest(right, rows, majority,
                                                        alternative="greater").pvalue)}
    if metric == "pearson" and rows > 3 and abs(value) < 1:
        half = 1.96 / np.sqrt(rows - 3)
        t = value * np.sqrt((rows - 2) / (1 - value**2))
        return {"ci_low": float(np.tanh(np.arctanh(value) - half)),
                "ci_high": float(np.tanh(np.arctanh(value) + half)),
                "p_above_chance": float(stats.t.sf(t, rows - 2))}
    return {}


_Scored = list[tuple[dict[str, Any], dict[str, Any]]]
"""Runs of one (setting, method, lr), each with its :func:`run_scores`."""


def summarize(results: list[tuple[Cell, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Zero-shot rows, per-lr rows, the chosen learning rates and the paired differences."""
    from deeplora.finetune.report import mean_std, paired_difference  # scipy: imported late

    zero, grid = [], []
    runs_at: dict[tuple, dict[str, dict[float, _Scored]]] = defaultdict(lambda: defaultdict(dict))
    for cell, runs in results:
        if cell.labels["method"] == "zero-shot":
            for run in runs:
                heldout = run["history"][0].get("heldout", {}) if run["history"] else {}
                rows = run.get("dev_rows", run["config"]["dev_samples"])
                test = run["metrics"].get(_metric(run))
                zero.append({"task": cell.labels["task"], "metric": _metric(run),
                             "test": test, "heldout": heldout.get(_metric(run)),
                             "majority_rate": run.get("majority_rate"), "test_rows": rows,
                             **_above_chance(_metric(run), test, run.get("majority_rate"),
                                             rows)})
            continue
        setting = tuple(cell.labels[k] for k in SETTING)
        method, lr = cell.labels["method"], cell.labels["lr"]
        scores = [run_scores(r) for r in runs]
        runs_at[setting][method][lr] = list(zip(runs, scores, strict=True))
        row = {**{k: cell.labels[k] for k in SETTING}, "method": method, "lr": lr,
               "n": len(runs), "did_not_train": sum(not s["trained"] for s in scores),
               "runs": scores}
        for key in ("final", "best", "best_heldout", "best_step", "final_loss"):
            row[key] = mean_std([s[key] for s in scores])
        grid.append(row)
    chosen, differences = [], []
    for setting, by_method in runs_at.items():
        picked: dict[str, _Scored] = {}
        for method, by_lr in by_method.items():
            lr = choose_lr({lr: [sc["best_heldout"] for _, sc in scored if sc["trained"]]
                            for lr, scored in by_lr.items()})
            if lr is None:
                continue
            picked[method] = by_lr[lr]
            scores = [sc for _, sc in by_lr[lr]]
            chosen.append({**dict(zip(SETTING, setting, strict=True)), "method": method,
                           "lr": lr, "n": len(scores),
                           "best": mean_std([s["best"] for s in scores]),
                           "final": mean_std([s["final"] for s in scores])})
        if "deep-lora" not in picked:
            continue
        deep = {run["seed"]: (run, sc) for run, sc in picked["deep-lora"]}
        for other in (m for m in METHODS if m != "deep-lora" and m in picked):
            rival = {run["seed"]: (run, sc) for run, sc in picked[other]}
            both = {s for s in deep.keys() & rival.keys()
                    if deep[s][1]["trained"] and rival[s][1]["trained"]}
            entry = {**dict(zip(SETTING, setting, strict=True)), "other": other}
            for when in ("best", "final"):
                entry[when] = paired_difference({s: deep[s][1][when] for s in both},
                                                {s: rival[s][1][when] for s in both})
            matched_a, matched_b = {}, {}
            for s in both:
                (ours, _), (theirs, _) = deep[s], rival[s]
                found = matched_checkpoints(ours, theirs)
                if found is not None:
                    i, j, _ = found
                    metric = _metric(ours)
                    matched_a[s] = ours["history"][i]["metrics"].get(metric)
                    matched_b[s] = theirs["history"][j]["metrics"].get(metric)
            entry["matched_loss"] = paired_difference(matched_a, matched_b)
            differences.append(entry)
    return {"zero_shot": zero, "grid": grid, "chosen": chosen, "differences": differences}


def _pm(stat: Sequence[float]) -> str:
    mean, std = stat
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _ci(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return "n/a | n/a"
    ci = (f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if np.isfinite(d["ci_low"])
          else "n/a (< 2 pairs)")
    return f"{d['mean']:+.4f} | {ci}"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables."""
    lines = [f"# {NAME}", "", "Zero-shot (the untouched model through the prompt; accuracy: "
             "95% Wilson interval and the one-sided binomial p-value against the "
             "majority-class rate; Pearson: 95% Fisher-z interval and the one-sided p-value "
             "of r > 0):", "",
             "| task | metric | test | held-out | majority-class rate (test) | test rows "
             "| 95% interval (test) | p vs chance |", "|---|---|---|---|---|---|---|---|"]
    for z in summary["zero_shot"]:
        fmt = [f"{v:.4f}" if v is not None else "-" for v in
               (z["test"], z["heldout"], z["majority_rate"])]
        ci = f"[{z['ci_low']:.4f}, {z['ci_high']:.4f}]" if "ci_low" in z else "-"
        p = f"{z['p_above_chance']:.3g}" if "p_above_chance" in z else "-"
        lines.append(f"| {z['task']} | {z['metric']} | {' | '.join(fmt)} | "
                     f"{z['test_rows'] or 'all'} | {ci} | {p} |")
    if not summary["grid"]:
        return "\n".join(lines) + "\n"
    lines += ["", "Every learning rate (mean ± std over seeds; 'best ckpt': the checkpoint with "
              "the highest held-out score, scored on test):", "",
              "| task | n | r | method | lr | seeds | test, last step | test, best ckpt "
              "| held-out, best ckpt | best step | final train loss | did not train |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in summary["grid"]:
        flag = (f"**all {g['did_not_train']}: no conclusion**"
                if g["did_not_train"] and g["did_not_train"] == g["n"]
                else f"{g['did_not_train']} of {g['n']}")
        lines.append(f"| {g['task']} | {g['samples']} | {g['rank']} | {g['method']} | "
                     f"{g['lr']:g} | {g['n']} | {_pm(g['final'])} | {_pm(g['best'])} | "
                     f"{_pm(g['best_heldout'])} | {_pm(g['best_step'])} | "
                     f"{_pm(g['final_loss'])} | {flag} |")
    lines += ["", "Learning rate chosen on held-out rows (best mean held-out score at the best "
              "checkpoint, trained runs):", "",
              "| task | n | r | method | chosen lr | seeds | test, best ckpt | test, last step |",
              "|---|---|---|---|---|---|---|---|"]
    for c in summary["chosen"]:
        lines.append(f"| {c['task']} | {c['samples']} | {c['rank']} | {c['method']} | "
                     f"{c['lr']:g} | {c['n']} | {_pm(c['best'])} | {_pm(c['final'])} |")
    if summary["differences"]:
        lines += ["", "Paired difference Deep LoRA − other method at the chosen learning rates "
                  "(same seeds, both runs trained), test score, 95% bootstrap interval:", "",
                  "| task | n | r | other | compared at | pairs | mean difference | 95% CI |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in summary["differences"]:
            for when, label in (("best", "best held-out ckpt"), ("final", "last step"),
                                ("matched_loss", "matched train loss")):
                lines.append(f"| {d['task']} | {d['samples']} | {d['rank']} | {d['other']} | "
                             f"{label} | {d[when]['n']} | {_ci(d[when])} |")
    return "\n".join(lines) + "\n"


def _curves(runs: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Mean over runs of the training loss at every step, and of the held-out and test score
    at each checkpoint step."""
    per_step: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        metric = _metric(run)
        points = [("train loss", k + 1, v) for k, v in enumerate(run["train_loss"])]
        for entry in run["history"]:
            points += [("held-out", entry["step"], entry["heldout"].get(metric)),
                       ("test", entry["step"], entry["metrics"].get(metric))]
        for key, step, value in points:
            if value is not None and np.isfinite(value):
                per_step[key][step].append(value)
    return {key: (sorted(v), [float(np.mean(v[s])) for s in sorted(v)])
            for key, v in per_step.items()}


def plot(summary: dict[str, Any], results: list[tuple[Cell, list[dict[str, Any]]]],
         path: Path) -> None:
    """Learning curves at the chosen learning rates: one row of three panels per setting."""
    from deeplora.plotting import new_figure, save_figure

    chosen = {(tuple(c[k] for k in SETTING), c["method"]): c["lr"] for c in summary["chosen"]}
    zero = {z["task"]: z for z in summary["zero_shot"]}
    settings = sorted({s for s, _ in chosen}, key=str)
    if not settings:
        return
    fig, axes = new_figure(ncols=3, nrows=len(settings), width=4.2, height=3.2)
    axes = np.asarray(axes).reshape(len(settings), 3)
    for row, setting in zip(axes, settings, strict=True):
        task, n, rank = setting
        for cell, runs in results:
            labels = cell.labels
            if labels["method"] == "zero-shot" or tuple(labels[k] for k in SETTING) != setting:
                continue
            if chosen.get((setting, labels["method"])) != labels["lr"] or not runs:
                continue
            curves = _curves(runs)
            for ax, key in zip(row, ("train loss", "held-out", "test"), strict=True):
                if key in curves:
                    ax.plot(*curves[key], marker=".", color=COLORS.get(labels["method"]),
                            label=f"{LABELS.get(labels['method'], labels['method'])} "
                            f"(lr {labels['lr']:g})")
        for ax, key in zip(row, ("train loss", "held-out", "test"), strict=True):
            base = zero.get(task, {}).get({"held-out": "heldout", "test": "test"}.get(key, ""))
            if base is not None:
                ax.axhline(base, color="gray", ls="--", lw=1, label="zero-shot")
            ax.set(xlabel="step", title=f"{task}, n={n}, r={rank}: {key}")
        row[0].legend(fontsize=7)
    save_figure(fig, path)


def write_report(results: list[tuple[Cell, list[dict[str, Any]]]], out: Path) -> dict[str, Any]:
    """``prompt-fewshot.{json,md,png}`` in ``out``; returns the summary."""
    from deeplora.output import write_atomic, write_json

    summary = summarize(results)
    write_json(out / f"{NAME}.json", summary)
    text = markdown(summary)
    write_atomic(out / f"{NAME}.md", lambda tmp: tmp.write_text(text))
    plot(summary, results, out / f"{NAME}.png")
    return summary


def run_experiment(cells: list[Cell], out: str | os.PathLike[str],
                   data_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                   train: bool = True, jobs: int = 1) -> dict[str, Any]:
    """Run (or resume) ``cells`` seed-major under ``out/runs/`` (``train=False``: none) and
    write the report from the finished runs."""
    from deeplora.finetune.runs import load_results, run_pairs, run_parallel
    from deeplora.finetune.train import Prepared

    root = Path(out)
    if train:
        firsts: dict[tuple[str, int | None], Cell] = {}
        for cell in cells:  # validate before any run: each task's data and few-shot draw
            firsts.setdefault((cell.config.task, cell.config.samples), cell)
        for first in firsts.values():
            Prepared(first.config, first.seeds[0], data_dir)
        sweeps = [(cell.config, cell.seeds) for cell in cells]
        if jobs == 1:
            run_pairs(seed_major(sweeps), root / "runs", data_dir, progress=progress)
        else:
            run_parallel(sweeps, root / "runs", data_dir, jobs=jobs, progress=progress)
    results = [(cell, load_results(root / "runs", cell.config, cell.seeds)) for cell in cells]
    if not train:
        require_runs(NAME, results, root / "runs")
    return write_report(results, root)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


@experiment(NAME, help="prompt-based few-shot tuning of SmolLM2: Deep LoRA vs LoRA vs PEFT "
            "LoRA, checkpoints and lr chosen on held-out training rows", arguments=[
    Arg("--task", default="sst2", help="GLUE task(s), comma-separated"),
    Arg("--samples", default="16", help="training examples, comma-separated (e.g. 16,64)"),
    Arg("--ranks", default="8", help="adapter ranks, comma-separated (e.g. 8,32,64)"),
    Arg("--lrs", default="1e-4,3e-4,1e-3", help="learning-rate grid, the same for every method"),
    Arg("--methods", default=",".join(METHODS),
        help="methods, comma-separated; '' for the zero-shot rows alone"),
    Arg("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3,7"),
    Arg("--steps", type=int, default=100, help="optimizer steps"),
    Arg("--eval-every", type=int, default=10, help="steps between checkpoints"),
    Arg("--heldout-samples", type=int, default=64,
        help="training rows held out as the dev set (never trained on)"),
    Arg("--test-samples", type=int, default=256,
        help="rows of the GLUE dev split scored as the test set (seed-0 subset)"),
    Arg("--template", choices=("chat", "plain"), default="chat", help="prompt template"),
    Arg("--batch-size", type=int, default=16, help="training batch size"),
    Arg("--model", default="smollm2-135m-instruct", help="causal LM id or folder"),
    Arg("--data-dir", default=None, help=f"GLUE folder; unset: ${DATA_DIR_ENV}, else the hub"),
    Arg("--report-only", action="store_true",
        help="write the report from the runs already finished under --out; train nothing"),
    Arg("--jobs", type=int, default=1, help="train this many runs at once (processes)"),
    Arg("--quiet", action="store_true", help="no progress bars"),
], flags={"samples": "--samples", "rank": "--ranks", "lr": "--lrs", "steps": "--steps",
          "eval_every": "--eval-every", "heldout_samples": "--heldout-samples",
          "dev_samples": "--test-samples", "batch_size": "--batch-size"},
    fast=Fast("steps and rows (2 steps, a checkpoint every step, 8 held-out and 8 test rows, "
              "64 tokens)", ("--steps", "--eval-every", "--heldout-samples", "--test-samples")))
def prompt_fewshot(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from deeplora.finetune.models import quiet_transformers

    check_jobs(args.jobs)
    quiet_transformers()
    common: dict[str, Any] = {
        "model": args.model, "template": args.template, "batch_size": args.batch_size,
        "steps": args.steps, "eval_every": args.eval_every,
        "heldout_samples": args.heldout_samples, "dev_samples": args.test_samples,
    }
    if args.fast:  # a smoke test: the numbers mean nothing
        common.update(steps=2, eval_every=1, heldout_samples=8, dev_samples=8, max_length=64)
    cells = plan(args.task.split(","), _ints(args.samples), _ints(args.ranks), _floats(args.lrs),
                 [m for m in args.methods.split(",") if m], parse_seeds(args.seeds), **common)
    summary = run_experiment(cells, out, args.data_dir, progress=not args.quiet,
                             train=not args.report_only, jobs=args.jobs)
    print((out / f"{NAME}.md").read_text())
    return summary
