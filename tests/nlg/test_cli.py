"""``deeplora finetune --task e2e`` and ``deeplora experiment nlg-fewshot``: output, resuming,
one-line errors with nothing written, the preset chosen without ``--preset``, the cost
estimate and the progress bars."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from deeplora.cli import main
from deeplora.nlg.config import CPU_NOTICE, default_preset
from tests.finetune.test_estimate import estimate_numbers
from tests.nlg.conftest import TEST, write_csv


def test_finetune_e2e_compares_and_resumes(model_dir: Path, e2e_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["finetune", "--task", "e2e", "--method", "deep-lora,lora,zero-shot",
            "--model", str(model_dir), "--samples", "3", "--steps", "2", "--rank", "4",
            "--seeds", "0-1", "--preset", "cpu", "--data-dir", str(e2e_dir), "--out", str(out),
            "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "# nlg-fewshot (cpu preset)" in text and "CPU preset:" in text
    assert "| Deep LoRA | 2 |" in text and "| zero-shot | 1 |" in text
    assert re.search(r"\| bleu \| [0-2] \|", text)  # the paired-difference row (fitted pairs)
    assert "- **MR** `" in text
    files = sorted(out.glob("runs/*/seed-*.json"))
    assert len(files) == 2 * 2 + 1
    assert (out / "nlg-fewshot.png").stat().st_size > 0
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(argv) == 0
    assert [f.stat().st_mtime_ns for f in sorted(out.glob("runs/*/seed-*.json"))] == stamps


def test_experiment_fast(model_dir: Path, e2e_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["experiment", "nlg-fewshot", "--fast", "--preset", "cpu", "--seeds", "0",
            "--model", str(model_dir), "--data-dir", str(e2e_dir), "--out", str(tmp_path),
            "--quiet"]
    assert main(argv) == 0
    assert "| vanilla LoRA | 1 |" in capsys.readouterr().out
    assert main([*argv, "--report-only"]) == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [("task", "unknown task 'e2f'"),
     ("model", "not a transformers model"),
     ("file", "testset_w_refs.csv: no such file"),
     ("ref", "has no reference"),
     ("method", "unknown method 'deep'"),
     ("dev-samples", "--dev-samples must be >= 1 (unset: the whole dev split; e2e: the "
      "preset's test MRs), got 0")],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
        case: str, message: str, model_dir: Path, e2e_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    if case == "file":
        (e2e_dir / "testset_w_refs.csv").unlink()
    if case == "ref":
        write_csv(e2e_dir / "testset_w_refs.csv", [*TEST, ("name[Z]", "")])
    out = tmp_path / "out"
    argv = ["finetune", "--task", "e2f" if case == "task" else "e2e",
            "--model", str(tmp_path / "none") if case == "model" else str(model_dir),
            "--method", "deep" if case == "method" else "deep-lora,lora",
            "--samples", "2", "--steps", "1", "--data-dir", str(e2e_dir), "--out", str(out),
            "--quiet", *(["--dev-samples", "0"] if case == "dev-samples" else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deeplora: error: ") and message in err[0]
    assert not out.exists()


def _e2e_argv(model_dir: Path, e2e_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--task", "e2e", "--method", "deep-lora", "--model", str(model_dir),
            "--samples", "3", "--steps", "2", "--rank", "4", "--seeds", "0", "--dev-samples",
            "2", "--data-dir", str(e2e_dir), "--out", str(out), *extra]


def test_e2e_without_gpu_uses_the_cpu_preset_and_estimates_before_training(
        model_dir: Path, e2e_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_e2e_argv(model_dir, e2e_dir, tmp_path / "loud")) == 0
    out, err = capsys.readouterr()
    assert "# nlg-fewshot (cpu preset)" in out
    assert err.count(CPU_NOTICE) == 1 and "--preset paper" in CPU_NOTICE
    numbers = estimate_numbers(err)  # 2 train steps × s + 2 inputs (greedy) × s + 1 run × s
    assert numbers[0] == 2 and numbers[2] == 2 and numbers[4] == 1
    assert all(x > 0 and math.isfinite(x) for x in numbers)
    assert "test inputs generated (greedy)" in err
    notice, estimate = err.index(CPU_NOTICE), err.index("deeplora: about ")
    assert notice < estimate < err.index("deep-lora seed 0:") < err.index("generate deep-lora")
    assert "%|" in err and "%|" not in out  # the bars: training steps, then generated MRs
    # --quiet: no estimate and no bars, the notice stays; the probe changes no result
    assert main(_e2e_argv(model_dir, e2e_dir, tmp_path / "quiet", "--quiet")) == 0
    assert capsys.readouterr().err.strip() == CPU_NOTICE
    loud, quiet = (json.loads(next((tmp_path / name).glob("runs/*/seed-0.json")).read_text())
                   for name in ("loud", "quiet"))
    assert loud["train_loss"] == quiet["train_loss"]
    assert loud["predictions"] == quiet["predictions"]


def test_an_explicit_paper_preset_is_kept_without_gpu(
        model_dir: Path, e2e_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = _e2e_argv(model_dir, e2e_dir, tmp_path, "--preset", "paper", "--steps", "1")
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "# nlg-fewshot (paper preset)" in out and CPU_NOTICE not in err
    assert "test inputs generated (beam 4)" in err


@pytest.mark.parametrize("gpu", [False, True])
def test_nlg_fewshot_default_preset_follows_the_gpu(
        gpu: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import deeplora.experiments.nlg_fewshot as nlg_fewshot

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert default_preset() == (("paper", None) if gpu else ("cpu", CPU_NOTICE))
    argv = ["experiment", "nlg-fewshot", "--report-only", "--out", str(tmp_path)]
    assert main(argv) == 2  # no finished run to report
    assert "no finished run of these settings" in capsys.readouterr().err
    monkeypatch.setattr(nlg_fewshot, "require_runs", lambda *args: None)  # the empty report
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"# nlg-fewshot ({'paper' if gpu else 'cpu'} preset)" in out
    assert (CPU_NOTICE in err) is not gpu


@pytest.mark.parametrize(("gpu", "given", "used"),
                         [(True, None, "paper"), (False, None, "cpu"), (False, "paper", "paper"),
                          (True, "cpu", "cpu")])
def test_finetune_e2e_preset_choice(gpu: bool, given: str | None, used: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import deeplora.experiments.nlg_fewshot as nlg_fewshot

    seen = {}

    def record(cells, out, *args, notice=None, **kwargs):
        seen.update(presets={config.preset for config, _ in cells}, notice=notice)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "nlg-fewshot.md").write_text("report\n")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(nlg_fewshot, "run_nlg_experiment", record)
    argv = ["finetune", "--task", "e2e", "--out", str(tmp_path), "--quiet",
            *(["--preset", given] if given else [])]
    assert main(argv) == 0
    assert seen == {"presets": {used}, "notice": CPU_NOTICE if used == "cpu" and not given
                    else None}
