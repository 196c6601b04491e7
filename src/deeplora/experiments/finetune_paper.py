"""The paper's Deep LoRA experiments (Yaras et al. 2024, Sec. 4) as resumable sweeps.

Each experiment is a list of :class:`Cell` s (one config, the seeds to run, and the labels it is
reported under). :func:`run_experiment` runs every cell through
:func:`deeplora.finetune.runs.run_sweep` (so a rerun skips finished seeds), then writes
``NAME.md`` / ``NAME.json`` and ``NAME.png`` via :mod:`deeplora.experiments.finetune_report`.
Every few-shot table gets a zero-shot row (untouched model, ``bi`` head, seed 0).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from deeplora.experiments import Arg, Fast, experiment, require_runs
from deeplora.finetune.config import PADDINGS, PRESETS
from deeplora.finetune.data import DATA_DIR_ENV, DataError, available_tasks, resolve_data_dir
from deeplora.finetune.sweep import (
    Cell,
    Options,
    check_jobs,
    parse_seeds,
    seed_major,
    zero_shot_cell,
)


def _pairs(options: Options, seeds: int, steps: int, axis: str, values: Sequence[Any],
           **fixed: Any) -> list[Cell]:
    cells = []
    for head in options.heads:
        for value in values:
            for method in ("deep-lora", "lora"):
                config = options.config(steps, method=method, head=head, **{axis: value}, **fixed)
                labels = {"method": method, "head": head, axis: value}
                cells.append(Cell(config, options.seed_list(seeds), labels))
    return cells


def stsb_fewshot(options: Options, data_dir: Path | None) -> list[Cell]:
    """Dev Pearson vs n ∈ {16, 64, 256} training samples, 500 steps, 20 seeds."""
    return [zero_shot_cell(options), *_pairs(options, 20, 500, "samples", (16, 64, 256),
                                             task="stsb")]


def stsb_ranks(options: Options, data_dir: Path | None) -> list[Cell]:
    """Dev Pearson vs r ∈ {8, 16, 32, 64}, 16 samples, 400 steps, 5 seeds."""
    return [zero_shot_cell(options), *_pairs(options, 5, 400, "rank", (8, 16, 32, 64),
                                             task="stsb", samples=16)]


def _full_width(options: Options) -> int:
    """The model's hidden size: a full-width adapter (the authors' ``rank=None``)."""
    from transformers import AutoConfig

    from deeplora.finetune.models import resolve_model

    return AutoConfig.from_pretrained(resolve_model(options.model)).hidden_size


def rank_histogram(options: Options, data_dir: Path | None) -> list[Cell]:
    """Ranks of every adapted ΔW, 256 samples, 500 steps, 5 seeds, as the authors count them:
    Deep LoRA at full width (r = hidden size), LoRA at r = 8 (see
    :func:`deeplora.experiments.finetune_report.rank_counts`)."""
    width = _full_width(options)
    cells = [zero_shot_cell(options)]
    for head in options.heads:
        for method, rank in (("deep-lora", width), ("lora", 8)):
            config = options.config(500, task="stsb", method=method, head=head, rank=rank,
                                    samples=256)
            cells.append(Cell(config, options.seed_list(5),
                              {"method": method, "head": head, "samples": 256}))
    return cells


def narrow_vs_wide(options: Options, data_dir: Path | None) -> list[Cell]:
    """Query/value adapters, 16 samples, 200 steps, evaluated every 10 steps: full-width Deep
    LoRA (r = hidden size, lr 1e-4), width-8 random orthogonal init (lr 1e-4), width-8
    compressed init (lr 1e-2, γ = 1e-2 on the outer factors)."""
    width = _full_width(options)
    variants = [
        ("wide", "deep-lora", width, 1e-4),
        ("narrow random", "deep-lora", 8, 1e-4),
        ("compressed", "deep-lora-compressed", 8, 1e-2),
    ]
    cells = []
    for head in options.heads:
        for label, method, rank, lr in variants:
            config = options.config(200, task="stsb", method=method, head=head, rank=rank, lr=lr,
                                    samples=16, targets="query-value", eval_every=10)
            cells.append(Cell(config, options.seed_list(3), {"method": label, "head": head}))
    return cells


SNAPSHOT_STEPS = (0, 1, 10, 20, 30, 100, 500, 1000, 1500, 2000)


def subspace_dynamics(options: Options, data_dir: Path | None) -> list[Cell]:
    """The introduction figure: full-width Deep LoRA on attention and MLP layers, the full STS-B
    train set, 2000 steps, lr decaying to 0.1·lr; per layer the singular values of ΔW at the end
    and the authors' cosine between the top-8 left singular subspaces of ΔW at the paper's
    checkpoints and at the end (σ_max(U_tᵀU_T), the cosine of the smallest principal angle)."""
    width = _full_width(options)
    cells = []
    for head in options.heads:
        config = options.config(2000, task="stsb", method="deep-lora", head=head, samples=None,
                                rank=width, targets="attention-mlp", decay_ratio=0.1,
                                subspace_rank=8)
        steps = tuple(s for s in SNAPSHOT_STEPS if s <= config.steps)
        config = replace(config, snapshot_steps=steps)
        cells.append(Cell(config, options.seed_list(1), {"method": "deep-lora", "head": head}))
    return cells


def glue_fewshot(options: Options, data_dir: Path | None) -> list[Cell]:
    """Every GLUE task with data: 1024 samples, 1000 steps, 10 seeds, Deep LoRA vs LoRA."""
    if data_dir is None:
        raise DataError("glue-fewshot needs --data-dir or DEEPLORA_DATA_DIR to find the tasks")
    tasks = available_tasks(data_dir)
    if not tasks:
        raise DataError(f"{data_dir}: no GLUE task has both train and dev files")
    cells = []
    for task in tasks:
        cells.append(zero_shot_cell(options, task))
        cells += _pairs(options, 10, 1000, "task", (task,), samples=1024)
    for cell in cells:
        cell.labels["task"] = cell.config.task
    return cells


PLANS: dict[str, Callable[[Options, Path | None], list[Cell]]] = {
    "stsb-fewshot": stsb_fewshot,
    "stsb-ranks": stsb_ranks,
    "rank-histogram": rank_histogram,
    "narrow-vs-wide": narrow_vs_wide,
    "subspace-dynamics": subspace_dynamics,
    "glue-fewshot": glue_fewshot,
}


def plan(name: str, options: Options, data_dir: str | os.PathLike[str] | None) -> list[Cell]:
    """The cells of experiment ``name``."""
    if name not in PLANS:
        raise DataError(f"unknown experiment {name!r}; choose one of {', '.join(PLANS)}")
    return PLANS[name](options, resolve_data_dir(data_dir))


def run_experiment(
    name: str,
    options: Options,
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    train: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run (or resume) experiment ``name`` with runs under ``out/runs/`` and write its report
    (``<name>.md``, ``<name>.json``, ``<name>.png``) into ``out``.

    Runs go seed-major (the first seed of every cell, then the second, …). ``jobs`` > 1 trains
    that many runs at once in worker processes (:func:`deeplora.finetune.runs.run_parallel`);
    the results are the same files.

    Every distinct (task, model, samples) is validated before the first training step. With
    ``train=False`` nothing runs: the report covers the seeds already finished (a sweep run in
    slices, or on several machines, can be looked at before it completes).
    Returns the summary (see :func:`deeplora.experiments.finetune_report.write_report`).
    """
    from deeplora.experiments.finetune_report import write_report
    from deeplora.finetune.runs import load_results, run_pairs, run_parallel
    from deeplora.finetune.train import Prepared

    cells = plan(name, options, data_dir)
    root = Path(out)
    if train:
        checked = set()
        for cell in cells:
            key = (cell.config.task, cell.config.model, cell.config.samples)
            if key not in checked:
                Prepared(cell.config, cell.seeds[0], data_dir)
                checked.add(key)
        sweeps = [(cell.config, cell.seeds) for cell in cells]
        if jobs == 1:
            run_pairs(seed_major(sweeps), root / "runs", data_dir, progress=progress)
        else:  # run_parallel rejects jobs < 1
            run_parallel(sweeps, root / "runs", data_dir, jobs=jobs, progress=progress)
    results = [(cell, load_results(root / "runs", cell.config, cell.seeds)) for cell in cells]
    if not train:
        require_runs(name, results, root / "runs")
    return write_report(name, results, root)


