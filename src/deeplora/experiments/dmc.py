"""Deep matrix completion / factorization figures of the paper (Sec. 3).

- ``dmc-efficiency``: the paper's efficiency figure under GD — iterations and wall time to the
  notebook's train-loss tolerance against the assumed rank r̂, compressed vs randomly
  initialized narrow (width 2r̂ both); then, as a second, separately labelled figure, recovery
  error vs step and time for original, compressed and narrow under Adam.
- ``dmc-depth``: recovery error against the observed fraction for depth 2 vs 3, original and
  compressed, under GD with the authors' steps (their depth-comparison notebook).
- ``dmc-theory``: the invariant-subspace theorem made visible on deep matrix factorization —
  every layer's singular values over training (all but 2r stay equal) and its distance from
  the block form ``U_l diag(W̃_l, ρ_l I) V_lᵀ``.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplora.completion import (
    METHODS,
    MatrixCompletion,
    MatrixFactorization,
    build_model,
    default_settings,
    fit,
    random_low_rank,
)
from deeplora.completion.methods import PAPER_GD_GAMMA
from deeplora.experiments import Arg, experiment
from deeplora.experiments.plots import plot_runs
from deeplora.factorization import (
    DeepFactorization,
    compress,
    invariant_subspace_deviation,
    largest_repeated_cluster,
    principal_angles,
    singular_values,
)
from deeplora.output import write_json
from deeplora.plotting import new_figure, save_figure

# The authors' GD steps on their loss ½ Σ_Ω (X − Φ)² / (m n), by depth, in the depth-comparison
# notebook (d = 100, r = 10, 30 % observed); ours (½ mean over Ω) is that times |Ω| / (m n).
AUTHORS_DEPTH_STEP = {2: 1e2, 3: 3e2}


def _train_loss_tol(tol: float, observed: float) -> float:
    """The authors' train-loss tolerance (on ½ Σ_Ω / (m n)) on our ½ mean_Ω loss."""
    return tol / observed


def _run_gd(model: DeepFactorization, problem: MatrixCompletion, lr: float, gamma: float,
            max_steps: int, tol: float, eval_every: int, build_seconds: float
            ) -> dict[str, Any]:
    """GD until the train loss reaches ``tol`` (our normalisation) or ``max_steps``."""
    history = fit(model, problem, "gd", lr, gamma, max_steps, tol=tol, eval_every=eval_every,
                  build_seconds=build_seconds)
    loss = history.train_loss[-1]
    reached_tol = loss <= tol
    reached = history.first_below(1e-2)
    return {"reached_tol": reached_tol,
            "steps": history.steps[-1] if reached_tol else None,
            "seconds": history.seconds[-1] if reached_tol else None,
            "steps_to_1e-2": reached[0] if reached else None,
            "final_error": history.recovery_error[-1], "final_train_loss": loss,
            "diverged": not math.isfinite(loss),
            "left_init": loss < 0.5 * history.train_loss[0],
            "history": history.as_dict()}


