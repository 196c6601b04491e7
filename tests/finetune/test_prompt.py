"""The prompt (verbalizer) head: label words as single tokens, a loss on their logits only,
left padding that does not change a row's output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deeplora.finetune import prompt
from deeplora.finetune.config import preset
from deeplora.finetune.data import DataError, get_task, load_split
from deeplora.finetune.models import (
    PromptModel,
    build_task_model,
    load_tokenizer,
    make_collator,
)


def _setup(tiny_llama: str, task: str, method: str = "lora", template: str = "chat"):
    config = preset("practical", task=task, method=method, head="prompt", model=tiny_llama,
                    template=template, max_length=48)
    torch.manual_seed(0)
    model = build_task_model(config, tiny_llama)
    return config, model, make_collator(load_tokenizer(tiny_llama), config, False)


@pytest.mark.parametrize("template", ["chat", "plain"])
@pytest.mark.parametrize("task", ["sst2", "mrpc", "stsb"])
def test_label_words_are_single_tokens(tiny_llama: str, task: str, template: str) -> None:
    tokenizer = load_tokenizer(tiny_llama)
    ids = prompt.label_token_ids(tokenizer, get_task(task), template)
    words = prompt.VERBALIZERS[task].words
    assert tokenizer.convert_ids_to_tokens(ids) == list(words)


def test_multi_token_label_word_is_a_clear_error(tiny_llama: str, monkeypatch) -> None:
    sst2 = prompt.VERBALIZERS["sst2"]
    monkeypatch.setitem(prompt.VERBALIZERS, "sst2", replace(sst2, words=("not good", "good")))
    with pytest.raises(DataError, match=r"label word 'not good' of task sst2 is not one token"):
        prompt.label_token_ids(load_tokenizer(tiny_llama), get_task("sst2"), "chat")
    with pytest.raises(DataError, match="not one token"):  # also when building the model
        _setup(tiny_llama, "sst2")


def test_label_words_sharing_a_token_are_an_error(tiny_llama: str, monkeypatch) -> None:
    sst2 = prompt.VERBALIZERS["sst2"]  # both unknown to the vocabulary: both [UNK]
    monkeypatch.setitem(prompt.VERBALIZERS, "sst2", replace(sst2, words=("awful", "superb")))
    with pytest.raises(DataError, match="share a token"):
        prompt.label_token_ids(load_tokenizer(tiny_llama), get_task("sst2"), "plain")


@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_loss_reaches_only_the_label_word_logits(tiny_llama: str, glue_dir: Path,
                                                 task: str) -> None:
    """The gradient of the loss w.r.t. the LM's full output logits is zero outside the label
    words' columns and nonzero in them."""
    _, model, collate = _setup(tiny_llama, task)
    assert isinstance(model, PromptModel)
    rows = list(load_split(task, "train", glue_dir).select(range(6)))
    captured = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    model.model.get_output_embeddings().register_forward_hook(keep)
    model(collate(rows)).backward()
    (logits,) = captured
    assert logits.shape[:2] == (6, 1)  # only the last position is computed
    grad = logits.grad[:, -1]
    others = torch.ones(grad.shape[-1], dtype=torch.bool)
    others[model.label_ids] = False
    assert grad[:, others].abs().max() == 0
    assert (grad[:, model.label_ids].abs().sum(0) > 0).all()


def test_regression_predicts_the_expected_score(tiny_llama: str, glue_dir: Path) -> None:
    _, model, collate = _setup(tiny_llama, "stsb", method="zero-shot")
    batch = collate(list(load_split("stsb", "dev", glue_dir).select(range(5))))
    with torch.no_grad():
        scores, predicted = model.scores(batch), model.predict(batch)
    k = len(prompt.VERBALIZERS["stsb"].words)  # No/Yes: the score 5·P(Yes)
    assert scores.shape == (5, k)
    expected = scores.softmax(-1) @ torch.linspace(0.0, 5.0, k)
    torch.testing.assert_close(predicted, expected)
    assert ((predicted >= 0) & (predicted <= 5)).all()


def test_expected_score_spreads_the_words_evenly_over_0_to_5() -> None:
    """Six words are the digits 0–5; two (no, yes) stand for 0 and 5: 5·P(yes)."""
    six = torch.tensor([[0.0, 0.0, 0.0, 9.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    torch.testing.assert_close(prompt.expected_score(six),
                               (six.softmax(-1) * torch.arange(6.0)).sum(-1))
    two = torch.tensor([[0.0, 0.0], [0.0, 30.0], [1.0, 0.0]])
    torch.testing.assert_close(prompt.expected_score(two), 5 * two.softmax(-1)[:, 1])
    assert prompt.expected_score(two)[1] == pytest.approx(5.0)


@pytest.mark.parametrize("template", ["chat", "plain"])
@pytest.mark.parametrize("lm", ["tiny_llama", "tiny_gpt2"])
def test_left_padding_leaves_a_rows_scores_unchanged(request, lm: str, glue_dir: Path,
                                                     template: str) -> None:
    """Rotary (Llama) and absolute (GPT-2, needs the position ids) positions alike."""
    _, model, collate = _setup(request.getfixturevalue(lm), "mrpc", method="zero-shot",
                               template=template)
    rows = list(load_split("mrpc", "dev", glue_dir).select(range(4)))
    long = dict(rows[1], sentence1=" ".join([rows[1]["sentence1"]] * 4))
    with torch.no_grad():
        alone = model.scores(collate([rows[0]]))
        batch = collate([rows[0], long])
        together = model.scores(batch)
    assert batch["inputs"]["attention_mask"][0, 0] == 0  # the short row was padded on the left
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)


def test_long_prompts_keep_their_end(tiny_llama: str, glue_dir: Path) -> None:
    config, _, _ = _setup(tiny_llama, "sst2", method="zero-shot")
    collate = make_collator(load_tokenizer(tiny_llama), replace(config, max_length=8), False)
    row = dict(load_split("sst2", "dev", glue_dir)[0], sentence="good " * 40)
    ids = collate([row])["inputs"]["input_ids"][0]
    tokenizer = load_tokenizer(tiny_llama)
    assert len(ids) == 8 and tokenizer.decode(ids[-1:]) == "the"  # the answer cue survives


def test_lengths_are_the_untruncated_prompt_lengths(tiny_llama: str, glue_dir: Path) -> None:
    config, _, collate = _setup(tiny_llama, "mrpc", method="zero-shot")
    rows = load_split("mrpc", "dev", glue_dir).select(range(3))
    lengths = collate.lengths(rows)
    batch = make_collator(load_tokenizer(tiny_llama), replace(config, max_length=512), False)(
        list(rows))
    assert lengths == batch["inputs"]["attention_mask"].sum(-1).tolist()
