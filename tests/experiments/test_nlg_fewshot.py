"""The ``nlg-fewshot`` report: runs that did not fit their training examples are marked and
left out of the paired comparison; the ``cpu`` preset's Adam eps."""

from __future__ import annotations

from typing import Any

import pytest

from deeplora.experiments.nlg_fewshot import fitted, loss_quarters, markdown_nlg, summarize_nlg
from deeplora.finetune.data import DataError
from deeplora.nlg.config import nlg_preset
from deeplora.nlg.metrics import METRICS

PLATEAU = [2.40, 2.41, 2.39, 2.38, 2.37, 2.37, 2.38, 2.36]  # the old cpu preset's Deep LoRA
FIT = [2.7, 2.5, 2.0, 1.5, 1.0, 0.6, 0.4, 0.3]


def _run(seed: int, losses: list[float], bleu: float) -> dict[str, Any]:
    return {"seed": seed, "train_loss": losses, "left_init": True, "wall_time_s": 1.0,
            "mrs": ["name[A]"], "predictions": [f"A {bleu}"],
            "metrics": {name: bleu for name in METRICS}}


def test_loss_quarters_and_fitted() -> None:
    assert loss_quarters(FIT) == pytest.approx((2.6, 0.35))
    assert loss_quarters([3.0]) == (3.0, 3.0)
    assert fitted(_run(0, FIT, 0.0)) and not fitted(_run(0, PLATEAU, 0.0))
    assert not fitted(_run(0, [], 0.0))


def test_pairs_only_seeds_where_both_fitted() -> None:
    deep, lora = nlg_preset("cpu", method="deep-lora"), nlg_preset("cpu", method="lora")
    results = [(deep, [_run(0, PLATEAU, 10.0), _run(1, FIT, 20.0), _run(2, FIT, 30.0)]),
               (lora, [_run(0, FIT, 40.0), _run(1, FIT, 15.0), _run(2, FIT, 20.0)])]
    summary = summarize_nlg(results)
    bleu = next(d for d in summary["differences"] if d["metric"] == "bleu")
    assert bleu["seeds"] == [1, 2] and bleu["values"] == [5.0, 10.0]
    rows = {row["method"]: row for row in summary["rows"]}
    assert rows["deep-lora"]["fitted"] == 2 and rows["lora"]["fitted"] == 3
    text = markdown_nlg("nlg-fewshot", summary)
    assert "| Deep LoRA | 3 |" in text and "| 2/3 | 3/3 |" in text
    assert "| bleu | 2 | +7.50 |" in text


def test_cpu_preset_scales_adam_eps_to_the_factor_gradients() -> None:
    assert nlg_preset("cpu").adam_eps == pytest.approx(1e-12)  # 1e-6·ε^(L-1), ε=1e-3, L=3
    assert nlg_preset("cpu", init_scale=1e-2, depth=2).adam_eps == pytest.approx(1e-8)
    assert nlg_preset("cpu", adam_eps=1e-8).adam_eps == 1e-8
    assert nlg_preset("paper").adam_eps == 1e-6  # the authors' value, exactly
    for eps in (0.0, float("inf")):  # inf was accepted: Adam's steps all 0, nothing trained
        with pytest.raises(DataError, match=f"adam_eps must be a finite number > 0, got {eps}"):
            nlg_preset("paper", adam_eps=eps)


def test_paper_runs_ten_seeds() -> None:
    """PAPER.md: the authors' NLG experiment averages 10 seeds."""
    from deeplora.experiments.nlg_fewshot import PAPER_SEEDS

    assert PAPER_SEEDS["paper"] == 10
