"""Fixtures: tiny random Llama / GPT-2 / T5 models with a word-level tokenizer, and a tiny E2E
folder. Tests never touch the network."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

WORDS = (
    "name", "[", "]", ",", "eatType", "food", "area", "near", "priceRange", "familyFriendly",
    "customer", "rating", "The", "Eagle", "Mill", "Cocum", "pub", "coffee", "shop", "restaurant",
    "French", "Indian", "English", "riverside", "city", "centre", "yes", "no", "cheap",
    "moderate", "high", "is", "a", "an", "in", "the", "located", "serves", "it", "family",
    "friendly", ".", "with", "and", "of", "prices",
)
DEV = [("name[The Eagle], eatType[pub]", "The Eagle is a pub."),
       ("name[The Eagle], eatType[pub]", "The Eagle is a pub in the city centre."),
       ("name[Mill], food[French]", "Mill serves French food."),
       ("name[Cocum], area[riverside]", "Cocum is located in the riverside."),
       ("name[The Mill], familyFriendly[yes]", "The Mill is family friendly."),
       *[(f"name[{n}], eatType[{t}], area[{a}]", f"{n} is a {t} in the {a}.")
         for n in ("Eagle", "Cocum", "Mill") for t in ("pub", "restaurant")
         for a in ("riverside", "city centre")]]
TEST = [("name[Cocum], eatType[coffee shop]", "Cocum is a coffee shop."),
        ("name[Cocum], eatType[coffee shop]", "Cocum is a coffee shop in the riverside."),
        ("name[The Eagle], food[Indian]", "The Eagle serves Indian food."),
        ("name[Mill], area[city centre]", "Mill is in the city centre.")]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ['"mr","ref"'] + [f'"{mr}","{ref}"' for mr, ref in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def e2e_dir(tmp_path: Path) -> Path:
    """A tiny E2E folder: devset.csv (16 MRs) and testset_w_refs.csv (3 MRs)."""
    folder = tmp_path / "e2e"
    folder.mkdir()
    write_csv(folder / "devset.csv", DEV)
    write_csv(folder / "testset_w_refs.csv", TEST)
    return folder


def word_tokenizer(chat_template: bool = False, words: Sequence[str] = WORDS
                   ) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``words`` (default :data:`WORDS`); [PAD] = 0, [EOS] = 1,
    [UNK] = 2."""
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[EOS]", "[UNK]", *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                        eos_token="[EOS]", unk_token="[UNK]")
    if chat_template:
        tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
                                   "{% endfor %}{% if add_generation_prompt %}the {% endif %}")
    return tokenizer


def tiny_model(arch: str, vocab_size: int) -> PreTrainedModel:
    """A random 2-layer model, width 16, of ``arch`` (llama, gpt2 or t5)."""
    torch.manual_seed(0)
    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 1}
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             **ids)
        return LlamaForCausalLM(config).eval()
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, **ids)
        return GPT2LMHeadModel(config).eval()
    config = T5Config(vocab_size=vocab_size, d_model=16, d_ff=32, d_kv=8, num_layers=2,
                      num_heads=2, decoder_start_token_id=0, **ids)
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture
def model_dir(tmp_path: Path) -> Iterator[Path]:
    """A saved tiny Llama with the word tokenizer (chat template set)."""
    folder = tmp_path / "tiny-llama"
    tokenizer = word_tokenizer(chat_template=True)
    tiny_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    yield folder


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
