"""``deeplora finetune --task e2e`` and ``deeplora experiment nlg-fewshot``: output, resuming,
and one-line errors with nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deeplora.cli import main
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
     ("method", "unknown method 'deep'")],
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
            "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deeplora: error: ") and message in err[0]
    assert not out.exists()
