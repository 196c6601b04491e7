import json
import os
import subprocess
import sys

import pytest

from deeplora.cli import main


def test_complete_json_to_stdout(capsys):
    assert main(["complete", "--size", "60", "--rank", "2", "--observed", "0.5", "--steps", "800",
                 "--quiet",
                 "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("method", "size", "cols", "rank", "depth", "observed", "steps", "seconds",
                "recovery_error", "train_loss", "seconds_to_1e-2"):
        assert key in result
    assert result["method"] == "compressed" and result["cols"] == 60
    assert result["recovery_error"] < 1e-2 and result["seconds_to_1e-2"] > 0


def test_complete_takes_the_largest_seed(capsys):
    """--seed 4294967295 (allowed) drew Ω with seed 2**32, which the library refuses: Ω's seed
    seed + 1 wraps around to 0."""
    assert main(["complete", "--size", "20", "--rank", "2", "--steps", "1", "--quiet",
                 "--seed", str(2**32 - 1), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1


def test_complete_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "sub" / "r.json", tmp_path / "r.png"
    assert main(["complete", "--size", "40", "--cols", "30", "--rank", "2", "--method",
                 "narrow", "--steps", "50", "--quiet", "--json", str(out),
                 "--plot", str(png)]) == 0
    assert json.loads(out.read_text())["cols"] == 30
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.json", "r.png", "sub"]


@pytest.mark.parametrize("args, message", [
    (["--depth", "1"], "--depth must be >= 2"),
    (["--rank", "0"], "--rank must be >= 1"),
    (["--size", "10", "--rank", "6"], "2 × rank must be <= min(size, cols) = 10"),
    (["--observed", "0"], "--observed must be in (0, 1]"),
    (["--observed", "1.5"], "--observed must be in (0, 1]"),
    (["--init-scale", "0"], "--init-scale must be > 0"),
    (["--lr-patience", "-1"], "--lr-patience must be >= 0"),
    (["--steps", "-1"], "--steps must be >= 0, got -1"),
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
    (["--gamma", "nan"], "--gamma must be a finite number >= 0, got nan"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "r.json"
    assert main(["complete", "--quiet", "--json", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("deeplora: error:")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_nonroot(tmp_path, capsys):  # pragma: no cover - CI runs as root
    tmp_path.chmod(0o500)
    assert main(["complete", "--json", str(tmp_path / "x.json")]) == 2


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["complete", "--size", "20", "--rank", "2", "--json",
                 str(blocker / "r.json")]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    assert main(["complete", "--size", "20", "--rank", "2", "--plot", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "deeplora.cli", "--help"], capture_output=True,
                          text=True, check=True)
    assert "complete" in proc.stdout and "experiment" in proc.stdout


def test_ratings_use_the_ratings_preset(tmp_path, monkeypatch):
    from deeplora.completion import estimator

    seen = {}

    class Spy(estimator.DeepMatrixCompletion):
        def fit(self, *args, **kwargs):
            seen.update(self.get_params())
            raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(estimator, "DeepMatrixCompletion", Spy)
    ratings = tmp_path / "r.tsv"
    ratings.write_text("".join(f"{u}\t{i}\t{(u * i) % 5 + 1}\n" for u in range(30)
                               for i in range(30) if (u + i) % 3))
    assert main(["complete", "--ratings", str(ratings), "--quiet"]) == 130
    defaults = estimator.DeepMatrixCompletion.ratings().get_params()
    keys = ("rank", "depth", "init_scale", "optimizer", "lr", "gamma", "max_steps", "eval_every",
            "method", "dtype")
    assert {k: seen[k] for k in keys} == {k: defaults[k] for k in keys}
    assert main(["complete", "--ratings", str(ratings), "--rank", "3", "--steps", "7",
                 "--quiet"]) == 130
    assert (seen["rank"], seen["max_steps"]) == (3, 7)


@pytest.mark.parametrize("argv", [["complete"], ["recommend"], ["finetune"], ["experiment"],
                                  ["experiment", "stsb-fewshot"], ["experiment", "dmc-efficiency"]])
def test_help_states_each_default_once(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    for option in text.split(" --")[1:]:
        assert option.count("(default") <= 1, option


def test_help_shows_the_default_of_an_option_without_help_text(capsys):
    """``--dtype`` and ``--seed`` have no help text, and argparse then printed no default."""
    from deeplora.cli import build_parser

    defaults = build_parser(["complete"]).parse_args(["complete"])
    with pytest.raises(SystemExit):
        main(["complete", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"--dtype {{float32,float64}} (default: {defaults.dtype})" in text
    assert f"--seed SEED (default: {defaults.seed})" in text


def test_too_large_synthetic_problem_is_one_line_naming_what_fits(tmp_path, capsys, monkeypatch):
    import deeplora.memory

    monkeypatch.setattr(deeplora.memory, "available_bytes", lambda device=None: 2**30)
    out = tmp_path / "r.json"
    assert main(["complete", "--size", "100000", "--quiet", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == ("deeplora: error: --size 100000 --cols 100000 (compressed): the synthetic "
                   "problem needs about 312.9 GiB, 1.0 GiB available; the largest square "
                   "--size that fits is 5653\n")
    assert list(tmp_path.iterdir()) == []
    per_entry = 8 + 0.2 * 128  # randperm over m·n, then Ω's arrays and index: > 32 (dense SVD)
    assert per_entry * 5653**2 <= 2**30 < per_entry * 5654**2


def test_divergence_is_reported_in_json_and_exit_status(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["complete", "--size", "40", "--rank", "2", "--lr", "1e6", "--steps", "50",
                 "--quiet", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deeplora: run diverged: the train loss became ") and "--lr" in err
    assert err.count("\n") == 1  # one line, no warning besides it
    result = json.loads(out.read_text())  # valid JSON: no bare NaN/Infinity
    assert result["diverged"] is True and result["recovery_error"] is None


def _ratings(path, users, items):
    path.write_text("".join(f"{u}\t{i}\t{1 + (u * 7 + i) % 5}\t0\n" for u in users for i in items))
    return path


def test_ratings_divergence_fallback_count_and_bad_clip(tmp_path, capsys):
    train = _ratings(tmp_path / "train.tsv", range(12), range(10))
    test = _ratings(tmp_path / "test.tsv", range(8, 16), range(3))  # users 12-15 unknown
    out = tmp_path / "r.json"
    args = ["complete", "--ratings", str(train), "--test", str(test), "--rank", "2",
            "--steps", "20", "--quiet", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["n_fallback"] == 12 and result["diverged"] is False
    assert capsys.readouterr().err.startswith("12 of 24 test ratings (50%) have a user or item "
                                              "not in ")
    assert result["left_init"] is True and result["interaction_rms"] > 0
    assert main([*args, "--steps", "0"]) == 0  # a model of the biases alone: said, once
    assert json.loads(out.read_text())["left_init"] is False
    err = capsys.readouterr().err
    assert err.endswith("\ndeeplora: the fit never left its initialization (X = A Bᵀ moved by "
                        "RMS 0.0e+00 over the training ratings): its results are those of its "
                        'biases alone, no evidence for the deep model (the JSON says '
                        '"left_init": false). Penalty too strong, lr too small or too few '
                        "steps?\n") and err.count("\n") == 2
    assert main([*args, "--lr", "1e6"]) == 1
    assert json.loads(out.read_text())["diverged"] is True
    assert "deeplora: run diverged" in capsys.readouterr().err
    out.unlink()
    assert main([*args, "--clip", "5", "1"]) == 2
    assert capsys.readouterr().err == ("deeplora: error: --clip LOW HIGH needs finite LOW < "
                                       "HIGH, got 5 1\n")
    assert not out.exists()
    assert main([*args, "--clip", "10", "20"]) == 2  # the ratings are 1 to 5
    assert capsys.readouterr().err == ("deeplora: error: --clip 10 20 does not overlap the "
                                       "ratings' range [1, 5] (every prediction would be "
                                       "clipped to one value)\n")
    assert not out.exists()
    assert main([*args, "--clip", "2", "4"]) == 0  # narrowing is allowed
    assert json.loads(out.read_text())["clip"] == [2.0, 4.0]


@pytest.mark.parametrize("error, line", [
    (TypeError("bad\nthing"), "deeplora: internal error: TypeError: bad thing (set "
     "DEEPLORA_TRACEBACK=1 for the traceback)\n"),
    (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"),
     "deeplora: error: out of memory ([enforce fail] DefaultCPUAllocator: can't allocate "
     "memory: you tried); try smaller sizes\n"),
    (EOFError("Ran out of input"), "deeplora: error: Ran out of input\n"),
    (MemoryError(), "deeplora: error: MemoryError\n"),
])
def test_cli_boundary_never_prints_a_traceback(monkeypatch, capsys, error, line):
    import deeplora.cli.complete

    def fail(args):
        raise error

    monkeypatch.setattr(deeplora.cli.complete, "run", fail)
    monkeypatch.delenv("DEEPLORA_TRACEBACK", raising=False)
    assert main(["complete"]) == (1 if isinstance(error, TypeError) else 2)
    assert capsys.readouterr().err == line
    monkeypatch.setenv("DEEPLORA_TRACEBACK", "1")
    if isinstance(error, TypeError):
        with pytest.raises(TypeError):
            main(["complete"])


def test_ratings_ids_beyond_int64_are_labels_not_an_overflow(tmp_path, capsys):
    train = tmp_path / "big.tsv"
    train.write_text("".join(f"{u}\t{i}\t{1 + (k % 5)}\n" for k, (u, i) in enumerate(
        (u, i) for u in (1, 2, 3, 99999999999999999999999) for i in (7, 8, 9))))
    assert main(["complete", "--ratings", str(train), "--rank", "1", "--steps", "2",
                 "--quiet", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [4, 3]


@pytest.mark.parametrize("argv", [["complete", "--size", "20", "--rank", "2", "--seed"],
                                  ["recommend", "--ratings", "r.csv", "--output", "o.csv",
                                   "--seed"],
                                  ["experiment", "topk", "--seed"],
                                  ["experiment", "dmc-theory", "--seed"],
                                  ["experiment", "movielens", "--random-seeds", "0"]])
@pytest.mark.parametrize("value", ["-1", str(2**64 - 1), "1.5"])
def test_seed_out_of_range_names_the_option(capsys, argv, value):
    """They were 'deeplora: error: expected non-negative integer' or 'Overflow when unpacking
    long long', after the data was read."""
    with pytest.raises(SystemExit) as exit:
        main([*argv, value])
    assert exit.value.code == 2
    option = next(a for a in argv if a in ("--seed", "--random-seeds"))
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: argument {option}: must be an integer in [0, 2**32), got '{value}'")


def test_plot_takes_the_format_of_its_suffix_and_refuses_stdout(tmp_path, capsys, monkeypatch):
    """``--plot r.pdf`` wrote PNG bytes into r.pdf and ``--plot -`` a file named ``-``."""
    monkeypatch.chdir(tmp_path)
    args = ["complete", "--size", "20", "--rank", "2", "--steps", "5", "--quiet", "--plot"]
    for name, start in (("r.pdf", b"%PDF"), ("r.SVG", b"<?xml"), ("r", b"\x89PNG")):
        assert main([*args, name]) == 0
        assert (tmp_path / name).read_bytes().startswith(start)
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, error in (("-", "--plot -: a figure is written to a file, not to stdout; give a "
                              "file name"),
                        ("r.xyz", "cannot save a figure as 'r.xyz': unknown suffix .xyz "
                                  "(known: .png, .pdf, .svg,")):
        assert main([*args, name]) == 2
        assert capsys.readouterr().err.startswith(f"deeplora: error: {error}")
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_options_of_the_other_kind_of_run_are_refused(tmp_path, capsys):
    """With --ratings, --threads 0 was accepted and --lr-patience, --plot, --size, … ignored;
    without it, --test and --clip were ignored."""
    train = _ratings(tmp_path / "train.tsv", range(12), range(10))
    out = tmp_path / "r.json"
    ratings = ["complete", "--ratings", str(train), "--rank", "2", "--steps", "2", "--quiet",
               "--json", str(out)]
    for argv, error in (
            ([*ratings, "--threads", "0"], "--threads must be >= 1, got 0"),
            ([*ratings, "--lr-patience", "5", "--plot", "p.png", "--size", "50"],
             "--size --lr-patience --plot: only for the synthetic problem, not with --ratings"),
            (["complete", "--test", str(train), "--clip", "1", "5", "--json", str(out)],
             "--test --clip: only with --ratings")):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"deeplora: error: {error}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]
    assert main([*ratings, "--threads", "1"]) == 0
    assert json.loads(out.read_text())["rank"] == 2


def test_options_of_the_other_kind_of_run_are_refused_at_their_default(tmp_path, capsys):
    """They were refused only at another value than their default: ``--size 1000`` with
    --ratings and ``--format auto`` without it were silently ignored."""
    train = _ratings(tmp_path / "train.tsv", range(12), range(10))
    ratings = ["complete", "--ratings", str(train), "--rank", "2", "--steps", "2", "--quiet",
               "--json", str(tmp_path / "r.json")]
    for argv, error in (
            ([*ratings, "--size", "1000"], "--size: only for the synthetic problem, not with "
                                           "--ratings"),
            ([*ratings, "--tol", "1e-12", "--observed", "0.2", "--target-error", "0"],
             "--observed --tol --target-error: only for the synthetic problem, not with "
             "--ratings"),
            (["complete", "--format", "auto", "--json", str(tmp_path / "r.json")],
             "--format: only with --ratings")):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"deeplora: error: {error}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]


@pytest.mark.parametrize("flags, error", [
    (["--steps", "-1"], "--steps must be an integer >= 0, got -1"),
    (["--rank", "0"], "--rank must be an integer >= 1, got 0"),
    (["--assumed-rank", "0"], "--assumed-rank must be an integer >= 1, got 0"),  # was ignored
    (["--depth", "1"], "--depth must be an integer >= 2, got 1"),
    (["--eval-every", "0"], "--eval-every must be an integer >= 1, got 0"),
    (["--init-scale", "0"], "--init-scale must be a finite number > 0, got 0.0"),
    (["--gamma", "nan"], "--gamma must be a finite number >= 0, got nan"),
])
def test_ratings_errors_name_the_flag_not_the_parameter(tmp_path, capsys, flags, error):
    """They said max_steps, rank, eval_every, init_scale … (the estimator's parameters)."""
    train = _ratings(tmp_path / "train.tsv", range(12), range(10))
    assert main(["complete", "--ratings", str(train), "--quiet", "--json",
                 str(tmp_path / "r.json"), *flags]) == 2
    assert capsys.readouterr().err == f"deeplora: error: {error}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]
