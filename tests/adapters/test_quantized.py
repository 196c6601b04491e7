"""Deep LoRA on a bitsandbytes 4-bit / 8-bit base, on bitsandbytes' CPU backend."""

from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BitsAndBytesConfig,
)

from deeplora.adapters import DeepLoraConfig, DeepLoraLayer

pytest.importorskip("bitsandbytes")

QUANTIZED = {
    "4bit": {"load_in_4bit": True, "bnb_4bit_compute_dtype": torch.float32},
    "8bit": {"load_in_8bit": True},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer BERT classifier, hidden 64 / MLP 128: bitsandbytes' CPU kernels need
    in_features divisible by the 4-bit block size (64) and out_features by 32."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=32, num_labels=2))
    path = tmp_path_factory.mktemp("bert-64")
    model.save_pretrained(path)
    return path


def quantized(folder: Path, kind: str) -> torch.nn.Module:
    config = BitsAndBytesConfig(**QUANTIZED[kind], llm_int8_skip_modules=["classifier"])
    return AutoModelForSequenceClassification.from_pretrained(
        folder, quantization_config=config, device_map="cpu").eval()


BATCH = {"input_ids": torch.randint(1, 64, (4, 9), generator=torch.Generator().manual_seed(0)),
         "labels": torch.tensor([0, 1, 1, 0])}


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=BATCH["input_ids"]).logits


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantized_base_trains_and_refuses_to_merge(folder: Path, kind: str,
                                                    tmp_path: Path) -> None:
    # a separate base for the reference: bitsandbytes repacks 4-bit weights for the CPU on the
    # first no-grad eval forward, after which that layer cannot train any more
    reference = logits(quantized(folder, kind))
    model = get_peft_model(quantized(folder, kind), DeepLoraConfig(r=4, target_modules="all-linear",
                                                init_scale=0.1))
    layers = [m for m in model.modules() if isinstance(m, DeepLoraLayer)]
    assert len(layers) == 7 and all(layer.quantized for layer in layers)
    packed = {n: p.clone() for n, p in model.named_parameters() if not p.is_floating_point()}
    assert packed  # the 4-bit / 8-bit weights

    model.train()
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in adapters} == {torch.float32}
    optimizer = torch.optim.Adam(adapters, lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**BATCH).loss
        loss.backward()
        assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in adapters)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    model.eval()
    trained = logits(model)
    assert (trained - reference).abs().max() > 1e-3

    with pytest.raises(ValueError, match=r"cannot merge Deep LoRA into quantized.*packed"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="cannot merge Deep LoRA into quantized"):
        layers[0].merge()
    assert not any(layer.merged for layer in layers)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in packed.items() if params[n].shape == p.shape)
    assert torch.equal(logits(model), trained)

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(quantized(folder, kind), tmp_path)
    torch.testing.assert_close(logits(loaded), trained)
