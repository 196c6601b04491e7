"""dmc-lag: a --fast run, its report rebuilt from the per-problem files, and the d = 200 cells'
step scale."""

import json

import pytest

from deeplora.cli import main
from tests.experiments.refusals import assert_fast_refused

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dmc_lag_fast(tmp_path):
    from deeplora.experiments.dmc_lag import FAST_LAG_GRID, lag_report

    assert main(["experiment", "dmc-lag", "--fast", "--out", str(tmp_path)]) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*.json"))]
    assert len(records) == len(FAST_LAG_GRID)
    for record in records:
        assert 0 < record["subspace_miss_at_init"] < 1
        assert record["original"]["outcome"] == "recovered"
        for run in record["compressed"].values():
            assert run["left_init"] and run["curve"]["steps"][0] == 0
            steps = [step for step, _ in run["gap"]]
            assert steps == sorted(steps) and steps[0] == 0 and len(steps) > 1
            assert all(gap >= 0 for _, gap in run["gap"])
    first = json.loads((tmp_path / "runs" / "d16-r2-p0.6-lr0.05-s0.json").read_text())
    assert set(first["compressed"]) == {"0.01", "0.1"}
    report = (tmp_path / "dmc-lag.md").read_text()
    assert report == lag_report(records) and report.count("| 16, 2, ") == 3
    assert (tmp_path / "dmc-lag.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "dmc-lag.md").unlink()
    assert main(["experiment", "dmc-lag", "--fast", "--report-only", "--out",
                 str(tmp_path)]) == 0
    assert (tmp_path / "dmc-lag.md").read_text() == report


def test_lag_report_leaves_out_the_snapshots_of_a_run_that_diverged_there(tmp_path):
    """A run diverging at a snapshot step records its gap and subspace miss there as null
    (non-finite): the report's minima leave them out instead of failing on None < float."""
    from deeplora.experiments.dmc_lag import _plot_lag, lag_report

    assert main(["experiment", "dmc-lag", "--fast", "--cells", "d16-r2-p0.6-lr0.05", "--out",
                 str(tmp_path)]) == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    report = lag_report([record])
    for run in record["compressed"].values():
        run["gap"].append([run["gap"][-1][0] + 100, None])
    record["original_outside"].append([record["original_outside"][-1][0] + 100, None])
    assert lag_report([record]) == report
    _plot_lag([record], tmp_path / "diverged.png")
    assert (tmp_path / "diverged.png").read_bytes()[:4] == b"\x89PNG"


def test_dmc_lag_draws_a_report_without_the_gamma_cells(tmp_path):
    """Only some groups run (here r/d): the figure leaves out the panels of the others
    instead of failing on the missing γ cells."""
    assert main(["experiment", "dmc-lag", "--fast", "--groups", "r/d", "--out",
                 str(tmp_path)]) == 0
    assert (tmp_path / "dmc-lag.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 16, 2, 80% |" in (tmp_path / "dmc-lag.md").read_text()


def test_dmc_lag_reports_only_the_runs_of_its_settings(tmp_path, capsys):
    """Problems in out/runs from a call with other settings (here --steps) are not mixed into
    the report: left out with a line; none of these settings is an error."""
    assert main(["experiment", "dmc-lag", "--fast", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["experiment", "dmc-lag", "--fast", "--steps", "300", "--groups", "gamma",
                 "--out", str(tmp_path)]) == 0
    assert "1 of the 2 problems in " in capsys.readouterr().err
    report = (tmp_path / "dmc-lag.md").read_text()
    assert "| 16, 2, 60% |" in report and "| 16, 2, 80% |" not in report
    assert main(["experiment", "dmc-lag", "--report-only", "--out", str(tmp_path)]) == 2
    assert "runs: no runs of these settings (run dmc-lag without --report-only first, or give " \
        "the flags the runs were made with)" in capsys.readouterr().err
    assert (tmp_path / "dmc-lag.md").read_text() == report


def test_dmc_lag_reruns_a_problem_whose_file_is_not_a_run(tmp_path, capsys):
    """A per-problem file cut short (an interrupted write, an edit) is set aside as
    ``.invalid`` with a line naming it and its problem runs again; under --report-only it is a
    one-line error naming the file."""
    argv = ["experiment", "dmc-lag", "--fast", "--cells", "d16-r2-p0.6-lr0.05", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    path = tmp_path / "runs" / "d16-r2-p0.6-lr0.05-s0.json"
    finished = json.loads(path.read_text())
    cut = path.read_text()[:200]
    path.write_text(cut)
    capsys.readouterr()
    assert main(["experiment", "dmc-lag", "--fast", "--report-only", "--out",
                 str(tmp_path)]) == 2
    assert f"{path}: not a file of `deeplora experiment dmc-lag` (not valid JSON" in \
        capsys.readouterr().err
    assert main(argv) == 0
    assert f"{path} is not a valid result" in capsys.readouterr().err
    assert path.with_name(path.name + ".invalid").read_text() == cut
    assert json.loads(path.read_text())["original"]["curve"] == finished["original"]["curve"]


def test_d200_cells_match_the_reference_cells_rate() -> None:
    """The d = 200 cells' step × gives GD the top-mode rate η·σ₁^{4/3}·p/d² of the reference
    cell (d, r, p) = (100, 10, 25 %) at the authors' step, with the targets' own σ₁ (within
    5 %); the unscaled d = 200 cell is 5× slower."""
    import torch

    from deeplora.completion import random_low_rank
    from deeplora.experiments.dmc_lag import LAG_GRID

    def sigma(size: int, rank: int) -> float:
        return sum(float(torch.linalg.matrix_norm(random_low_rank(size, size, rank, seed=s)
                                                  .dense(), ord=2)) for s in range(3)) / 3

    def rate(cell) -> float:
        return (cell.lr_scale * cell.fraction * sigma(cell.size, cell.rank) ** (4 / 3)
                / cell.size ** 2)

    reference = next(c for c in LAG_GRID if (c.size, c.rank, c.fraction, c.lr_scale)
                     == (100, 10, 0.25, 1.0))
    cells = [c for c in LAG_GRID if c.size == 200]
    scaled = [c for c in cells if c.lr_scale != 1]
    assert len(scaled) == 2 and {(c.rank, c.fraction) for c in scaled} == {(10, 0.125),
                                                                           (20, 0.25)}
    for cell in scaled:
        assert rate(cell) == pytest.approx(rate(reference), rel=0.05)
    (plain,) = [c for c in cells if c.lr_scale == 1]
    assert rate(plain) < rate(reference) / 4


@pytest.mark.parametrize(("flags", "named"), [
    (["--seeds", "3"], "--seeds"),  # the default
    (["--init-scale", "1e-3", "--stall-window", "500"], "--stall-window and --init-scale"),
])
def test_dmc_lag_fast_refuses_the_flags_it_would_override(tmp_path, capsys, flags, named):
    """``--fast`` runs one problem per cell of FAST_LAG_GRID from ε = 0.05 with a stall window
    of 100: it ignored ``--seeds``, ``--init-scale`` and ``--stall-window``."""
    assert_fast_refused(tmp_path, capsys, "dmc-lag", flags, "problems (FAST_LAG_GRID: "
                        "d = 16, r = 2; one seed, ε = 0.05, stall window 100)", named)


def test_dmc_lag_fast_honours_steps(tmp_path):
    """``--fast`` capped ``--steps`` at 400 (a given 500 ran 400 steps); given, it is used."""
    assert main(["experiment", "dmc-lag", "--fast", "--steps", "500", "--cells",
                 "d16-r2-p0.6-lr0.05", "--out", str(tmp_path)]) == 0
    (run,) = (tmp_path / "runs").glob("*.json")
    assert json.loads(run.read_text())["settings"]["steps"] == 500
