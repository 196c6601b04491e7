"""``nlg-checkpoints``: E2E NLG few-shot, Deep LoRA vs vanilla LoRA compared at checkpoints chosen
on dev — does Deep LoRA fit less or overfit less?

Every run (a :class:`~deeplora.nlg.config.NLGConfig` with ``eval_every`` and ``dev_mrs``, see
:mod:`deeplora.nlg.train`) holds out the same ``dev_mrs`` MRs of the E2E dev split (never
training examples) and records at step 0, every ``eval_every`` steps and the last step the
teacher-forced loss on them (the dev score; lower is better) and a checkpoint of its adapters.
With :mod:`deeplora.finetune.checkpoints`, reading dev and training losses only:

- per method, the learning rate of the grid (the same grid for both) with the lowest mean
  best dev loss (:func:`~deeplora.finetune.checkpoints.choose_lr`);
- per run at that rate, its best dev checkpoint
  (:func:`~deeplora.finetune.checkpoints.best_checkpoint`);
- per seed, the checkpoint of each method at the lowest training loss both runs reach
  (:func:`~deeplora.finetune.checkpoints.matched_checkpoints`, the loss averaged over the
  ``eval_every`` steps before a checkpoint).

Only those checkpoints and the last step's are then scored on the test MRs (greedy generation
is the expensive part); the scores land in the runs' result files, so ``--report-only``
rebuilds the report from them. The report gives the grid (dev loss, best step, final training
loss per lr), the chosen learning rates with test BLEU / ROUGE-L at the best dev checkpoint, at
matched training loss and at the last step, the paired differences Deep LoRA − LoRA with 95%
bootstrap intervals over seeds, and learning curves (training loss and dev loss against the
step).
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.experiments import Arg, Fast, experiment, require_runs
from deeplora.experiments.nlg_fewshot import COLORS, LABELS
from deeplora.finetune.checkpoints import (
    best_checkpoint,
    choose_lr,
    loss_curve,
    matched_checkpoints,
)
from deeplora.finetune.sweep import Cell
from deeplora.nlg.config import PRESETS, NLGConfig, nlg_preset

NAME = "nlg-checkpoints"
METHODS = ("deep-lora", "lora")
DEV = "neg_loss"
"""The held-out key the selection maximizes: minus the teacher-forced dev loss."""
SHOWN = {"bleu": ("BLEU", 1.0), "rougeL": ("ROUGE-L", 100.0)}
WHEN = {"best": "best dev ckpt", "matched": "matched train loss", "last": "last step"}
Results = list[tuple[Cell, list[dict[str, Any]]]]


def plan(preset: str, lrs: Sequence[float], seeds: Sequence[int],
         methods: Sequence[str] = METHODS, **common: Any) -> list[Cell]:
    """Zero-shot (seed 0), then every (lr, method) over ``seeds`` on ``preset``; ``common``:
    :class:`~deeplora.nlg.config.NLGConfig` fields shared by all (``eval_every``,
    ``dev_mrs``, ``model``, …)."""
    zero = nlg_preset(preset, method="zero-shot", **common)
    cells = [Cell(zero, (0,), {"method": "zero-shot", "lr": None})]  # type: ignore[arg-type]
    for lr in lrs:
        for method in methods:
            config = nlg_preset(preset, method=method, lr=lr, **common)
            cells.append(Cell(config, tuple(seeds),  # type: ignore[arg-type]
                              {"method": method, "lr": lr}))
    return cells


def _best_dev(run: dict[str, Any]) -> float | None:
    best = best_checkpoint(run["history"], DEV)
    return None if best is None else run["history"][best]["heldout"][DEV]


def select(results: Results, lr_seeds: Collection[int] | None = None) -> dict[str, Any]:
    """The lr per method chosen on the runs of ``lr_seeds`` (``None``: all;
    ``{"lr": {method: lr}}``), and per seed at those lrs the history index of each method's
    best dev checkpoint (``best[method][seed]``), of its last step (``last[method][seed]``)
    and of the matched-loss checkpoints (``matched[seed] = (i_deep, i_lora, loss)``). Runs
    that never left their initialization take no part."""
    by_method: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(dict)
    for cell, runs in results:
        if cell.labels["method"] != "zero-shot":
            by_method[cell.labels["method"]][cell.labels["lr"]] = [r for r in runs
                                                                    if r.get("left_init")]
    chosen: dict[str, float] = {}
    best: dict[str, dict[int, int]] = {}
    picked: dict[str, dict[int, dict[str, Any]]] = {}
    for method, by_lr in by_method.items():
        lr = choose_lr({lr: [_best_dev(r) for r in runs
                             if lr_seeds is None or r["seed"] in lr_seeds]
                        for lr, runs in by_lr.items()})
        if lr is None:
            continue
        chosen[method] = lr
        picked[method] = {r["seed"]: r for r in by_lr[lr]}
        best[method] = {s: best_checkpoint(r["history"], DEV) for s, r in picked[method].items()}
    matched: dict[int, tuple[int, int, float]] = {}
    if len(picked) == 2:
        first, second = (picked[m] for m in METHODS)
        for seed in sorted(first.keys() & second.keys()):
            found = matched_checkpoints(first[seed], second[seed])
            if found is not None:
                matched[seed] = found
    last = {m: {s: len(r["history"]) - 1 for s, r in runs.items()} for m, runs in picked.items()}
    return {"lr": chosen, "best": best, "last": last, "matched": matched, "runs": picked}


def needed(selection: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(run, step) of every selected checkpoint (best dev, matched loss, last step) without
    test metrics yet."""
    wanted = [(selection["runs"][m][s], i) for when in ("best", "last")
              for m, per in selection[when].items() for s, i in per.items()]
    for seed, (i, j, _) in selection["matched"].items():
        wanted += [(selection["runs"][METHODS[0]][seed], i),
                   (selection["runs"][METHODS[1]][seed], j)]
    todo, seen = [], set()
    for run, index in wanted:
        key = (run["config"]["method"], run["seed"], index)
        if key not in seen and not run["history"][index]["metrics"]:
            seen.add(key)
            todo.append((run, run["history"][index]["step"]))
    return todo


