"""Shared check of the experiments' ``--fast`` refusals."""

from pathlib import Path

import pytest

from deeplora.cli import main


def assert_fast_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], experiment: str,
                        flags: list[str], runs: str, named: str) -> None:
    """``deeplora experiment EXPERIMENT --fast FLAGS`` exits 2 with one line saying what
    ``--fast`` runs instead (``runs``) and naming the flags to drop (``named``), and writes
    nothing."""
    out = tmp_path / experiment
    assert main(["experiment", experiment, "--fast", *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"deeplora: error: --fast runs a smoke test of its own {runs}: drop {named} or --fast\n")
    assert list(tmp_path.iterdir()) == []