HELP = {
    "stsb-fewshot": "STS-B dev Pearson vs 16/64/256 samples, Deep LoRA vs LoRA",
    "stsb-ranks": "STS-B dev Pearson vs adapter rank 8…64 at 16 samples (rank robustness)",
    "rank-histogram": "ranks of the learned ΔW of every layer, Deep LoRA (full width) vs LoRA",
    "narrow-vs-wide": "train loss and dev Pearson: full-width vs narrow vs compressed Deep LoRA",
    "subspace-dynamics": "singular values of each ΔW and the cosine of the smallest principal "
    "angle between its top-8 subspaces during training and at the end (the intro figure)",
    "glue-fewshot": "Deep LoRA − LoRA per GLUE task with 1024 samples, and overall",
}

ARGUMENTS = (
    Arg("--seeds", default=None,
        help="seeds, e.g. 0-4 or 0,3,7; unset: the paper's count (2 with --fast)"),
    Arg("--head", choices=("cross", "bi", "both"), default="both", help="model head(s)"),
    Arg("--preset", choices=PRESETS, default="paper", help="training preset"),
    Arg("--model", default=None,
        help="transformers model id or folder; unset: the embedded all-MiniLM-L6-v2"),
    Arg("--padding", choices=PADDINGS, default=None,
        help="pad training batches to max-length (128) or to their longest input; unset: "
        "the preset's choice (paper: max-length)"),
    Arg("--data-dir", default=None, help=f"GLUE folder; unset: ${DATA_DIR_ENV}, else the hub"),
    Arg("--report-only", action="store_true",
        help="write the report from the runs already finished under --out; train nothing"),
    Arg("--jobs", type=int, default=1,
        help="train this many runs at once, in separate processes that split the CPU cores "
        "(and share the GPU, if any)"),
    Arg("--quiet", action="store_true", help="no progress bars"),
)

FAST = Fast("steps and padding (2 steps, 32 dev rows, inputs of 32 tokens padded to the "
            "longest)", ("--padding",))


def _register(name: str) -> None:
    def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
        from deeplora.finetune.models import quiet_transformers

        check_jobs(args.jobs)
        quiet_transformers()
        heads = ("cross", "bi") if args.head == "both" else (args.head,)
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
        options = Options(fast=args.fast, seeds=seeds, heads=heads, preset=args.preset,
                          model=args.model, padding=args.padding)
        summary = run_experiment(name, options, out, args.data_dir, progress=not args.quiet,
                                 train=not args.report_only, jobs=args.jobs)
        print((out / f"{name}.md").read_text())
        return summary

    experiment(name, help=HELP[name], arguments=ARGUMENTS, fast=FAST)(run)


for _name in PLANS:
    _register(_name)
