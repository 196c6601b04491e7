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


DMC_SMALL = {"dmc-theory": ["--size", "8", "--rank", "1", "--steps", "20", "--every", "10"],
             "dmc-efficiency": ["--size", "12", "--rank", "2", "--ranks", "2", "--max-steps",
                                "30", "--adam-steps", "20", "--init-scale", "0.05", "--lr", "1"],
             "dmc-depth": ["--size", "12", "--rank", "2", "--fractions", "0.5", "--seeds", "1",
                           "--steps", "30", "--stall-window", "10", "--init-scale", "0.05",
                           "--lr-scale", "0.05"],
             "dmc-lag": ["--cells", "d100-r5-p0.25", "--seeds", "1", "--steps", "1"]}


@pytest.mark.parametrize(("name", "args", "message"), [
    ("dmc-theory", ["--lr", "0"], "--lr must be a finite number > 0, got 0"),
    ("dmc-theory", ["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    ("dmc-theory", ["--depth", "1"], "--depth must be an integer >= 2, got 1"),
    ("dmc-theory", ["--rank", "5"], "--size must be >= 2 × --rank = 10, got 8"),
    ("dmc-efficiency", ["--tol", "nan"], "--tol must be a finite number >= 0, got nan"),
    ("dmc-efficiency", ["--adam-steps", "-5"], "--adam-steps must be an integer >= 0, got -5"),
    ("dmc-efficiency", ["--ranks", "2", "7"], "--ranks must be an integer in [1, 6], got 7"),
    ("dmc-efficiency", ["--observed", "0"], "--observed must be a fraction in (0, 1], got 0"),
    ("dmc-depth", ["--fractions", "0.5", "0"], "--fractions must be a fraction in (0, 1], got 0"),
    ("dmc-depth", ["--tol", "-1"], "--tol must be a finite number >= 0, got -1"),
    ("dmc-depth", ["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
    ("dmc-depth", ["--stall-rtol", "1"], "--stall-rtol must be in (0, 1), got 1"),
    ("dmc-depth", ["--depths", "2", "2"], "--depths: 2 given twice"),
    ("dmc-depth", ["--fractions", "0.5", "0.5"], "--fractions: 0.5 given twice"),
    ("dmc-efficiency", ["--ranks", "2", "3", "2"], "--ranks: 2 given twice"),
    ("dmc-lag", ["--tol", "nan"], "--tol must be a finite number >= 0, got nan"),
    ("dmc-lag", ["--stall-window", "-1"], "--stall-window must be an integer >= 1, got -1"),
    ("dmc-lag", ["--init-scale", "0"], "--init-scale must be a finite number > 0, got 0"),
])
def test_dmc_bad_flag_values_are_one_line_naming_the_flag_writing_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, args: list[str],
        message: str) -> None:
    assert main(["experiment", name, "--out", str(tmp_path / "out"), *DMC_SMALL[name],
                 *args]) == 2
    assert capsys.readouterr().err == f"deeplora: error: {message}\n"
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
    (["nlg-checkpoints", "--dev-mrs", "0"],
     "--eval-every 10 needs --dev-mrs > 0 (the dev MRs the checkpoints are scored on)"),
    (["nlg-checkpoints", "--eval-every", "5", "--dev-mrs", "0"],
     "--eval-every 5 needs --dev-mrs > 0 (the dev MRs the checkpoints are scored on)"),
])
def test_a_bad_value_is_named_by_its_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """The configurations' field names were shown (``rank must be``, ``dev_samples must be``
    for --test-samples, ``eval_every and dev_mrs must be >= 0``, ``eval_every needs dev_mrs >
    0``)."""
    assert main(["experiment", *args, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"deeplora: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


FAST_FLAGS = [(name, flag) for name, exp in sorted(load_all().items()) if exp.fast
              for flag in exp.fast.options]


@pytest.mark.parametrize(("name", "flag"), FAST_FLAGS)
def test_an_option_fast_overrides_keeps_its_default_and_help(
        name: str, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An option ``--fast`` sets is recorded when given (to refuse it beside ``--fast``, or keep
    it); unset, it has its declared default, and ``--help`` shows it as before."""
    from deeplora.cli import build_parser

    arg = next(arg for arg in load_all()[name].arguments if arg.flag == flag)
    args = build_parser(["experiment"]).parse_args(["experiment", name])
    assert getattr(args, flag[2:].replace("-", "_")) == arg.kwargs.get("default")
    assert not hasattr(args, "given_flags")
    with pytest.raises(SystemExit):
        main(["experiment", name, "--help"])
    default, help = arg.kwargs.get("default"), arg.kwargs.get("help")
    if default is not None and help and "default" not in help:
        assert f"(default: {default})" in " ".join(capsys.readouterr().out.split())


def test_fast_names_every_option_it_would_override_in_its_order() -> None:
    import argparse

    from deeplora.experiments import Fast

    fast = Fast("problem (d = 8)", ("--size", "--rank", "--steps"))
    fast.apply(argparse.Namespace(), ["--out", "--seed"])
    with pytest.raises(ValueError, match=r"^--fast runs a smoke test of its own problem \(d = 8\): "
                       r"drop --size, --rank and --steps or --fast$"):
        fast.apply(argparse.Namespace(), ["--steps", "--size", "--rank"])


def test_fast_defaults_apply_to_the_options_not_given() -> None:
    import argparse

    from deeplora.experiments import Fast

    fast = Fast("steps (300)", defaults={"--max-steps": 300, "--ranks": [2, 4]})
    args = argparse.Namespace(max_steps=150_000, ranks=[5, 10])
    fast.apply(args, ["--ranks"])
    assert (args.max_steps, args.ranks) == (300, [5, 10])
    fast.apply(args, [])
    args.ranks.append(8)  # a copy
    assert fast.defaults["--ranks"] == [2, 4]
