import json

import pytest

from deeplora.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dmc_theory_fast(tmp_path):
    assert main(["experiment", "dmc-theory", "--fast", "--size", "30", "--out",
                 str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-theory.json").read_text())
    assert summary["max_deviation"] < 1e-9
    assert summary["smallest_equal_group"] == [24, 24, 24]
    assert (tmp_path / "dmc-theory.png").read_bytes()[:4] == b"\x89PNG"


def test_dmc_efficiency_fast(tmp_path):
    assert main(["experiment", "dmc-efficiency", "--fast", "--methods", "compressed", "narrow",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "dmc-efficiency.json").read_text())
    assert set(summary["methods"]) == {"compressed", "narrow"}
    assert summary["methods"]["compressed"]["final_error"] < 1e-2
    assert (tmp_path / "dmc-efficiency.png").read_bytes()[:4] == b"\x89PNG"
