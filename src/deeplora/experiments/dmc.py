"""Deep matrix completion / factorization figures of the paper (Sec. 3).

- ``dmc-efficiency``: the paper's efficiency figure under GD — iterations and wall time to the
  notebook's train-loss tolerance against the assumed rank r̂, compressed vs randomly
  initialized narrow (width 2r̂ both); then, as a second, separately labelled figure, recovery
  error vs step and time for original, compressed and narrow under Adam.
- ``dmc-depth``: recovery error against the observed fraction for depth 2 vs 3, original and
  compressed, under GD with the authors' steps (their depth-comparison notebook).
- ``dmc-lag`` (:mod:`deeplora.experiments.dmc_lag`): why the compressed L = 3 model lags the
  original.
- ``dmc-theory``: the invariant-subspace theorem made visible on deep matrix factorization —
  every layer's singular values over training (all but 2r stay equal) and its distance from
  the block form ``U_l diag(W̃_l, ρ_l I) V_lᵀ``.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplora.checks import SEED_LIMIT, check_integer
from deeplora.completion import (
    METHODS,
    History,
    MatrixCompletion,
    MatrixFactorization,
    Plateau,
    build_model,
    default_settings,
    fit,
    random_low_rank,
)
from deeplora.completion.methods import PAPER_GD_GAMMA
from deeplora.experiments import Arg, Fast, experiment, random_seed
from deeplora.experiments.plots import plot_runs
from deeplora.factorization import (
    DeepFactorization,
    compress,
    invariant_subspace_deviation,
    largest_repeated_cluster,
    principal_angles,
    singular_values,
)
from deeplora.output import read_json_object, read_result, write_atomic, write_json
from deeplora.plotting import new_figure, save_figure

# The authors' GD steps on their loss ½ Σ_Ω (X − Φ)² / (m n), by depth, in the depth-comparison
# notebook (d = 100, r = 10, 30 % observed); ours (½ mean over Ω) is that times |Ω| / (m n).
AUTHORS_DEPTH_STEP = {2: 1e2, 3: 3e2}


def train_loss_tol(tol: float, observed: float) -> float:
    """The authors' train-loss tolerance (on ½ Σ_Ω / (m n)) on our ½ mean_Ω loss."""
    return tol / observed


def check_positive(flag: str, value: float) -> None:
    """``ValueError`` naming ``flag`` unless ``value`` is a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a finite number > 0, got {value:g}")


def check_fraction(flag: str, value: float) -> None:
    """``ValueError`` naming ``flag`` unless ``value`` is an observed fraction in (0, 1]."""
    if not 0 < value <= 1:
        raise ValueError(f"{flag} must be a fraction in (0, 1], got {value:g}")


def check_tol(value: float) -> None:
    """``ValueError`` unless ``--tol`` is a finite number >= 0."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"--tol must be a finite number >= 0, got {value:g}")


def check_stall(window: int, rtol: float) -> None:
    """``ValueError`` naming the flag unless ``--stall-window`` >= 1 and ``--stall-rtol`` in
    (0, 1) (:class:`Plateau`'s rule)."""
    check_integer("--stall-window", window, 1)
    if not 0 < rtol < 1:
        raise ValueError(f"--stall-rtol must be in (0, 1), got {rtol:g}")


def check_distinct(flag: str, values: Sequence[Any]) -> None:
    """``ValueError`` naming ``flag`` if a value is given twice (its runs would be run and
    counted twice)."""
    twice = [value for value, count in Counter(values).items() if count > 1]
    if twice:
        raise ValueError(f"{flag}: {twice[0]} given twice")


def check_shape(size: int, rank: int) -> None:
    """``ValueError`` naming the flag unless ``--rank`` >= 1 and ``--size`` >= 2 × ``--rank``
    (the compressed model's width 2r)."""
    check_integer("--rank", rank, 1)
    if size < 2 * rank:
        raise ValueError(f"--size must be >= 2 × --rank = {2 * rank}, got {size}")


RECOVERED = 1e-2  # recovery error ‖X − Φ‖/‖Φ‖ at or below which a run has recovered Φ
OUTCOMES = ("recovered", "fit, not recovered", "stalled", "budget", "diverged",
            "never left init")


def outcome(history: History, tol: float) -> str:
    """How a GD run ended, one of :data:`OUTCOMES`.

    ``never left init``: the train loss never fell below half its first value (the run measured
    nothing; flagged whatever else happened); ``diverged``: non-finite loss; ``recovered``:
    final recovery error <= :data:`RECOVERED`; otherwise ``fit, not recovered`` (train loss at
    ``tol``: Ω fitted by a wrong matrix), ``stalled`` (the :class:`Plateau` detector stopped it)
    or ``budget`` (the step budget ran out while the loss was still falling).
    """
    loss = history.train_loss
    if history.diverged:
        return "diverged"
    if not min(loss) < 0.5 * loss[0]:
        return "never left init"
    if history.recovery_error[-1] <= RECOVERED:
        return "recovered"
    if loss[-1] <= tol:
        return "fit, not recovered"
    return "stalled" if history.stalled else "budget"


