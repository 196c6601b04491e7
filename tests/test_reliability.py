"""Runs every row of the bad-input table in docs/reliability.md and checks what the user sees.

Each row runs in one shared temporary working folder holding the files the table names (built
by :func:`make_files`); a ``deeplora …`` row runs the CLI in-process and compares its exit
status and stderr, a Python row evaluates the expression and compares ``Type: message`` of
what it raises. In the table's text ``…`` stands for any text (paths, memory sizes). After each
row the folder must be exactly as before: nothing written. ``python tests/test_reliability.py``
prints what every row shows now (for writing the table).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "reliability.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(.+?)`\s*\|\s*(\S+)\s*\|\s*(.+?)\s*\|$")


def table_rows() -> list[tuple[int, str, str, str]]:
    """``(number, input, exit status or "raises", what the user sees)`` per table row."""
    rows = []
    for line in TABLE.read_text().splitlines():
        if match := ROW.match(line.strip()):
            number, command, status, seen = match.groups()
            rows.append((int(number), command, status, seen.replace("\\|", "|")))
    return rows


def make_files(folder: Path, write_glue: Callable[..., Path]) -> None:
    """The inputs the table names: ratings files, GLUE folders, saved models and adapters."""
    import numpy as np

    ratings = "".join(f"{u}\t{i}\t{1 + (u * 7 + i) % 5}\t0\n" for u in range(12)
                      for i in range(10))
    (folder / "ratings.tsv").write_text(ratings)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                        + ratings.replace("\t", ","))
    (folder / "nan.tsv").write_text(ratings.replace("\t3\t0\n", "\tnan\t0\n", 1))
    (folder / "words.tsv").write_text(ratings.replace("\t3\t0\n", "\tgood\t0\n", 1))
    (folder / "empty.tsv").write_text("")
    (folder / "empty.pt").write_bytes(b"")
    from deeplora.completion import DeepMatrixCompletion

    est = DeepMatrixCompletion(rank=2, max_steps=1).fit(np.arange(30) // 5, np.arange(30) % 5,
                                                         np.linspace(1, 5, 30))
    est.save(folder / "model.pt")
    (folder / "cut.pt").write_bytes((folder / "model.pt").read_bytes()[:300])
    (folder / "model.pt").unlink()
    DeepMatrixCompletion.implicit(rank=2, max_steps=1).fit(
        np.arange(30) // 5, np.arange(30) % 5, np.linspace(1, 5, 30)).save(folder / "implicit.pt")
    write_glue(folder / "glue", n=8)
    (folder / "empty").mkdir()
    for name, score in (("glue-nan", "nan"), ("glue-range", "7.2")):
        write_glue(folder / name, n=8)
        stsb = folder / name / "STS-B" / "train.tsv"
        lines = stsb.read_text().splitlines()
        lines[2] = lines[2].rsplit("\t", 1)[0] + "\t" + score
        stsb.write_text("\n".join(lines) + "\n")
    from peft import get_peft_model

    from deeplora.adapters import DeepLoraConfig

    model = get_peft_model(_tiny_bert(), DeepLoraConfig(r=2, target_modules="query-value"))
    for name in ("adapter-noweights", "adapter-badtype"):
        model.save_pretrained(folder / name)
    (folder / "adapter-noweights" / "adapter_model.safetensors").unlink()
    config = folder / "adapter-badtype" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "NOPE"}))
    _hostile_files(folder, write_glue)


def _hostile_files(folder: Path, write_glue: Callable[..., Path]) -> None:
    """GLUE and E2E files with one defect each, models and adapters for ``export-lora``."""
    write_glue(folder / "glue-bad", n=8)
    bad = folder / "glue-bad"
    stsb = bad / "STS-B" / "train.tsv"
    stsb.write_text(stsb.read_text().replace("\tscore\n", "\tsimilarity\n", 1))
    for task, cut in (("RTE", "label"), ("MRPC", "field")):
        lines = (bad / task / "train.tsv").read_text().splitlines()
        head = lines[2].rsplit("\t", 1)[0]
        lines[2] = f"{head}\tmaybe" if cut == "label" else head
        (bad / task / "train.tsv").write_text("\n".join(lines) + "\n")
    qnli = bad / "QNLI" / "train.tsv"
    qnli.write_text(qnli.read_text().splitlines()[0] + "\n")
    (bad / "CoLA" / "train.tsv").write_text("")
    (bad / "SST-2" / "dev.tsv").unlink()

    from tests.nlg.conftest import DEV, TEST, write_csv

    for name, dev in (("e2e", DEV), ("e2e-emptymr", [*DEV[:1], ("", "A pub.")]),
                      ("e2e-header", [])):
        (folder / name).mkdir()
        write_csv(folder / name / "devset.csv", dev)
        write_csv(folder / name / "testset_w_refs.csv", TEST)
    (folder / "e2e-nocol").mkdir()
    (folder / "e2e-nocol" / "devset.csv").write_text('"mr","text"\n"name[Mill]","Mill."\n')

    from peft import LoraConfig, get_peft_model

    from deeplora.adapters import DeepLoraConfig

    _tiny_bert().save_pretrained(folder / "tiny-bert")
    _tiny_bert().save_pretrained(folder / "model-noconfig")
    (folder / "model-noconfig" / "config.json").unlink()
    deep = get_peft_model(_tiny_bert(), DeepLoraConfig(r=2, target_modules="query-value"))
    for name in ("adapter", "adapter-cut"):
        deep.save_pretrained(folder / name)
    weights = folder / "adapter-cut" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    lora = get_peft_model(_tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"]))
    lora.save_pretrained(folder / "lora")


def _tiny_bert() -> Any:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))


def namespace() -> dict[str, Any]:
    """Names the table's Python rows use."""
    import numpy as np
    import torch
    from peft import get_peft_model

    from deeplora.adapters import DeepLoraConfig, build_adapter_config, load_adapter
    from deeplora.completion import (
        DeepMatrixCompletion,
        MatrixCompletion,
        build_model,
        fit,
        random_low_rank,
    )
    from deeplora.completion.baselines import BiasedALS, Biases, SoftImpute
    from deeplora.finetune import preset

    target = random_low_rank(20, 20, 2)
    problem = MatrixCompletion.random(target, 0.5)
    model, _ = build_model("narrow", problem, rank=2)
    return {"np": np, "torch": torch, "tiny_bert": _tiny_bert, "DeepLoraConfig": DeepLoraConfig,
            "load_adapter": load_adapter, "get_peft_model": get_peft_model,
            "build_adapter_config": build_adapter_config,
            "DeepMatrixCompletion": DeepMatrixCompletion, "Biases": Biases,
            "SoftImpute": SoftImpute, "BiasedALS": BiasedALS,
            "MatrixCompletion": MatrixCompletion, "build_model": build_model, "fit": fit,
            "random_low_rank": random_low_rank, "preset": preset, "target": target,
            "problem": problem, "model": model}


