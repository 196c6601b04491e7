"""``deeplora finetune``: a few-shot fine-tuning sweep over seeds, resumable.

Choices (task, method, head, preset) are validated by :class:`FinetuneConfig` rather than by
argparse, so a bad value is one line ``deeplora: error: …`` (exit 2) like every other error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from deeplora.cli import Given, HelpFormatter, given_options, parameters_as_flags
from deeplora.finetune.config import (
    HEADS,
    METHODS,
    PADDINGS,
    PRESETS,
    TARGETS,
    TEMPLATES,
    FinetuneConfig,
    padding_override,
    preset,
)
from deeplora.finetune.data import DATA_DIR_ENV, TASKS, DataError, get_task
from deeplora.finetune.sweep import (
    Cell,
    Options,
    check_jobs,
    parse_seeds,
    seed_major,
    zero_shot_cell,
)
from deeplora.output import check_writable_dir, write_atomic

GLUE_ONLY = ("head", "template", "heldout_samples", "eval_every", "padding", "max_length",
             "targets", "jobs")
"""Options of the GLUE tasks that ``--task e2e`` (its presets, :mod:`deeplora.nlg`) has not,
refused with it when given, at any value (their action is :class:`~deeplora.cli.Given`)."""

# FinetuneConfig's and NLGConfig's fields set by flags, for errors about their values.
CONFIG_FLAGS = {"rank": "--rank", "samples": "--samples", "steps": "--steps", "lr": "--lr",
                "eval_every": "--eval-every", "max_length": "--max-length",
                "heldout_samples": "--heldout-samples", "dev_samples": "--dev-samples",
                "test_mrs": "--dev-samples"}


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="few-shot fine-tuning on a GLUE task over several seeds",
        description="Fine-tune a transformers model (default: the embedded all-MiniLM-L6-v2) "
        "with Deep LoRA, LoRA or PEFT LoRA on N training examples of a GLUE task, one result "
        "file per (method, seed) under --out; rerunning skips finished seeds. Prints and "
        "writes --out/summary.md: mean ± std per method and the paired Deep LoRA − LoRA "
        "difference with a bootstrap 95% interval.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--task", default="stsb",
                   help=f"one of {', '.join(TASKS)}, or e2e (E2E NLG generation, see "
                   "docs/nlg.md)")
    p.add_argument("--method", default="deep-lora,lora",
                   help=f"one or more (comma-separated) of {', '.join(METHODS)}; with several, "
                   "a zero-shot row and the paired Deep LoRA − LoRA difference are added")
    p.add_argument("--rank", type=int, default=8, help="adapter rank r")
    p.add_argument("--samples", type=int, default=16, help="training examples (seeded subset)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default: 500; e2e: the preset's, 400 or 60)")
    p.add_argument("--seeds", default="0-4", help="seeds, e.g. 0-4 or 0,3,7")
    p.add_argument("--head", action=Given, default="cross",
                   help=f"one of {', '.join(HEADS)} (prompt: a causal LM's label-word logits "
                   "after the task as a prompt, see docs/finetune.md)")
    p.add_argument("--template", action=Given, default="chat",
                   help=f"prompt head: one of {', '.join(TEMPLATES)} (the tokenizer's chat "
                   "template, or plain text ending in 'Answer:')")
    p.add_argument("--heldout-samples", action=Given, type=int, default=0,
                   help="hold out this many training rows (never trained on) and score them at "
                   "every evaluation, as a dev set for choosing checkpoints")
    p.add_argument("--preset", default=None,
                   help=f"one of {', '.join(PRESETS)}; e2e: paper or cpu (default: paper, and "
                   "for e2e paper with a GPU, cpu without, said in one line)")
    p.add_argument("--targets", action=Given, default="all-dense",
                   help=f"one of {', '.join(TARGETS)}")
    p.add_argument("--model", default=None,
                   help="transformers model id or folder (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 1e-4; e2e: the preset's, 1e-4 or 1e-3)")
    p.add_argument("--eval-every", action=Given, type=int, default=0,
                   help="steps between dev evaluations (0: only at the end)")
    p.add_argument("--dev-samples", type=int, default=None,
                   help="evaluate on this many dev rows (default: all; e2e: this many test "
                   "MRs, default the preset's)")
    p.add_argument("--padding", action=Given, default=None,
                   help=f"one of {', '.join(PADDINGS)}: pad training batches to --max-length "
                   "tokens or to their longest input (same outputs, padding is masked; default: "
                   "the preset's, paper: max-length)")
    p.add_argument("--max-length", action=Given, type=int, default=None,
                   help="longest input in tokens; longer inputs are truncated (default: 128; at "
                   "most the model's position embeddings)")
    p.add_argument("--data-dir", default=None,
                   help=f"GLUE folder (default: ${DATA_DIR_ENV}, else the hub nyu-mll/glue); "
                   "e2e: the E2E folder (or one holding e2e/), default $DEEPLORA_E2E_DIR, else "
                   "the hub GEM/e2e_nlg")
    p.add_argument("--out", default="runs/finetune", help="output folder")
    p.add_argument("--jobs", action=Given, type=int, default=1,
                   help="train this many runs at once, in separate processes that split the CPU "
                   "cores (and share the GPU, if any)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    check_jobs(args.jobs)
    if args.dev_samples is not None and args.dev_samples < 1:
        raise DataError(f"--dev-samples must be >= 1 (unset: the whole dev split; e2e: the "
                        f"preset's test MRs), got {args.dev_samples}")
    if args.task.lower() == "e2e":
        return run_e2e(args, seeds)
    if args.task.lower().replace("-", "") not in TASKS:
        raise DataError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}, e2e")
    args.preset = args.preset or "paper"
    args.steps = 500 if args.steps is None else args.steps
    args.lr = 1e-4 if args.lr is None else args.lr
    methods = tuple(dict.fromkeys(m.strip() for m in args.method.split(",")))
    with parameters_as_flags(CONFIG_FLAGS):
        configs = [
            preset(args.preset, task=args.task, method=method, rank=args.rank, samples=args.samples,
                   steps=args.steps, head=args.head, targets=args.targets, model=args.model,
                   lr=args.lr, eval_every=args.eval_every, dev_samples=args.dev_samples,
                   template=args.template, heldout_samples=args.heldout_samples,
                   **padding_override(args.padding),
                   **({} if args.max_length is None else {"max_length": args.max_length}))
            for method in methods
        ]
    check_writable_dir(args.out)
    from deeplora.finetune.models import quiet_transformers
    from deeplora.finetune.report import main_metric, markdown, summarize
    from deeplora.finetune.runs import load_results, run_pairs, run_parallel
    from deeplora.finetune.train import Prepared, distributed_state

    quiet_transformers()
    state = distributed_state()  # under `accelerate launch`: the main process reports
    if args.jobs > 1 and state.num_processes > 1:
        raise ValueError("--jobs starts its own processes; under accelerate launch use --jobs 1")
    cells = [Cell(c, seeds, {"method": c.method, "head": c.head}) for c in configs]
    if len(cells) > 1:
        head = "prompt" if args.head == "prompt" else "bi"
        zero = zero_shot_cell(Options(model=args.model, preset=args.preset,
                                      padding=args.padding), args.task, head,
                              template=args.template, heldout_samples=args.heldout_samples)
        cells.insert(0, replace(zero, config=replace(zero.config, dev_samples=args.dev_samples)))
    Prepared(configs[0], seeds[0], args.data_dir)  # validate data and model before any run
    out = Path(args.out)
    if args.jobs > 1:
        run_parallel([(cell.config, cell.seeds) for cell in cells], out, args.data_dir,
                     jobs=args.jobs, progress=not args.quiet)
    diverged = 0

    def report(config: FinetuneConfig, result: dict[str, Any]) -> None:
        nonlocal diverged
        if not state.is_main_process:
            return
        if result.get("status") == "diverged":
            diverged += 1
            print(f"{config.method} seed {result['seed']}: diverged (training loss not finite "
                  f"at step {result['diverged_at_step']}); recorded with status 'diverged', "
                  "no dev metrics")
            return
        print(f"{config.method} seed {result['seed']}: {get_task(args.task).main_metric} "
              f"{main_metric(result):.4f} ({result['wall_time_s']:.0f} s)")

    run_pairs(seed_major((cell.config, cell.seeds) for cell in cells), out, args.data_dir,
              progress=not args.quiet, on_result=report)
    if not state.is_main_process:
        return 0
    results = [(cell, load_results(out, cell.config, cell.seeds)) for cell in cells]
    text = markdown(f"{args.task}: {', '.join(methods)}", summarize(results))
    write_atomic(out / "summary.md", lambda tmp: tmp.write_text(text))
    print(text, end="")
    if diverged:
        print(f"deeplora: {diverged} run(s) diverged; lower --lr", file=sys.stderr)
    return 1 if diverged else 0


def run_e2e(args: argparse.Namespace, seeds: tuple[int, ...]) -> int:
    """``--task e2e``: the methods on E2E NLG over ``seeds`` (zero-shot once, seed 0); without
    ``--preset``, the cpu preset on a machine without a GPU (said in one line)."""
    from deeplora.nlg.config import default_preset, nlg_preset

    given = given_options(args, GLUE_ONLY)
    if given:
        raise ValueError(f"{' '.join(given)}: not an option of --task e2e (a GLUE task's; "
                         "see docs/nlg.md for what e2e takes)")
    preset, notice = (args.preset, None) if args.preset else default_preset()
    methods = tuple(dict.fromkeys(m.strip() for m in args.method.split(",")))
    with parameters_as_flags(CONFIG_FLAGS):
        cells = [(nlg_preset(preset, method=method, rank=args.rank, samples=args.samples,
                             steps=args.steps, lr=args.lr, model=args.model,
                             test_mrs=args.dev_samples),
                  (seeds[0],) if method == "zero-shot" else seeds)
                 for method in methods]
    check_writable_dir(args.out)
    from deeplora.experiments.nlg_fewshot import run_nlg_experiment
    from deeplora.finetune.models import quiet_transformers

    quiet_transformers()

    run_nlg_experiment(cells, args.out, args.data_dir, progress=not args.quiet, notice=notice)
    text = (Path(args.out) / "nlg-fewshot.md").read_text()
    print(text, end="")
    return 0
