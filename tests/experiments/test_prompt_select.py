"""prompt-select: candidates scored on held-out training rows, one forward pass per wording, the
best marked, the report rebuilt from the stored logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deeplora.experiments import prompt_select
from deeplora.finetune.prompt import VERBALIZERS, Verbalizer


def test_each_declared_prompt_is_one_of_its_candidates() -> None:
    """The verbalizer a task trains with is one that was chosen among the scored candidates."""
    for task, candidates in prompt_select.CANDIDATES.items():
        assert VERBALIZERS[task] in candidates
        assert len(set(candidates)) == len(candidates)


def _record(task: str, words: list[str], logits: list[list[float]]) -> dict:
    return {"task": task, "template": "chat", "question": "q?", "words": words,
            "logits": logits}


def test_summary_metric_majority_and_best() -> None:
    labels = {"mrpc": [1, 1, 1, 0]}
    always_yes = _record("mrpc", ["no", "yes"], [[0.0, 1.0]] * 4)
    ranks = _record("mrpc", ["No", "Yes"], [[0.0, 0.5], [0.0, 0.4], [0.0, -0.1], [0.0, -0.2]])
    rows = prompt_select.summarize([always_yes, ranks], labels)
    assert [r["value"] for r in rows] == [0.75, 0.75]
    assert rows[0]["majority_rate"] == 0.75 and rows[0]["predicted_majority"] == 1.0
    assert rows[1]["predicted_majority"] == 0.5
    assert rows[1]["auc"] == 1.0 and rows[0]["auc"] == 0.5  # a constant margin ranks nothing
    assert [r["best"] for r in rows] == [True, False]  # ties: the earlier candidate
    right = _record("mrpc", ["a", "b"], [[0.0, 0.5], [0.0, 0.4], [0.0, 0.1], [0.0, -0.2]])
    rows = prompt_select.summarize([always_yes, ranks, right], labels)
    assert [r["best"] for r in rows] == [False, False, True] and rows[2]["value"] == 1.0


def test_regression_scores_the_expected_score_by_pearson() -> None:
    labels = {"stsb": [0.0, 1.0, 4.0, 5.0]}
    rising = _record("stsb", ["no", "yes"], [[0.0, -2.0], [0.0, -1.0], [0.0, 1.0], [0.0, 2.0]])
    falling = _record("stsb", ["no", "yes"], [[0.0, 2.0], [0.0, 1.0], [0.0, -1.0], [0.0, -2.0]])
    rows = prompt_select.summarize([falling, rising], labels)
    assert rows[0]["metric"] == "pearson" and rows[0]["value"] < 0 < 0.9 < rows[1]["value"]
    assert rows[1]["best"] and rows[1]["majority_rate"] is None and rows[1]["auc"] is None
    assert "| stsb | chat | q? | no, yes | pearson |" in prompt_select.markdown(rows)


def test_fast_run_shares_passes_and_report_only_rebuilds(
        tmp_path: Path, split_glue: Path, tiny_llama: str, monkeypatch: pytest.MonkeyPatch,
        capsys) -> None:
    from deeplora.cli import main

    wording = Verbalizer("Review: {sentence}", "the sentiment?", ("negative", "positive"))
    flipped = Verbalizer(wording.body, wording.question, ("positive", "negative"))
    other = Verbalizer(wording.body, "Answer?", ("no", "yes"))
    similar = Verbalizer("{sentence1} / {sentence2}", "Same?", ("no", "yes"))
    monkeypatch.setattr(prompt_select, "CANDIDATES", {"sst2": (wording, flipped, other),
                                                      "stsb": (similar,)})
    out = tmp_path / "select"
    argv = ["experiment", "prompt-select", "--fast", "--task", "sst2", "--model", tiny_llama,
            "--data-dir", str(split_glue), "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "prompt-select.json").read_text())
    assert data["labels"]["sst2"] and len(data["records"]) == 3 * 2  # × chat, plain
    by = {(r["template"], tuple(r["words"]), r["question"]): np.asarray(r["logits"])
          for r in data["records"]}
    for template in ("chat", "plain"):  # the same pass read in the other order
        same = by[(template, ("negative", "positive"), "the sentiment?")]
        np.testing.assert_allclose(by[(template, ("positive", "negative"), "the sentiment?")],
                                   same[:, ::-1])
    report = (out / "prompt-select.md").read_text()
    assert sum("| **" in line for line in report.splitlines()) == 1  # one best: one task
    capsys.readouterr()
    (out / "prompt-select.md").unlink()
    assert main([*argv, "--report-only"]) == 0
    assert (out / "prompt-select.md").read_text() == report
    stsb = [a if a != "sst2" else "stsb" for a in argv]  # another task: sst2's rows are kept
    assert main(stsb) == 0
    data = json.loads((out / "prompt-select.json").read_text())
    assert sorted(data["labels"]) == ["sst2", "stsb"] and len(data["records"]) == 3 * 2 + 2
    assert "| stsb | chat | Same? | no, yes | pearson |" in (out / "prompt-select.md").read_text()
    capsys.readouterr()
    (out / "prompt-select.json").write_text("null")  # not a result: one line naming the file
    assert main([*argv, "--report-only"]) == 2
    assert "prompt-select.json: not a result of prompt-select" in capsys.readouterr().err


@pytest.mark.parametrize("samples", ["32", "128"])  # 128: the default
def test_fast_refuses_heldout_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      samples: str) -> None:
    """``--fast`` scores 8 rows: it ignored ``--heldout-samples``."""
    from deeplora.cli import main

    out = tmp_path / "select"
    assert main(["experiment", "prompt-select", "--fast", "--heldout-samples", samples,
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "deeplora: error: --fast runs a smoke test of its own held-out rows (8): drop "
        "--heldout-samples or --fast\n")
    assert list(tmp_path.iterdir()) == []
