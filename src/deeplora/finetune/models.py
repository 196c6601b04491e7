"""Task models: a transformers backbone, a head, and the batches they consume.

Every task model maps a batch to its training loss (``forward``, so that ``accelerate`` can
wrap it for multi-GPU) and exposes ``predict(batch) -> (n,)``; the training loop never looks
inside, and a generation model (e.g. T5 on E2E NLG) fits the same
interface with its own collator.

- :class:`CrossEncoder` (the paper's): ``[CLS] a [SEP] b [SEP]`` through
  ``AutoModelForSequenceClassification``; regression (MSE on the 0–5 score) for STS-B.
- :class:`BiEncoder` (how all-MiniLM-L6-v2 is trained): ``u = mean-pool(enc(a))``,
  ``v = mean-pool(enc(b))``; STS-B regresses ``cos(u, v)`` onto ``score / 5``; classification
  puts ``Linear(3h → k)`` on ``(u, v, |u − v|)`` (``Linear(h → k)`` on ``u`` for single
  sentences).
- :class:`PromptModel`: a causal LM reading the next-token logits of label words after a
  prompt (:mod:`deeplora.finetune.prompt`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deeplora.adapters import build_adapter_config, embedded_model_path, resolve_target_modules
from deeplora.embedded_lm import embedded_lm_path, is_embedded_lm
from deeplora.finetune.config import FinetuneConfig
from deeplora.finetune.data import DataError, GlueTask, get_task
from deeplora.finetune.prompt import (
    PromptCollator,
    expected_score,
    label_logits,
    label_token_ids,
    verbalizer_loss,
)

if TYPE_CHECKING:
    import datasets

Batch = dict[str, Any]


def quiet_transformers() -> None:
    """Silence transformers' load reports and weight-loading bars (tqdm bars of runs stay), and
    the FutureWarning PEFT's ``PeftModel`` triggers on every model it wraps (it reads
    transformers' deprecated ``is_gradient_checkpointing``)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)


def resolve_model(name: str | None) -> str:
    """``name`` checked to be a transformers model (id or folder); ``None`` → the embedded
    all-MiniLM-L6-v2, ``"smollm2-135m-instruct"`` → the embedded generative LM
    (:func:`deeplora.embedded_lm.embedded_lm_path`)."""
    if is_embedded_lm(name):
        return embedded_lm_path()
    path = embedded_model_path() if name is None else name
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a transformers model ({first})") from None
    return path


def check_max_length(max_length: int, model_path: str) -> None:
    """:class:`DataError` when the model at ``model_path`` has fewer absolute positions
    (``max_position_embeddings``) than ``max_length``; models without them pass."""
    limit = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise DataError(f"max_length {max_length} is more than the {limit} positions of "
                        f"{model_path}; pass --max-length {limit} or less")


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (n, t, h) over the tokens where ``mask`` (n, t) is 1 → (n, h)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class CrossEncoder(nn.Module):
    """Both texts in one input through a sequence-classification model."""

    def __init__(self, model: PreTrainedModel | PeftModel, task: GlueTask) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch: Batch) -> Tensor:
        """The training loss of ``batch`` (a scalar)."""
        return self.model(**batch["inputs"], labels=batch["labels"]).loss

    def predict(self, batch: Batch) -> Tensor:
        logits = self.model(**batch["inputs"]).logits
        return logits.squeeze(-1) if self.task.is_regression else logits.argmax(-1)


class PromptModel(CrossEncoder):
    """Both texts in one prompt through a causal LM; the label-word logits are the output
    (see :mod:`deeplora.finetune.prompt`). ``label_ids`` (k,): one token id per class, or the
    digits 0–5 for STS-B."""

    def __init__(self, model: PreTrainedModel | PeftModel, task: GlueTask,
                 label_ids: Sequence[int]) -> None:
        super().__init__(model, task)
        self.register_buffer("label_ids", torch.tensor(label_ids, dtype=torch.long),
                             persistent=False)

    def scores(self, batch: Batch) -> Tensor:
        """Label-word logits (n, k) at the end of each prompt."""
        return label_logits(self.model, batch["inputs"], self.label_ids)

    def forward(self, batch: Batch) -> Tensor:
        return verbalizer_loss(self.scores(batch), batch["labels"], self.task.is_regression)

    def predict(self, batch: Batch) -> Tensor:
        scores = self.scores(batch)
        return expected_score(scores) if self.task.is_regression else scores.argmax(-1)


