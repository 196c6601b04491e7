import copy
import os
import re

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
    assert [n for n, _ in model.named_modules() if re.fullmatch(config.target_modules, n)] == (
        resolve_target_modules(model, "attention-mlp"))
    wrapped = get_peft_model(model, config)
    assert len(adapter_deltas(wrapped)) == 12
    assert all(torch.count_nonzero(d) == 0 for d in adapter_deltas(wrapped).values())


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown adapter method 'dora'"):
        build_adapter_config("dora")


@pytest.mark.parametrize(("method", "first_to_train"), [("lora", "0"), ("lora-hu", "1")])
def test_vanilla_lora_starts_at_the_base_model_and_trains_the_zero_factor_first(
    method: str, first_to_train: str
) -> None:
    """ΔW = B A = 0 at the start. "lora" (the authors'): B ~ N(0, 1), A = 0, so only A
    (factor 0) gets a gradient at first; "lora-hu" (Hu et al.): only B (factor 1) does."""
    base = tiny_bert()
    inputs = inputs_for(base)
    reference = logits(base, inputs)
    model = get_peft_model(base, build_adapter_config(method, r=4, target_modules="all-dense"))
    assert torch.equal(logits(model, inputs), reference)
    model(**inputs).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert len(grads) == 2 * 15  # 12 block layers, pooler, word and position embeddings
    for name, grad in grads.items():
        if name.endswith(f"factors.{first_to_train}"):
            assert torch.count_nonzero(grad) > 0, name
        else:
            assert torch.count_nonzero(grad) == 0, name


def test_rectangular_layer_gaussian_side_per_method() -> None:
    """On the 32×16 intermediate layer: "lora" draws B (32×r), "lora-hu" A (r×16)."""
    for method, gaussian in (("lora", (32, 4)), ("lora-hu", (4, 16))):
        model = get_peft_model(tiny_bert(), build_adapter_config(
            method, r=4, target_modules=["layer.0.intermediate.dense"]))
        a, b = next(iter(model.get_base_model().bert.encoder.layer[0].intermediate.dense
                         .deeplora_factors.values())).factors
        drawn = [f for f in (a, b) if torch.count_nonzero(f)]
        assert [tuple(f.shape) for f in drawn] == [gaussian]


def test_peft_lora_adapts_embeddings_of_the_paper_preset() -> None:
    model = tiny_bert()
    config = build_adapter_config("peft-lora", r=4, target_modules="all-dense", model=model)
    wrapped = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_embedding_A" in name:
                param.normal_()  # PEFT starts embeddings at A = 0
    deltas = adapter_deltas(wrapped)
    assert len(deltas) == 15
    word = deltas["bert.embeddings.word_embeddings"]
    assert word.shape == (16, 64) and torch.count_nonzero(word) > 0  # (dim, vocab)
    inputs = inputs_for(wrapped)
    unmerged = logits(wrapped, inputs)
    merged = wrapped.merge_and_unload()
    torch.testing.assert_close(logits(merged, inputs), unmerged, rtol=1e-4, atol=1e-5)


def test_embedded_model_path_holds_the_minilm_files() -> None:
    path = embedded_model_path()
    assert os.path.isfile(os.path.join(path, "config.json"))
    assert os.path.isfile(os.path.join(path, "model.safetensors"))


def test_peft_lora_from_a_model_adapts_exactly_the_resolved_names() -> None:
    """A regex selecting top-level ``0`` resolved to ["0"], which PEFT's LoraConfig matched
    as a dotted suffix: the nested ``inner.0`` got a LoRA layer too."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model.add_module("inner", torch.nn.Sequential(torch.nn.Linear(4, 4)))
    for targets in ("0", ["0"]):
        config = build_adapter_config("peft-lora", r=2, target_modules=targets,
                                      model=copy.deepcopy(model))
        wrapped = get_peft_model(copy.deepcopy(model), config)
        expected = ["0"] if isinstance(targets, str) else ["0", "inner.0"]  # names: suffixes
        assert sorted(adapter_deltas(wrapped)) == expected
