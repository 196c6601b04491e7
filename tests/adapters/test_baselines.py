import os

import pytest
import torch
from peft import LoraConfig, get_peft_model

from deeplora.adapters import (
    DeepLoraConfig,
    adapter_deltas,
    build_adapter_config,
    embedded_model_path,
    resolve_target_modules,
)

from .helpers import inputs_for, logits, tiny_bert


def test_each_method_builds_its_config() -> None:
    deep = build_adapter_config("deep-lora", r=8, depth=4, init_scale=1e-2)
    assert isinstance(deep, DeepLoraConfig)
    assert (deep.r, deep.depth, deep.init_scale, deep.init) == (8, 4, 1e-2, "orthogonal")
    lora = build_adapter_config("lora", r=8)
    assert (lora.depth, lora.init) == (2, "lora")
    compressed = build_adapter_config("deep-lora-compressed", r=8, depth=3)
    assert (compressed.init, compressed.num_factors) == ("compressed", 5)
    peft_lora = build_adapter_config("peft-lora", r=8, target_modules=["query"], dropout=0.1,
                                     modules_to_save=["classifier"])
    assert isinstance(peft_lora, LoraConfig)
    assert (peft_lora.lora_alpha, peft_lora.lora_dropout) == (8, 0.1)
    assert peft_lora.modules_to_save == ["classifier"]


def test_peft_lora_presets_need_the_model() -> None:
    with pytest.raises(ValueError, match="pass model="):
        build_adapter_config("peft-lora", target_modules="attention-mlp")
    model = tiny_bert()
    config = build_adapter_config("peft-lora", r=4, target_modules="attention-mlp", model=model)
    assert sorted(config.target_modules) == sorted(resolve_target_modules(model, "attention-mlp"))
    wrapped = get_peft_model(model, config)
    assert len(adapter_deltas(wrapped)) == 12
    assert all(torch.count_nonzero(d) == 0 for d in adapter_deltas(wrapped).values())


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown adapter method 'dora'"):
        build_adapter_config("dora")


def test_vanilla_lora_starts_at_the_base_model_and_trains_b_first() -> None:
    base = tiny_bert()
    inputs = inputs_for(base)
    reference = logits(base, inputs)
    model = get_peft_model(base, build_adapter_config("lora", r=4, target_modules="all-linear"))
    assert torch.equal(logits(model, inputs), reference)  # B = 0: ΔW = 0 exactly
    model(**inputs).loss.backward()
    for name, param in model.named_parameters():
        if name.endswith("factors.0"):  # A: no gradient while B = 0
            assert torch.count_nonzero(param.grad) == 0
        elif name.endswith("factors.1"):
            assert torch.count_nonzero(param.grad) > 0


def test_embedded_model_path_holds_the_minilm_files() -> None:
    path = embedded_model_path()
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
