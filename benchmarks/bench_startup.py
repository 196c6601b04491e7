"""Benchmark: start-up time of ``deeplora complete --help`` against ``python -c "import torch"``.

One run, the two commands interleaved (A, B, A, B, …) in fresh interpreters so that load on a
shared machine hits both alike; reports the median and minimum wall time of each and the ratio
of the medians (target: at most 1.5×), plus what the command imported besides torch.
Also times ``deeplora finetune --help`` and ``deeplora experiment --help`` for reference.

Usage: ``python benchmarks/bench_startup.py [--repeats 15]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "deeplora complete --help": [sys.executable, "-m", "deeplora.cli", "complete", "--help"],
    "deeplora finetune --help": [sys.executable, "-m", "deeplora.cli", "finetune", "--help"],
    "deeplora experiment --help": [sys.executable, "-m", "deeplora.cli", "experiment", "--help"],
}
BASELINE, TARGET = "python -c 'import torch'", "deeplora complete --help"
HEAVY = ("scipy", "sklearn", "matplotlib", "pandas", "transformers", "peft", "accelerate",
         "datasets")


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports(argv: list[str]) -> list[str]:
    """Top-level packages among :data:`HEAVY` that the command imports."""
    code = ("import sys, runpy\nsys.argv = ['deeplora', *sys.argv[1:]]\ntry:\n"
            "    runpy.run_module('deeplora.cli', run_name='__main__')\nexcept SystemExit:\n"
            "    pass\nprint(' '.join(sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv[3:]], capture_output=True,
                          text=True, check=True)
    loaded = {name.split(".")[0] for name in proc.stderr.split()}
    return sorted(loaded.intersection(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs of each command")
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm the file cache
        wall_time(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            times[name].append(wall_time(argv))
    base = statistics.median(times[BASELINE])
    print(f"Command: `python {shlex.join(sys.argv)}`\n")
    print(f"Device: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}, "
          f"torch {torch.__version__}\n")
    print(f"{args.repeats} fresh interpreters per command, interleaved\n")
    print("| command | wall time (s), median (min) | vs import torch | heavy imports |")
    print("|---|---|---|---|")
    for name, argv in COMMANDS.items():
        median = statistics.median(times[name])
        heavy = "-" if name == BASELINE else ", ".join(heavy_imports(argv)) or "none"
        print(f"| `{name}` | {median:.2f} ({min(times[name]):.2f}) | {median / base:.2f}× "
              f"| {heavy} |")
    ratio = statistics.median(times[TARGET]) / base
    print(f"\nTarget: `{TARGET}` ≤ 1.5× `import torch`: {ratio:.2f}×, "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
