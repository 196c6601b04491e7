"""The ``deeplora`` command line: a thin layer over the library.

Subcommands register themselves from :mod:`deeplora.cli.complete`, :mod:`deeplora.cli.recommend`,
:mod:`deeplora.cli.experiment`
and :mod:`deeplora.finetune.cli` (when present). Every error a user can cause is reported as one
line ``deeplora: error: …`` with exit status 2, before any output file is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from deeplora import __version__

# Modules exposing ``register_cli(subparsers)``; each adds subcommands with a ``func`` default.
_COMMAND_MODULES = ("deeplora.cli.complete", "deeplora.cli.recommend", "deeplora.cli.experiment",
                    "deeplora.finetune.cli")


class UsageError(ValueError):
    """Bad input from the user; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deeplora",
        description="Compressed deep low-rank learning: matrix completion and Deep LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"deeplora {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # UsageError, validation and I/O errors
        print(f"deeplora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deeplora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