class BiEncoder(nn.Module):
    """Each text encoded alone and mean-pooled; cosine (STS-B) or a linear head on top."""

    def __init__(self, encoder: PreTrainedModel | PeftModel, task: GlueTask) -> None:
        super().__init__()
        self.encoder, self.task = encoder, task
        hidden = encoder.config.hidden_size
        width = 3 * hidden if task.is_pair else hidden
        self.head = None if task.is_regression else nn.Linear(width, task.num_labels)

    def embed(self, inputs: Batch) -> Tensor:
        return mean_pool(self.encoder(**inputs).last_hidden_state, inputs["attention_mask"])

    def _output(self, batch: Batch) -> Tensor:
        u, *rest = (self.embed(inputs) for inputs in batch["inputs"])
        if self.head is None:
            return F.cosine_similarity(u, rest[0], dim=-1)
        features = torch.cat([u, rest[0], (u - rest[0]).abs()], -1) if rest else u
        return self.head(features)

    def forward(self, batch: Batch) -> Tensor:
        """The training loss of ``batch`` (a scalar)."""
        out = self._output(batch)
        if self.head is None:
            return F.mse_loss(out, batch["labels"].to(out.dtype) / 5.0)
        return F.cross_entropy(out, batch["labels"])

    def predict(self, batch: Batch) -> Tensor:
        out = self._output(batch)
        return out if self.head is None else out.argmax(-1)


