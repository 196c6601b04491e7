"""The up-front cost line of a sweep: its arithmetic, its formatting and where it appears."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from deeplora.cli import main
from deeplora.finetune import runs
from deeplora.finetune.config import preset
from deeplora.finetune.estimate import Estimate, UnitCosts, duration, seconds_per_step

NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def estimate_numbers(stderr: str) -> list[float]:
    """The numbers of the one estimate line in ``stderr`` (before 'on this machine')."""
    lines = [line for line in stderr.splitlines() if line.startswith("deeplora: about ")]
    assert len(lines) == 1, stderr
    return [float(x) for x in NUMBER.findall(lines[0].split(" on this machine")[0])]


def test_line_multiplies_measured_unit_costs() -> None:
    costs = UnitCosts(setup_s=2.0, step_s=0.5, item_s=0.001, device="cpu")
    estimate = Estimate(runs=3, steps=1200, items=6000, item_label="dev rows evaluated",
                        costs=costs)
    assert estimate.seconds == pytest.approx(3 * 2.0 + 1200 * 0.5 + 6000 * 0.001)
    assert estimate.line() == ("deeplora: about 1200 train steps × 0.50 s + 6000 dev rows "
                               "evaluated × 0.0010 s + 3 runs × 2.0 s setup ≈ 10 min on this "
                               "machine (cpu)")
    halved = Estimate(3, 1200, 6000, "dev rows evaluated", costs, processes=2)
    assert halved.seconds == pytest.approx(estimate.seconds / 2)
    assert halved.line().endswith("in 2 processes")
    untrained = Estimate(1, 0, 10, "dev rows evaluated", UnitCosts(1.0, None, 0.1, "cpu"))
    assert "train steps" not in untrained.line() and "1 run × " in untrained.line()
    scored = Estimate(1, 10, 0, "test inputs", UnitCosts(1.0, 0.5, 0.1, "cpu", dev_s=0.25),
                      dev_items=8)
    assert scored.seconds == pytest.approx(1.0 + 10 * 0.5 + 8 * 0.25)
    assert "8 dev inputs scored × 0.25 s" in scored.line()


@pytest.mark.parametrize(("seconds", "text"),
                         [(0.2, "1 s"), (45, "45 s"), (600, "10 min"), (7560, "2.1 h")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_numbers_never_in_exponent_form() -> None:
    for value in (4.3e-5, 0.00043, 0.31, 1.3, 14.0, 130.0):
        line = Estimate(1, 1, 1, "x", UnitCosts(value, value, value, "cpu")).line()
        assert "e-" not in line and "e+" not in line
        assert all(x > 0 for x in estimate_numbers(line))


def test_seconds_per_step_times_the_last_step() -> None:
    taken = []
    steps = (taken.append(i) or i for i in range(10))
    assert seconds_per_step(steps, 2) >= 0 and taken == [0, 1]


def test_counts_pending_steps_and_evaluations(glue_dir: Path, tiny_model: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    probed = []
    costs = UnitCosts(1.0, 0.5, 0.01, "cpu")
    monkeypatch.setattr(runs, "measure_costs", lambda *args: probed.append(args[:2]) or costs)
    zero = preset("practical", model=tiny_model, method="zero-shot", steps=0, samples=4)
    every = preset("practical", model=tiny_model, steps=10, samples=4, eval_every=4,
                   dev_samples=8)
    pairs = [(zero, 0), (every, 0), (every, 1)]
    estimate = runs.estimate(pairs, tmp_path, glue_dir)
    assert probed == [(every, 0)]  # the first pending run that trains
    # zero-shot: 40 dev rows once; each trained run: 8 rows at steps 0, 4, 8 and the end
    assert (estimate.runs, estimate.steps, estimate.items) == (3, 20, 40 + 2 * 4 * 8)
    held = replace(every, heldout_samples=6)  # scored beside the dev rows at each evaluation
    assert runs.estimate([(held, 0)], tmp_path, glue_dir).items == 4 * (8 + 6)
    done = runs.result_path(tmp_path, every, 1)
    done.parent.mkdir(parents=True)
    done.write_text('{"config": {}, "seed": 1, "metrics": {}')  # cut short: runs again
    assert runs.estimate(pairs, tmp_path, glue_dir).runs == 3
    assert not done.exists() and done.with_name("seed-1.json.invalid").is_file()
    done.write_text(json.dumps({key: {} for key in runs.RESULT_KEYS}))
    assert runs.estimate(pairs, tmp_path, glue_dir).runs == 2
    assert runs.estimate(pairs[2:], tmp_path, glue_dir) is None


def test_cli_prints_the_estimate_before_training_and_bars_on_stderr(
        glue_dir: Path, tiny_model: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", "--task", "mrpc", "--method", "deep-lora", "--model", tiny_model,
            "--samples", "4", "--steps", "3", "--seeds", "0", "--dev-samples", "8",
            "--data-dir", str(glue_dir), "--preset", "practical"]
    assert main([*argv, "--out", str(tmp_path / "loud")]) == 0
    out, err = capsys.readouterr()
    numbers = estimate_numbers(err)
    assert numbers and all(x > 0 and math.isfinite(x) for x in numbers)
    assert numbers[0] == 3  # train steps
    assert err.index("deeplora: about ") < err.index("deep-lora seed 0:")  # the training bar
    assert "%|" in err and "%|" not in out and "deeplora: about" not in out
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