def run_row(command: str, names: dict[str, Any]) -> tuple[str, str]:
    """``(exit status or "raises"/"returns", what the user sees)`` of one table input."""
    import warnings

    from deeplora.cli import main

    if command.startswith("deeplora "):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(shlex.split(command)[1:])
            except SystemExit as exc:  # argparse
                status = exc.code
        return str(status), " ".join(err.getvalue().split())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eval(command, names)
    except Exception as exc:
        return "raises", " ".join(f"{type(exc).__name__}: {exc}".split())
    return "returns", ""


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if "__pycache__" not in p.parts}


def _pattern(seen: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in seen.split("…")), re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, make_glue: Callable[..., Path]) -> Path:
    folder = tmp_path_factory.mktemp("reliability")
    make_files(folder, make_glue)
    return folder


def test_table_has_at_least_50_distinct_inputs() -> None:
    rows = table_rows()
    assert len(rows) >= 50 and len({r[1] for r in rows}) == len(rows)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("row", table_rows(), ids=lambda r: f"{r[0]}")
def test_row_shows_what_the_table_says_and_writes_nothing(
        row: tuple[int, str, str, str], workdir: Path, monkeypatch: pytest.MonkeyPatch,
        one_thread: None) -> None:
    number, command, status, seen = row
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DEEPLORA_DATA_DIR", raising=False)
    before = _snapshot(workdir)
    got_status, got = run_row(command, namespace())
    assert (got_status, got) == (status, got) and _pattern(seen).fullmatch(got), (
        f"row {number}: {command}\n  table: {status} {seen}\n  now:   {got_status} {got}")
    assert _snapshot(workdir) == before, f"row {number} wrote files"


if __name__ == "__main__":  # print what each row shows now
    import sys
    import tempfile

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    from conftest import write_glue

    with tempfile.TemporaryDirectory() as tmp:
        make_files(Path(tmp), write_glue)
        os.chdir(tmp)
        names = namespace()
        for number, command, _, _ in table_rows():
            print(number, command, "=>", *run_row(command, names), sep=" | ")
