from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplora.finetune.data import DataError
from deeplora.nlg.config import nlg_preset
from deeplora.nlg.train import (
    checkpoint_folder,
    estimate_nlg,
    load_nlg_results,
    result_path,
    run_nlg,
    run_nlg_sweep,
    score_checkpoint,
)
from tests.nlg.conftest import tiny_model, word_tokenizer


def _config(model_dir: Path, **overrides):
    values = {"model": str(model_dir), "rank": 4, "samples": 3, "steps": 3, "lr": 1e-2,
              "max_output_length": 6, "batch_size": 2, **overrides}
    return nlg_preset("cpu", **values)


@pytest.mark.parametrize("method", ["deep-lora", "lora"])
def test_run_trains_and_scores(model_dir: Path, e2e_dir: Path, method: str) -> None:
    result = run_nlg(_config(model_dir, method=method), seed=0, data_dir=e2e_dir,
                     progress=False)
    assert len(result["train_loss"]) == 3
    assert len(result["predictions"]) == len(result["mrs"]) == 3
    assert set(result["metrics"]) == {"bleu", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert result["adapted_layers"] == 14  # 2 layers × 7 projections
    assert result["left_init"] == (result["delta_norm_max"] > 1e-3)
    assert len(set(result["train_mrs"])) == 3


def test_deep_lora_that_never_moves_is_flagged(model_dir: Path, e2e_dir: Path) -> None:
    result = run_nlg(_config(model_dir, method="deep-lora", steps=1, lr=1e-6), 0, e2e_dir,
                     progress=False)
    assert result["left_init"] is False and result["delta_norm_max"] < 1e-3


def test_zero_shot_does_not_train(model_dir: Path, e2e_dir: Path) -> None:
    result = run_nlg(_config(model_dir, method="zero-shot"), 0, e2e_dir, progress=False)
    assert result["train_loss"] == [] and "left_init" not in result


def test_seq2seq_run(tmp_path: Path, e2e_dir: Path) -> None:
    folder = tmp_path / "tiny-t5"
    tokenizer = word_tokenizer()
    tiny_model("t5", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = run_nlg(_config(folder, method="deep-lora"), 0, e2e_dir, progress=False)
    assert result["adapted_layers"] == 2 * 6 + 2 * 10  # encoder: q,k,v,o,wi,wo; decoder + cross
    assert len(result["predictions"]) == 3


def test_sweep_resumes_and_checks_before_writing(model_dir: Path, e2e_dir: Path,
                                                 tmp_path: Path) -> None:
    config, out = _config(model_dir, method="lora", steps=1), tmp_path / "runs"
    first = run_nlg_sweep(config, [0], out, e2e_dir, progress=False)
    path = result_path(out, config, 0)
    stamp = path.stat().st_mtime_ns
    again = run_nlg_sweep(config, [0], out, e2e_dir, progress=False)
    assert path.stat().st_mtime_ns == stamp and again == first
    with pytest.raises(DataError, match="no such file"):
        run_nlg_sweep(config, [1], tmp_path / "other", tmp_path / "nowhere", progress=False)
    with pytest.raises(DataError, match=r"seed must be an integer in \[0, 2\*\*32\), got -1"):
        run_nlg_sweep(config, [-1], tmp_path / "other", e2e_dir, progress=False)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("text", ["{\"seed\": 0, \"config\"", "null", "{}"])
def test_sweep_reruns_a_seed_whose_file_is_not_a_result(model_dir: Path, e2e_dir: Path,
                                                        tmp_path: Path, capsys,
                                                        text: str) -> None:
    config = _config(model_dir, method="lora", steps=1)
    path = result_path(tmp_path, config, 0)
    path.parent.mkdir(parents=True)
    path.write_text(text)  # cut short by a full disk, or edited by hand
    assert load_nlg_results(tmp_path, config, [0]) == []
    assert f"{path} is not a valid result" in capsys.readouterr().err
    assert path.with_name("seed-0.json.invalid").read_text() == text
    path.write_text(text)
    estimate = estimate_nlg([(config, 0)], tmp_path, e2e_dir)  # the seed is to run
    assert estimate is not None and estimate.runs == 1 and not path.exists()
    result = run_nlg_sweep(config, [0], tmp_path, e2e_dir, progress=False)[0]
    assert json.loads(path.read_text())["seed"] == result["seed"] == 0


@pytest.mark.parametrize("tied", [False, True])
def test_all_dense_adapts_embeddings_and_merges_unless_tied(tmp_path: Path, e2e_dir: Path,
                                                            tied: bool) -> None:
    folder = tmp_path / "llama"
    tokenizer = word_tokenizer(chat_template=True)
    model = tiny_model("llama", len(tokenizer))
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = run_nlg(_config(folder, method="deep-lora", targets="all-dense"), 0, e2e_dir,
                     progress=False)
    assert result["adapted_layers"] == 14 + 1  # + the word embeddings
    assert result["merged"] is not tied


@pytest.mark.parametrize("method", ["deep-lora", "lora", "peft-lora"])
def test_delta_norms_match_a_full_svd(model_dir: Path, e2e_dir: Path, method: str) -> None:
    from deeplora.adapters import adapter_deltas
    from deeplora.nlg.train import PreparedNLG, _delta_norms, _setup, _train

    config = _config(model_dir, method=method, rank=2, steps=2, lr=0.1)  # width 16: q = 10
    prepared = PreparedNLG(config, 0, e2e_dir)
    model, formatter = _setup(config, prepared, 0)
    _train(model, formatter, prepared.train, config, 0, progress=False)
    full = {name: float(torch.linalg.matrix_norm(delta.float(), ord=2))
            for name, delta in adapter_deltas(model).items()}
    assert _delta_norms(model, config.rank) == pytest.approx(full, rel=1e-4)
    assert max(full.values()) > 1e-3


def test_checkpointed_run_generates_only_where_scored(model_dir: Path, e2e_dir: Path,
                                                      tmp_path: Path) -> None:
    config = _config(model_dir, method="lora", steps=5, eval_every=2, dev_mrs=4)
    estimate = estimate_nlg([(config, 0)], tmp_path, e2e_dir)
    assert estimate is not None and estimate.dev_items == 4 * 4  # steps 0, 2, 4, 5
    assert estimate.items == 3 * 3  # the test MRs at three checkpoints at most
    result = run_nlg_sweep(config, [0], tmp_path, e2e_dir, progress=False)[0]
    assert [e["step"] for e in result["history"]] == [0, 2, 4, 5]
    assert result["metrics"] == {} and "predictions" not in result
    assert all(e["metrics"] == {} and e["heldout"]["neg_loss"] == -e["heldout"]["loss"]
               for e in result["history"])
    assert not set(result["dev_mrs"]) & set(result["train_mrs"])
    assert sorted(p.name for p in checkpoint_folder(tmp_path, config, 0).iterdir()) == [
        f"step-{s}.pt" for s in (0, 2, 4, 5)]
    entry = score_checkpoint(config, 0, 2, tmp_path, e2e_dir, progress=False)
    assert set(entry["metrics"]) >= {"bleu", "rougeL"} and len(entry["predictions"]) == 3
    saved = json.loads(result_path(tmp_path, config, 0).read_text())
    assert [bool(e["metrics"]) for e in saved["history"]] == [False, True, False, False]


def test_seed_of_numpy_type_is_the_same_run(model_dir: Path, e2e_dir: Path) -> None:
    """run_nlg(config, np.int64(0)) passed the seed check, then was a TypeError of
    random.seed ('The only supported seed types are …')."""
    config = _config(model_dir, method="lora", steps=1)
    result = run_nlg(config, np.int64(0), e2e_dir, progress=False)
    assert type(result["seed"]) is int
    assert result["train_loss"] == run_nlg(config, 0, e2e_dir, progress=False)["train_loss"]