def _test(run: dict[str, Any], index: int, metric: str) -> float | None:
    return run["history"][index]["metrics"].get(metric)


def summarize(results: Results, lr_seeds: Collection[int] | None = None) -> dict[str, Any]:
    """Zero-shot, the lr grid, the chosen checkpoints with their test scores, and the paired
    differences Deep LoRA − vanilla LoRA at the best dev, the matched-loss and the last
    checkpoints (lr chosen on the runs of ``lr_seeds``, see :func:`select`)."""
    from deeplora.finetune.report import mean_std, paired_difference  # scipy: imported late

    selection = select(results, lr_seeds)
    zero, grid = [], []
    for cell, runs in results:
        if cell.labels["method"] == "zero-shot":
            zero += [{"dev_loss": r["history"][0]["heldout"]["loss"],
                      **{m: r["metrics"][m] for m in SHOWN}} for r in runs]
            continue
        curves = [loss_curve(r) for r in runs]
        grid.append({
            "method": cell.labels["method"], "lr": cell.labels["lr"], "n": len(runs),
            "left_init": sum(bool(r.get("left_init")) for r in runs),
            "best_dev_loss": mean_std([-v for r in runs if (v := _best_dev(r)) is not None]),
            "best_step": mean_std([r["history"][i]["step"] for r in runs
                                    if (i := best_checkpoint(r["history"], DEV)) is not None]),
            "last_dev_loss": mean_std([r["history"][-1]["heldout"]["loss"] for r in runs]),
            "last_train_loss": mean_std([c[-1] for c in curves]),
            "chosen": selection["lr"].get(cell.labels["method"]) == cell.labels["lr"]})
    runs, chosen = selection["runs"], []
    at: dict[str, dict[str, dict[int, int]]] = {
        "best": selection["best"],
        "matched": {m: {s: found[k] for s, found in selection["matched"].items()}
                    for k, m in enumerate(METHODS)},
        "last": selection["last"]}
    for method, lr in selection["lr"].items():
        row: dict[str, Any] = {"method": method, "lr": lr, "n": len(runs[method])}
        for when, indices in at.items():
            picks = indices.get(method, {})
            row[when] = {"steps": {s: runs[method][s]["history"][i]["step"]
                                   for s, i in picks.items()},
                         "scored": sum(bool(runs[method][s]["history"][i]["metrics"])
                                       for s, i in picks.items()),
                         **{m: mean_std([_test(runs[method][s], i, m)
                                          for s, i in picks.items()]) for m in SHOWN}}
        chosen.append(row)
    differences = []
    if len(runs) == 2:
        for when, indices in at.items():
            for metric in SHOWN:
                values = [{s: _test(runs[m][s], i, metric) for s, i in indices.get(m, {}).items()}
                          for m in METHODS]
                differences.append({"when": when, "metric": metric, **paired_difference(*values)})
    matched = [{"seed": s, "loss": loss,
                **{m: {"step": runs[m][s]["history"][k]["step"],
                       "loss": loss_curve(runs[m][s])[k]}
                   for m, k in zip(METHODS, (i, j), strict=True)}}
               for s, (i, j, loss) in selection["matched"].items()]
    return {"zero_shot": zero, "grid": grid, "chosen": chosen, "matched": matched,
            "differences": differences}


