from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from deeplora.adapters import build_adapter_config, resolve_target_modules
from deeplora.nlg.config import nlg_preset
from deeplora.nlg.data import Example
from deeplora.nlg.models import Formatter, add_adapters, generate
from tests.nlg.conftest import tiny_model, word_tokenizer

SUFFIXES = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "t5": {"q", "k", "v", "o", "wi", "wo"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
}


@pytest.mark.parametrize("arch", sorted(SUFFIXES))
def test_all_linear_preset_resolves(arch: str) -> None:
    model = tiny_model(arch, 60)
    names = resolve_target_modules(model, "all-linear")
    assert {n.rsplit(".", 1)[-1] for n in names} == SUFFIXES[arch]
    assert not any("lm_head" in n for n in names)
    qv = {n.rsplit(".", 1)[-1] for n in resolve_target_modules(model, "query-value")}
    assert qv == {"llama": {"q_proj", "v_proj"}, "t5": {"q", "v"}, "gpt2": {"c_attn"}}[arch]


def _perturb(model: torch.nn.Module) -> None:
    """Move every trainable adapter weight off its initialization (ΔW clearly non-zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("method", ["deep-lora", "lora", "peft-lora"])
def test_generate_same_tokens_merged_and_unmerged(arch: str, method: str) -> None:
    tokenizer = word_tokenizer(chat_template=arch == "llama")
    config = nlg_preset("cpu", method=method, rank=4, num_beams=2, max_output_length=8)
    formatter = Formatter(tokenizer, config, encoder_decoder=arch == "t5")
    mrs = ["name[The Eagle], eatType[pub]", "name[Mill], food[French], area[riverside]"]
    base = generate(tiny_model(arch, len(tokenizer)), formatter, mrs, batch_size=2)
    model = add_adapters(tiny_model(arch, len(tokenizer)), config)
    _perturb(model)
    unmerged = generate(model, formatter, mrs, batch_size=2)
    model.merge_adapter()
    merged = generate(model, formatter, mrs, batch_size=2)
    assert merged == unmerged
    assert unmerged != base  # the adapters change what is generated


def test_zero_shot_adds_nothing_and_freezes() -> None:
    model = add_adapters(tiny_model("llama", 60), nlg_preset("cpu", method="zero-shot"))
    assert not any(p.requires_grad for p in model.parameters())


def test_peft_lora_on_causal_lm_is_trainable() -> None:
    model = tiny_model("gpt2", 60)
    peft = get_peft_model(model, build_adapter_config("peft-lora", r=2,
                                                      target_modules="all-linear", model=model))
    assert {n for n, p in peft.named_parameters() if p.requires_grad}


def test_causal_batch_has_loss_on_target_and_eos_only() -> None:
    tokenizer = word_tokenizer(chat_template=True)
    config = nlg_preset("cpu", max_input_length=3, max_output_length=4)
    formatter = Formatter(tokenizer, config, encoder_decoder=False)
    rows = [Example("name[The Eagle], eatType[pub]", ("The Eagle is a pub .",)),
            Example("name[Mill]", ("Mill",))]
    batch = formatter.train_batch(rows)
    labels, ids = batch["labels"], batch["input_ids"]
    target = tokenizer("The Eagle is a", add_special_tokens=False)["input_ids"]
    assert labels[0][labels[0] != -100].tolist() == [*target, tokenizer.eos_token_id]
    assert labels[1][labels[1] != -100].tolist() == [*tokenizer("Mill")["input_ids"], 1]
    prompt = formatter.prompt(rows[0].mr)
    assert ids[0, :len(prompt)].tolist() == prompt
    mr_ids = tokenizer(rows[0].mr, add_special_tokens=False)["input_ids"][:3]
    assert prompt == formatter.prefix + mr_ids + formatter.suffix  # MR cut to 3 tokens
    assert batch["attention_mask"][1].sum() == len(formatter.prompt("name[Mill]")) + 2
    padded = Formatter(tokenizer, nlg_preset("paper", max_input_length=3, max_output_length=4),
                       encoder_decoder=False).train_batch(rows)
    assert padded["input_ids"].shape[1] == len(formatter.prefix) + len(formatter.suffix) + 8


def test_seq2seq_batch() -> None:
    tokenizer = word_tokenizer()
    formatter = Formatter(tokenizer, nlg_preset("paper", max_input_length=4,
                                                max_output_length=3), encoder_decoder=True)
    batch = formatter.train_batch([Example("name[Mill], food[French]", ("Mill serves French .",))])
    assert batch["input_ids"].shape == (1, 4) and batch["labels"].shape == (1, 4)
    assert batch["input_ids"][0, -1] == 1 and batch["labels"][0, -1] == 1
    long = Formatter(tokenizer, nlg_preset("paper"), encoder_decoder=True)
    gen = long.generation_batch(["name[Mill]", "name[The Eagle], eatType[pub]"])
    assert gen["attention_mask"][0].tolist() == [1] * 5 + [0] * 5  # right-padded inputs


@pytest.mark.parametrize("method", ["deep-lora", "lora"])
def test_all_dense_with_embeddings_generates_the_same_merged(method: str) -> None:
    tokenizer = word_tokenizer(chat_template=True)
    config = nlg_preset("paper", method=method, rank=4, num_beams=1, max_output_length=8)
    assert config.targets == "all-dense"
    formatter = Formatter(tokenizer, config, encoder_decoder=False)
    mrs = ["name[The Eagle], eatType[pub]", "name[Mill], food[French]"]
    model = add_adapters(tiny_model("llama", len(tokenizer)), config)
    assert any("embed_tokens" in n for n, p in model.named_parameters() if p.requires_grad)
    _perturb(model)
    unmerged = generate(model, formatter, mrs, batch_size=2)
    model.merge_adapter()
    assert generate(model, formatter, mrs, batch_size=2) == unmerged