RESUME_KEYS = ("size", "rank", "observed", "depth", "init_scale", "gd_lr", "gd_gamma_compressed",
               "tol_ours", "max_steps", "seed")


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
            help="assumed ranks r̂ (width 2r̂) of the GD sweep; none: only the Adam view"),
        Arg("--tol", type=float, default=1e-10,
            help="train-loss tolerance on the authors' ½ Σ_Ω (X − Φ)² / d² (notebook: 1e-10)"),
        Arg("--lr", type=float,
            help="GD step on our ½ mean_Ω loss; default the paper's 5e3 on ½ Σ_Ω / d², i.e. "
                 "5e3 × observed fraction"),
        Arg("--max-steps", type=int, default=200_000, help="GD step budget per run"),
        Arg("--adam-steps", type=int, default=3000,
            help="steps of the Adam view at r̂ = r (0: skip it)"),
        Arg("--adam-methods", nargs="+", choices=METHODS, default=list(METHODS)),
        Arg("--init-scale", type=float, default=1e-3, help="ε"),
        Arg("--seed", type=int, default=0),
    ],
)
def dmc_efficiency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Paper Fig. 3 under GD, and (second figure) the same problem under Adam.

    ``--fast`` (a smoke test, not the paper's numbers): d = 24, r = 2, r̂ ∈ {2, 4}, 60 %
    observed, ε = 0.05, GD step 10 on our loss (the paper's 5e3 × p diverges at small d: the
    curvature per entry grows as d shrinks), tolerance 1e-6, 200 Adam steps. Resumable: an r̂
    whose two runs are in ``out/dmc-efficiency.json`` from a run with the same settings is not
    run again.
    """
    tol_authors = args.tol
    if args.fast:
        size, rank, observed, ranks, adam_steps = 24, 2, 0.6, [2, 4], min(args.adam_steps, 200)
        lr = 10.0 if args.lr is None else args.lr
        scale, tol_authors = 0.05, max(args.tol, 1e-6)
    else:
        size, rank, observed, ranks, adam_steps = (args.size, args.rank, args.observed,
                                                   args.ranks, args.adam_steps)
        scale = args.init_scale
        lr = default_settings("compressed", "gd", observed_fraction=observed)[1] \
            if args.lr is None else args.lr
    if any(not 1 <= r <= size // 2 for r in ranks) or rank < 1 or args.max_steps < 1:
        raise ValueError(f"need ranks r̂ >= 1 with 2 r̂ <= size = {size}, rank >= 1 and "
                         f"max-steps >= 1, got ranks {ranks}, rank {rank}")
    target = random_low_rank(size, size, rank, seed=args.seed)
    problem = MatrixCompletion.random(target, observed, seed=args.seed + 1)
    tol = _train_loss_tol(tol_authors, problem.observed_fraction)
    gd: dict[str, dict[str, Any]] = {"compressed": {}, "narrow": {}}
    title = (f"GD (the paper's setting): {size}×{size}, rank {rank}, {observed:.0%} observed, "
             f"depth {args.depth}, ε = {scale:g}, η = {lr:g} on ½·mean_Ω (= {lr / observed:g} on "
             f"½·Σ_Ω/d²), train loss to {tol_authors:g} (authors' normalisation)")
    summary = {"size": size, "rank": rank, "observed": observed, "depth": args.depth,
               "init_scale": scale, "ranks": ranks, "gd_lr": lr,
               "gd_gamma_compressed": PAPER_GD_GAMMA, "tol_authors": tol_authors, "tol_ours": tol,
               "max_steps": args.max_steps, "seed": args.seed, "gd": gd,
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
            gd[method][str(assumed)] = _run_gd(model, problem, lr, gamma, args.max_steps, tol,
                                               10 if args.fast else 100, build_seconds)
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
    if not path.is_file():
        return {"compressed": {}, "narrow": {}}
    earlier = json.loads(path.read_text())
    if any(earlier.get(key) != summary[key] for key in RESUME_KEYS):
        return {"compressed": {}, "narrow": {}}
    both = set(earlier["gd"]["compressed"]) & set(earlier["gd"]["narrow"])
    return {method: {r: run for r, run in earlier["gd"][method].items() if r in both}
            for method in ("compressed", "narrow")}


def _without_histories(value: Any) -> Any:
    """``value`` with every ``"history"`` entry dropped (for printing)."""
    if isinstance(value, dict):
        return {k: _without_histories(v) for k, v in value.items() if k != "history"}
    return value


def _plot_gd_sweep(gd: dict[str, dict[str, Any]], ranks: list[int], path: Path,
                   title: str) -> None:
    """Iterations and seconds to the tolerance against r̂; an unreached run is an × at its
    budget."""
    fig, axes = new_figure(ncols=2)
    for ax, key, label in ((axes[0], "steps", "GD iterations to tolerance"),
                           (axes[1], "seconds", "wall-clock seconds to tolerance (incl. build)")):
        for method, marker in (("compressed", "o"), ("narrow", "s")):
            runs = [gd[method][str(r)] for r in ranks]
            done = [(r, run[key]) for r, run in zip(ranks, runs, strict=True)
                    if run["reached_tol"]]
            if done:
                ax.plot(*zip(*done, strict=True), marker=marker, label=method)
            missed = [(r, run["history"]["steps" if key == "steps" else "seconds"][-1])
                      for r, run in zip(ranks, runs, strict=True) if not run["reached_tol"]]
            if missed:
                ax.plot(*zip(*missed, strict=True), ls="none", marker="x", color="k",
                        label=f"{method}: not reached (budget)")
        ax.set_xlabel("assumed rank r̂ (width 2r̂)")
        ax.set_ylabel(label)
        ax.set_xticks(ranks)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    save_figure(fig, path)


@experiment(
    "dmc-depth",
    help="recovery error vs observed fraction: depth 2 vs 3, original and compressed (GD)",
    arguments=[
        Arg("--size", type=int, default=100, help="d (m = n)"),
        Arg("--rank", type=int, default=10, help="r, the target's rank (also r̂)"),
        Arg("--fractions", type=float, nargs="+",
            default=[0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5], help="observed fractions"),
        Arg("--depths", type=int, nargs="+", choices=sorted(AUTHORS_DEPTH_STEP), default=[2, 3]),
        Arg("--methods", nargs="+", choices=("original", "compressed"),
            default=["original", "compressed"]),
        Arg("--steps", type=int, default=30_000, help="GD step budget per run"),
        Arg("--tol", type=float, default=1e-10,
            help="train-loss tolerance on the authors' ½ Σ_Ω (X − Φ)² / d²"),
        Arg("--seeds", type=int, default=3, help="problems (target and Ω) per fraction"),
        Arg("--init-scale", type=float, default=1e-3, help="ε"),
        Arg("--lr-scale", type=float, default=1.0, help="multiplies the authors' GD steps"),
    ],
)
def dmc_depth(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Deeper factorizations recover from fewer samples (the authors' depth notebook).

    GD with the authors' steps :data:`AUTHORS_DEPTH_STEP` (times the observed fraction on our
    loss), ε = 1e-3, γ = 0.01 for the compressed model (width 2r). Recovery error
    ‖X − Φ‖_F/‖Φ‖_F over all d² entries at the end of each run. ``--fast`` (a smoke test, not
    the paper's numbers): d = 16, r = 2, fractions {0.4, 0.8}, one seed, 300 steps, ε = 0.05,
    steps × 0.05 (the authors' steps diverge at small d).
    """
    if args.fast:
        size, rank, fractions, seeds, steps = 16, 2, [0.4, 0.8], 1, min(args.steps, 300)
        scale, lr_scale = 0.05, 0.05
    else:
        size, rank, fractions, seeds, steps = (args.size, args.rank, args.fractions, args.seeds,
                                               args.steps)
        scale, lr_scale = args.init_scale, args.lr_scale
    if 2 * rank > size or not fractions or seeds < 1 or steps < 1:
        raise ValueError("need 2 × rank <= size, some fractions, seeds >= 1 and steps >= 1")
    runs: list[dict[str, Any]] = []
    for fraction in fractions:
        for seed in range(seeds):
            target = random_low_rank(size, size, rank, seed=seed)
            problem = MatrixCompletion.random(target, fraction, seed=seed + 1000)
            tol = _train_loss_tol(args.tol, problem.observed_fraction)
            for depth in args.depths:
                lr = lr_scale * AUTHORS_DEPTH_STEP[depth] * problem.observed_fraction
                for method in args.methods:
                    gamma = PAPER_GD_GAMMA if method == "compressed" else 1.0
                    model, build_seconds = build_model(method, problem, depth, rank, scale, seed)
                    run = _run_gd(model, problem, lr, gamma, steps, tol, 100, build_seconds)
                    del run["history"]
                    runs.append({"fraction": fraction, "seed": seed, "depth": depth,
                                 "method": method, "lr": lr, "gamma": gamma, **run})
    _plot_depth(runs, fractions, out / "dmc-depth.png",
                f"{size}×{size}, rank {rank}, ε = {scale:g}, GD (authors' steps × {lr_scale:g}), "
                f"{steps} steps at most, median and range over {seeds} problem(s)")
    summary = {"size": size, "rank": rank, "fractions": fractions, "seeds": seeds,
               "steps": steps, "init_scale": scale, "lr_scale": lr_scale,
               "tol_authors": args.tol, "authors_steps": AUTHORS_DEPTH_STEP, "runs": runs}
    write_json(out / "dmc-depth.json", summary)
    return summary


def _plot_depth(runs: list[dict[str, Any]], fractions: list[float], path: Path,
                title: str) -> None:
    """Final recovery error against the observed fraction, one line per (depth, method):
    median over the runs that did not diverge, their range shaded; hollow circles mark runs whose
    train loss never halved (did not leave the initialization), × at the top diverged runs."""
    fig, (ax,) = new_figure(width=6.5, height=4.5)
    for depth, method in sorted({(run["depth"], run["method"]) for run in runs}):
        mine = [run for run in runs if run["depth"] == depth and run["method"] == method]
        style = {"ls": "-" if method == "original" else "--",
                 "color": "C0" if depth == 2 else "C3"}
        points = []
        for fraction in fractions:
            errors = [run["final_error"] for run in mine
                      if run["fraction"] == fraction and not run["diverged"]]
            if errors:
                points.append((fraction, float(np.median(errors)), min(errors), max(errors)))
        if points:
            xs, median, low, high = zip(*points, strict=True)
            ax.plot(xs, median, marker="o", label=f"L = {depth}, {method}", **style)
            ax.fill_between(xs, low, high, alpha=0.12, color=style["color"])
        stuck = [(run["fraction"], run["final_error"]) for run in mine
                 if not run["diverged"] and not run["left_init"]]
        if stuck:
            ax.plot(*zip(*stuck, strict=True), ls="none", marker="o", mfc="none", ms=10,
                    color=style["color"])
        diverged = [run["fraction"] for run in mine if run["diverged"]]
        if diverged:
            ax.plot(diverged, [1.5] * len(diverged), ls="none", marker="x", ms=9,
                    color=style["color"], label=f"L = {depth}, {method}: diverged")
    ax.set_yscale("log")
    ax.set_xlabel("observed fraction |Ω| / d²")
    ax.set_ylabel("recovery error ‖X − Φ‖/‖Φ‖ (all entries)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
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
                               "deviation": [], "angle_to_fixed": []}
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                layers = [f.detach() for f in model.factors]
                record["steps"].append(step)
                record["error"].append(problem.recovery_error(model))
                record["singular_values"].append([singular_values(w).tolist() for w in layers])
                record["deviation"].append([
                    invariant_subspace_deviation(w, w0, v, scale)
                    for w, w0, v in zip(layers, at_init, bases, strict=True)])
                record["angle_to_fixed"].append([
                    float(principal_angles(torch.linalg.svd(w).Vh[:rank].T, v).max())
                    for w, v in zip(layers, bases, strict=True)])
        optimizer.zero_grad()
        problem.loss(model).backward()
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
        Arg("--seed", type=int, default=0),
    ],
)
def dmc_theory(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    steps, every = (3000, 50) if args.fast else (args.steps, args.every)
    if 2 * args.rank > args.size or args.depth < 2:
        raise ValueError("need depth >= 2 and 2 × rank <= size")
    rec = _theory_run(args.size, args.rank, args.depth, args.init_scale, args.lr, steps, every,
                      args.seed)
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
    bottom[2].axis("off")
    bottom[3].axis("off")
    bottom[2].text(0, 0.5, "\n".join([
        f"d = {args.size}, r = {args.rank}, L = {args.depth}, ε = {args.init_scale:g}",
        f"GD η = {args.lr:g}, {steps} steps",
        f"max distance from block form: {deviation.max():.1e}",
        "largest group of equal singular values (rtol 1e-9),",
        f"smallest over training, per layer: {repeated} (d − 2r = {args.size - 2 * args.rank})",
    ]), va="center", fontsize=9)
    fig.suptitle("Deep matrix factorization: each layer changes only in a fixed 2r-dim "
                 "subspace")
    save_figure(fig, out / "dmc-theory.png")
    summary = {"size": args.size, "rank": args.rank, "depth": args.depth,
               "init_scale": args.init_scale, "lr": args.lr, "steps": steps,
               "max_deviation": float(deviation.max()), "smallest_equal_group": repeated,
               "max_angle_to_fixed_degrees_after_escape": float(angle[-1].max()),
               "record": rec}
    write_json(out / "dmc-theory.json", summary)
    return json.loads(json.dumps({k: v for k, v in summary.items() if k != "record"}))
