"""The paper's Deep LoRA experiments: plans, summary statistics, and a --fast end-to-end run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deeplora.experiments.finetune_paper import Options, plan

GLUE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "glue"


def test_paper_settings() -> None:
    cells = plan("stsb-fewshot", Options(), None)
    assert cells[0].labels == {"method": "zero-shot", "head": "bi"}
    trained = cells[1:]
    assert len(trained) == 2 * 3 * 2  # heads × samples × methods
    assert {c.config.samples for c in trained} == {16, 64, 256}
    assert all(c.config.steps == 500 and len(c.seeds) == 20 for c in trained)
    ranks = plan("stsb-ranks", Options(heads=("bi",)), None)[1:]
    assert sorted({c.config.rank for c in ranks}) == [8, 16, 32, 64]
    assert all(c.config.steps == 400 and len(c.seeds) == 5 for c in ranks)
    narrow = plan("narrow-vs-wide", Options(heads=("cross",)), None)
    assert [(c.config.rank, c.config.lr, c.config.method) for c in narrow] == [
        (384, 1e-4, "deep-lora"), (8, 1e-4, "deep-lora"), (8, 1e-2, "deep-lora-compressed")]
    assert all(c.config.targets == "query-value" and c.config.eval_every for c in narrow)
    (dynamics,) = plan("subspace-dynamics", Options(heads=("bi",)), None)
    assert dynamics.config.snapshot_steps[-1] == 2000 == dynamics.config.steps
    # the intro figure: full width, the whole train set, top-8 subspaces
    assert (dynamics.config.rank, dynamics.config.samples) == (384, None)
    assert dynamics.config.subspace_rank == 8 and dynamics.config.decay_ratio == 0.1
    histogram = plan("rank-histogram", Options(heads=("cross",)), None)[1:]
    assert [(c.config.method, c.config.rank, c.config.samples) for c in histogram] == [
        ("deep-lora", 384, 256), ("lora", 8, 256)]
    assert all(c.config.sampling == "authors" for c in histogram)  # the paper preset
    fast = plan("stsb-fewshot", Options(fast=True, seeds=(4,)), None)[1:]
    assert all(c.config.steps <= 2 and c.seeds == (4,) and c.config.dev_samples for c in fast)


def test_glue_fewshot_uses_available_tasks(tmp_path: Path, make_glue) -> None:
    root = make_glue(tmp_path)
    for name in ("MNLI", "QQP", "QNLI", "RTE", "SST-2", "MRPC"):
        for file in (root / name).iterdir():
            file.unlink()
    cells = plan("glue-fewshot", Options(heads=("cross",)), root)
    assert {c.config.task for c in cells} == {"cola", "stsb"}
    assert {c.config.samples for c in cells if c.labels["method"] != "zero-shot"} == {1024}
    assert all(len(c.seeds) == 10 for c in cells if c.labels["method"] != "zero-shot")


@pytest.mark.slow
@pytest.mark.skipif(not (GLUE / "STS-B" / "dev.tsv").is_file(),
                    reason=f"real STS-B files not found at {GLUE}")
def test_stsb_fewshot_fast_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from deeplora.cli import main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["experiment", "stsb-fewshot", "--fast", "--seeds", "0-1", "--head", "bi",
                "--out", str(tmp_path), "--data-dir", str(GLUE), "--quiet"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    assert "Deep LoRA − LoRA" in capsys.readouterr().out
    summary = json.loads((tmp_path / "stsb-fewshot.json").read_text())
    assert len(summary["differences"]) == 3  # sample sizes
    # paper preset, bi head: Deep LoRA's factor gradients sit below Adam's eps, it never leaves
    # its init; those runs are flagged and no pair is formed from them
    deep = [r for r in summary["rows"] if r["method"] == "deep-lora"]
    assert all(r["did_not_train"] == 2 for r in deep)
    assert all(d["n"] == 0 and d["untrained_seeds"] == [0, 1] for d in summary["differences"])
    zero = next(r for r in summary["rows"] if r["method"] == "zero-shot")
    assert zero["mean"] > 0.5  # the embedded bi-encoder without fine-tuning
    assert (tmp_path / "stsb-fewshot.png").stat().st_size > 10_000
    assert len(list(tmp_path.glob("runs/*/seed-*.json"))) == 1 + 3 * 2 * 2
    # --report-only with more seeds than finished: trains nothing, reports what exists
    argv[argv.index("0-1")] = "0-3"
    assert main([*argv, "--report-only"]) == 0
    assert len(list(tmp_path.glob("runs/*/seed-*.json"))) == 1 + 3 * 2 * 2
    summary = json.loads((tmp_path / "stsb-fewshot.json").read_text())
    assert all(d["untrained_seeds"] == [0, 1] for d in summary["differences"])


def test_bad_jobs_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deeplora.cli import main

    out = tmp_path / "out"
    assert main(["experiment", "stsb-ranks", "--jobs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "deeplora: error: --jobs must be >= 1, got 0"
    assert not out.exists() or not any(out.iterdir())


def test_rank_counted_as_the_authors() -> None:
    from deeplora.experiments.finetune_report import layer_rank

    full = {"sigma_max": 0.5, "matrix_rank": 40, "numerical_rank": 3}
    assert layer_rank("deep-lora", full) == 8  # capped at 8
    assert layer_rank("deep-lora", {**full, "matrix_rank": 2}) == 2
    assert layer_rank("deep-lora", {**full, "sigma_max": 5e-4}) == 0  # ‖ΔW‖₂ <= 1e-3
    assert layer_rank("lora", {**full, "matrix_rank": 8}) == 8  # matrix_rank, no cap


def test_loss_checkpoints_average_a_window_over_trained_runs() -> None:
    from deeplora.experiments.finetune_report import _loss_section, loss_checkpoints
    from deeplora.finetune.config import FinetuneConfig
    from deeplora.finetune.sweep import Cell

    config = FinetuneConfig(steps=120)
    layers = {"q": {"sigma_max": 1.0, "singular_values": [1.0]}}
    runs = [{"config": config.to_dict(), "layers": layers, "train_loss": [float(i)] * 120}
            for i in (1, 3)]
    still = {"q": {"sigma_max": 1e-12, "singular_values": [1e-12]}}  # below 10·ε³
    untrained = {"config": config.to_dict(), "layers": still, "train_loss": [99.0] * 120}
    ramp = {"config": config.to_dict(), "layers": layers, "train_loss": list(range(1, 121))}
    cells = [(Cell(config, (0, 1, 2), {"method": "wide", "head": "bi"}), [*runs, untrained]),
             (Cell(config, (0,), {"method": "compressed", "head": "bi"}), [ramp])]
    wide, compressed = loss_checkpoints(cells)
    assert wide["runs"] == 2 and wide["steps"] == [10, 50, 100, 120]
    assert wide["mean"] == [2.0] * 4 and wide["std"] == pytest.approx([2 ** 0.5] * 4)
    assert compressed["mean"] == [5.5, 45.5, 95.5, 115.5] and compressed["std"] is None
    text = _loss_section({"train_loss": [wide, compressed]})
    assert "| bi | wide | 2 | 2.00e+00 ± 1.4e+00 |" in text
    assert "| bi | compressed | 1 | 5.50e+00 | 4.55e+01 |" in text


def test_one_job_runs_seed_major(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep stopped early holds complete pairs: the first seed of every cell runs first."""
    import deeplora.experiments.finetune_report as report
    import deeplora.finetune.runs as runs
    import deeplora.finetune.train as train
    from deeplora.experiments.finetune_paper import run_experiment

    calls = []
    monkeypatch.setattr(train, "Prepared", lambda *args: None)
    monkeypatch.setattr(runs, "run_pairs", lambda pairs, *a, **k: calls.extend(
        (config.method, config.samples, seed) for config, seed in pairs))
    monkeypatch.setattr(report, "write_report", lambda *args: {})
    run_experiment("stsb-fewshot", Options(heads=("bi",), seeds=(0, 1)), tmp_path, jobs=1)
    trained = [c for c in calls if c[0] != "zero-shot"]
    assert [c[2] for c in trained] == [0] * 6 + [1] * 6
    assert trained[:2] == [("deep-lora", 16, 0), ("lora", 16, 0)]


@pytest.mark.parametrize("name", ["stsb-fewshot", "glue-fewshot"])
def test_fast_refuses_padding(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              name: str) -> None:
    """``--fast`` pads to the longest input of 32 tokens: it ignored ``--padding max-length``."""
    from deeplora.cli import main

    out = tmp_path / "paper"
    assert main(["experiment", name, "--fast", "--padding", "max-length", "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err == (
        "deeplora: error: --fast runs a smoke test of its own steps and padding (2 steps, 32 dev "
        "rows, inputs of 32 tokens padded to the longest): drop --padding or --fast\n")
    assert list(tmp_path.iterdir()) == []
