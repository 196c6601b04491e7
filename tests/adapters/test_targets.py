import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from deeplora.adapters import PRESETS, DeepLoraConfig, resolve_target_modules
from deeplora.adapters.targets import layer_shape, register_preset

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
    embeddings = ["bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings"]
    assert resolve_target_modules(model, "all-dense") == [*embeddings, *blocks,
                                                          "bert.pooler.dense"]


def test_all_dense_selects_what_the_papers_512_rule_selects_in_bert_base() -> None:
    """The authors adapt every 2-D weight with both dimensions >= 512 in BERT-base. On a
    BERT-base-shaped model (meta device, no memory) that set equals the preset's weights."""
    from transformers import BertConfig, BertForSequenceClassification

    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(vocab_size=28996, num_labels=1))
    by_rule = {n.removesuffix(".weight") for n, p in model.named_parameters()
               if p.ndim == 2 and min(p.shape) >= 512}
    assert len(by_rule) == 12 * 6 + 3
    assert set(resolve_target_modules(model, "all-dense")) == by_rule


def test_all_dense_on_gpt2_adds_token_and_position_embeddings() -> None:
    names = resolve_target_modules(tiny_gpt2(), "all-dense")
    assert names[:2] == ["transformer.wte", "transformer.wpe"]
    assert names[2:] == resolve_target_modules(tiny_gpt2(), "all-linear")


def tiny_opt() -> PreTrainedModel:
    """1-layer OPT: its learned position embedding computes positions + 2 from the attention
    mask in its own forward (so does BART's from the ids' shape)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    return OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                    ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16,
                                    max_position_embeddings=32)).eval()


def test_all_dense_skips_embeddings_whose_forward_does_not_look_up_its_input() -> None:
    """The adapter looks up ``W_1[:, x]`` of the layer input x: right for nn.Embedding, wrong
    for an OPT/BART position embedding, whose input is a mask or the ids (it used to crash)."""
    model = tiny_opt()
    names = resolve_target_modules(model, "all-dense")
    assert names[0] == "model.decoder.embed_tokens" and "model.decoder.embed_positions" not in names
    assert layer_shape(model.model.decoder.embed_positions) is None
    peft_model = get_peft_model(model, DeepLoraConfig(r=2, target_modules="all-dense"))
    assert peft_model(input_ids=torch.randint(0, 64, (2, 5))).logits.shape == (2, 5, 64)
    with pytest.raises(ValueError, match=r"embed_positions.*OPTLearnedPositionalEmbedding"):
        resolve_target_modules(tiny_opt(), ["embed_positions"])


def test_all_dense_refuses_an_embedding_weight_shared_by_several_modules() -> None:
    with pytest.raises(ValueError, match=r"shared by several modules.*encoder\.embed_tokens"):
        resolve_target_modules(tiny_t5(), "all-dense")


def test_registered_preset_resolves_like_a_builtin() -> None:
    register_preset("keys", lambda model, candidates: [n for n in candidates
                                                       if n.endswith(".key")])
    try:
        assert resolve_target_modules(tiny_bert(), "keys") == [
            f"bert.encoder.layer.{i}.attention.self.key" for i in range(2)]
    finally:
        del PRESETS["keys"]


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
    assert layer_shape(model.transformer.h[0].attn.c_attn) == (48, 16)


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
        (["LayerNorm"], "only torch.nn.Linear, transformers Conv1D and torch.nn.Embedding"),
        ([], "empty"),
    ],
)
def test_bad_targets_raise_naming_the_problem(targets: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_target_modules(tiny_bert(), targets)


def test_preset_on_a_model_without_linear_layers_raises() -> None:
    with pytest.raises(ValueError, match="preset 'all-linear' matches no adaptable layer"):
        resolve_target_modules(nn.Sequential(nn.ReLU()), "all-linear")


def test_layer_shape_is_d_out_by_d_in() -> None:
    assert layer_shape(nn.Linear(3, 5)) == (5, 3)
    assert layer_shape(Conv1D(5, 3)) == (5, 3)
    assert layer_shape(nn.Embedding(3, 5)) == (5, 3)  # ids of 3 tokens -> 5-dim vectors
    assert layer_shape(nn.LayerNorm(3)) is None


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("preset", "modules", "params"),
    # MiniLM: 6 blocks, hidden 384, MLP 1536. A depth-3 rank-8 adapter on a d_out×d_in layer
    # has 8·d_in + 8·8 + d_out·8 parameters: 6,208 on 384×384, 15,424 on 384↔1536.
    [("query-value", 12, 12 * 6_208),
     ("attention-mlp", 36, 6 * (4 * 6_208 + 2 * 15_424)),
     ("all-linear", 37, 6 * (4 * 6_208 + 2 * 15_424) + 6_208),
     # + word embeddings (30522 tokens -> 384) and position embeddings (512 -> 384)
     ("all-dense", 39, 6 * (4 * 6_208 + 2 * 15_424) + 6_208 + (8 * 30_522 + 64 + 384 * 8)
      + (8 * 512 + 64 + 384 * 8))],
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
