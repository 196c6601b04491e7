"""Shared fixtures: one-thread small-matrix tests, the wrong compressed constructions for
mutation checks, synthetic GLUE folders and a tiny random BERT built in the test session (no
downloads)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

# Modules that build the compressed subspaces with deeplora.factorization.compress.compressed_bases
CONSTRUCTION_USERS = ("deeplora.factorization.compress", "deeplora.completion.sparse",
                      "deeplora.adapters.compress")


@pytest.fixture
def one_thread():
    """Small-matrix tests run faster on one thread (and do not thrash a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _input_side_bases(grad, rank, isometry, isometry_t, generator=None):
    """Wrong for m > n: the paper's input-side formula V = orth[V_E, Qᵀ U_E], U = Q V on
    every shape, so span(U) keeps only Q Qᵀ U_E."""
    core = importlib.import_module("deeplora.factorization.compress")
    left, right = core._top_singular_vectors(grad, rank, generator)
    right = core.orthonormal_union(right, isometry_t(left))
    return isometry(right), right


def _stacked_bases(grad, rank, isometry, isometry_t, generator=None, scale=1e-3):
    """Wrong when E has more than r̂ significant directions: the authors' compute_factor_v3,
    V = top-2r̂ right singular vectors of G₁ stacked over G₁ᵀ W₁(0). With G₁ = ε^{L-1} Pᵀ E and
    P Pᵀ = I these are those of [E; ε Eᵀ Q] (the common factor ε^{L-1} dropped); U = Q V."""
    e = grad.double() if isinstance(grad, Tensor) else torch.from_numpy(grad.toarray())
    stack = torch.cat([e, scale * isometry_t(e).T])
    right = torch.linalg.svd(stack, full_matrices=False).Vh[: 2 * rank].T.contiguous()
    return isometry(right), right


WRONG_CONSTRUCTIONS = {"input-side": _input_side_bases, "stacked": _stacked_bases}


@pytest.fixture
def wrong_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str, dict[str, Callable[[], None]]], set[str]]:
    """``failing(name, checks)`` replaces the compressed construction in every code path that
    uses it by one of :data:`WRONG_CONSTRUCTIONS` for the rest of the test, runs each check and
    returns the names of those that fail (mutation checks)."""

    def failing(name: str, checks: dict[str, Callable[[], None]]) -> set[str]:
        for module in CONSTRUCTION_USERS:
            target = importlib.import_module(module)
            assert hasattr(target, "compressed_bases"), module
            monkeypatch.setattr(target, "compressed_bases", WRONG_CONSTRUCTIONS[name])
        failed = set()
        for check_name, check in checks.items():
            try:
                check()
            except AssertionError:
                failed.add(check_name)
        return failed

    return failing


os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TEXT = ("a man is playing the guitar woman cat dog eating food plane taking off flute riding "
         "horse child sad happy film good bad it is not")
WORDS = _TEXT.split(" ")

# Per task: folder -> {file: text}; every GLUE layout and header convention, tiny.
STSB_HEADER = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
               "sentence2\tscore")
MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                     "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                     "sentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER.replace("label1\tgold_label",
                                            "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def _sentence(i: int, shift: int = 0) -> str:
    return " ".join(WORDS[(i * 3 + k + shift) % len(WORDS)] for k in range(4))


def _stsb(n: int) -> str:
    rows = [STSB_HEADER]
    for i in range(n):
        s1 = f'A "quoted" {_sentence(i)}' if i == 0 else _sentence(i)
        rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{s1}\t"
                    f"{_sentence(i, i % 3)}\t{(i * 0.37) % 5:.3f}")
    return "\n".join(rows) + "\n"


