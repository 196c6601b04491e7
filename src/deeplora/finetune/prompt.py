"""Prompt-based (verbalizer) fine-tuning of a causal LM: the ``prompt`` head.

The task is written as a prompt, through the tokenizer's chat template (``template="chat"``,
the instruction as the user turn, the answer as the assistant's first token) or as plain text
ending in ``Answer:`` (``template="plain"``). The model's next-token logits at the end of the
prompt, restricted to the task's label words (:data:`VERBALIZERS`), are the prediction:

- classification with k label words w₁…w_k: ``z = logits[:, ids(w)]`` (n, k), loss
  ``cross_entropy(z, y)``, prediction ``argmax z``;
- STS-B (K words standing for the evenly spaced scores v_k = 5·k/(K − 1): the digits "0"…"5",
  or e.g. no/yes for 0 and 5): ``p = softmax(z)`` (n, K), score ``ŝ = Σ_k p_k·v_k`` ∈ [0, 5],
  loss ``mse(ŝ, y)``, prediction ŝ.

No other logit enters the loss, so the gradient reaches only the label words' rows of the
output layer (LM-BFF-style prompt tuning; Gao et al. 2021). Inputs are padded on the left so
that the last position is every row's last prompt token; position ids skip the padding (models
with absolute positions, e.g. GPT-2, need them; rotary ones are shift-invariant), so a row's
logits do not depend on its batch. Each label word must be one token after the prompt
(:func:`label_token_ids` raises :class:`~deeplora.finetune.data.DataError` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # type hints only: importing this module does not load transformers
    from transformers import PreTrainedTokenizerBase

from deeplora.finetune.data import DataError, GlueTask


@dataclass(frozen=True)
class Verbalizer:
    """A task as a prompt: ``body`` (a ``str.format`` template over the task's text columns),
    the ``question``, and one label word per class in label-id order (STS-B: words for evenly
    spaced scores from 0 to 5, low to high, e.g. the digits 0–5, see :func:`expected_score`).
    ``spaced``: in the plain template the word follows ``Answer:`` after a space (" yes");
    otherwise the prompt ends in ``"Answer: "`` and the word follows directly ("3", since " 3"
    is two tokens in byte-level BPE vocabularies)."""

    body: str
    question: str
    words: tuple[str, ...]
    spaced: bool = True


YES_NO = "Answer yes or no."
"""The answer cue that ends a yes/no question."""
VERBALIZERS: dict[str, Verbalizer] = {
    "sst2": Verbalizer("Review: {sentence}",
                       "Is the sentiment of this movie review positive or negative? Answer "
                       "with one word.",
                       ("negative", "positive")),
    "cola": Verbalizer("Sentence: {sentence}",
                       f"Is this sentence grammatically acceptable English? {YES_NO}",
                       ("no", "yes")),
    "mrpc": Verbalizer("Sentence 1: {sentence1}\nSentence 2: {sentence2}",
                       f"Do the two sentences mean the same thing? {YES_NO}", ("no", "yes")),
    "qqp": Verbalizer("Question 1: {question1}\nQuestion 2: {question2}",
                      f"Do the two questions ask the same thing? {YES_NO}", ("no", "yes")),
    "qnli": Verbalizer("Question: {question}\nSentence: {sentence}",
                       f"Does the sentence answer the question? {YES_NO}", ("yes", "no")),
    "rte": Verbalizer("Text: {sentence1}\nHypothesis: {sentence2}",
                      f"Does the text imply the hypothesis? {YES_NO}", ("yes", "no")),
    "mnli": Verbalizer("Premise: {premise}\nHypothesis: {hypothesis}",
                       "Does the premise imply the hypothesis? Answer yes, maybe or no.",
                       ("yes", "maybe", "no")),
    # chosen by prompt-select on held-out training rows over the digits 0–5 (Pearson 0.23 vs
    # −0.13, chat template): No → 0, Yes → 5, the score 5·P(Yes | No, Yes)
    "stsb": Verbalizer("Sentence 1: {sentence1}\nSentence 2: {sentence2}",
                       f"Are the two sentences about the same thing? {YES_NO}", ("No", "Yes")),
}


def verbalizer(task: GlueTask) -> Verbalizer:
    return VERBALIZERS[task.name]


def render(tokenizer: PreTrainedTokenizerBase, task: GlueTask, row: dict[str, Any],
           template: str, verb: Verbalizer | None = None) -> str:
    """The prompt text of ``row`` (the label word is what the model should write next);
    ``verb``: the task's declared :func:`verbalizer` unless given."""
    verb = verb or verbalizer(task)
    text = verb.body.format(**{col: row[col].strip() for col in task.text_columns})
    if template == "chat":
        messages = [{"role": "user", "content": f"{text}\n{verb.question}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{text}\n{verb.question}\nAnswer:" + ("" if verb.spaced else " ")


def answer_words(task: GlueTask, template: str, verb: Verbalizer | None = None
                 ) -> tuple[str, ...]:
    """The label words as they follow the prompt (a leading space in the spaced plain form)."""
    verb = verb or verbalizer(task)
    space = " " if template == "plain" and verb.spaced else ""
    return tuple(space + word for word in verb.words)


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, template: str) -> list[int]:
    # a rendered chat template already holds its special tokens
    return tokenizer(text, add_special_tokens=template == "plain")["input_ids"]


def label_token_ids(tokenizer: PreTrainedTokenizerBase, task: GlueTask, template: str,
                    verb: Verbalizer | None = None) -> list[int]:
    """The token id of each label word (of ``verb``, else the task's declared verbalizer),
    checked in context: the prompt followed by the word must tokenize as the prompt's tokens
    plus exactly one token.

    Raises:
        DataError: a word that is several tokens (or merges with the prompt's end), or two
            classes sharing a token.
    """
    columns = {col: "x" for col in task.text_columns}
    prompt = render(tokenizer, task, columns, template, verb)
    base = _encode(tokenizer, prompt, template)
    words = answer_words(task, template, verb)
    ids = []
    for word in words:
        full = _encode(tokenizer, prompt + word, template)
        if len(full) != len(base) + 1 or full[: len(base)] != base:
            pieces = tokenizer.convert_ids_to_tokens(full[len(base) - 1:])
            raise DataError(f"label word {word!r} of task {task.name} is not one token after "
                            f"the {template} prompt (it ends the prompt as {pieces}); "
                            "choose single-token label words")
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise DataError(f"label words {words} of task {task.name} share a token")
    return ids


class PromptCollator:
    """Rows → left-padded prompt batches ``{"inputs": {input_ids, attention_mask,
    position_ids}, "labels"}`` (long class ids, or float scores for STS-B); ``template``:
    ``"chat"`` or ``"plain"``; ``verb``: the task's declared verbalizer unless given. Prompts
    longer than ``max_length`` tokens lose their beginning (the question and answer cue are at
    the end)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, task: GlueTask, template: str,
                 max_length: int, pad_to_max_length: bool, verb: Verbalizer | None = None
                 ) -> None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
        self.tokenizer, self.task, self.template, self.verb = tokenizer, task, template, verb
        self.kwargs = {"truncation": True, "max_length": max_length,
                       "padding": "max_length" if pad_to_max_length else "longest",
                       "return_tensors": "pt", "add_special_tokens": template == "plain"}

    def prompts(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        return [render(self.tokenizer, self.task, row, self.template, self.verb) for row in rows]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        inputs = dict(self.tokenizer(self.prompts(rows), **self.kwargs))
        mask = inputs["attention_mask"]
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        dtype = torch.float32 if self.task.is_regression else torch.long
        return {"inputs": inputs, "labels": torch.tensor([r["label"] for r in rows], dtype=dtype)}

    def lengths(self, rows: Any) -> list[int]:
        """Untruncated token count of each row's prompt."""
        return [len(_encode(self.tokenizer, p, self.template))
                for p in self.prompts(rows.to_list())]


def label_logits(model: Any, inputs: dict[str, Tensor], label_ids: Tensor) -> Tensor:
    """Next-token logits (n, k) of the ``label_ids`` after the last (left-padded) position;
    only the last position's logits are computed (``logits_to_keep=1``)."""
    logits = model(**inputs, logits_to_keep=1).logits[:, -1]
    return logits.index_select(-1, label_ids)


def verbalizer_loss(scores: Tensor, labels: Tensor, regression: bool) -> Tensor:
    """Cross-entropy over the label words, or for a regression task the squared error of the
    expected score (:func:`expected_score`) against the score."""
    if regression:
        return F.mse_loss(expected_score(scores), labels.to(scores.dtype))
    return F.cross_entropy(scores, labels)


REGRESSION_TOP = 5.0
"""The top of the regression scale (STS-B scores lie in [0, 5])."""


def expected_score(scores: Tensor) -> Tensor:
    """Σ_k softmax(scores)_k·v_k for scores (n, K) over K label words standing for the evenly
    spaced values v_k = 5·k/(K − 1) → (n,): the digit k for the words "0"…"5", 0 and 5 for
    two words such as no/yes."""
    values = torch.linspace(0.0, REGRESSION_TOP, scores.shape[-1], dtype=scores.dtype,
                            device=scores.device)
    return scores.softmax(-1) @ values
