"""``dmc-lag``: why the compressed L = 3 model lags the original at d = 100 — steps to recovery
error 1e-2 of both on the same problems and initialization, against γ, the observed fraction,
r/d and d, with the trajectory gap ‖X_c(t) − X_o(t)‖/‖X_o(t)‖ (GD and outcomes as in
:mod:`deeplora.experiments.dmc`'s ``dmc-depth``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from deeplora.completion import MatrixCompletion, Plateau, build_model, random_low_rank
from deeplora.completion.methods import PAPER_GD_GAMMA
from deeplora.experiments import Arg, Fast, experiment
from deeplora.experiments.dmc import (
    AUTHORS_DEPTH_STEP,
    OUTCOMES,
    SHORT,
    check_positive,
    check_stall,
    check_tol,
    median_or_none,
    run_gd,
    steps_cell,
    train_loss_tol,
)
from deeplora.factorization import DeepFactorization, compress
from deeplora.output import read_json_object, read_result, write_atomic, write_json
from deeplora.plotting import new_figure, save_figure


@dataclass(frozen=True)
class LagCell:
    """One cell of ``dmc-lag``: d×d target of rank r, observed fraction p, L = 3, the
    compressed model at each discrepant rate γ in ``gammas``, GD step = the authors' L = 3 step
    × ``lr_scale`` × p on our loss."""

    group: str
    size: int
    rank: int
    fraction: float
    gammas: tuple[float, ...] = (PAPER_GD_GAMMA,)
    lr_scale: float = 1.0

    @property
    def name(self) -> str:
        step = "" if self.lr_scale == 1 else f"-lr{self.lr_scale:.3g}"
        return f"d{self.size}-r{self.rank}-p{self.fraction:g}{step}"


LAG_GAMMAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
LAG_GRID: tuple[LagCell, ...] = (
    LagCell("gamma", 100, 10, 0.25, LAG_GAMMAS),
    LagCell("gamma", 100, 10, 0.3, LAG_GAMMAS),
    # the authors' L = 3 step is at the original's stability edge from 35 % on (dmc-depth: it
    # diverges at 40–50 %): the observed-fraction comparison at half of it
    *(LagCell("half step", 100, 10, f, lr_scale=0.5) for f in (0.25, 0.4)),
    LagCell("r/d", 100, 5, 0.25),
    # d = 200: r = 10 at the oversampling p·d/(2r) = 1.25 of (100, 10, 25 %) with half its 2r/d,
    # and r = 20 at both its 2r/d and its oversampling. The authors' step (fixed for their loss
    # ½ Σ_Ω / d²) is far smaller at d = 200: GD's rate on the top mode, η·L·σ₁^{4/3}·p/d², is
    # that of (100, 10, 25 %) with the step × (d/100)² (σ₁(100)/σ₁(200))^{4/3} (25 %/p),
    # σ₁ ≈ 19.7 and 28.0 (the targets' top singular values): × 5 and × 2.5
    LagCell("size", 200, 10, 0.125),
    LagCell("size", 200, 10, 0.125, lr_scale=5.0),
    LagCell("size", 200, 20, 0.25, lr_scale=2.5),
)
LAG_GROUPS = ("gamma", "half step", "r/d", "size")
FAST_LAG_GRID = (LagCell("gamma", 16, 2, 0.6, (0.01, 0.1), lr_scale=0.05),
                 LagCell("r/d", 16, 2, 0.8, lr_scale=0.05))
LAG_RESUME_KEYS = ("steps", "init_scale", "tol_authors", "stall_window", "stall_rtol",
                   "snapshot_every")
# what every per-problem file of ``out/runs`` holds (a file without them is not one)
RECORD_KEYS = ("settings", "group", "size", "rank", "fraction", "lr_scale", "seed",
               "subspace_miss_at_init", "original", "original_outside", "compressed")


def _outside(matrix: Tensor, left: Tensor, right: Tensor) -> float:
    """‖X − P_U X P_V‖_F / ‖X‖_F: the part of X (m×n) outside span(U) × span(V) (orthonormal
    U: m×k, V: n×k)."""
    inside = left @ (left.T @ matrix @ right) @ right.T
    return float(torch.linalg.norm(matrix - inside) / torch.linalg.norm(matrix))


def _lag_problem(cell: LagCell, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Original and compressed (one per γ) L = 3 GD runs on one problem, the compressed
    models built from the original's own initialization (:func:`compress`), with the
    trajectory gap ‖X_c(t) − X_o(t)‖/‖X_o(t)‖ and the part of X outside the compressed model's
    initial subspaces."""
    target = random_low_rank(cell.size, cell.size, cell.rank, seed=seed)
    problem = MatrixCompletion.random(target, cell.fraction, seed=seed + 1000)
    tol = train_loss_tol(settings["tol_authors"], problem.observed_fraction)
    lr = cell.lr_scale * AUTHORS_DEPTH_STEP[3] * problem.observed_fraction
    wide, _ = build_model("original", problem, 3, cell.rank, settings["init_scale"], seed)
    compressed = compress(wide, problem.loss, cell.rank)
    left, right = compressed.factors[-1].detach(), compressed.factors[0].detach().T
    phi = target.dense().to(left.dtype)
    every, snapshots = settings["snapshot_every"], {}
    outside: list[tuple[int, float]] = []

    def keep(step: int, model: DeepFactorization) -> None:
        if step % every == 0:
            with torch.no_grad():
                snapshots[step] = x = model.product()
            outside.append((step, _outside(x, left, right)))

    def stall() -> Plateau:
        return Plateau(settings["stall_window"], settings["stall_rtol"])

    original = run_gd(wide, problem, lr, 1.0, settings["steps"], tol, 100, 0.0, stall(), keep)
    final_original = wide.product().detach()
    record = {**asdict(cell), "seed": seed, "lr": lr,
              "subspace_miss_at_init": _outside(phi, left, right),
              "original": _compact(original),
              "original_outside": outside}
    record["compressed"] = {}
    for gamma in cell.gammas:
        gap: list[tuple[int, float]] = []

        def follow(step: int, model: DeepFactorization,
                   gap: list[tuple[int, float]] = gap) -> None:
            if step % every == 0 and step in snapshots:
                with torch.no_grad():
                    x = model.product()
                gap.append((step, float(torch.linalg.norm(x - snapshots[step])
                                        / torch.linalg.norm(snapshots[step]))))

        model = copy.deepcopy(compressed)
        run = run_gd(model, problem, lr, gamma, settings["steps"], tol, 100, 0.0, stall(),
                      follow)
        with torch.no_grad():
            final_gap = float(torch.linalg.norm(model.product() - final_original)
                              / torch.linalg.norm(final_original))
        record["compressed"][str(gamma)] = {**_compact(run), "gap": gap,
                                            "final_gap_to_original": final_gap}
    return record


