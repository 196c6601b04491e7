"""The ``deeplora`` command line: a thin layer over the library.

Each subcommand lives in its own module (:mod:`deeplora.cli.complete`,
:mod:`deeplora.cli.recommend`, :mod:`deeplora.cli.experiment`, :mod:`deeplora.cli.finetune`,
:mod:`deeplora.cli.adapters`)
exposing ``register_cli(subparsers)``; only the module of the command being run is imported, so
``deeplora complete`` never loads transformers or PEFT. The ratings-file options shared by
``complete --ratings`` and ``recommend`` are defined here (:func:`add_ratings_file_arguments`);
reading and checking the file is the library's
(:func:`~deeplora.completion.data.read_ratings`). An option refused in some runs records, with
the action :class:`Given`, that it was typed, so it is refused at any value. Every error a
user can cause is reported as one line ``deeplora: error: …`` with exit status 2, before any
output file is written. A run that fails on its own (divergence) says so and exits 1; any other
exception is one line ``deeplora: internal error: …`` (exit 1), with the traceback only when the
environment variable ``DEEPLORA_TRACEBACK`` is set.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from deeplora import __version__

# Command -> (module exposing ``register_cli(subparsers)``, its one-line help for ``deeplora -h``).
COMMANDS = {
    "complete": ("deeplora.cli.complete", "deep matrix completion of a synthetic rank-r matrix"),
    "recommend": ("deeplora.cli.recommend",
                  "top-k recommendations per user from a ratings file, to CSV"),
    "experiment": ("deeplora.cli.experiment", "run a paper figure or table"),
    "finetune": ("deeplora.cli.finetune",
                 "few-shot fine-tuning on a GLUE task over several seeds"),
    "export-lora": ("deeplora.cli.adapters",
                    "convert a saved Deep LoRA adapter into a plain PEFT LoRA adapter folder"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: …)`` only where it informs: not to help that already states its
    default, nor for ``None`` / ``False`` defaults; an option without help text shows its
    default alone (argparse would show nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        if "default" in help or not _informs(action.default):
            return action.help
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and _informs(action.default):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def _informs(default: Any) -> bool:
    """Whether a default is worth showing in ``--help`` (not ``None``, ``False``, suppressed)."""
    return not any(default is v for v in (None, False, argparse.SUPPRESS))


class Given(argparse.Action):
    """``store`` (with ``nargs=0``, ``store_const``: ``const=True`` for a switch) that also
    records the option in ``namespace.given_flags``, so that it is seen as given even at its
    default value (:func:`given_options`); its default and ``--help`` stay as they are."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given_flags = [*getattr(namespace, "given_flags", []), self.option_strings[0]]


def flag_of(dest: str) -> str:
    """The flag of an option's destination: ``save_model`` -> ``--save-model``."""
    return "--" + dest.replace("_", "-")


