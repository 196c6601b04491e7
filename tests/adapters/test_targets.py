import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from deeplora.adapters import DeepLoraConfig, resolve_target_modules
from deeplora.adapters.targets import linear_shape

from .helpers import tiny_bert, tiny_gpt2, tiny_t5

BERT_BLOCK = ["attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense", "intermediate.dense", "output.dense"]


def test_bert_presets_select_by_type_and_keep_the_head_out() -> None:
    model = tiny_bert()
    blocks = [f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in BERT_BLOCK]
    assert resolve_target_modules(model, "attention-mlp") == blocks
    assert resolve_target_modules(model, "all-linear") == [*blocks, "bert.pooler.dense"]
    assert resolve_target_modules(model, "query-value") == [
        f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    ]


def test_t5_presets_cover_encoder_and_decoder_but_not_the_lm_head() -> None:
    model = tiny_t5()
    names = resolve_target_modules(model, "all-linear")
    assert len(names) == 2 * 6 + 2 * 10 and "lm_head" not in names
    assert resolve_target_modules(model, "attention-mlp") == names
    query_value = resolve_target_modules(model, "query-value")
    assert len(query_value) == 2 * 2 + 2 * 4
    assert {n.rsplit(".", 1)[1] for n in query_value} == {"q", "v"}


def test_gpt2_presets_adapt_conv1d_and_the_fused_qkv() -> None:
    model = tiny_gpt2()
    names = resolve_target_modules(model, "all-linear")
    assert len(names) == 8 and "lm_head" not in names
    assert resolve_target_modules(model, "query-value") == [
        "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert linear_shape(model.transformer.h[0].attn.c_attn) == (48, 16)


def test_names_regex_and_modules_to_save() -> None:
    model = tiny_bert()
    assert resolve_target_modules(model, ["query", "bert.pooler.dense"]) == [
        "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query",
        "bert.pooler.dense"]
    assert resolve_target_modules(model, r".*layer\.1\.attention\.self\.(key|value)") == [
        "bert.encoder.layer.1.attention.self.key", "bert.encoder.layer.1.attention.self.value"]
    assert "bert.pooler.dense" not in resolve_target_modules(model, "all-linear", ["pooler"])


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["query", "nonexistent"], r"\['nonexistent'\] match no module"),
        ("no_such_.*", "matches no module"),
        (["LayerNorm"], "only torch.nn.Linear and transformers Conv1D"),
        ([], "empty"),
    ],
)
def test_bad_targets_raise_naming_the_problem(targets: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_target_modules(tiny_bert(), targets)


def test_preset_on_a_model_without_linear_layers_raises() -> None:
    with pytest.raises(ValueError, match="preset 'all-linear' matches no"):
        resolve_target_modules(nn.Sequential(nn.ReLU()), "all-linear")


def test_linear_shape_is_d_out_by_d_in() -> None:
    assert linear_shape(nn.Linear(3, 5)) == (5, 3)
    assert linear_shape(Conv1D(5, 3)) == (5, 3)
    assert linear_shape(nn.LayerNorm(3)) is None


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("preset", "modules", "params"),
    # MiniLM: 6 blocks, hidden 384, MLP 1536. A depth-3 rank-8 adapter on a d_out×d_in layer
    # has 8·d_in + 8·8 + d_out·8 parameters: 6,208 on 384×384, 15,424 on 384↔1536.
    [("query-value", 12, 12 * 6_208),
     ("attention-mlp", 36, 6 * (4 * 6_208 + 2 * 15_424)),
     ("all-linear", 37, 6 * (4 * 6_208 + 2 * 15_424) + 6_208)],
)
def test_parameter_counts_per_preset_on_minilm(
    minilm: PreTrainedModel, preset: str, modules: int, params: int
) -> None:
    assert len(resolve_target_modules(minilm, preset)) == modules
    model = get_peft_model(minilm, DeepLoraConfig(r=8, depth=3, target_modules=preset))
    assert trainable(model) == params


def test_vanilla_lora_count_on_minilm(minilm: PreTrainedModel) -> None:
    config = DeepLoraConfig(r=8, depth=2, init="lora", target_modules="all-linear")
    model = get_peft_model(minilm, config)
    assert trainable(model) == 6 * (4 * 8 * 768 + 2 * 8 * 1920) + 8 * 768
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