def _pm(stat: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = stat
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean * scale:.{digits}f}"
    return f"{text} ± {std * scale:.{digits}f}" if np.isfinite(std) else text


def markdown(summary: dict[str, Any], settings: str) -> str:
    """The summary as Markdown tables."""
    lines = [f"# {NAME}", "", f"Settings: {settings}.", ""]
    for z in summary["zero_shot"]:
        lines += [f"Zero-shot: dev loss {z['dev_loss']:.3f}, test BLEU {z['bleu']:.2f}, "
                  f"ROUGE-L {z['rougeL'] * 100:.2f}.", ""]
    lines += ["Every learning rate (mean ± std over seeds; dev loss: teacher-forced, per target "
              "token, on the held-out dev MRs; train loss: mean over the last checkpoint "
              "interval; '*': the lr chosen on dev):", "",
              "| method | lr | seeds | left init | best dev loss | best step | last dev loss "
              "| last train loss |", "|---|---|---|---|---|---|---|---|"]
    for g in summary["grid"]:
        mark = " *" if g["chosen"] else ""
        lines.append(f"| {LABELS[g['method']]} | {g['lr']:g}{mark} | {g['n']} | "
                     f"{g['left_init']}/{g['n']} | {_pm(g['best_dev_loss'], digits=3)} | "
                     f"{_pm(g['best_step'], digits=0)} | {_pm(g['last_dev_loss'], digits=3)} | "
                     f"{_pm(g['last_train_loss'], digits=3)} |")
    lines += ["", "Test scores at the chosen lr (mean ± std over seeds; 'scored': checkpoints "
              "with test outputs / chosen):", "",
              "| method | lr | checkpoint | steps (per seed) | scored | BLEU | ROUGE-L |",
              "|---|---|---|---|---|---|---|"]
    for c in summary["chosen"]:
        for when, label in WHEN.items():
            entry = c[when]
            steps = ", ".join(f"{s}: {v}" for s, v in sorted(entry["steps"].items())) or "-"
            lines.append(f"| {LABELS[c['method']]} | {c['lr']:g} | {label} | {steps} | "
                         f"{entry['scored']}/{len(entry['steps'])} | {_pm(entry['bleu'])} | "
                         f"{_pm(entry['rougeL'], 100.0)} |")
    if summary["matched"]:
        lines += ["", "Matched training loss per seed (target: the lowest loss both runs reach; "
                  "the first checkpoint of each at or below it, step and its loss):", "",
                  "| seed | target loss | Deep LoRA | vanilla LoRA |", "|---|---|---|---|"]
        lines += [f"| {m['seed']} | {m['loss']:.3f} | step {m['deep-lora']['step']}: "
                  f"{m['deep-lora']['loss']:.3f} | step {m['lora']['step']}: "
                  f"{m['lora']['loss']:.3f} |" for m in summary["matched"]]
    if summary["differences"]:
        lines += ["", "Paired difference Deep LoRA − vanilla LoRA (same seed = same training "
                  "MRs), 95% bootstrap interval over seeds:", "",
                  "| checkpoint | metric | pairs | mean difference | 95% CI |",
                  "|---|---|---|---|---|"]
        for d in summary["differences"]:
            label, scale = SHOWN[d["metric"]]
            mean = "n/a" if d["mean"] is None else f"{d['mean'] * scale:+.2f}"
            ci = (f"[{d['ci_low'] * scale:+.2f}, {d['ci_high'] * scale:+.2f}]"
                  if np.isfinite(d["ci_low"]) else "n/a (< 2 pairs)")
            lines.append(f"| {WHEN[d['when']]} | {label} | {d['n']} | {mean} | {ci} |")
    return "\n".join(lines) + "\n"


def _mean_curve(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for step, value in points:
        by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps]