def _compact(run: dict[str, Any]) -> dict[str, Any]:
    """A :func:`run_gd` result with its history thinned to every 500th step."""
    history = run.pop("history")
    keep = [i for i, s in enumerate(history["steps"])
            if s % 500 == 0 or i == len(history["steps"]) - 1]
    run["curve"] = {k: [history[k][i] for i in keep] for k in ("steps", "train_loss",
                                                                "recovery_error")}
    return run


@experiment(
    "dmc-lag",
    help="why the compressed L = 3 model lags the original at d = 100: GD steps to recovery "
         "error 1e-2 vs γ, the observed fraction, r/d and d, and the trajectory gap",
    arguments=[
        Arg("--groups", nargs="+", choices=LAG_GROUPS, default=list(LAG_GROUPS),
            help="cells of LAG_GRID to run"),
        Arg("--cells", nargs="+", help="only these cells of the groups, by name (e.g. "
            "d100-r10-p0.25; LagCell.name)"),
        Arg("--seeds", type=int, default=3, help="problems per cell"),
        Arg("--steps", type=int, default=150_000,
            help="GD step budget per run (default: 150000; --fast: 400)"),
        Arg("--stall-window", type=int, default=50_000),
        Arg("--stall-rtol", type=float, default=0.05),
        Arg("--tol", type=float, default=1e-10,
            help="train-loss tolerance on the authors' ½ Σ_Ω (X − Φ)² / d²"),
        Arg("--init-scale", type=float, default=1e-3, help="ε"),
        Arg("--report-only", action="store_true",
            help="rebuild dmc-lag.md/png from out/runs without running anything"),
    ],
    fast=Fast("problems (FAST_LAG_GRID: d = 16, r = 2; one seed, ε = 0.05, stall window 100)",
              ("--seeds", "--stall-window", "--init-scale"), {"--steps": 400}),
)
def dmc_lag(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Controlled runs behind the compressed model's lag (:data:`LAG_GRID`).

    Per problem (target seed s, Ω seed s + 1000, wide init seed s): the original L = 3 model
    and the compressed model built from that same initialization, at each γ of the cell; GD
    with the authors' L = 3 step, until the train loss reaches the tolerance, stalls or the
    budget. One JSON per problem in ``out/runs`` (a problem already there with the same
    settings is not rerun), then ``dmc-lag.md`` and ``dmc-lag.png`` from all of them made with
    these settings (the others are left out, with a line saying how many);
    ``out/authors-code.json`` (the authors' code on the same problems, run outside this
    package), when present, adds their steps beside ours.
    ``--fast``: :data:`FAST_LAG_GRID` (d = 16, r = 2), one seed, ε = 0.05, stall window 100
    (``--seeds``, ``--init-scale`` and ``--stall-window`` are refused with it), and 400 steps
    unless ``--steps`` is given.
    """
    grid = FAST_LAG_GRID if args.fast else LAG_GRID
    seeds = 1 if args.fast else args.seeds
    settings = {"steps": args.steps,
                "init_scale": 0.05 if args.fast else args.init_scale,
                "tol_authors": args.tol, "stall_window": 100 if args.fast else args.stall_window,
                "stall_rtol": args.stall_rtol, "snapshot_every": 100 if args.fast else 500}
    folder = out / "runs"
    if not args.report_only:
        cells = [cell for cell in grid
                 if cell.group in args.groups and (not args.cells or cell.name in args.cells)]
        unknown = sorted(set(args.cells or ()) - {cell.name for cell in grid})
        if unknown:
            raise ValueError(f"--cells: no cell named {', '.join(unknown)}; the cells are "
                             f"{', '.join(cell.name for cell in grid)}")
        if not cells:
            raise ValueError(f"--groups {' '.join(args.groups)}"
                             f"{' with --cells' if args.cells else ''} select no cell; the "
                             f"cells are {', '.join(f'{c.name} ({c.group})' for c in grid)}")
        if seeds < 1 or settings["steps"] < 1:
            raise ValueError(f"--seeds and --steps must be >= 1, got {seeds} and "
                             f"{settings['steps']}")
        check_stall(args.stall_window, args.stall_rtol)
        check_tol(args.tol)
        check_positive("--init-scale", args.init_scale)
        folder.mkdir(parents=True, exist_ok=True)
        for cell in cells:
            for seed in range(seeds):
                path = folder / f"{cell.name}-s{seed}.json"
                earlier = read_result(path, RECORD_KEYS,  # not one: set aside, run again
                                      "the problem runs again")
                if earlier is not None and _made_with(earlier, settings) \
                        and set(map(str, cell.gammas)) <= set(earlier["compressed"]):
                    continue
                write_json(path, {"settings": settings, **_lag_problem(cell, seed, settings)})
    found = [read_record(p, RECORD_KEYS) for p in sorted(folder.glob("*.json"))]
    records = [rec for rec in found if _made_with(rec, settings)]
    if found and not records:
        raise ValueError(f"{folder}: no runs of these settings (run dmc-lag without "
                         "--report-only first, or give the flags the runs were made with)")
    if not records:
        raise ValueError(f"{folder}: no runs (run dmc-lag without --report-only first)")
    if len(records) < len(found):
        print(f"deeplora: {len(found) - len(records)} of the {len(found)} problems in {folder} "
              "were run with other settings (--steps, --stall-window, --stall-rtol, --tol, "
              "--init-scale, --fast): left out of the report", file=sys.stderr)
    authors = out / "authors-code.json"
    report = lag_report(records, read_record(authors, ("settings", "runs"))
                        if authors.is_file() else None)
    write_atomic(out / "dmc-lag.md", lambda tmp: tmp.write_text(report))
    _plot_lag(records, out / "dmc-lag.png")
    return {"problems": len(records),
            "outcomes": dict(Counter(run["outcome"] for rec in records
                                     for run in [rec["original"], *rec["compressed"].values()]))}


def _made_with(record: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether the per-problem ``record`` was run with ``settings`` (:data:`LAG_RESUME_KEYS`)."""
    made = record["settings"]
    return isinstance(made, dict) and all(made.get(k) == settings[k] for k in LAG_RESUME_KEYS)


def read_record(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object in ``path`` (a per-problem run, ``authors-code.json``) with the keys
    ``required``; a ``ValueError`` naming the file if it is none (cut short, edited)."""
    try:
        return read_json_object(path, required)
    except ValueError as exc:
        raise ValueError(f"{path}: not a file of `deeplora experiment dmc-lag` ({exc})") from None


def _lag_ratio(record: dict[str, Any], gamma: str) -> float | None:
    """Compressed steps to 1e-2 over the original's on one problem (None unless both got
    there)."""
    original, compressed = record["original"]["steps_to_1e-2"], \
        record["compressed"][gamma]["steps_to_1e-2"]
    return None if original is None or compressed is None else compressed / original


def _gap_at_original_recovery(record: dict[str, Any], gamma: str) -> float | None:
    """‖X_c − X_o‖/‖X_o‖ at the last snapshot at or before the original's step to 1e-2 (None
    when the original did not get there or the compressed run had stopped before it)."""
    reached, compressed = record["original"]["steps_to_1e-2"], record["compressed"][gamma]
    if reached is None or compressed["steps_run"] < reached:
        return None
    return [g for s, g in compressed["gap"] if s <= reached][-1]


def _smallest(series: list[list[Any]]) -> float | None:
    """The smallest value of ``[[step, value], …]`` (``null``: not finite, a run diverging at a
    snapshot), ``None`` if there is none."""
    return min((value for _, value in series if value is not None), default=None)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def lag_report(records: list[dict[str, Any]], authors: dict[str, Any] | None = None) -> str:
    """Markdown tables of ``dmc-lag``: per cell and γ, steps to 1e-2 of the original and the
    compressed model (median over problems, how many got there), the median per-problem ratio,
    how the runs ended, the target's part outside the compressed initial subspaces (U, V), the
    original's closest approach to them, the trajectory gap at its smallest and at the
    original's recovery (medians over problems); with ``authors`` (``authors-code.json``), the
    authors' code's steps beside ours problem by problem."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        cells.setdefault((rec["group"], rec["size"], rec["rank"], rec["fraction"],
                          rec["lr_scale"]), []).append(rec)
    lines = ["| cell (d, r, p) | 2r/d | p·d/(2r) | step × | γ | original: steps to 1e-2 | "
             "compressed: steps to 1e-2 | compressed / original (median, range) | "
             "ends: original; compressed | ‖Φ − P_U Φ P_V‖/‖Φ‖ at init | "
             "min_t ‖X_o − P_U X_o P_V‖/‖X_o‖ | min_t ‖X_c − X_o‖/‖X_o‖ | "
             "‖X_c − X_o‖/‖X_o‖ at original's 1e-2 |", "|---" * 13 + "|"]
    order = {group: i for i, group in enumerate(LAG_GROUPS)}
    for key in sorted(cells, key=lambda k: (order[k[0]], -k[4], k[1], k[2], k[3])):
        recs = sorted(cells[key], key=lambda r: r["seed"])
        _, size, rank, fraction, lr_scale = key
        for gamma in recs[0]["compressed"]:
            ratios = [r for r in (_lag_ratio(rec, gamma) for rec in recs) if r is not None]
            ends = "; ".join(", ".join(f"{n} {SHORT[o]}" for o, n in sorted(
                Counter(run["outcome"] for run in runs).items(),
                key=lambda item: OUTCOMES.index(item[0])))
                for runs in ([rec["original"] for rec in recs],
                             [rec["compressed"][gamma] for rec in recs]))
            gaps = [g for g in (_gap_at_original_recovery(rec, gamma) for rec in recs)
                    if g is not None]
            closest = [g for rec in recs
                       if (g := _smallest(rec["compressed"][gamma]["gap"])) is not None]
            inside = [o for rec in recs if (o := _smallest(rec["original_outside"])) is not None]
            ratio = "—" if not ratios else (f"{np.median(ratios):.2f} "
                                            f"({min(ratios):.2f}–{max(ratios):.2f})")
            lines.append(
                f"| {size}, {rank}, {fraction * 100:g}% | {2 * rank / size:.0%} | "
                f"{fraction * size / (2 * rank):.2g} | {lr_scale:.3g} | {float(gamma):g} | "
                f"{steps_cell([rec['original'] for rec in recs])} | "
                f"{steps_cell([rec['compressed'][gamma] for rec in recs])} | {ratio} | {ends} | "
                f"{_fmt(median_or_none([rec['subspace_miss_at_init'] for rec in recs]), '.2f')} | "
                f"{_fmt(median_or_none(inside), '.2f')} | {_fmt(median_or_none(closest), '.2f')} | "
                f"{_fmt(median_or_none(gaps), '.2g')} |")
    total = Counter(run["outcome"] for rec in records
                    for run in [rec["original"], *rec["compressed"].values()])
    lines += ["", f"All {sum(total.values())} runs: "
              + ", ".join(f"{total[o]} {o}" for o in OUTCOMES if total[o]) + "."]
    if authors is not None:
        lines += ["", _authors_table(records, authors)]
    return "\n".join(lines) + "\n"