def run_gd(model: DeepFactorization, problem: MatrixCompletion, lr: float, gamma: float,
            max_steps: int, tol: float, eval_every: int, build_seconds: float,
            stall: Plateau | None = None,
            on_eval: Callable[[int, DeepFactorization], None] | None = None
            ) -> dict[str, Any]:
    """GD until the train loss reaches ``tol`` (our normalisation), ``stall`` fires or
    ``max_steps``; ``outcome`` classifies the end (:func:`outcome`)."""
    history = fit(model, problem, "gd", lr, gamma, max_steps, tol=tol, eval_every=eval_every,
                  build_seconds=build_seconds, stall=stall, on_eval=on_eval)
    loss = history.train_loss[-1]
    reached_tol = loss <= tol
    reached = history.first_below(RECOVERED)
    return {"reached_tol": reached_tol,
            "steps": history.steps[-1] if reached_tol else None,
            "seconds": history.seconds[-1] if reached_tol else None,
            "steps_to_1e-2": reached[0] if reached else None,
            "steps_run": history.steps[-1],
            "final_error": history.recovery_error[-1], "final_train_loss": loss,
            "diverged": not math.isfinite(loss), "stalled": history.stalled,
            "left_init": min(history.train_loss) < 0.5 * history.train_loss[0],
            "outcome": outcome(history, tol),
            "history": history.as_dict()}


RESUME_KEYS = ("size", "rank", "observed", "depth", "init_scale", "gd_lr", "gd_gamma_compressed",
               "tol_ours", "max_steps", "seed", "gd_eval_every")
"""Settings of ``dmc-efficiency``'s GD runs: an earlier file's runs are kept only when every one
is equal (a file from before ``gd_eval_every`` was recorded runs again)."""


