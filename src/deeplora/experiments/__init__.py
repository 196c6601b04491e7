"""The paper's figures and tables as named, declarative experiments.

Each module in this package registers its experiments with :func:`experiment`::

    @experiment("dmc-efficiency", help="…", arguments=[Arg("--size", type=int, default=500)])
    def dmc_efficiency(args: argparse.Namespace, out: Path) -> dict: ...

``deeplora experiment NAME [--out DIR] [--fast] [options]`` then parses the declared options,
checks that ``--out`` is writable, and calls the function, which writes its PNG/JSON/Markdown
files into ``out``; an error ``"<field> must be …"`` about a configuration field named in
``flags`` (``{"rank": "--ranks"}``) names the option instead. The options that ``--fast``
overrides with settings of its own (``fast``, a :class:`Fast`) are refused beside it, given at
any value, before anything is written; those it only gives other defaults keep a given value.
Registered experiments are listed in :data:`EXPERIMENTS`.
"""

from __future__ import annotations

import argparse
import copy
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
class Fast:
    """What an experiment's ``--fast`` sets itself: ``settings``, named in the error (e.g.
    ``"splits and steps (u1; 100 steps)"``), the options among its arguments that it overrides
    (``flags``, refused beside ``--fast``) and those it gives another default (``defaults``,
    ``{"--steps": 300}``: used unless the option is given)."""

    settings: str
    flags: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> tuple[str, ...]:
        """The options ``--fast`` sets: :attr:`flags` and those of :attr:`defaults`."""
        return (*self.flags, *self.defaults)

    def apply(self, args: argparse.Namespace, given: Sequence[str]) -> None:
        """``ValueError`` naming the options of :attr:`flags` in ``given`` (the options typed),
        if any; else the options of :attr:`defaults` not given take their ``--fast`` value."""
        named = [flag for flag in self.flags if flag in given]
        if named:
            drop = " and ".join(filter(None, [", ".join(named[:-1]), named[-1]]))
            raise ValueError(f"--fast runs a smoke test of its own {self.settings}: drop {drop} "
                             "or --fast")
        for flag, value in self.defaults.items():
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), copy.deepcopy(value))


@dataclass(frozen=True)
class Experiment:
    name: str
    help: str
    arguments: tuple[Arg, ...]
    run: Runner
    flags: dict[str, str] = field(default_factory=dict)
    fast: Fast | None = None


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, help: str, arguments: list[Arg] | tuple[Arg, ...] = (),
               flags: dict[str, str] | None = None, fast: Fast | None = None
               ) -> Callable[[Runner], Runner]:
    """Register the decorated function as experiment ``name``; ``flags``: configuration
    field -> the option that sets it, for errors about its value; ``fast``: the options that
    ``--fast`` overrides (refused with it) or gives other defaults."""

    def register(run: Runner) -> Runner:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        unknown = set(fast.options if fast else ()) - {arg.flag for arg in arguments}
        if unknown:
            raise ValueError(f"experiment {name!r}: --fast sets no option {sorted(unknown)}")
        EXPERIMENTS[name] = Experiment(name, help, tuple(arguments), run, dict(flags or {}),
                                       fast)
        return run

    return register


def load_all() -> dict[str, Experiment]:
    """Import every module of this package so that its experiments register."""
    for info in pkgutil.iter_modules(__path__):
        import_module(f"{__name__}.{info.name}")
    return EXPERIMENTS
