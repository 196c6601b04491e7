"""``deeplora experiment NAME``: every experiment's options parse and its help prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplora.cli import main
from deeplora.experiments import load_all


@pytest.mark.parametrize("name", sorted(load_all()))
def test_every_experiment_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["experiment", name, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: deeplora experiment {name}") and "--out" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0"], "--seeds and --steps must be >= 1, got 0 and "),
    (["--steps", "0"], "--seeds and --steps must be >= 1, got 3 and 0"),
    (["--cells", "d1-r1-p1"], "--cells: no cell named d1-r1-p1; the cells are d100-r10-p0.25, "),
    (["--groups", "size", "--cells", "d100-r5-p0.25"], "--groups size with --cells select no "
     "cell; the cells are d100-r10-p0.25 (gamma), "),
    (["--report-only"], "runs: no runs (run dmc-lag without --report-only first)"),
])
def test_dmc_lag_refuses_an_empty_selection_writing_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "lag"
    assert main(["experiment", "dmc-lag", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeplora: error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--steps", "-1"], ["--every", "0"]])
def test_dmc_theory_bad_step_counts_are_user_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert main(["experiment", "dmc-theory", "--size", "6", "--rank", "1", "--out",
                 str(tmp_path / "theory"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deeplora: error: need --steps >= 0 and --every >= 1, got ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["stsb-fewshot", "--preset", "practical", "--head", "bi"],
    ["prompt-fewshot"],
    ["nlg-fewshot", "--preset", "cpu"],
    ["nlg-checkpoints"],
    ["nlg-checkpoints", "--score-only"],
])
def test_report_only_without_finished_runs_is_an_error_writing_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """A report of no runs (a wrong --out, or flags other than the runs') would read as n/a
    everywhere and overwrite a good report: refused, naming the folder looked in."""
    out = tmp_path / "report"
    flag = [] if "--score-only" in args else ["--report-only"]
    assert main(["experiment", *args, *flag, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deeplora: error: {out / 'runs'}: no finished run of these settings")
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    (["prompt-fewshot", "--steps", "-1"], "--steps must be >= 0, got -1"),
    (["prompt-fewshot", "--lrs", "1e-3,nan"], "--lrs must be a finite number > 0, got nan"),
    (["prompt-fewshot", "--ranks", "8,0"], "--ranks must be >= 1, got 0"),
    (["prompt-fewshot", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["prompt-fewshot", "--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
    (["prompt-fewshot", "--heldout-samples", "-1"], "--heldout-samples must be >= 0, got -1"),
    (["prompt-fewshot", "--test-samples", "0"],
     "--test-samples must be >= 1 (or None: the whole dev split), got 0"),
    (["nlg-checkpoints", "--lrs", "1e-3,nan"], "--lrs must be a finite number > 0, got nan"),
    (["nlg-checkpoints", "--eval-every", "-2"], "--eval-every must be >= 0, got -2"),
    (["nlg-checkpoints", "--dev-mrs", "-1"], "--dev-mrs must be >= 0, got -1"),
])
def test_a_bad_value_is_named_by_its_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """The configurations' field names were shown (``rank must be``, ``dev_samples must be``
    for --test-samples, ``eval_every and dev_mrs must be >= 0``)."""
    assert main(["experiment", *args, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"deeplora: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