class Collator:
    """Tokenize rows into a batch: ``cross``: one input per pair, ``bi``: one per text.

    A tokenizer without a separator token (a decoder LM such as Llama) has no pair template, so
    a ``cross`` pair is joined into one text ``"a\nb"``.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, task: GlueTask, head: str, max_length: int,
        pad_to_max_length: bool,
    ) -> None:
        self.tokenizer, self.task, self.head = tokenizer, task, head
        self.kwargs = {
            "truncation": True,
            "max_length": max_length,
            "padding": "max_length" if pad_to_max_length else "longest",
            "return_tensors": "pt",
        }

    def __call__(self, rows: Sequence[dict[str, Any]]) -> Batch:
        texts = [[row[col] for row in rows] for col in self.task.text_columns]
        dtype = torch.float32 if self.task.is_regression else torch.long
        labels = torch.tensor([row["label"] for row in rows], dtype=dtype)
        if self.head == "cross":
            if len(texts) == 2 and self.tokenizer.sep_token is None:
                texts = [[f"{a}\n{b}" for a, b in zip(*texts, strict=True)]]
            return {"inputs": dict(self.tokenizer(*texts, **self.kwargs)), "labels": labels}
        return {"inputs": [dict(self.tokenizer(t, **self.kwargs)) for t in texts], "labels": labels}


    def lengths(self, rows: datasets.Dataset) -> list[int]:
        """Untruncated token count of each row's longest input (the pair for ``cross``, the
        longer text for ``bi``)."""
        texts = [list(rows[col]) for col in self.task.text_columns]
        if self.head == "cross":
            if len(texts) == 2 and self.tokenizer.sep_token is None:
                texts = [[f"{a}\n{b}" for a, b in zip(*texts, strict=True)]]
            return [len(ids) for ids in self.tokenizer(*texts)["input_ids"]]
        per_text = [[len(ids) for ids in self.tokenizer(t)["input_ids"]] for t in texts]
        return [max(row) for row in zip(*per_text, strict=True)]


def make_collator(tokenizer: PreTrainedTokenizerBase, config: FinetuneConfig,
                  pad_to_max_length: bool) -> Collator | PromptCollator:
    """The collator of ``config.head`` (prompts for ``prompt``)."""
    task = get_task(config.task)
    if config.head == "prompt":
        return PromptCollator(tokenizer, task, config.template, config.max_length,
                              pad_to_max_length)
    return Collator(tokenizer, task, config.head, config.max_length, pad_to_max_length)


def head_module_names(model: PreTrainedModel) -> list[str]:
    """Top-level children of a task model that hold parameters and are not the backbone."""
    return [
        name
        for name, child in model.named_children()
        if name != model.base_model_prefix and any(True for _ in child.parameters())
    ]


def target_modules(config: FinetuneConfig, model: nn.Module) -> str | list[str]:
    """The adapters' targets on ``model`` for ``config.targets``.

    ``all-dense`` is the paper's set (preset ``all-dense``: every dense layer of the backbone
    including the pooler, plus the word and position embeddings); the ``bi`` head never reads
    the pooler, so there it is the same set without the pooler.
    """
    if config.targets != "all-dense" or config.head == "cross":
        return config.targets
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    inside = {id(m) for m in pooler.modules()} if isinstance(pooler, nn.Module) else set()
    return [n for n in resolve_target_modules(model, "all-dense")
            if id(model.get_submodule(n)) not in inside]


def adapter_peft_config(config: FinetuneConfig, model: nn.Module,
                        modules_to_save: list[str] | None) -> Any:
    """PEFT config of ``config.method`` for ``model`` (presets resolved against it)."""
    extra: dict[str, Any] = {}
    if config.method.startswith("deep-lora"):
        extra = {"depth": config.depth, "init_scale": config.init_scale}
    return build_adapter_config(
        config.method, r=config.rank, target_modules=target_modules(config, model),
        modules_to_save=modules_to_save, model=model, **extra,
    )


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(path)


def build_task_model(config: FinetuneConfig, path: str) -> CrossEncoder | BiEncoder:
    """Backbone from ``path`` with the head for ``config.head`` and adapters for ``config.method``.

    Call after seeding: the random head and then the adapters draw from torch's global
    generator, so one seed gives every method the same head.
    Trainable parameters: the adapters, plus the head when ``config.train_head`` (the
    ``prompt`` head has none: the LM's own output layer reads the label words). With
    ``method == "zero-shot"`` nothing is adapted or trainable. ``deep-lora-compressed`` layers
    get their factors from one gradient in the training loop
    (:func:`deeplora.adapters.compress_adapters`).
    """
    task = get_task(config.task)
    adapt = config.method != "zero-shot"
    if config.head == "prompt":  # no new head: the LM head reads the label words
        label_ids = label_token_ids(load_tokenizer(path), task, config.template)
        backbone = AutoModelForCausalLM.from_pretrained(path)
        if adapt:
            backbone = get_peft_model(backbone, adapter_peft_config(config, backbone, None))
        else:
            backbone.requires_grad_(False)
        return PromptModel(backbone, task, label_ids)
    if config.head == "cross":
        kwargs: dict[str, Any] = {"num_labels": task.num_labels}
        if task.is_regression:
            kwargs["problem_type"] = "regression"
        backbone = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        heads = head_module_names(backbone)
        if adapt:
            saved = heads if config.train_head else None
            peft_config = adapter_peft_config(config, backbone, saved)
            backbone = get_peft_model(backbone, peft_config)
        else:
            backbone.requires_grad_(False)
        return CrossEncoder(backbone, task)
    model = BiEncoder(AutoModel.from_pretrained(path), task)  # head drawn before adapters
    if adapt:
        model.encoder = get_peft_model(model.encoder, adapter_peft_config(config, model.encoder,
                                                                          None))
    else:
        model.encoder.requires_grad_(False)
    if model.head is not None:
        model.head.requires_grad_(adapt and config.train_head)
    return model
