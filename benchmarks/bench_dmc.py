"""Compressed vs original deep matrix completion: time to recovery error 1e-2, in one run.

Usage: python benchmarks/bench_dmc.py [--quick] [--paper-gd] [--threads N]

Part A (d = 500, r = 5, 20 % observed, L = 3, ε = 1e-3): original and compressed, each with
its best step size from a small grid (Adam; the fastest run that reaches 1e-2 counts), and
the ratio of their wall-clock times to 1e-2 (model construction included).
Part B (d = 1000): the compressed model's time to 1e-2 with the library defaults, the error
it reaches when trained on, and the per-step time ratio original / compressed.
Part C (--paper-gd, d = 1000): the compressed model with the authors' GD step and γ = 0.01.
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from deeplora.completion import (
    MatrixCompletion,
    build_model,
    default_settings,
    fit,
    random_low_rank,
)

RANK, OBSERVED, DEPTH, EPS = 5, 0.2, 3, 1e-3
LR_GRID = {"original": (3e-4, 1e-3, 3e-3), "compressed": (1e-2, 3e-2, 1e-1)}


def problem(size: int, seed: int = 0) -> MatrixCompletion:
    return MatrixCompletion.random(random_low_rank(size, size, RANK, seed=seed), OBSERVED,
                                   seed=seed + 1)


def run(method: str, prob: MatrixCompletion, optimizer: str | None, lr: float | None,
        steps: int, target_error: float = 1e-2) -> dict[str, object]:
    optimizer, lr, gamma = default_settings(method, optimizer, lr, None, OBSERVED)
    model, build = build_model(method, prob, DEPTH, RANK, EPS, seed=0)
    history = fit(model, prob, optimizer, lr, gamma, steps, target_error=target_error,
                  eval_every=10, progress=False, build_seconds=build)
    reached = history.first_below(1e-2)
    train_seconds = history.seconds[-1] - build
    return {"method": method, "optimizer": optimizer, "lr": lr, "gamma": gamma,
            "build": build, "steps": history.steps[-1],
            "steps_to": reached[0] if reached else None,
            "seconds_to": reached[1] if reached else None,
            "error": history.recovery_error[-1],
            "ms_per_step": 1e3 * train_seconds / max(history.steps[-1], 1)}


def per_step_ms(method: str, prob: MatrixCompletion, steps: int) -> float:
    optimizer, lr, gamma = default_settings(method, observed_fraction=OBSERVED)
    model, _ = build_model(method, prob, DEPTH, RANK, EPS, seed=0)
    fit(model, prob, optimizer, lr, gamma, 2, eval_every=10, progress=False)  # warm-up
    start = time.perf_counter()
    fit(model, prob, optimizer, lr, gamma, steps, eval_every=steps + 1, progress=False)
    return 1e3 * (time.perf_counter() - start) / steps


def fmt(value: object, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| method | optimizer | η | γ | steps to 1e-2 | s to 1e-2 (incl. build) | "
             "build s | ms/step | error at stop |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['method']} | {r['optimizer']} | {r['lr']:g} | {r['gamma']:g} | "
                     f"{fmt(r['steps_to'], 'd')} | {fmt(r['seconds_to'], '.2f')} | "
                     f"{r['build']:.2f} | {r['ms_per_step']:.2f} | {r['error']:.2e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="d = 200/300 instead of 500/1000")
    parser.add_argument("--paper-gd", action="store_true", help="also run Part C")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    small, large = (200, 300) if args.quick else (500, 1000)
    print(f"`python benchmarks/bench_dmc.py {' '.join(sys.argv[1:])}` — torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"float32, r = {RANK}, {OBSERVED:.0%} observed, L = {DEPTH}, ε = {EPS:g}\n")

    prob = problem(small)
    best = {}
    rows = []
    for method, grid in LR_GRID.items():
        for lr in grid:
            row = run(method, prob, "adam", lr, steps=3000 if method == "original" else 5000)
            rows.append(row)
            print(f"  A {method} lr={lr:g}: {row['seconds_to']} s", file=sys.stderr)
            if row["seconds_to"] is not None and (
                    method not in best or row["seconds_to"] < best[method]["seconds_to"]):
                best[method] = row
    print(f"### A. d = {small}: every step size tried\n\n{table(rows)}\n")
    if len(best) == 2:
        ratio = best["original"]["seconds_to"] / best["compressed"]["seconds_to"]
        print(f"Best original / best compressed time to 1e-2 at d = {small}: **{ratio:.1f}×** "
              f"(η = {best['original']['lr']:g} vs {best['compressed']['lr']:g}).\n")
    else:
        print(f"Not every method reached 1e-2 at d = {small}: no ratio.\n")

    prob = problem(large)
    to_target = run("compressed", prob, None, None, steps=5000)
    trained_on = run("compressed", prob, None, None, steps=1500, target_error=0.0)
    original_ms = per_step_ms("original", prob, 10)
    compressed_ms = per_step_ms("compressed", prob, 200)
    print(f"### B. d = {large}: compressed with the defaults\n\n"
          f"{table([to_target, trained_on])}\n\n"
          f"(second row: the same run continued to 1500 steps, for the error it settles at)\n\n"
          f"Per step at d = {large}: original {original_ms:.1f} ms, compressed "
          f"{compressed_ms:.2f} ms, ratio **{original_ms / compressed_ms:.0f}×**.\n")
    if args.paper_gd:
        gd = run("compressed", prob, "gd", None, steps=40_000)
        print(f"### C. d = {large}: compressed with the authors' GD step and γ = 0.01\n\n"
              f"{table([gd])}\n")


if __name__ == "__main__":
    main()
