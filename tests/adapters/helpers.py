"""Tiny randomly initialized BERT / T5 / GPT-2 models (no downloads) and their inputs."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    T5Config,
    T5ForConditionalGeneration,
)

VOCAB = 64


def tiny_bert(seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """2-layer BERT classifier, hidden 16, intermediate 32 (Linear layers, with pooler)."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                        num_labels=2)
    return BertForSequenceClassification(config).to(dtype).eval()


def tiny_t5(seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """2+2-layer T5, d_model 16, d_ff 32 (bias-free Linear layers, LM head)."""
    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                      decoder_start_token_id=0)
    return T5ForConditionalGeneration(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """2-layer GPT-2, n_embd 16 (Conv1D layers, fused c_attn 16 -> 48, tied LM head)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).to(dtype).eval()


TINY = {"bert": tiny_bert, "t5": tiny_t5, "gpt2": tiny_gpt2}


def inputs_for(model: PreTrainedModel, seed: int = 1, batch: int = 3, length: int = 7
               ) -> dict[str, torch.Tensor]:
    """Random token ids (and labels) that every tiny model accepts."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=generator)
    if model.config.model_type == "t5":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :4], "labels": ids[:, :4]}
    if model.config.model_type == "gpt2":
        return {"input_ids": ids, "labels": ids}
    return {"input_ids": ids, "labels": torch.randint(0, 2, (batch,), generator=generator)}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
