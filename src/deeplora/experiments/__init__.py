"""The paper's figures and tables as named, declarative experiments.

Each module in this package registers its experiments with :func:`experiment`::

    @experiment("dmc-efficiency", help="…", arguments=[Arg("--size", type=int, default=500)])
    def dmc_efficiency(args: argparse.Namespace, out: Path) -> dict: ...

``deeplora experiment NAME [--out DIR] [--fast] [options]`` then parses the declared options,
checks that ``--out`` is writable, and calls the function, which writes its PNG/JSON/Markdown
files into ``out``; an error ``"<field> must be …"`` about a configuration field named in
``flags`` (``{"rank": "--ranks"}``) names the option instead. Registered experiments are
listed in :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import argparse
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from deeplora.checks import is_seed

Runner = Callable[[argparse.Namespace, Path], Any]


def random_seed(text: str) -> int:
    """argparse ``type`` of a seed option: an integer in [0, 2**32)
    (:func:`deeplora.checks.is_seed`), else an error naming the option."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not is_seed(value):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text!r}")
    return value


def require_runs(name: str, results: Sequence[tuple[Any, Sequence[Any]]], runs: Path) -> None:
    """Refuse to report ``results`` (``[(cell, finished runs)]``) when no cell has a finished
    run under ``runs``: a report of nothing (a wrong ``--out``, or flags other than the runs')
    reads as n/a everywhere and would overwrite a good one."""
    if not any(found for _, found in results):
        raise FileNotFoundError(f"{runs}: no finished run of these settings (run {name} without "
                                "--report-only first, or give the flags the runs were made with)")


@dataclass(frozen=True)
class Arg:
    """One command-line option: ``Arg("--size", type=int, default=500, help="…")``."""

    flag: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __init__(self, flag: str, **kwargs: Any) -> None:
        object.__setattr__(self, "flag", flag)
        object.__setattr__(self, "kwargs", kwargs)


@dataclass(frozen=True)
class Experiment:
    name: str
    help: str
    arguments: tuple[Arg, ...]
    run: Runner
    flags: dict[str, str] = field(default_factory=dict)


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, help: str, arguments: list[Arg] | tuple[Arg, ...] = (),
               flags: dict[str, str] | None = None) -> Callable[[Runner], Runner]:
    """Register the decorated function as experiment ``name``; ``flags``: configuration
    field -> the option that sets it, for errors about its value."""

    def register(run: Runner) -> Runner:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = Experiment(name, help, tuple(arguments), run, dict(flags or {}))
        return run

    return register


def load_all() -> dict[str, Experiment]:
    """Import every module of this package so that its experiments register."""
    for info in pkgutil.iter_modules(__path__):
        import_module(f"{__name__}.{info.name}")
    return EXPERIMENTS
