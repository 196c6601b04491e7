"""`accelerate launch` DDP: two CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT without dropout: the processes of a DDP run draw other dropout masks than
    one process does, everything else must agree."""
    from transformers import AutoConfig, AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = AutoConfig.from_pretrained(tiny_model, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    BertModel.from_pretrained(tiny_model, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finetune_args(model: str, glue: Path, out: Path) -> list[str]:
    # lr 1e-2 so that ΔW leaves its ε^L = 1e-9 start within 6 steps of 16 rows (two batches)
    return ["finetune", "--task", "stsb", "--method", "deep-lora", "--samples", "32", "--steps",
            "6", "--seeds", "0", "--model", model, "--lr", "1e-2", "--preset", "practical",
            "--dev-samples", "20", "--data-dir", str(glue), "--out", str(out), "--quiet"]


def only_result(out: Path) -> dict:
    (path,) = out.glob("*/seed-0.json")
    return json.loads(path.read_text())


def test_two_cpu_processes_train_the_same_adapters_as_one(
    no_dropout_model: str, glue_dir: Path, tmp_path: Path
) -> None:
    """Same global batch of 16 (8 rows per process), gradients averaged by DDP over gloo: the
    losses, dev metrics and every adapted layer's singular values agree to a relative 1e-4
    (the singular values below 1e-4·σ₁, float32 noise, to 1e-4·σ₁)."""
    from deeplora.cli import main

    assert main(finetune_args(no_dropout_model, glue_dir, tmp_path / "one")) == 0
    env = {**os.environ, "PYTHONPATH": SRC, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              "-m", "deeplora.cli", *finetune_args(no_dropout_model, glue_dir, tmp_path / "two")]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = only_result(tmp_path / "one"), only_result(tmp_path / "two")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert done.stdout.count("deep-lora seed 0:") == 1  # only the main process reports
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-4)
    assert one["layers"].keys() == two["layers"].keys()
    # The run trained: at least the embeddings' and the pooler's ΔW left ε^L = 1e-9 far behind
    # (in 6 Adam steps the block layers' factor gradients, ~ε² ∂ℒ/∂ΔW, stay below Adam's eps).
    assert sum(layer["singular_values"][0] > 1e-3 for layer in one["layers"].values()) >= 3
    for name, layer in one["layers"].items():  # to 1e-4 relative, of σ₁ for the tiny tail
        values = layer["singular_values"]
        assert two["layers"][name]["singular_values"] == pytest.approx(
            values, rel=1e-4, abs=1e-4 * values[0]), name


def test_unjoined_processes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes that accelerate sees as one each would each train alone."""
    from deeplora.finetune.train import distributed_state

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU=1"):
        distributed_state()
