"""prompt-fewshot: the plan, and a --fast run with a tiny Llama whose report regenerates from
the per-run files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplora.experiments.prompt_fewshot import plan


def test_plan_is_one_grid_for_every_method() -> None:
    cells = plan(["sst2", "stsb"], (16, 64), (8, 32), (1e-4, 1e-3), ("deep-lora", "lora"),
                 (0, 1), steps=50, eval_every=10, heldout_samples=64, dev_samples=128)
    zero = [c for c in cells if c.labels["method"] == "zero-shot"]
    assert [c.config.task for c in zero] == ["sst2", "stsb"] and zero[0].config.steps == 0
    trained = [c for c in cells if c.labels["method"] != "zero-shot"]
    assert len(trained) == 2 * 2 * 2 * 2 * 2
    assert {(c.config.head, c.config.heldout_samples, c.config.preset) for c in cells} == {
        ("prompt", 64, "practical")}
    lrs = {m: {c.config.lr for c in trained if c.config.method == m} for m in ("deep-lora", "lora")}
    assert lrs["deep-lora"] == lrs["lora"] == {1e-4, 1e-3}
    assert len({c.config.key() for c in cells}) == len(cells)


def test_fast_run_and_report_only(tmp_path: Path, split_glue: Path, tiny_llama: str,
                                  capsys) -> None:
    from deeplora.cli import main

    out = tmp_path / "prompt"
    argv = ["experiment", "prompt-fewshot", "--fast", "--task", "sst2", "--seeds", "0-1",
            "--lrs", "1e-2,3e-2", "--model", tiny_llama, "--data-dir", str(split_glue),
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    report = (out / "prompt-fewshot.md").read_text()
    summary = json.loads((out / "prompt-fewshot.json").read_text())
    assert (out / "prompt-fewshot.png").stat().st_size > 0
    (zero,) = summary["zero_shot"]
    assert zero["majority_rate"] == 0.5 and zero["test_rows"] == 8
    assert len(summary["grid"]) == 2 * 3 and {c["method"] for c in summary["chosen"]} == {
        "deep-lora", "lora", "peft-lora"}
    assert {(d["other"], d["best"]["n"]) for d in summary["differences"]} <= {
        ("lora", 2), ("peft-lora", 2), ("lora", 1), ("peft-lora", 1), ("lora", 0),
        ("peft-lora", 0)}
    assert "matched train loss" in report
    runs = list((out / "runs").glob("*/seed-*.json"))
    assert len(runs) == 1 + 2 * 3 * 2
    layers = [json.loads(r.read_text()).get("layers") for r in runs]
    trained = [layer for run in layers if run for layer in run.values()]
    assert trained and all(layer["singular_values"] == [] and layer["sigma_max"] > 0
                           for layer in trained)  # σ₁ and ranks only (the report reads σ₁)
    capsys.readouterr()
    (out / "prompt-fewshot.md").unlink()
    assert main([*argv, "--report-only"]) == 0
    assert (out / "prompt-fewshot.md").read_text() == report


def test_samples_above_the_pool_are_refused_before_any_run(tmp_path: Path, split_glue: Path,
                                                           tiny_llama: str, capsys) -> None:
    from deeplora.cli import main

    out = tmp_path / "prompt"  # 40 training rows, 8 held out (--fast): 32 to draw from
    assert main(["experiment", "prompt-fewshot", "--fast", "--task", "sst2", "--samples",
                 "16,33", "--methods", "lora", "--seeds", "0", "--lrs", "1e-2", "--model",
                 tiny_llama, "--data-dir", str(split_glue), "--out", str(out), "--quiet"]) == 2
    assert "--samples 33 is not in 1..32" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "named"), [
    (["--steps", "100"], "--steps"),  # even at the default
    (["--test-samples", "16", "--eval-every", "2"], "--eval-every and --test-samples"),
    (["--heldout-samples", "8", "--steps", "4", "--eval-every", "1"],
     "--steps, --eval-every and --heldout-samples"),
])
def test_fast_refuses_the_flags_it_would_override(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str) -> None:
    """``--fast`` runs 2 steps, a checkpoint every step, on 8 held-out and 8 test rows: it
    ignored ``--steps``, ``--eval-every``, ``--heldout-samples`` and ``--test-samples``."""
    from deeplora.cli import main

    out = tmp_path / "prompt"
    assert main(["experiment", "prompt-fewshot", "--fast", *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "deeplora: error: --fast runs a smoke test of its own steps and rows (2 steps, a "
        f"checkpoint every step, 8 held-out and 8 test rows, 64 tokens): drop {named} or "
        "--fast\n")
    assert list(tmp_path.iterdir()) == []