def _files(n: int) -> dict[str, dict[str, str]]:
    labels3 = ("entailment", "neutral", "contradiction")
    nli2 = ("entailment", "not_entailment")
    cola = "".join(f"gj04\t{i % 2}\t\t{_sentence(i)}\n" for i in range(n))
    mnli_train = "\n".join([MNLI_TRAIN_HEADER] + [
        f"{i}\t{i}\t{i}e\tfiction\t( x )\t( y )\t(S x)\t(S y)\t{_sentence(i)}\t"
        f"{_sentence(i, 1)}\t{labels3[i % 3]}\t{labels3[i % 3]}" for i in range(n)]) + "\n"
    mnli_dev = "\n".join([MNLI_DEV_HEADER] + [
        f"{i}\t{i}\t{i}e\tfiction\t( x )\t( y )\t(S x)\t(S y)\t{_sentence(i)}\t"
        f"{_sentence(i, 1)}\t{labels3[i % 3]}\tneutral\tneutral\tneutral\tneutral\t"
        f"{labels3[i % 3]}" for i in range(n)]) + "\n"
    return {
        "CoLA": {"train.tsv": cola, "dev.tsv": cola.rstrip("\n")},  # no header, no final newline
        "SST-2": {f: "sentence\tlabel\n" + "".join(f"{_sentence(i)} \t{i % 2}\n" for i in range(n))
                  for f in ("train.tsv", "dev.tsv")},
        "MRPC": {f: "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
            f"{i % 2}\t{100 + i}\t{200 + i}\t{_sentence(i)} \" .\t{_sentence(i, 2)}\n"
            for i in range(n)) for f in ("train.tsv", "dev.tsv")},
        "QQP": {f: "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + "".join(
            f"{i}\t{2 * i}\t{2 * i + 1}\t{_sentence(i)}?\t{_sentence(i, 1)}?\t{i % 2}\n"
            for i in range(n)) for f in ("train.tsv", "dev.tsv")},
        "STS-B": {"train.tsv": _stsb(n), "dev.tsv": _stsb(n)},
        "MNLI": {"train.tsv": mnli_train, "dev_matched.tsv": mnli_dev},
        "QNLI": {f: "index\tquestion\tsentence\tlabel\n" + "".join(
            f"{i}\t{_sentence(i)}?\t{_sentence(i, 2)}.\t{nli2[i % 2]}\n" for i in range(n))
            for f in ("train.tsv", "dev.tsv")},
        "RTE": {f: "index\tsentence1\tsentence2\tlabel\n" + "".join(
            f"{i}\t{_sentence(i)}.\t{_sentence(i, 2)}.\t{nli2[i % 2]}\n" for i in range(n))
            for f in ("train.tsv", "dev.tsv")},
    }


def write_glue(root: Path, n: int = 40) -> Path:
    for folder, files in _files(n).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / folder / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def make_glue() -> Callable[..., Path]:
    """``make_glue(root, n=40)`` writes all eight GLUE tasks with ``n`` rows per file."""
    return write_glue


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GLUE folder with all eight tasks, 40 rows per file (do not modify)."""
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder of a random 2-layer, 32-wide BERT with a word-level vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS), '"', ".", "?"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


PROMPT_WORDS = ("positive", "negative", "yes", "no", "Yes", "No", "maybe", *"012345", "Answer",
                "Review", "Sentence", "user", ":", "the")


def _causal_lm(arch: str, folder: Path) -> str:
    """A random 2-layer, 16-wide causal LM of ``arch`` in ``folder`` with a word-level
    tokenizer over the synthetic GLUE words and the prompt head's label words, with a chat
    template."""
    from tests.nlg.conftest import tiny_model, word_tokenizer

    tokenizer = word_tokenizer(chat_template=True, words=(*WORDS, *PROMPT_WORDS))
    tiny_model(arch, len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama (rotary positions) for the prompt head."""
    return _causal_lm("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny GPT-2 (absolute position embeddings) for the prompt head."""
    return _causal_lm("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def split_glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SST-2 and STS-B with 40 training rows of distinct texts and a dev (test) split of 10
    rows, the first 10 training rows: 30 training rows are not in the test split."""
    root = write_glue(tmp_path_factory.mktemp("split-glue"))
    sst2 = [f"{_sentence(i)} n{i}\t{i % 2}\n" for i in range(40)]
    stsb = [f"{i}\tg\tf\t2012\t{i}\ts\ts\t{_sentence(i)} n{i}\t{_sentence(i, 1)}\t"
            f"{(i * 0.37) % 5:.3f}\n" for i in range(40)]
    for folder, header, rows in (("SST-2", "sentence\tlabel\n", sst2),
                                 ("STS-B", STSB_HEADER + "\n", stsb)):
        (root / folder / "train.tsv").write_text(header + "".join(rows))
        (root / folder / "dev.tsv").write_text(header + "".join(rows[:10]))
    return root