def plot(summary: dict[str, Any], results: Results, path: Path) -> None:
    """Four panels: training loss per step and dev loss per checkpoint (mean over seeds; the
    chosen lr solid, the other lrs thin); dev loss against the training loss (the mean over
    the interval before the checkpoint) at every checkpoint of every run — at the same fit, the
    lower curve overfits less; test BLEU at the scored checkpoints per seed (o: best dev,
    x: matched loss, square: last step)."""
    from deeplora.plotting import new_figure, save_figure

    chosen = {c["method"]: c for c in summary["chosen"]}
    fig, axes = new_figure(ncols=2, nrows=2, width=5.0, height=3.6)
    for cell, runs in results:
        method, lr = cell.labels["method"], cell.labels["lr"]
        if method == "zero-shot" or not runs:
            continue
        main = chosen.get(method, {}).get("lr") == lr
        style = {"color": COLORS[method], "lw": 1.8 if main else 0.7,
                 "alpha": 1.0 if main else 0.5, "label": f"{LABELS[method]} lr {lr:g}"}
        axes[0].plot(*_mean_curve([(k + 1, v) for r in runs
                                   for k, v in enumerate(r["train_loss"])]), **style)
        axes[1].plot(*_mean_curve([(e["step"], e["heldout"]["loss"]) for r in runs
                                   for e in r["history"]]), marker=".", **style)
        for r in runs:
            fits = loss_curve(r)
            kept = [k for k, fit in enumerate(fits) if fit is not None]
            axes[2].plot([fits[k] for k in kept], [r["history"][k]["heldout"]["loss"]
                                                   for k in kept],
                         marker=".", color=COLORS[method], lw=0.6, alpha=1.0 if main else 0.4)
    for method, row in chosen.items():
        for when, marker in (("best", "o"), ("matched", "x"), ("last", "s")):
            for seed, step in row[when]["steps"].items():
                run = next(r for c, rs in results for r in rs if r["seed"] == seed
                           and c.labels == {"method": method, "lr": row["lr"]})
                entry = next(e for e in run["history"] if e["step"] == step)
                if entry["metrics"]:
                    axes[3].plot(step, entry["metrics"]["bleu"], marker, color=COLORS[method],
                                 ms=8)
    for z in summary["zero_shot"]:
        for ax in axes[1:3]:  # a diverged lr stays off the top
            ax.set_ylim(top=2 * z["dev_loss"])
        axes[1].axhline(z["dev_loss"], color="gray", ls="--", lw=1, label="zero-shot")
        axes[2].axhline(z["dev_loss"], color="gray", ls="--", lw=1)
        axes[3].axhline(z["bleu"], color="gray", ls="--", lw=1, label="zero-shot")
    axes[0].set(xlabel="step", ylabel="train loss", yscale="log", title="training loss")
    axes[1].set(xlabel="step", ylabel="dev loss", title="dev loss (held-out dev MRs)")
    axes[2].set(xlabel="train loss (mean over the interval)", ylabel="dev loss", xscale="log",
                title="dev loss against fit, every run and lr")
    axes[3].set(xlabel="step", ylabel="test BLEU",
                title="test BLEU: o best dev, x matched, □ last")
    axes[0].legend(fontsize=6)
    save_figure(fig, path)


def write_report(results: Results, out: Path, settings: str,
                 lr_seeds: Collection[int] | None = None) -> dict[str, Any]:
    """``nlg-checkpoints.{json,md,png}`` in ``out``; returns the summary."""
    from deeplora.output import write_atomic, write_json

    summary = summarize(results, lr_seeds)
    write_json(out / f"{NAME}.json", summary)
    text = markdown(summary, settings)
    write_atomic(out / f"{NAME}.md", lambda tmp: tmp.write_text(text))
    plot(summary, results, out / f"{NAME}.png")
    return summary


def settings_text(cells: list[Cell], lr_seeds: Collection[int] | None = None) -> str:
    """One line naming the grid, the checkpoints and the dev and test sets."""
    config = cells[-1].config
    lrs = sorted({c.labels["lr"] for c in cells if c.labels["lr"] is not None})
    return (f"{config.preset} preset ({config.samples} examples, batch {config.batch_size}, "
            f"{config.steps} steps, greedy on {config.test_mrs or 'all'} test MRs), lr grid "
            f"{', '.join(f'{v:g}' for v in lrs)} for both methods"
            + (f" (run and chosen on seed {', '.join(map(str, sorted(lr_seeds)))}, the other "
               "seeds at the chosen lr)" if lr_seeds is not None else "")
            + f", checkpoints every "
            f"{config.eval_every} steps and at step 0, dev: {config.dev_mrs} MRs held out of "
            "the E2E dev split (first reference each)")