def given_options(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The flags (:func:`flag_of`) of the destinations ``dests`` that the user typed, at any
    value (their action :class:`Given` records them), in the order of ``dests``."""
    given = getattr(args, "given_flags", [])
    return [flag for flag in map(flag_of, dests) if flag in given]


def add_ratings_file_arguments(group: argparse._ArgumentGroup) -> None:
    """``--format``, ``--sep``, ``--user-col``, ``--item-col``, ``--rating-col`` (shared by
    ``complete --ratings`` and ``recommend``), each seen when given (:class:`Given`);
    :func:`ratings_file_options` reads them back."""
    from deeplora.completion.data import FORMATS

    group.add_argument("--format", action=Given, choices=FORMATS, default="auto",
                       help="auto: Parquet by suffix, else a delimited file with a header "
                       "(userId,movieId,rating / user_id,item_id,rating / …) or without one "
                       "(user item rating [time], e.g. MovieLens' u.data); csv: delimited with "
                       "a header; movielens: delimited, no header; parquet")
    group.add_argument("--sep", action=Given, default=None,
                       help="field delimiter (default: guessed from the first line)")
    for role in ("user", "item", "rating"):
        group.add_argument(f"--{role}-col", action=Given, default=None, metavar="NAME",
                           help=f"name of the {role} column (default: recognized from the "
                           f"header)")


def ratings_file_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The keyword arguments of :func:`~deeplora.completion.data.read_ratings` given by
    :func:`add_ratings_file_arguments`' options."""
    return {name: getattr(args, name)
            for name in ("format", "sep", "user_col", "item_col", "rating_col")}


def check_file_only(flag: str, path: str | None, what: str) -> None:
    """``ValueError`` if ``path`` is ``-``: ``what`` (binary) goes to a file, and ``-``
    (stdout) is for text outputs (``--json``, ``recommend --output``)."""
    if path == "-":
        raise ValueError(f"{flag} -: {what} is written to a file, not to stdout; give a file "
                         "name")


# DeepMatrixCompletion's parameters that ``complete --ratings`` and ``recommend`` take from flags.
PARAMETER_FLAGS = {"rank": "--rank", "depth": "--depth", "init_scale": "--init-scale",
                   "lr": "--lr", "gamma": "--gamma", "max_steps": "--steps",
                   "eval_every": "--eval-every", "random_state": "--seed",
                   "feedback": "--feedback", "alpha": "--alpha",
                   "positive_threshold": "--positive-threshold", "shrinkage": "--shrinkage"}


@contextmanager
def parameters_as_flags(parameters: Mapping[str, str] = PARAMETER_FLAGS, /,
                        **flags: str) -> Iterator[None]:
    """Re-raise a ``ValueError`` (the estimator's, a configuration's) naming parameters set by
    flags (``parameters``, default :data:`PARAMETER_FLAGS`, updated by ``flags``) with the flags
    as typed: ``"<parameter> must be …"`` as ``"--flag must be …"``, and anywhere in the message
    ``parameter=value`` as ``--flag value`` and ``parameter`` before a comparison (``>``, ``<=``,
    …) as ``--flag``; other errors pass unchanged."""
    try:
        yield
    except ValueError as exc:
        names = {**parameters, **flags}
        message = str(exc)
        parameter, _, requirement = message.partition(" ")
        if parameter in names and requirement.startswith("must be "):
            raise ValueError(f"{names[parameter]} {requirement}") from None
        if not names:
            raise
        pattern = (rf"(?<![\w-])({'|'.join(map(re.escape, names))})"
                   r"(?:=(?:'([^']*)'|([^\s,;)]+))|(?= [<>]=? ))")
        translated = re.sub(pattern, lambda m: " ".join(
            [names[m[1]], *(value for value in m.group(2, 3) if value is not None)]), message)
        if translated == message:
            raise
        raise ValueError(translated) from None


def report_left_init(estimator: Any) -> None:
    """Say on stderr, when a fitted ``DeepMatrixCompletion``'s interaction term never left its
    initialization (``left_init_`` False; ``None``, unknown, says nothing), that its results
    are those of its biases alone."""
    if estimator.left_init_ is False:
        print(f"deeplora: the fit never left its initialization (X = A Bᵀ moved by RMS "
              f"{estimator.interaction_rms_:.1e} over the training ratings): its results are "
              'those of its biases alone, no evidence for the deep model (the JSON says '
              '"left_init": false). Penalty too strong, lr too small or too few steps?',
              file=sys.stderr)


class UsageError(ValueError):
    """Bad input from the user; printed as one line, exit status 2."""


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser with the full options of the command named in ``argv`` (its first word that is
    not an option); every other command is listed by its help line only, unimported."""
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="deeplora",
        description="Compressed deep low-rank learning: matrix completion and Deep LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"deeplora {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        if name == chosen:
            import_module(module).register_cli(subparsers)
        else:
            subparsers.add_parser(name, help=help)
    return parser


# Errors a user's input or environment causes (validation, files, memory): one line, exit 2.
EXPECTED_ERRORS = (ValueError, OSError, EOFError, MemoryError)
TRACEBACK_ENV = "DEEPLORA_TRACEBACK"


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (whitespace runs collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("deeplora: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        print(f"deeplora: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        if "out of memory" in str(exc) or "can't allocate memory" in str(exc):
            print(f"deeplora: error: out of memory ({one_line(exc)}); try smaller sizes",
                  file=sys.stderr)
            return 2
        print(f"deeplora: internal error: {type(exc).__name__}: {one_line(exc)} (set "
              f"{TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
