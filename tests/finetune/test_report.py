"""Summary statistics of fine-tuning sweeps: means, paired differences, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from deeplora.finetune.config import preset
from deeplora.finetune.report import bootstrap_ci, markdown, summarize
from deeplora.finetune.sweep import Cell


def _result(method: str, seed: int, pearson: float) -> dict:
    return {"config": preset("paper", method=method).to_dict(), "seed": seed,
            "metrics": {"pearson": pearson}, "wall_time_s": 1.0}


def test_paired_difference_and_bootstrap() -> None:
    deep = [0.5, 0.7, 0.6, 0.9]
    lora = [0.4, 0.5, 0.6, 0.6]
    results = [
        (Cell(preset("paper", method=m), (0, 1, 2, 3), {"method": m, "head": "cross"}),
         [_result(m, s, v[s]) for s in range(4)])
        for m, v in (("deep-lora", deep), ("lora", lora))
    ]
    summary = summarize(results)
    row = summary["rows"][0]
    assert row["mean"] == pytest.approx(0.675) and row["std"] == pytest.approx(np.std(deep, ddof=1))
    (diff,) = summary["differences"]
    assert diff["values"] == pytest.approx([0.1, 0.2, 0.0, 0.3])
    assert diff["mean"] == pytest.approx(0.15)
    assert 0.0 <= diff["ci_low"] < 0.15 < diff["ci_high"] <= 0.3
    assert all(np.isnan(bootstrap_ci([0.2])))
    text = markdown("t", summary)
    assert "| head=cross | 2 | +0.1500 |" not in text  # 4 pairs, not 2
    assert "| head=cross | 4 | +0.1500 |" in text


def _trained(method: str, seed: int, sigma: float, pearson: float = 0.5) -> dict:
    result = _result(method, seed, pearson)
    result["layers"] = {f"l{i}": {"sigma_max": sigma * (i + 1), "singular_values": [sigma],
                                  "numerical_rank": 1} for i in range(3)}
    return result


def test_runs_that_never_left_the_init_are_marked_and_left_out() -> None:
    from deeplora.finetune.report import did_not_train, untrained_threshold

    config = preset("paper", method="deep-lora").to_dict()
    assert untrained_threshold(config) == pytest.approx(1e-8)  # 10·ε³
    assert untrained_threshold(preset("paper", method="lora").to_dict()) == pytest.approx(1e-5)
    assert did_not_train(_trained("deep-lora", 0, 1e-9))  # σ₁ ≈ ε³: still at the init
    assert not did_not_train(_trained("deep-lora", 0, 5e-9))  # one layer above 1e-8
    assert not did_not_train(_result("zero-shot", 0, 0.8))
    results = [
        (Cell(preset("paper", method="deep-lora"), (0, 1, 2), {"method": "deep-lora",
                                                              "head": "bi"}),
         [_trained("deep-lora", 0, 1e-9, 0.9), _trained("deep-lora", 1, 1e-2, 0.7),
          _trained("deep-lora", 2, 1e-2, 0.6)]),
        (Cell(preset("paper", method="lora"), (0, 1, 2), {"method": "lora", "head": "bi"}),
         [_trained("lora", s, 1e-2, 0.5) for s in range(3)]),
    ]
    summary = summarize(results)
    assert [row["did_not_train"] for row in summary["rows"]] == [1, 0]
    (diff,) = summary["differences"]
    assert diff["seeds"] == [1, 2] and diff["untrained_seeds"] == [0]
    assert diff["mean"] == pytest.approx(0.15)
    text = markdown("t", summary)
    assert "| 1 of 3 |" in text and "did not train: seeds [0]" in text
    assert "| 1.0e-02 | 1 of 3 |" in text  # median σ₁ over runs and layers
    stuck = [(cell, [_trained(cell.labels["method"], 0, 1e-9)]) for cell, _ in results[:1]]
    assert "**all 1: no conclusion**" in markdown("t", summarize(stuck))


def test_runs_without_a_metric_are_left_out_of_the_pairs_and_said() -> None:
    deep = [_result("deep-lora", 0, 0.5), _result("deep-lora", 1, 0.6),
            {**_result("deep-lora", 2, 0.0), "metrics": {}, "status": "diverged"},
            _result("deep-lora", 3, float("nan"))]  # constant prediction
    lora = [_result("lora", s, 0.4) for s in range(4)]
    results = [(Cell(preset("paper", method=m), (0, 1, 2, 3), {"method": m, "head": "cross"}),
                runs) for m, runs in (("deep-lora", deep), ("lora", lora))]
    summary = summarize(results)
    assert summary["rows"][0]["no_metric"] == 2 and summary["rows"][1]["no_metric"] == 0
    (diff,) = summary["differences"]
    assert diff["seeds"] == [0, 1] and diff["n"] == 2 and diff["undefined_seeds"] == [2, 3]
    assert diff["values"] == pytest.approx([0.1, 0.2]) and diff["mean"] == pytest.approx(0.15)
    text = markdown("t", summary)
    assert "| 4 (2 without a metric) | 0.5500 ± 0.0707 |" in text
    assert "| head=cross | 2 | +0.1500 |" in text  # 2 pairs, not 4
    assert "no metric (diverged or constant output): seeds [2, 3]" in text