def run_experiment(cells: list[Cell], out: str | os.PathLike[str],
                   data_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                   train: bool = True, score: bool = True,
                   lr_seeds: Collection[int] | None = None) -> dict[str, Any]:
    """Run (or resume) ``cells`` seed-major under ``out/runs/`` (``train=False``: none), score
    the selected checkpoints on test (``score=False``: none) and write the report. With
    ``lr_seeds`` only those seeds run the whole grid; the lr is chosen on them and the other
    seeds run at the chosen lr of each method."""
    from deeplora.finetune.estimate import announce
    from deeplora.finetune.sweep import seed_major
    from deeplora.nlg.train import (
        PreparedNLG,
        estimate_nlg,
        load_nlg_results,
        run_nlg_sweep,
        score_checkpoint,
    )

    root = Path(out)
    sweeps = [(cell.config, cell.seeds) for cell in cells]

    def load() -> Results:
        return [(cell, load_nlg_results(root / "runs", cell.config, cell.seeds))
                for cell in cells]

    def train_where(keep: Callable[[NLGConfig, int], bool]) -> None:
        pairs = [(config, seed) for config, seed in seed_major(sweeps) if keep(config, seed)]
        if progress:
            announce(estimate_nlg(pairs, root / "runs", data_dir))
        for config, seed in pairs:
            run_nlg_sweep(config, [seed], root / "runs", data_dir, progress=progress)

    if train:
        PreparedNLG(cells[0].config, cells[0].seeds[0], data_dir)  # data and model first
        train_where(lambda config, seed: lr_seeds is None or seed in lr_seeds
                    or config.method == "zero-shot")
        if lr_seeds is not None:
            chosen = select(load(), lr_seeds)["lr"]
            train_where(lambda config, seed: chosen.get(config.method) == config.lr)
    results = load()
    if not train:
        require_runs(NAME, results, root / "runs")
    if score:
        for run, step in needed(select(results, lr_seeds)):
            score_checkpoint(NLGConfig(**run["config"]), run["seed"], step, root / "runs",
                             data_dir, progress=progress)
        results = load()
    return write_report(results, root, settings_text(cells, lr_seeds), lr_seeds)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


@experiment(NAME, help="E2E NLG: Deep LoRA vs LoRA at the best dev checkpoint and at matched "
            "training loss, lr chosen on dev (fits less or overfits less?)", arguments=[
    Arg("--preset", choices=PRESETS, default="cpu", help="the nlg-fewshot preset"),
    Arg("--lrs", default="3e-4,1e-3,3e-3", help="learning-rate grid, the same for both methods"),
    Arg("--seeds", default="0-1", help="seeds, e.g. 0-4"),
    Arg("--lr-seeds", default=None,
        help="seeds that run the whole lr grid, the lr being chosen on them; the other seeds "
        "run at each method's chosen lr; unset: every seed runs the grid"),
    Arg("--eval-every", type=int, default=10, help="steps between checkpoints"),
    Arg("--dev-mrs", type=int, default=24,
        help="MRs held out of the E2E dev split as the dev set (never training examples)"),
    Arg("--model", default=None, help="model id or folder; unset: the embedded SmolLM2"),
    Arg("--data-dir", default=None, help="E2E folder; unset: $DEEPLORA_E2E_DIR, else the hub"),
    Arg("--score-only", action="store_true",
        help="score the selected checkpoints of the runs already finished and write the "
        "report; train nothing"),
    Arg("--report-only", action="store_true",
        help="write the report from the finished runs and scores; train and generate nothing"),
    Arg("--quiet", action="store_true", help="no progress bars"),
], flags={"lr": "--lrs", "eval_every": "--eval-every", "dev_mrs": "--dev-mrs"},
    fast=Fast("checkpoints (4 steps, one every 2 on 4 dev MRs; 4 test MRs)",
              ("--eval-every", "--dev-mrs")))
def nlg_checkpoints(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from deeplora.finetune.models import quiet_transformers
    from deeplora.finetune.sweep import parse_seeds

    quiet_transformers()
    common: dict[str, Any] = {"eval_every": args.eval_every, "dev_mrs": args.dev_mrs,
                              "model": args.model}
    if args.fast:  # a smoke test: the numbers mean nothing
        common.update(steps=4, eval_every=2, dev_mrs=4, test_mrs=4, max_output_length=16)
    cells = plan(args.preset, _floats(args.lrs), parse_seeds(args.seeds), **common)
    lr_seeds = None if args.lr_seeds is None else parse_seeds(args.lr_seeds)
    summary = run_experiment(cells, out, args.data_dir, progress=not args.quiet,
                             train=not (args.report_only or args.score_only),
                             score=not args.report_only, lr_seeds=lr_seeds)
    print((out / f"{NAME}.md").read_text())
    return summary
