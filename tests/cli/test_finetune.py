"""``deeplora finetune``: output and one-line errors before any file is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplora.cli import main


def test_finetune_compares_and_resumes(glue_dir: Path, tiny_model: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["finetune", "--task", "mrpc", "--method", "deep-lora,lora", "--model", tiny_model,
            "--samples", "4", "--steps", "2", "--lr", "1e-2", "--seeds", "0-1", "--data-dir",
            str(glue_dir), "--out", str(tmp_path), "--quiet", "--preset", "practical"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    runs = [line.split(":")[0] for line in out.splitlines() if ": accuracy " in line]
    assert runs == ["zero-shot seed 0", "deep-lora seed 0", "lora seed 0", "deep-lora seed 1",
                    "lora seed 1"]  # seed-major: stopped early, it holds complete pairs
    assert "| head=bi | zero-shot | accuracy | 1 |" in out and " (f1 " in out
    assert "| head=cross | 2 |" in out  # the paired-difference row
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/seed-*.json"))
    assert len(files) == 1 + 2 * 2
    assert out.endswith((tmp_path / "summary.md").read_text())
    assert main(argv) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/seed-*.json")) == files


def test_prompt_head_with_held_out_rows(split_glue: Path, tiny_llama: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    argv = ["finetune", "--task", "sst2", "--head", "prompt", "--template", "plain",
            "--method", "deep-lora,lora,peft-lora", "--model", tiny_llama, "--samples", "4",
            "--steps", "2", "--eval-every", "1", "--heldout-samples", "6", "--lr", "1e-2",
            "--seeds", "0", "--preset", "practical", "--data-dir", str(split_glue),
            "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| head=prompt | zero-shot | accuracy | 1 |" in out
    assert "| head=prompt | peft-lora | accuracy | 1 |" in out
    (peft,) = tmp_path.glob("sst2-peft-lora-*/seed-0.json")
    result = json.loads(peft.read_text())
    assert [h["step"] for h in result["history"]] == [0, 1, 2]
    assert all("heldout" in h for h in result["history"])
    assert result["prompt"]["label_words"] == [" negative", " positive"]
    assert result["prompt"]["example"].endswith("Answer:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "wnli"], "unknown task 'wnli'"),
        (["--method", "dora"], "unknown method 'dora'"),
        (["--samples", "1000", "--preset", "practical"], "--samples 1000 is not in 1..40"),
        (["--seeds", "x"], "--seeds 'x'"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--task", "qnli", "--data-dir", "EMPTY"], "no QNLI/ folder"),
        (["--task", "rte", "--data-dir", "BROKEN"], "RTE/train.tsv:2: label 'maybe'"),
        (["--model", "NOTMODEL"], "not a transformers model"),
        (["--max-length", "200"], "max_length 200 is more than the 128 positions of "),
        (["--rank", "1000", "--method", "deep-lora"], "1000"),
        (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
        (["--dev-samples", "0"], "--dev-samples must be >= 1 (unset: the whole dev split; "
         "e2e: the preset's test MRs), got 0"),
        (["--task", "stsb", "--data-dir", "NANLABEL"], "STS-B/train.tsv:3: score 'nan' is not a "
         "finite number"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    glue_dir: Path, tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    make_glue, args: list[str], message: str,
) -> None:
    broken = make_glue(tmp_path / "broken", n=5)
    rte = broken / "RTE" / "train.tsv"
    rte.write_text(rte.read_text().replace("\tentailment", "\tmaybe", 1))
    stsb = broken / "STS-B" / "train.tsv"
    lines = stsb.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tnan"
    stsb.write_text("\n".join(lines) + "\n")
    replace = {"EMPTY": str(tmp_path / "empty"), "BROKEN": str(broken), "NANLABEL": str(broken),
               "NOTMODEL": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    args = [replace.get(a, a) for a in args]
    base = ["finetune", "--model", tiny_model, "--data-dir", str(glue_dir), "--steps", "1",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deeplora: error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_diverged_runs_are_reported_and_exit_1(tiny_model: str, tmp_path: Path, make_glue,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplora.finetune import train

    data = make_glue(tmp_path / "glue", n=8)
    load = train.load_split

    def huge_scores(*args: object):  # 1e30, which no file may hold: finite, (1e30)² not
        rows = load(*args)
        return rows.remove_columns("label").add_column("label", [1e30] * len(rows))

    monkeypatch.setattr(train, "load_split", huge_scores)
    argv = ["finetune", "--method", "lora", "--model", tiny_model, "--samples", "4", "--steps",
            "3", "--seeds", "0", "--data-dir", str(data), "--out", str(tmp_path / "out"),
            "--quiet", "--preset", "practical", "--dev-samples", "4"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "lora seed 0: diverged (training loss not finite at step 1)" in captured.out
    assert captured.err == "deeplora: 1 run(s) diverged; lower --lr\n"


@pytest.mark.parametrize("args", [
    ["--jobs", "2"], ["--head", "prompt"], ["--template", "plain"], ["--heldout-samples", "4"],
    ["--eval-every", "5"], ["--padding", "longest"], ["--max-length", "64"],
    ["--targets", "query-value"],
    # at their defaults
    ["--jobs", "1"], ["--head", "cross"], ["--template", "chat"], ["--heldout-samples", "0"],
    ["--eval-every", "0"], ["--targets", "all-dense"]])
def test_e2e_refuses_the_glue_only_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str]) -> None:
    """They were silently ignored (``--jobs 2`` ran one run at a time), and later refused only
    at another value than their default (``--jobs 1`` was accepted and ignored)."""
    out = tmp_path / "out"
    assert main(["finetune", "--task", "e2e", "--preset", "cpu", "--out", str(out), "--quiet",
                 *args]) == 2
    assert capsys.readouterr().err == (f"deeplora: error: {args[0]}: not an option of --task "
                                       "e2e (a GLUE task's; see docs/nlg.md for what e2e "
                                       "takes)\n")
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--rank", "0"], "--rank must be >= 1, got 0"),
    (["--samples", "0"], "--samples must be >= 1, got 0"),
    (["--steps", "-1"], "--steps must be >= 0, got -1"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--max-length", "0"], "--max-length must be >= 1, got 0"),
    (["--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
    (["--heldout-samples", "-1"], "--heldout-samples must be >= 0, got -1"),
    (["--task", "e2e", "--preset", "cpu", "--rank", "0"], "--rank must be >= 1, got 0"),
    (["--task", "e2e", "--preset", "cpu", "--samples", "0"], "--samples must be >= 1, got 0"),
    (["--task", "e2e", "--preset", "cpu", "--steps", "-1"], "--steps must be >= 0, got -1"),
    (["--task", "e2e", "--preset", "cpu", "--lr", "0"],
     "--lr must be a finite number > 0, got 0.0"),
])
def test_a_bad_value_is_named_by_its_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    """The configuration's field names (``rank``, ``max_length``) were shown instead of the
    flags the user typed."""
    out = tmp_path / "out"
    assert main(["finetune", "--out", str(out), "--quiet", *args]) == 2
    assert capsys.readouterr().err == f"deeplora: error: {message}\n"
    assert not out.exists()


def test_padding_help_pads_to_max_length_not_a_fixed_128(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--padding max-length`` pads to ``--max-length``; the help said "to 128 tokens", true
    only at the default."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    padding = next(line for line in capsys.readouterr().out.splitlines()
                   if line.strip().startswith("--padding"))
    assert "pad training batches to --max-length tokens" in padding and "128" not in padding
