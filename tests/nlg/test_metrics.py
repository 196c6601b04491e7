from __future__ import annotations

import pytest
import sacrebleu

from deeplora.nlg.metrics import generation_metrics


def test_exact_match_scores_full() -> None:
    m = generation_metrics(["the eagle is a pub near the river ."],
                           [["the eagle is a pub near the river ."]])
    assert m["bleu"] == pytest.approx(100.0)
    assert all(m[k] == pytest.approx(1.0) for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))


def test_every_reference_counts() -> None:
    pred = ["cocum is a coffee shop in the riverside area"]
    one = generation_metrics(pred, [["the mill serves french food"]])
    both = generation_metrics(pred, [["the mill serves french food",
                                      "cocum is a coffee shop in the riverside area"]])
    assert both["rouge1"] == pytest.approx(1.0) and one["rouge1"] < 0.3
    assert both["bleu"] > one["bleu"]


def test_uneven_reference_counts_match_sacrebleu() -> None:
    preds = ["the eagle is a pub", "mill serves food in the city centre"]
    refs = [["the eagle is a pub .", "a pub called the eagle"], ["mill serves french food"]]
    got = generation_metrics(preds, refs)["bleu"]
    want = sacrebleu.corpus_bleu(preds, [[refs[0][0], refs[1][0]], [refs[0][1], None]]).score
    assert got == pytest.approx(want)


def test_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1"):
        generation_metrics(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        generation_metrics(["a"], [[]])
