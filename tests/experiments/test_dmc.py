import json

import pytest

from deeplora.cli import main
from tests.experiments.refusals import assert_fast_refused

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dmc_theory_fast(tmp_path):
    assert main(["experiment", "dmc-theory", "--fast", "--size", "30", "--out",
                 str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-theory.json").read_text())
    assert summary["max_deviation"] < 1e-9
    assert summary["left_init"] and summary["record"]["error"][-1] < 1e-2  # not trivially
    assert summary["smallest_equal_group"] == [24, 24, 24]
    assert (tmp_path / "dmc-theory.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("lr", "diverged"), [(1e-9, False), (100.0, True)])
def test_dmc_theory_flags_a_run_that_never_left_its_initialization_or_diverged(
        tmp_path, lr, diverged):
    """A GD step too small to move (train loss never halved: the equal singular values hold
    trivially) or so large that it diverges (it crashed in the SVD of a non-finite layer) is a
    result, flagged in the JSON and the figure."""
    assert main(["experiment", "dmc-theory", "--size", "12", "--rank", "2", "--lr", str(lr),
                 "--steps", "60", "--every", "10", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-theory.json").read_text())
    assert summary["left_init"] is False
    assert (summary["diverged_at_step"] is not None) == diverged
    record = summary["record"]
    assert len(record["train_loss"]) == len(record["steps"]) == len(record["singular_values"])
    assert (tmp_path / "dmc-theory.png").read_bytes()[:4] == b"\x89PNG"


def test_dmc_efficiency_fast(tmp_path):
    assert main(["experiment", "dmc-efficiency", "--fast", "--adam-methods", "compressed",
                 "narrow", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-efficiency.json").read_text())
    assert summary["ranks"] == [2, 4]
    assert summary["tol_ours"] == pytest.approx(summary["tol_authors"] / 0.6, rel=1e-2)
    for method in ("compressed", "narrow"):
        for rank in ("2", "4"):
            run = summary["gd"][method][rank]
            assert run["reached_tol"] and run["left_init"] and not run["diverged"]
            assert run["steps"] == run["history"]["steps"][-1] > 0
            assert run["history"]["train_loss"][-1] <= summary["tol_ours"]
            assert run["final_error"] < 0.05
    assert set(summary["adam"]) == {"compressed", "narrow"}
    for name in ("dmc-efficiency.png", "dmc-efficiency-adam.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_dmc_efficiency_resumes_finished_ranks(tmp_path, monkeypatch):
    """An interrupted d = 1000 sweep keeps its finished r̂: a rerun with the same settings
    measures only the missing ones; other settings start over."""
    import deeplora.experiments.dmc as dmc

    argv = ["experiment", "dmc-efficiency", "--fast", "--adam-steps", "0", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    path = tmp_path / "dmc-efficiency.json"
    first = json.loads(path.read_text())
    del first["gd"]["compressed"]["4"], first["gd"]["narrow"]["4"]  # as if stopped after r̂ = 2
    path.write_text(json.dumps(first))
    calls = []
    run_gd = dmc.run_gd
    monkeypatch.setattr(dmc, "run_gd", lambda *a, **k: calls.append(a[0]) or run_gd(*a, **k))
    assert main(argv) == 0
    assert len(calls) == 2  # r̂ = 4, both methods
    again = json.loads(path.read_text())
    assert again["gd"]["narrow"]["2"] == first["gd"]["narrow"]["2"]
    assert set(again["gd"]["narrow"]) == {"2", "4"}
    assert main([*argv, "--seed", "1"]) == 0
    assert len(calls) == 2 + 4  # another problem: every r̂ again


def test_dmc_efficiency_resumes_only_at_the_same_evaluation_interval(tmp_path, monkeypatch):
    """The interval between recovery-error evaluations (10 GD steps with ``--fast``, else 100)
    sets ``steps_to_1e-2`` and the histories; a run with every other setting equal resumed the
    other interval's r̂ and mixed the two. A file without the interval (older) runs again."""
    import deeplora.experiments.dmc as dmc

    fast = ["experiment", "dmc-efficiency", "--fast", "--ranks", "2", "--adam-steps", "0",
            "--out", str(tmp_path)]
    same = ["experiment", "dmc-efficiency", "--size", "24", "--rank", "2", "--observed", "0.6",
            "--init-scale", "0.05", "--lr", "10", "--tol", "1e-6", "--ranks", "2",
            "--adam-steps", "0", "--out", str(tmp_path)]  # --fast's settings, spelled out
    path = tmp_path / "dmc-efficiency.json"
    assert main(fast) == 0
    calls = []
    run_gd = dmc.run_gd
    monkeypatch.setattr(dmc, "run_gd", lambda *a, **k: calls.append(a[6]) or run_gd(*a, **k))
    assert main(same) == 0
    assert calls == [100, 100]  # both methods again, evaluated every 100 steps
    assert json.loads(path.read_text())["gd_eval_every"] == 100
    assert main(same) == 0 and len(calls) == 2  # same interval: resumed
    older = json.loads(path.read_text())
    del older["gd_eval_every"]
    path.write_text(json.dumps(older))
    assert main(same) == 0 and calls == [100] * 4


@pytest.mark.parametrize(("name", "flags", "outcome"), [
    ("dmc-efficiency", ["--ranks", "2", "--adam-steps", "0"],
     lambda result: result["gd"]["narrow"]["2"]["steps"]),
    ("dmc-depth", ["--depths", "2", "--methods", "original"],
     lambda result: [run["final_error"] for run in result["runs"]]),
])
def test_a_sweep_whose_file_is_not_a_result_runs_again(tmp_path, capsys, name, flags, outcome):
    """The sweep's JSON cut short (an interrupted write, an edit) is set aside as ``.invalid``
    with a line naming it, and every run runs again, with the same outcome."""
    argv = ["experiment", name, "--fast", *flags, "--out", str(tmp_path)]
    assert main(argv) == 0
    path = tmp_path / f"{name}.json"
    finished = json.loads(path.read_text())
    path.write_text(path.read_text()[:100])
    capsys.readouterr()
    assert main(argv) == 0
    assert f"{path} is not a valid result" in capsys.readouterr().err
    assert path.with_name(f"{name}.json.invalid").stat().st_size == 100
    assert outcome(json.loads(path.read_text())) == outcome(finished)


@pytest.mark.parametrize(("args", "why"), [(["--max-steps", "2"], "never left init"),
                                           (["--tol", "1e3"], "never left init"),
                                           (["--lr", "1e4"], "diverged")])
def test_dmc_efficiency_figure_says_why_a_run_missed_the_tolerance(tmp_path, monkeypatch, args,
                                                                    why):
    """A GD run that never left its initialization (out of steps, or within the tolerance from
    the start: "reached" at step 0) or diverged is labelled so in the figure, not as a run out
    of budget nor as one that reached the tolerance."""
    import deeplora.experiments.dmc as dmc

    labels = []
    save_figure = dmc.save_figure
    monkeypatch.setattr(dmc, "save_figure", lambda fig, path: labels.extend(
        t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
        or save_figure(fig, path))
    assert main(["experiment", "dmc-efficiency", "--fast", "--ranks", "2", "--adam-steps", "0",
                 *args, "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "dmc-efficiency.json").read_text())["gd"]
    assert {runs[method]["2"]["outcome"] for method in runs} == {why}
    assert set(labels) == {f"{method}: {why}" for method in runs}


def test_dmc_depth_fast(tmp_path):
    from deeplora.experiments.dmc import OUTCOMES, depth_report

    assert main(["experiment", "dmc-depth", "--fast", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-depth.json").read_text())
    cells = {(run["fraction"], run["depth"], run["method"]) for run in summary["runs"]}
    assert cells == {(f, d, m) for f in (0.4, 0.8) for d in (2, 3)
                     for m in ("original", "compressed")}
    for run in summary["runs"]:
        assert run["lr"] == pytest.approx(0.05 * {2: 1e2, 3: 3e2}[run["depth"]] * run["fraction"],
                                          rel=0.01)
        assert run["left_init"] and not run["diverged"] and run["final_error"] < 1.0
        assert run["outcome"] in OUTCOMES and run["outcome"] != "never left init"
        assert (run["outcome"] == "recovered") == (run["final_error"] <= 1e-2)
        if run["outcome"] == "budget":
            assert run["steps_run"] == summary["steps"] and not run["stalled"]
    report = (tmp_path / "dmc-depth.md").read_text()
    assert report == depth_report(summary)
    assert f"All {len(summary['runs'])} runs:" in report
    assert (tmp_path / "dmc-depth.png").read_bytes()[:4] == b"\x89PNG"


def test_dmc_depth_flags_runs_that_never_left_the_initialization(tmp_path):
    assert main(["experiment", "dmc-depth", "--fast", "--steps", "2", "--depths", "3",
                 "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "dmc-depth.json").read_text())["runs"]
    assert runs and {run["outcome"] for run in runs} == {"never left init"}
    assert "never left init" in (tmp_path / "dmc-depth.md").read_text()


def test_dmc_depth_resumes_finished_runs(tmp_path, monkeypatch):
    import deeplora.experiments.dmc as dmc

    argv = ["experiment", "dmc-depth", "--fast", "--depths", "2", "--methods", "compressed",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    calls = []
    run_gd = dmc.run_gd
    monkeypatch.setattr(dmc, "run_gd", lambda *a, **k: calls.append(a[0]) or run_gd(*a, **k))
    assert main(argv) == 0
    assert calls == []  # both fractions from the earlier call
    assert main([*argv, "--stall-rtol", "0.1"]) == 0
    assert len(calls) == 2  # other settings: run again


def test_dmc_depth_keeps_the_runs_a_call_does_not_select(tmp_path, monkeypatch):
    """A call for some depths after one for others (same settings) adds its runs to those
    already in dmc-depth.json instead of dropping them."""
    import deeplora.experiments.dmc as dmc

    argv = ["experiment", "dmc-depth", "--fast", "--methods", "compressed", "--out",
            str(tmp_path)]
    assert main([*argv, "--depths", "2"]) == 0
    path = tmp_path / "dmc-depth.json"
    first = json.loads(path.read_text())["runs"]
    assert main([*argv, "--depths", "3"]) == 0
    summary = json.loads(path.read_text())
    assert [run for run in summary["runs"] if run["depth"] == 2] == first
    assert {run["depth"] for run in summary["runs"]} == {2, 3} and len(summary["runs"]) == 4
    assert "| L = 2, compressed |" in (tmp_path / "dmc-depth.md").read_text()
    monkeypatch.setattr(dmc, "run_gd", None)  # all four from the file now
    assert main([*argv, "--depths", "2", "3"]) == 0
    assert len(json.loads(path.read_text())["runs"]) == 4


def test_dmc_depth_report_only_redraws_from_the_json(tmp_path, monkeypatch):
    import deeplora.experiments.dmc as dmc

    assert main(["experiment", "dmc-depth", "--fast", "--depths", "3", "--out",
                 str(tmp_path)]) == 0
    report = (tmp_path / "dmc-depth.md").read_text()
    (tmp_path / "dmc-depth.md").unlink()
    monkeypatch.setattr(dmc, "run_gd", None)  # nothing may run
    assert main(["experiment", "dmc-depth", "--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "dmc-depth.md").read_text() == report


def test_dmc_depth_report_only_names_a_missing_or_broken_file(tmp_path, capsys):
    path = tmp_path / "dmc-depth.json"
    assert main(["experiment", "dmc-depth", "--report-only", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"deeplora: error: {path}: no such file (run dmc-depth "
                                       "without --report-only first)\n")
    assert list(tmp_path.iterdir()) == []
    path.write_text('{"size": 16, "rank"')
    assert main(["experiment", "dmc-depth", "--report-only", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(
        f"deeplora: error: {path}: not a result of `deeplora experiment dmc-depth` (not valid "
        "JSON")
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("name", ["dmc-depth", "dmc-lag"])
def test_dmc_reports_are_written_atomically(tmp_path, monkeypatch, name):
    """A report write cut short (full disk, a kill) leaves the earlier report whole."""
    import pathlib

    assert main(["experiment", name, "--fast", "--out", str(tmp_path)]) == 0
    report = (tmp_path / f"{name}.md").read_text()
    write_text = pathlib.Path.write_text

    def cut_short(path, text, *args, **kwargs):
        if f"{name}.md" in path.name:
            write_text(path, text[:10], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", cut_short)
    assert main(["experiment", name, "--fast", "--report-only", "--out", str(tmp_path)]) == 2
    assert (tmp_path / f"{name}.md").read_text() == report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_defaults_are_the_papers_settings():
    """PAPER.md, Sec. 3: d = 1000, r = 5, 20 % observed, L = 3, ε = 1e-3, r̂ from 5 to 20,
    tolerance 1e-10; the depth comparison at d = 100, r = 10, 30 % observed, η = 3e2 (L = 3)
    and 1e2 (L = 2)."""
    from deeplora.experiments import load_all
    from deeplora.experiments.dmc import AUTHORS_DEPTH_STEP

    def defaults(name):
        return {arg.flag: arg.kwargs.get("default") for arg in load_all()[name].arguments}

    efficiency = defaults("dmc-efficiency")
    assert {flag: efficiency[flag] for flag in ("--size", "--rank", "--observed", "--depth",
                                                "--init-scale", "--tol")} == {
        "--size": 1000, "--rank": 5, "--observed": 0.2, "--depth": 3, "--init-scale": 1e-3,
        "--tol": 1e-10}
    assert min(efficiency["--ranks"]) == 5 and max(efficiency["--ranks"]) == 20
    depth = defaults("dmc-depth")
    assert (depth["--size"], depth["--rank"], depth["--init-scale"]) == (100, 10, 1e-3)
    assert 0.3 in depth["--fractions"] and depth["--depths"] == [2, 3]
    assert AUTHORS_DEPTH_STEP == {2: 1e2, 3: 3e2}


@pytest.mark.parametrize(("flags", "named"), [
    (["--steps", "500"], "--steps"),
    (["--every", "100", "--init-scale", "1e-3"], "--init-scale and --every"),  # the defaults
])
def test_dmc_theory_fast_refuses_the_flags_it_would_override(tmp_path, capsys, flags, named):
    """``--fast`` runs 3000 steps recorded every 50 from ε = 0.01: it ignored ``--steps``,
    ``--every`` and ``--init-scale``."""
    assert_fast_refused(tmp_path, capsys, "dmc-theory", flags, "steps and initialization "
                        "(3000 steps recorded every 50, ε = 0.01)", named)


@pytest.mark.parametrize(("flags", "named"), [
    (["--size", "200"], "--size"),
    (["--observed", "0.2", "--rank", "5"], "--rank and --observed"),
    (["--init-scale", "1e-3"], "--init-scale"),  # the default
])
def test_dmc_efficiency_fast_refuses_the_flags_it_would_override(tmp_path, capsys, flags,
                                                                 named):
    """``--fast`` runs its own 24×24 rank-2 problem, 60 % observed, from ε = 0.05: it ignored
    ``--size``, ``--rank``, ``--observed`` and ``--init-scale``."""
    assert_fast_refused(tmp_path, capsys, "dmc-efficiency", flags,
                        "problem (24×24, rank 2, 60 % observed, ε = 0.05)", named)


def test_dmc_efficiency_fast_honours_ranks_tol_and_adam_steps(tmp_path, capsys):
    """``--fast`` ran r̂ ∈ {2, 4} whatever ``--ranks``, and at most 200 Adam steps and a
    tolerance of at least 1e-6 whatever ``--adam-steps`` and ``--tol``; given, they are used
    (``--ranks`` up to the 24×24 problem's 12)."""
    assert main(["experiment", "dmc-efficiency", "--fast", "--ranks", "2", "--tol", "1e-7",
                 "--adam-steps", "250", "--adam-methods", "narrow", "--out",
                 str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-efficiency.json").read_text())
    assert (summary["ranks"], summary["tol_authors"], summary["adam_steps"]) == ([2], 1e-7, 250)
    assert set(summary["gd"]["narrow"]) == {"2"} and set(summary["adam"]) == {"narrow"}
    assert main(["experiment", "dmc-efficiency", "--fast", "--ranks", "13", "--out",
                 str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.endswith(
        "deeplora: error: --ranks must be an integer in [1, 12], got 13\n")


@pytest.mark.parametrize(("flags", "named"), [
    (["--fractions", "0.5"], "--fractions"),
    (["--seeds", "3", "--size", "100", "--stall-window", "50000"],
     "--size, --seeds and --stall-window"),  # --seeds and --stall-window at their defaults
    (["--lr-scale", "1", "--rank", "3", "--init-scale", "0.01"],
     "--rank, --init-scale and --lr-scale"),
])
def test_dmc_depth_fast_refuses_the_flags_it_would_override(tmp_path, capsys, flags, named):
    """``--fast`` runs its own problems (16×16, rank 2, fractions 0.4 and 0.8, one seed) from
    ε = 0.05 at the authors' steps × 0.05 with a stall window of 100: it ignored the flags of
    these."""
    out = tmp_path / "depth"
    assert main(["experiment", "dmc-depth", "--fast", *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "deeplora: error: --fast runs a smoke test of its own problems and steps (16×16, rank 2, "
        "fractions 0.4 and 0.8, one seed, ε = 0.05, steps × 0.05, stall window 100): drop "
        f"{named} or --fast\n")
    assert list(tmp_path.iterdir()) == []


def test_dmc_depth_fast_honours_steps(tmp_path):
    """``--fast`` capped ``--steps`` at 300 (a given 400 ran 300 steps); given, it is used."""
    assert main(["experiment", "dmc-depth", "--fast", "--steps", "400", "--depths", "2",
                 "--methods", "original", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "dmc-depth.json").read_text())["steps"] == 400