def _authors_table(records: list[dict[str, Any]], authors: dict[str, Any]) -> str:
    """Steps to 1e-2 of the authors' code (``authors-code.json``) beside ours (γ of their
    settings), problem by problem; "—": not within the budget."""
    ours = {(r["size"], r["rank"], r["fraction"], r["seed"]): r for r in records}
    gamma = str(authors["settings"]["gamma"])
    lines = ["| problem (d, r, p, seed) | original: ours | original: authors' code | "
             "compressed: ours | compressed: authors' code |", "|---|---|---|---|---|"]
    for run in authors["runs"]:
        mine = ours.get((run["size"], run["rank"], run["fraction"], run["seed"]))
        if mine is None or gamma not in mine["compressed"]:
            continue
        cells = [_fmt(r["steps_to_1e-2"], ",") for r in (
            mine["original"], run["original"], mine["compressed"][gamma], run["compressed"])]
        lines.append(f"| {run['size']}, {run['rank']}, {run['fraction'] * 100:g}%, {run['seed']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_lag(records: list[dict[str, Any]], path: Path) -> None:
    """(a) compressed/original steps to 1e-2 against γ; (b) against the observed fraction
    (γ = 0.01, d = 100, r = 10); (c) per r/d and d cell; (d) the trajectory gap over steps at the
    first γ cell's fraction. One marker per problem, the median as a line."""
    fig, axes = new_figure(ncols=2, nrows=2, width=5.5, height=4.0)
    paper = str(PAPER_GD_GAMMA)

    def scatter(ax: plt.Axes, points: list[tuple[float, float]], label: str, **style: Any
                ) -> None:
        if not points:
            return
        ax.plot(*zip(*points, strict=True), ls="none", marker="o", mfc="none", ms=5, **style)
        xs = sorted({x for x, _ in points})
        ax.plot(xs, [np.median([y for x2, y in points if x2 == x]) for x in xs], label=label,
                **style)

    for i, fraction in enumerate(sorted({r["fraction"] for r in records
                                         if r["group"] == "gamma"})):
        recs = [r for r in records if r["group"] == "gamma" and r["fraction"] == fraction]
        scatter(axes[0], [(float(g), ratio) for r in recs for g in r["compressed"]
                          if (ratio := _lag_ratio(r, g)) is not None],
                f"d = {recs[0]['size']}, r = {recs[0]['rank']}, p = {fraction:.0%}",
                color=f"C{i}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("γ (outer factors step at γ·η)")
    gamma_recs = [r for r in records if r["group"] == "gamma"]
    first = min(gamma_recs, key=lambda r: r["fraction"]) if gamma_recs else None  # none run
    size, rank = (first["size"], first["rank"]) if first else (None, None)
    cell = [r for r in records if (r["size"], r["rank"]) == (size, rank)
            and paper in r["compressed"]]  # colours by the step scales of this cell only
    for i, scale in enumerate(sorted({r["lr_scale"] for r in cell}, reverse=True)):
        base = [r for r in cell if r["lr_scale"] == scale]
        scatter(axes[1], [(r["fraction"], ratio) for r in base
                          if (ratio := _lag_ratio(r, paper)) is not None],
                f"d = {size}, r = {rank}, γ = {paper}, step × {scale:.3g}", color=f"C{i}")
    axes[1].set_xlabel("observed fraction p")
    def where(r: dict[str, Any]) -> tuple[int, int, float, float]:
        return r["size"], r["rank"], r["fraction"], r["lr_scale"]

    cells = sorted({where(r) for r in records if r["group"] in ("r/d", "size")}
                   | ({where(first)} if first else set()))
    labels = [f"d={d}, r={k}\np={p:g}" + ("" if s == 1 else f"\nstep ×{s:g}")
              for d, k, p, s in cells]
    scatter(axes[2], [(float(i), ratio) for i, c in enumerate(cells) for r in records
                      if where(r) == c and paper in r["compressed"]
                      and r["group"] in ("r/d", "size", "gamma")
                      and (ratio := _lag_ratio(r, paper)) is not None], "γ = 0.01", color="C0")
    axes[2].set_xticks(range(len(cells)), labels, fontsize=7)
    for ax in axes[:3]:
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_ylabel("compressed / original: steps to 1e-2")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for rec in gamma_recs[: 2 * 3]:
        for j, gamma in enumerate(g for g in rec["compressed"] if g in (paper, "0.1")):
            gap = rec["compressed"][gamma]["gap"]
            if gap:
                axes[3].plot(*zip(*gap, strict=True), lw=0.8, color=f"C{j}",
                             ls="-" if rec["fraction"] == gamma_recs[0]["fraction"] else "--",
                             label=f"γ = {gamma}, p = {rec['fraction']:g}"
                             if rec["seed"] == 0 else None)
    axes[3].set_yscale("log")
    axes[3].set_xlabel("GD step")
    axes[3].set_ylabel("‖X_c(t) − X_o(t)‖ / ‖X_o(t)‖")
    axes[3].grid(alpha=0.3, which="both")
    if axes[3].get_legend_handles_labels()[0]:
        axes[3].legend(fontsize=7)
    fig.suptitle("dmc-lag: the compressed L = 3 model against the original on the same "
                 "problems and initialization (GD, authors' step, ε = 1e-3)", fontsize=9)
    save_figure(fig, path)
