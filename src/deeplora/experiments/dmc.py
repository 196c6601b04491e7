"""Deep matrix completion / factorization figures of the paper (Sec. 3).

- ``dmc-efficiency``: recovery error vs step and vs wall time for original, compressed and
  narrow on one completion problem.
- ``dmc-theory``: the invariant-subspace theorem made visible on deep matrix factorization —
  every layer's singular values over training (all but 2r stay equal) and its distance from
  the block form ``U_l diag(W̃_l, ρ_l I) V_lᵀ``.
"""

from __future__ import annotations

import argparse
import json
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


@experiment(
    "dmc-efficiency",
    help="recovery error vs step and time: original vs compressed vs narrow (paper Fig. 3)",
    arguments=[
        Arg("--size", type=int, default=500, help="m = n"),
        Arg("--rank", type=int, default=5),
        Arg("--observed", type=float, default=0.2),
        Arg("--depth", type=int, default=3),
        Arg("--steps", type=int, default=3000, help="maximum steps per method"),
        Arg("--methods", nargs="+", choices=METHODS, default=list(METHODS)),
        Arg("--optimizer", choices=("adam", "gd"), default="adam",
            help="gd: the paper's step sizes (long plateau)"),
        Arg("--seed", type=int, default=0),
    ],
)
def dmc_efficiency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    size, steps = (200, 1000) if args.fast else (args.size, args.steps)
    target = random_low_rank(size, size, args.rank, seed=args.seed)
    problem = MatrixCompletion.random(target, args.observed, seed=args.seed + 1)
    histories, results = {}, {}
    for method in args.methods:
        optimizer, lr, gamma = default_settings(method, args.optimizer,
                                                observed_fraction=args.observed)
        model, build_seconds = build_model(method, problem, args.depth, args.rank, 1e-3,
                                           args.seed)
        history = fit(model, problem, optimizer, lr, gamma, steps, tol=1e-12, eval_every=10,
                      build_seconds=build_seconds)
        histories[method] = history
        reached = history.first_below(1e-2)
        results[method] = {"optimizer": optimizer, "lr": lr, "gamma": gamma,
                           "seconds_to_1e-2": reached[1] if reached else None,
                           "steps_to_1e-2": reached[0] if reached else None,
                           "final_error": history.recovery_error[-1],
                           "history": history.as_dict()}
    plot_runs(histories, out / "dmc-efficiency.png",
              title=f"{size}×{size}, rank {args.rank}, {args.observed:.0%} observed, "
              f"depth {args.depth}")
    summary = {"size": size, "rank": args.rank, "observed": args.observed,
               "depth": args.depth, "methods": results}
    write_json(out / "dmc-efficiency.json", summary)
    return summary


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
