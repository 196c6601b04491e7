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
