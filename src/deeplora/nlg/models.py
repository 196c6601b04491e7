"""Generative models for E2E NLG: loading, adapters, batches and decoding.

Two formats, chosen from the model's config:

- **causal LM** (Llama, GPT-2, …): prompt = the MR (inside the tokenizer's chat template with a
  one-line instruction when it has one, else ``"<MR>\\n"``), followed by the reference and EOS;
  the loss is on the reference tokens and EOS only (prompt and padding labelled -100).
  Generation continues the left-padded prompt.
- **seq2seq** (T5, BART, …): encoder input = the MR, decoder target = the reference.

``max_input_length`` bounds the MR's tokens (the chat template around it is not counted),
``max_output_length`` the reference's tokens and the generated tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from peft import get_peft_model
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deeplora.adapters import build_adapter_config
from deeplora.embedded_lm import EMBEDDED_LM, embedded_lm_path, is_embedded_lm
from deeplora.finetune.data import DataError
from deeplora.nlg.config import NLGConfig
from deeplora.nlg.data import Example

INSTRUCTION = "Write one sentence describing the restaurant."
Batch = dict[str, Tensor]


def resolve_generative_model(name: str | None) -> str:
    """Folder or hub id of ``name`` (``None`` or ``"smollm2-135m-instruct"``: the embedded LM),
    checked to be a transformers model."""
    if name is None or is_embedded_lm(name):
        return embedded_lm_path()
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name}: not a transformers model ({first})") from None
    if not (config.is_encoder_decoder or _is_causal(config)):
        raise DataError(f"{name}: {type(config).__name__} has no causal-LM or seq2seq head "
                        f"(try {EMBEDDED_LM})")
    return name


def _is_causal(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def load_generative(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (float32, causal LM or seq2seq as its config says) and tokenizer of ``path``."""
    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_adapters(model: PreTrainedModel, config: NLGConfig) -> nn.Module:
    """``model`` wrapped by PEFT with ``config.method``'s adapters on ``config.targets``
    (``zero-shot``: frozen, unwrapped). Draws from torch's global generator."""
    if config.method == "zero-shot":
        return model.requires_grad_(False)
    extra: dict[str, Any] = {}
    if config.method == "deep-lora":
        extra = {"depth": config.depth, "init_scale": config.init_scale}
    peft_config = build_adapter_config(config.method, r=config.rank,
                                       target_modules=config.targets, model=model, **extra)
    return get_peft_model(model, peft_config)


class Formatter:
    """Token ids of prompts and targets, and batches for training and generation."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: NLGConfig,
                 encoder_decoder: bool) -> None:
        self.tokenizer, self.config, self.encoder_decoder = tokenizer, config, encoder_decoder
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if not encoder_decoder:
            if tokenizer.chat_template:
                marker = "\x00"
                text = tokenizer.apply_chat_template(
                    [{"role": "system", "content": INSTRUCTION},
                     {"role": "user", "content": marker}],
                    tokenize=False, add_generation_prompt=True)
                before, after = text.split(marker)
            else:
                before, after = "", "\n"
            self.prefix = self._ids(before, None)
            self.suffix = self._ids(after, None)
        self.eos = tokenizer.eos_token_id

    def _ids(self, text: str, limit: int | None) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if limit is None else ids[:limit]

    def prompt(self, mr: str) -> list[int]:
        """Token ids of the prompt for ``mr`` (causal LM)."""
        return self.prefix + self._ids(mr, self.config.max_input_length) + self.suffix

    def _pad(self, rows: Sequence[list[int]], value: int, left: bool, length: int | None
             ) -> Tensor:
        width = max(len(r) for r in rows) if length is None else length
        pad = [[value] * (width - len(r)) for r in rows]
        return torch.tensor([p + r if left else r + p for r, p in zip(rows, pad, strict=True)])

    def train_batch(self, examples: Sequence[Example]) -> Batch:
        """``input_ids``, ``attention_mask``, ``labels`` (−100 where no loss) for training."""
        cfg, pad = self.config, self.tokenizer.pad_token_id
        targets = [[*self._ids(e.refs[0], cfg.max_output_length), self.eos] for e in examples]
        if self.encoder_decoder:
            sources = [[*self._ids(e.mr, cfg.max_input_length - 1), self.eos] for e in examples]
            fixed_in = cfg.max_input_length if cfg.pad_to_max_length else None
            fixed_out = cfg.max_output_length + 1 if cfg.pad_to_max_length else None
            ids = self._pad(sources, pad, False, fixed_in)
            return {"input_ids": ids, "attention_mask": (self._pad(
                        [[1] * len(s) for s in sources], 0, False, fixed_in)),
                    "labels": self._pad(targets, -100, False, fixed_out)}
        prompts = [self.prompt(e.mr) for e in examples]
        rows = [p + t for p, t in zip(prompts, targets, strict=True)]
        labels = [[-100] * len(p) + t for p, t in zip(prompts, targets, strict=True)]
        fixed = (len(self.prefix) + len(self.suffix) + cfg.max_input_length
                 + cfg.max_output_length + 1) if cfg.pad_to_max_length else None
        return {"input_ids": self._pad(rows, pad, False, fixed),
                "attention_mask": self._pad([[1] * len(r) for r in rows], 0, False, fixed),
                "labels": self._pad(labels, -100, False, fixed)}

    def generation_batch(self, mrs: Sequence[str]) -> Batch:
        """Left-padded prompts (causal LM) or right-padded encoder inputs (seq2seq)."""
        pad = self.tokenizer.pad_token_id
        if self.encoder_decoder:
            rows = [[*self._ids(mr, self.config.max_input_length - 1), self.eos] for mr in mrs]
            left = False
        else:
            rows, left = [self.prompt(mr) for mr in mrs], True
        return {"input_ids": self._pad(rows, pad, left, None),
                "attention_mask": self._pad([[1] * len(r) for r in rows], 0, left, None)}

    def generation_config(self, model: nn.Module) -> GenerationConfig:
        """``model``'s generation config set to beam search with ``num_beams`` (1: greedy),
        no sampling, at most ``max_output_length`` new tokens, stopping at EOS."""
        config = copy.deepcopy(model.generation_config)
        config.update(max_new_tokens=self.config.max_output_length, max_length=None,
                      num_beams=self.config.num_beams, do_sample=False, temperature=None,
                      top_p=None, top_k=None, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.eos)
        return config

    def decode(self, generated: Tensor, batch: Batch) -> list[str]:
        """Generated texts, whitespace collapsed to single spaces (references are one line)."""
        new = generated if self.encoder_decoder else generated[:, batch["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


@torch.no_grad()
def generate(model: nn.Module, formatter: Formatter, mrs: Sequence[str], batch_size: int,
             progress: bool = False, desc: str = "generate", leave: bool = True) -> list[str]:
    """One output text per MR, in order, with ``formatter.generation_config()``; with
    ``progress`` a bar of the MRs done (removed when done unless ``leave``)."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    config = formatter.generation_config(model)
    outputs: list[str] = []
    with tqdm(total=len(mrs), desc=desc, disable=not progress, unit="MR", leave=leave) as bar:
        for start in range(0, len(mrs), batch_size):
            chunk = mrs[start:start + batch_size]
            batch = {k: v.to(device) for k, v in formatter.generation_batch(chunk).items()}
            generated = model.generate(**batch, generation_config=config)
            outputs += formatter.decode(generated, batch)
            bar.update(len(chunk))
    return outputs