@experiment(
    "dmc-efficiency",
    help="GD iterations and time to the train-loss tolerance vs r̂: compressed vs random narrow "
         "(paper Fig. 3); Adam curves as a second figure",
    arguments=[
        Arg("--size", type=int, default=1000, help="d (m = n)"),
        Arg("--rank", type=int, default=5, help="r, the target's rank"),
        Arg("--observed", type=float, default=0.2),
        Arg("--depth", type=int, default=3),
        Arg("--ranks", type=int, nargs="*", default=[5, 10, 15, 20],
            help="assumed ranks r̂ (width 2r̂) of the GD sweep; none: only the Adam view "
                 "(default: 5 10 15 20; --fast: 2 4)"),
        Arg("--tol", type=float, default=1e-10,
            help="train-loss tolerance on the authors' ½ Σ_Ω (X − Φ)² / d² (default: the "
                 "notebook's 1e-10; --fast: 1e-6)"),
        Arg("--lr", type=float,
            help="GD step on our ½ mean_Ω loss; default the paper's 5e3 on ½ Σ_Ω / d², i.e. "
                 "5e3 × observed fraction (--fast: 10)"),
        Arg("--max-steps", type=int, default=200_000, help="GD step budget per run"),
        Arg("--adam-steps", type=int, default=3000,
            help="steps of the Adam view at r̂ = r (0: skip it; default: 3000; --fast: 200)"),
        Arg("--adam-methods", nargs="+", choices=METHODS, default=list(METHODS)),
        Arg("--init-scale", type=float, default=1e-3, help="ε"),
        Arg("--seed", type=random_seed, default=0),
    ],
    fast=Fast("problem (24×24, rank 2, 60 % observed, ε = 0.05)",
              ("--size", "--rank", "--observed", "--init-scale"),
              {"--ranks": [2, 4], "--lr": 10.0, "--tol": 1e-6, "--adam-steps": 200}),
)
def dmc_efficiency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Paper Fig. 3 under GD, and (second figure) the same problem under Adam.

    ``--fast`` (a smoke test, not the paper's numbers): d = 24, r = 2, 60 % observed,
    ε = 0.05 (``--size``, ``--rank``, ``--observed`` and ``--init-scale`` are refused with it),
    and unless given r̂ ∈ {2, 4}, GD step 10 on our loss (the paper's 5e3 × p diverges at small
    d: the curvature per entry grows as d shrinks), tolerance 1e-6 and 200 Adam steps; the
    recovery error every 10 GD steps (else 100). Resumable: an r̂ whose two runs are in
    ``out/dmc-efficiency.json`` from a run with the same settings (:data:`RESUME_KEYS`, the
    evaluation interval included) is not run again.
    """
    size, rank, observed, scale = ((24, 2, 0.6, 0.05) if args.fast else
                                   (args.size, args.rank, args.observed, args.init_scale))
    ranks, tol_authors, adam_steps = args.ranks, args.tol, args.adam_steps
    check_shape(size, rank)
    for assumed in ranks:
        check_integer("--ranks", assumed, 1, size // 2)
    check_distinct("--ranks", ranks)
    check_distinct("--adam-methods", args.adam_methods)
    check_fraction("--observed", observed)
    check_integer("--depth", args.depth, 2)
    check_tol(tol_authors)
    if args.lr is not None:
        check_positive("--lr", args.lr)
    check_integer("--max-steps", args.max_steps, 1)
    check_integer("--adam-steps", adam_steps, 0)
    check_positive("--init-scale", scale)
    lr = default_settings("compressed", "gd", observed_fraction=observed)[1] \
        if args.lr is None else args.lr
    target = random_low_rank(size, size, rank, seed=args.seed)
    problem = MatrixCompletion.random(target, observed, seed=(args.seed + 1) % SEED_LIMIT)
    tol = train_loss_tol(tol_authors, problem.observed_fraction)
    gd: dict[str, dict[str, Any]] = {"compressed": {}, "narrow": {}}
    title = (f"GD (the paper's setting): {size}×{size}, rank {rank}, {observed:.0%} observed, "
             f"depth {args.depth}, ε = {scale:g}, η = {lr:g} on ½·mean_Ω (= {lr / observed:g} on "
             f"½·Σ_Ω/d²), train loss to {tol_authors:g} (authors' normalisation)")
    summary = {"size": size, "rank": rank, "observed": observed, "depth": args.depth,
               "init_scale": scale, "ranks": ranks, "gd_lr": lr,
               "gd_gamma_compressed": PAPER_GD_GAMMA, "tol_authors": tol_authors, "tol_ours": tol,
               "max_steps": args.max_steps, "seed": args.seed,
               "gd_eval_every": 10 if args.fast else 100, "gd": gd,
               "adam_steps": adam_steps, "adam": {}}
    gd.update(_finished_gd(out / "dmc-efficiency.json", summary))

    def save() -> None:  # "gd" holds the finished r̂, "ranks" the requested ones
        done = [r for r in ranks if str(r) in gd["narrow"]]
        if done:
            _plot_gd_sweep(gd, done, out / "dmc-efficiency.png", title)
        write_json(out / "dmc-efficiency.json", summary)

    todo = [r for r in ranks if str(r) not in gd["narrow"]]  # the others: an earlier run
    for assumed in todo:
        for method, gamma in (("compressed", PAPER_GD_GAMMA), ("narrow", 1.0)):
            model, build_seconds = build_model(method, problem, args.depth, assumed, scale,
                                               args.seed)
            gd[method][str(assumed)] = run_gd(model, problem, lr, gamma, args.max_steps, tol,
                                               summary["gd_eval_every"], build_seconds)
        save()  # after each r̂, so that an interrupted sweep keeps what it measured
    if not todo:
        save()  # every r̂ from an earlier run: redraw the figure
    adam: dict[str, Any] = {}
    if adam_steps:
        histories = {}
        for method in args.adam_methods:
            optimizer, a_lr, gamma = default_settings(method, "adam")
            model, build_seconds = build_model(method, problem, args.depth, rank, scale,
                                               args.seed)
            history = fit(model, problem, optimizer, a_lr, gamma, adam_steps, tol=tol,
                          eval_every=10, build_seconds=build_seconds)
            histories[f"{method} (r̂ = {rank})"] = history
            reached = history.first_below(1e-2)
            adam[method] = {"lr": a_lr, "gamma": gamma,
                            "steps_to_1e-2": reached[0] if reached else None,
                            "seconds_to_1e-2": reached[1] if reached else None,
                            "final_error": history.recovery_error[-1],
                            "history": history.as_dict()}
        plot_runs(histories, out / "dmc-efficiency-adam.png",
                  title=f"Adam view (not the paper's optimizer): {size}×{size}, rank {rank}, "
                  f"{observed:.0%} observed, depth {args.depth}")
    summary["adam"] = adam
    write_json(out / "dmc-efficiency.json", summary)
    return _without_histories(summary)


def _finished_gd(path: Path, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The GD runs already in ``path`` (an earlier, possibly interrupted sweep) when it was
    made with the same settings as ``summary``; none otherwise. Both methods of an r̂ are kept
    only together."""
    earlier = read_result(path, ("gd",), "every r̂ runs again")
    if earlier is None or any(earlier.get(key) != summary[key] for key in RESUME_KEYS):
        return {"compressed": {}, "narrow": {}}
    both = set(earlier["gd"]["compressed"]) & set(earlier["gd"]["narrow"])
    return {method: {r: run for r, run in earlier["gd"][method].items() if r in both}
            for method in ("compressed", "narrow")}


def _without_histories(value: Any) -> Any:
    """``value`` with every ``"history"`` entry dropped (for printing)."""
    if isinstance(value, dict):
        return {k: _without_histories(v) for k, v in value.items() if k != "history"}
    return value


def _missed(run: dict[str, Any]) -> str | None:
    """Why a GD run of the sweep does not count as reaching the tolerance: ``diverged``,
    ``never left init`` (train loss never halved, also when it started within the tolerance)
    or ``budget``; ``None`` if it reached it (from its flags, which files of every version
    hold)."""
    if run["diverged"]:
        return "diverged"
    if not run["left_init"]:
        return "never left init"
    return None if run["reached_tol"] else "budget"


def _plot_gd_sweep(gd: dict[str, dict[str, Any]], ranks: list[int], path: Path,
                   title: str) -> None:
    """Iterations and seconds to the tolerance against r̂; a run that missed it or never left
    its initialization is a black marker at its last step, labelled with why (:func:`_missed`;
    markers :data:`OUTCOME_MARKERS`)."""
    fig, axes = new_figure(ncols=2)
    for ax, key, label in ((axes[0], "steps", "GD iterations to tolerance"),
                           (axes[1], "seconds", "wall-clock seconds to tolerance (incl. build)")):
        for method, marker in (("compressed", "o"), ("narrow", "s")):
            runs = [gd[method][str(r)] for r in ranks]
            done = [(r, run[key]) for r, run in zip(ranks, runs, strict=True)
                    if _missed(run) is None]
            if done:
                ax.plot(*zip(*done, strict=True), marker=marker, label=method)
            for why in ("budget", "diverged", "never left init"):
                missed = [(r, run["history"][key][-1]) for r, run in zip(ranks, runs, strict=True)
                          if _missed(run) == why]
                if missed:
                    ax.plot(*zip(*missed, strict=True), ls="none", marker=OUTCOME_MARKERS[why],
                            color="k", label=f"{method}: "
                            + ("not reached (budget)" if why == "budget" else why))
        ax.set_xlabel("assumed rank r̂ (width 2r̂)")
        ax.set_ylabel(label)
        ax.set_xticks(ranks)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    save_figure(fig, path)


DEPTH_RESUME_KEYS = ("size", "rank", "seeds", "steps", "init_scale", "lr_scale", "tol_authors",
                     "stall_window", "stall_rtol")
DEPTH_KEYS = (*DEPTH_RESUME_KEYS, "fractions", "runs")  # what the report and figure read


@experiment(
    "dmc-depth",
    help="recovery error vs observed fraction: depth 2 vs 3, original and compressed (GD), "
         "each run classified as recovered / stalled / budget / …",
    arguments=[
        Arg("--size", type=int, default=100, help="d (m = n)"),
        Arg("--rank", type=int, default=10, help="r, the target's rank (also r̂)"),
        Arg("--fractions", type=float, nargs="+",
            default=[0.25, 0.3, 0.4, 0.5],
            help="observed fractions (below 20 %%, the rank-10 100×100 target's degrees of "
                 "freedom, nothing can recover)"),
        Arg("--depths", type=int, nargs="+", choices=sorted(AUTHORS_DEPTH_STEP), default=[2, 3]),
        Arg("--methods", nargs="+", choices=("original", "compressed"),
            default=["original", "compressed"]),
        Arg("--steps", type=int, default=150_000,
            help="GD step budget per run (default: 150000; --fast: 300)"),
        Arg("--stall-window", type=int, default=50_000,
            help="stalled: the best train loss has not fallen by --stall-rtol within this many "
                 "steps (armed once the loss has halved)"),
        Arg("--stall-rtol", type=float, default=0.05),
        Arg("--tol", type=float, default=1e-10,
            help="train-loss tolerance on the authors' ½ Σ_Ω (X − Φ)² / d²"),
        Arg("--seeds", type=int, default=3, help="problems (target and Ω) per fraction"),
        Arg("--init-scale", type=float, default=1e-3, help="ε"),
        Arg("--lr-scale", type=float, default=1.0, help="multiplies the authors' GD steps"),
        Arg("--report-only", action="store_true",
            help="rebuild dmc-depth.md/png from out/dmc-depth.json without running anything"),
    ],
    fast=Fast("problems and steps (16×16, rank 2, fractions 0.4 and 0.8, one seed, ε = 0.05, "
              "steps × 0.05, stall window 100)",
              ("--size", "--rank", "--fractions", "--seeds", "--init-scale", "--lr-scale",
               "--stall-window"), {"--steps": 300}),
)
def dmc_depth(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Deeper factorizations recover from fewer samples (the authors' depth notebook).

    GD with the authors' steps :data:`AUTHORS_DEPTH_STEP` (times the observed fraction on our
    loss), ε = 1e-3, γ = 0.01 for the compressed model (width 2r). Every run goes until the
    train loss reaches the tolerance, stalls (:class:`~deeplora.completion.Plateau`) or uses
    the step budget, and is classified by :func:`outcome`; recovery error ‖X − Φ‖_F/‖Φ‖_F over
    all d² entries. Resumable: a run already in ``out/dmc-depth.json`` from a call with the same
    settings is not run again, and one this call does not select (other ``--depths``,
    ``--methods``, ``--fractions``) is kept; ``--report-only`` redraws the report and figure
    from it.
    ``--fast`` (a smoke test): d = 16, r = 2, fractions {0.4, 0.8}, one seed, ε = 0.05, steps
    × 0.05 (the authors' steps diverge at small d), stall window 100 (the flags of these are
    refused with it), and 300 steps unless ``--steps`` is given.
    """
    check_shape(args.size, args.rank)
    for fraction in args.fractions:
        check_fraction("--fractions", fraction)
    for flag, values in (("--fractions", args.fractions), ("--depths", args.depths),
                         ("--methods", args.methods)):
        check_distinct(flag, values)
    check_integer("--steps", args.steps, 1)
    check_stall(args.stall_window, args.stall_rtol)
    check_tol(args.tol)
    check_integer("--seeds", args.seeds, 1)
    check_positive("--init-scale", args.init_scale)
    check_positive("--lr-scale", args.lr_scale)
    if args.fast:
        size, rank, fractions, seeds, steps = 16, 2, [0.4, 0.8], 1, args.steps
        scale, lr_scale, window = 0.05, 0.05, 100
    else:
        size, rank, fractions, seeds, steps = (args.size, args.rank, args.fractions, args.seeds,
                                               args.steps)
        scale, lr_scale, window = args.init_scale, args.lr_scale, args.stall_window
    path = out / "dmc-depth.json"
    if args.report_only:
        if not path.is_file():
            raise ValueError(f"{path}: no such file (run dmc-depth without --report-only first)")
        try:
            summary = read_json_object(path, DEPTH_KEYS)
        except ValueError as exc:
            raise ValueError(f"{path}: not a result of `deeplora experiment dmc-depth` ({exc})"
                             ) from None
    else:
        summary = {"size": size, "rank": rank, "fractions": fractions, "seeds": seeds,
                   "steps": steps, "init_scale": scale, "lr_scale": lr_scale,
                   "tol_authors": args.tol, "stall_window": window,
                   "stall_rtol": args.stall_rtol, "authors_steps": AUTHORS_DEPTH_STEP,
                   "runs": []}
        _depth_sweep(summary, args.depths, args.methods, path)
    _plot_depth(summary["runs"], summary["fractions"], out / "dmc-depth.png",
                f"{summary['size']}×{summary['size']}, rank {summary['rank']}, "
                f"ε = {summary['init_scale']:g}, GD (authors' steps × {summary['lr_scale']:g}), "
                f"{summary['steps']} steps at most, stalled = no {summary['stall_rtol']:.0%} "
                f"fall of the best train loss in {summary['stall_window']} steps; "
                f"{summary['seeds']} problem(s) per fraction")
    write_json(path, summary)
    report = depth_report(summary)
    write_atomic(out / "dmc-depth.md", lambda tmp: tmp.write_text(report))
    return summary


def _depth_sweep(summary: dict[str, Any], depths: list[int], methods: list[str],
                 path: Path) -> None:
    """Fill ``summary["runs"]`` with every (fraction, problem, depth, method) run of the
    settings in ``summary``, taking those already in ``path`` and saving after each new one.
    The runs of ``path`` with these settings that this call does not select (other depths,
    methods, fractions) are kept, their fractions added to ``summary["fractions"]``."""
    done = _finished_runs(path, summary, DEPTH_RESUME_KEYS)
    size, rank, runs, fractions = (summary["size"], summary["rank"], summary["runs"],
                                   list(summary["fractions"]))
    selected = {(f, s, d, m) for f in fractions for s in range(summary["seeds"]) for d in depths
                for m in methods}
    runs += [run for key, run in done.items() if key not in selected]
    summary["fractions"] = [*fractions, *sorted({run["fraction"] for run in runs}
                                                - set(fractions))]
    for fraction in fractions:
        for seed in range(summary["seeds"]):
            target = random_low_rank(size, size, rank, seed=seed)
            problem = MatrixCompletion.random(target, fraction, seed=seed + 1000)
            tol = train_loss_tol(summary["tol_authors"], problem.observed_fraction)
            for depth in depths:
                lr = summary["lr_scale"] * AUTHORS_DEPTH_STEP[depth] * problem.observed_fraction
                for method in methods:
                    key = (fraction, seed, depth, method)
                    if key in done:
                        runs.append(done[key])
                        continue
                    gamma = PAPER_GD_GAMMA if method == "compressed" else 1.0
                    model, build_seconds = build_model(method, problem, depth, rank,
                                                       summary["init_scale"], seed)
                    run = run_gd(model, problem, lr, gamma, summary["steps"], tol, 100,
                                  build_seconds, Plateau(summary["stall_window"],
                                                         summary["stall_rtol"]))
                    del run["history"]
                    runs.append({"fraction": fraction, "seed": seed, "depth": depth,
                                 "method": method, "lr": lr, "gamma": gamma, **run})
                    write_json(path, summary)  # after each run: an interrupted sweep resumes


def _finished_runs(path: Path, summary: dict[str, Any], keys: Sequence[str]
                   ) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The runs of ``path`` (an earlier, possibly interrupted ``dmc-depth``), keyed by
    (fraction, seed, depth, method), when it was made with the settings ``keys`` of
    ``summary``; none otherwise."""
    earlier = read_result(path, (*keys, "runs"), "every run runs again")
    if earlier is None or any(earlier[key] != summary[key] for key in keys):
        return {}
    return {(run["fraction"], run["seed"], run["depth"], run["method"]): run
            for run in earlier["runs"]}


def median_or_none(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def steps_cell(runs: list[dict[str, Any]]) -> str:
    """Steps to recovery error 1e-2: the median over the runs that got there, in brackets how
    many did out of all."""
    steps = [run["steps_to_1e-2"] for run in runs if run["steps_to_1e-2"] is not None]
    median = median_or_none(steps)
    return f"{'—' if median is None else f'{median:,.0f}'} ({len(steps)}/{len(runs)})"


def depth_report(summary: dict[str, Any]) -> str:
    """Markdown tables of ``dmc-depth.json``: final error, steps to 1e-2 and how the runs
    ended, per (depth, model) and observed fraction."""
    runs, fractions = summary["runs"], summary["fractions"]
    models = sorted({(run["depth"], run["method"]) for run in runs},
                    key=lambda k: (k[0], k[1] != "original"))
    head = "| L, model | " + " | ".join(f"{f:.0%}" for f in fractions) + " |"
    sep = "|---|" + "---|" * len(fractions)

    def cells(depth: int, method: str) -> list[list[dict[str, Any]]]:
        return [[run for run in runs if run["depth"] == depth and run["method"] == method
                 and run["fraction"] == f] for f in fractions]

    def error(cell: list[dict[str, Any]]) -> str:
        median = median_or_none([run["final_error"] for run in cell if not run["diverged"]])
        recovered = sum(run["outcome"] == "recovered" for run in cell)
        return f"{'—' if median is None else f'{median:.2g}'} ({recovered}/{len(cell)})"

    def ends(cell: list[dict[str, Any]]) -> str:
        count = Counter(run["outcome"] for run in cell)
        return ", ".join(f"{count[o]} {SHORT[o]}" for o in OUTCOMES if count[o])

    lines = ["Final recovery error (median over the runs that did not diverge; recovered / runs):",
             "", head, sep]
    lines += [f"| L = {d}, {m} | " + " | ".join(error(c) for c in cells(d, m)) + " |"
              for d, m in models]
    lines += ["", "GD steps to recovery error 1e-2 (median over the runs that got there; "
              "how many did):", "", head, sep]
    lines += [f"| L = {d}, {m} | " + " | ".join(steps_cell(c) for c in cells(d, m)) + " |"
              for d, m in models]
    lines += ["", "How each run ended (" + "; ".join(f"{v}: {k}" for k, v in SHORT.items())
              + "):", "", head, sep]
    lines += [f"| L = {d}, {m} | " + " | ".join(ends(c) for c in cells(d, m)) + " |"
              for d, m in models]
    total = Counter(run["outcome"] for run in runs)
    lines += ["", f"All {len(runs)} runs: "
              + ", ".join(f"{total[o]} {o}" for o in OUTCOMES if total[o]) + "."]
    return "\n".join(lines) + "\n"


SHORT = {"recovered": "rec.", "fit, not recovered": "fit", "stalled": "stall",
         "budget": "budget", "diverged": "div.", "never left init": "init"}
OUTCOME_MARKERS = {"recovered": "o", "fit, not recovered": "s", "stalled": "D", "budget": ">",
                   "diverged": "x", "never left init": "*"}


def _plot_depth(runs: list[dict[str, Any]], fractions: list[float], path: Path,
                title: str) -> None:
    """Left: final recovery error against the observed fraction, one line per (depth, model)
    (median over the runs that did not diverge) and every run as a marker for how it ended
    (diverged runs at the top). Right: steps to recovery error 1e-2, one marker per run that
    got there, median line."""
    fig, (ax, right) = new_figure(ncols=2, width=6.0, height=4.8)
    models = sorted({(run["depth"], run["method"]) for run in runs})
    for i, (depth, method) in enumerate(models):
        mine = [run for run in runs if run["depth"] == depth and run["method"] == method]
        style = {"ls": "-" if method == "original" else "--",
                 "color": "C0" if depth == 2 else "C3"}
        shift = 0.004 * (i - (len(models) - 1) / 2)  # spread the markers of one fraction
        points = [(f, median_or_none([run["final_error"] for run in mine
                               if run["fraction"] == f and not run["diverged"]]))
                  for f in fractions]
        points = [(f, m) for f, m in points if m is not None]
        if points:
            ax.plot(*zip(*points, strict=True), label=f"L = {depth}, {method}", **style)
        for end, marker in OUTCOME_MARKERS.items():
            these = [(run["fraction"] + shift, 1.5 if run["diverged"] else run["final_error"])
                     for run in mine if run["outcome"] == end]
            if these:
                ax.plot(*zip(*these, strict=True), ls="none", marker=marker, ms=6,
                        mfc="none", color=style["color"])
        steps = [(run["fraction"] + shift, run["steps_to_1e-2"]) for run in mine
                 if run["steps_to_1e-2"] is not None]
        if steps:
            right.plot(*zip(*steps, strict=True), ls="none", marker="o", ms=4, mfc="none",
                       color=style["color"])
            medians = [(f, median_or_none([s for g, s in steps if abs(g - shift - f) < 1e-9]))
                       for f in fractions]
            right.plot(*zip(*[(f, m) for f, m in medians if m is not None], strict=True),
                       label=f"L = {depth}, {method}", **style)
    for end, marker in OUTCOME_MARKERS.items():
        ax.plot([], [], ls="none", marker=marker, mfc="none", color="k", label=end)
    ax.axhline(RECOVERED, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("observed fraction |Ω| / d²")
    ax.set_ylabel("final recovery error ‖X − Φ‖/‖Φ‖ (all entries)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    right.set_xlabel("observed fraction |Ω| / d²")
    right.set_ylabel(f"GD steps to recovery error {RECOVERED:g}")
    right.set_xlim(ax.get_xlim())
    right.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 130), fontsize=8)
    save_figure(fig, path)


def _theory_run(size: int, rank: int, depth: int, scale: float, lr: float, steps: int,
                every: int, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    sigma = np.linspace(1.0, 0.8, rank).tolist()
    problem = MatrixFactorization(random_low_rank(size, size, rank, sigma, seed=seed))
    model = DeepFactorization(size, size, depth, init="orthogonal", scale=scale, generator=gen,
                              dtype=torch.float64)
    # The theorem's fixed subspaces: V_1 from the compressed construction, V_{l+1} = O_l V_l.
    right = compress(model, problem.loss, rank).factors[0].detach().T
    at_init = [f.detach().clone() for f in model.factors]
    bases = []
    for layer in at_init:
        bases.append(right)
        right = layer @ right / scale
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    record: dict[str, list] = {"steps": [], "error": [], "singular_values": [],
                               "deviation": [], "angle_to_fixed": [], "train_loss": [],
                               "diverged_at": None}
    for step in range(steps + 1):
        loss = problem.loss(model)
        if not math.isfinite(loss.item()):  # diverged: nothing more to record
            record["diverged_at"] = step
            break
        if step % every == 0:
            with torch.no_grad():
                layers = [f.detach() for f in model.factors]
                record["steps"].append(step)
                record["train_loss"].append(loss.item())
                record["error"].append(problem.recovery_error(model))
                record["singular_values"].append([singular_values(w).tolist() for w in layers])
                record["deviation"].append([
                    invariant_subspace_deviation(w, w0, v, scale)
                    for w, w0, v in zip(layers, at_init, bases, strict=True)])
                record["angle_to_fixed"].append([
                    float(principal_angles(torch.linalg.svd(w).Vh[:rank].T, v).max())
                    for w, v in zip(layers, bases, strict=True)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return record


@experiment(
    "dmc-theory",
    help="singular values and invariant subspaces of each layer over training (paper Fig. 2)",
    arguments=[
        Arg("--size", type=int, default=60, help="d"),
        Arg("--rank", type=int, default=3, help="r; target singular values 1 … 0.8"),
        Arg("--depth", type=int, default=3),
        Arg("--init-scale", type=float, default=1e-3),
        Arg("--lr", type=float, default=0.2, help="GD step on ½‖X − Φ‖²"),
        Arg("--steps", type=int, default=10000),
        Arg("--every", type=int, default=100, help="record every N steps"),
        Arg("--seed", type=random_seed, default=0),
    ],
    fast=Fast("steps and initialization (3000 steps recorded every 50, ε = 0.01)",
              ("--init-scale", "--steps", "--every")),
)
def dmc_theory(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Paper Fig. 2 on a d×d rank-r target, GD from an ε-orthogonal initialization.

    ``--fast`` (a smoke test): 3000 steps recorded every 50, ε = 0.01 (at ε = 1e-3 GD leaves
    the initialization only after about 5000 steps); ``--steps``, ``--every`` and
    ``--init-scale`` are refused with it.
    """
    steps, every = (3000, 50) if args.fast else (args.steps, args.every)
    scale = 0.01 if args.fast else args.init_scale
    check_shape(args.size, args.rank)
    check_integer("--depth", args.depth, 2)
    check_positive("--init-scale", args.init_scale)
    check_positive("--lr", args.lr)
    if steps < 0 or every < 1:
        raise ValueError(f"need --steps >= 0 and --every >= 1, got {steps} and {every}")
    rec = _theory_run(args.size, args.rank, args.depth, scale, args.lr, steps, every, args.seed)
    sv = np.array(rec["singular_values"])  # (checkpoints, L, d)
    fig, axes = new_figure(ncols=args.depth + 1, nrows=2, width=4.0, height=3.4)
    top, bottom = axes[: args.depth + 1], axes[args.depth + 1:]
    for layer in range(args.depth):
        ax = top[layer]
        ax.plot(rec["steps"], sv[:, layer, :], lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"layer {layer + 1}: all {args.size} singular values")
        ax.set_xlabel("GD step")
    top[0].set_ylabel("singular value")
    ax = top[-1]
    ax.plot(rec["steps"], rec["error"])
    ax.set_yscale("log")
    ax.set_title("end-to-end ‖X − Φ‖/‖Φ‖")
    ax.set_xlabel("GD step")
    deviation, angle = np.array(rec["deviation"]), np.degrees(np.array(rec["angle_to_fixed"]))
    for layer in range(args.depth):
        bottom[0].plot(rec["steps"], np.maximum(deviation[:, layer], 1e-18),
                       label=f"layer {layer + 1}")
        bottom[1].plot(rec["steps"], np.maximum(angle[:, layer], 1e-12),
                       label=f"layer {layer + 1}")
    bottom[0].set_title("distance from block form\n‖W − U diag(W̃, ρI) Vᵀ‖/‖W‖")
    bottom[1].set_title(f"largest angle (°): top-{args.rank} right\nsingular space vs fixed V_l")
    for ax in bottom[:2]:
        ax.set_yscale("log")
        ax.set_xlabel("GD step")
        ax.legend()
    repeated = [min(largest_repeated_cluster(torch.from_numpy(s), 1e-9) for s in layer_sv)
                for layer_sv in sv.transpose(1, 0, 2)]
    # flagged: a run that never left its initialization (train loss never halved, at the
    # recorded steps) or diverged shows the theorem trivially or not at all
    left_init = min(rec["train_loss"]) < 0.5 * rec["train_loss"][0]
    diverged = rec["diverged_at"]
    bottom[2].axis("off")
    bottom[3].axis("off")
    bottom[2].text(0, 0.5, "\n".join([
        f"d = {args.size}, r = {args.rank}, L = {args.depth}, ε = {scale:g}",
        f"GD η = {args.lr:g}, {steps} steps",
        *([f"DIVERGED at step {diverged} (non-finite loss): recorded until then"]
          if diverged is not None else []),
        *([] if left_init else ["NEVER LEFT ITS INITIALIZATION (train loss never halved)"]),
        f"max distance from block form: {deviation.max():.1e}",
        "largest group of equal singular values (rtol 1e-9),",
        f"smallest over training, per layer: {repeated} (d − 2r = {args.size - 2 * args.rank})",
    ]), va="center", fontsize=9)
    fig.suptitle("Deep matrix factorization: each layer changes only in a fixed 2r-dim "
                 "subspace")
    save_figure(fig, out / "dmc-theory.png")
    summary = {"size": args.size, "rank": args.rank, "depth": args.depth,
               "init_scale": scale, "lr": args.lr, "steps": steps,
               "left_init": left_init, "diverged_at_step": diverged,
               "max_deviation": float(deviation.max()), "smallest_equal_group": repeated,
               "max_angle_to_fixed_degrees_after_escape": float(angle[-1].max()),
               "record": rec}
    write_json(out / "dmc-theory.json", summary)
    return json.loads(json.dumps({k: v for k, v in summary.items() if k != "record"}))
