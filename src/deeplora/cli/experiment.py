"""``deeplora experiment NAME``: run one of the paper's figures/tables (see
:mod:`deeplora.experiments`)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path

from deeplora.cli import Given, HelpFormatter, parameters_as_flags
from deeplora.experiments import Experiment, load_all
from deeplora.output import check_writable_dir


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiment", help="run a paper figure or table",
                              description="Run a named experiment; it writes PNG, JSON and "
                              "Markdown files to --out.")
    names = p.add_subparsers(dest="experiment", required=True, metavar="NAME")
    for name, exp in sorted(load_all().items()):
        sub = names.add_parser(name, help=exp.help, description=exp.help,
                               formatter_class=HelpFormatter)
        sub.add_argument("--out", default=f"runs/{name}", help="output folder")
        sub.add_argument("--fast", action="store_true",
                         help="smaller settings for a smoke test (minutes on 2 cores)")
        fast = exp.fast.options if exp.fast else ()
        for arg in exp.arguments:
            sub.add_argument(arg.flag, **({**arg.kwargs, "action": Given}
                                          if arg.flag in fast else arg.kwargs))
        sub.set_defaults(func=_runner(exp))


def _runner(exp: Experiment) -> Callable[[argparse.Namespace], int]:
    run, flags = exp.run, exp.flags

    def call(args: argparse.Namespace) -> int:
        if args.fast and exp.fast:
            exp.fast.apply(args, getattr(args, "given_flags", []))
        check_writable_dir(args.out)
        out = Path(args.out)
        created = [folder for folder in (out, *out.parents) if not folder.exists()]
        out.mkdir(parents=True, exist_ok=True)
        try:
            with parameters_as_flags(flags):
                run(args, out)
        except BaseException:  # bad input found by the experiment: leave no empty folders
            for folder in created:  # innermost first; one holding results stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        print(f"wrote results to {out}/")
        return 0

    return call
