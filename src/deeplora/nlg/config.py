"""Run configuration of E2E NLG fine-tuning and its two presets.

``paper`` is the authors' ``nlg_fewshot.py`` protocol: 16 training examples, batch 16, 400
steps, Adam(β=(0.9, 0.999), eps=1e-6) at a constant lr 1e-4, inputs and outputs of at most 64
tokens (padded to that length), beam search with 4 beams, every test MR, adapters on the
``all-dense`` preset (every linear layer plus the word embeddings). ``cpu`` is what fits a
2-core CPU (one embedded-LM step at batch 16 costs 13–60 s there, depending on the load) and
changes exactly this: batch 4 (Adam moves each weight by about lr per step whatever the batch,
so small batches buy steps), 60 steps (15 epochs of the 16 examples) at lr 1e-3, Adam eps
scaled to the factor gradients, 1e-6·ε^{L-1} (1e-12 at ε = 1e-3, L = 3: a depth-L factor's
gradient is about ε^{L-1} times ∂loss/∂ΔW at the start, so the paper's eps damps Deep LoRA's
first steps), greedy decoding, a fixed seeded subset of 24 test MRs (still with all their
references), batches padded to their longest sequence (same outputs, padding is masked),
adapters on the linear layers only (``all-linear``). Without ``--preset`` the commands use
``paper`` where torch sees a GPU and ``cpu`` elsewhere, saying so (:func:`default_preset`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from deeplora.finetune.config import (
    check_field_types,
    check_finite_positive,
    plain_numbers,
    preset_adam_eps,
)
from deeplora.finetune.data import DataError

TASKS = ("e2e",)
METHODS = ("deep-lora", "lora", "peft-lora", "zero-shot")
PRESETS = ("paper", "cpu")
TARGETS = ("all-dense", "all-linear", "attention-mlp", "query-value")


@dataclass(frozen=True)
class NLGConfig:
    """Everything that determines one E2E NLG run except the seed.

    ``model``: ``None`` means the embedded SmolLM2-135M-Instruct (a causal LM); seq2seq models
    (T5) are recognized from their config. ``targets``: the adapter preset (see
    :mod:`deeplora.adapters.targets`). ``test_mrs``: evaluate on a seeded subset of this many
    test MRs (``None``: all). ``num_beams`` 1 is greedy decoding. ``dev_mrs`` > 0: hold out a
    fixed seeded subset of this many MRs of the dev split (never drawn as training examples)
    as the dev set; ``eval_every`` > 0 (needs ``dev_mrs``): checkpoint the adapters and score
    the dev set at step 0, every ``eval_every`` steps and at the end, and generate for the test
    MRs only at the checkpoints asked for afterwards (see :mod:`deeplora.nlg.train`).
    """

    task: str = "e2e"
    method: str = "deep-lora"
    model: str | None = None
    preset: str = "paper"
    rank: int = 8
    depth: int = 3
    init_scale: float = 1e-3
    targets: str = "all-linear"
    samples: int = 16
    steps: int = 400
    lr: float = 1e-4
    batch_size: int = 16
    eval_batch_size: int = 16
    max_input_length: int = 64
    max_output_length: int = 64
    num_beams: int = 4
    test_mrs: int | None = None
    pad_to_max_length: bool = True
    adam_eps: float = 1e-6
    eval_every: int = 0
    dev_mrs: int = 0

    def __post_init__(self) -> None:
        plain_numbers(self)
        check_field_types(self)
        for value, allowed, what in [
            (self.task, TASKS, "task"),
            (self.method, METHODS, "method"),
            (self.preset, PRESETS, "preset"),
            (self.targets, TARGETS, "targets"),
        ]:
            if value not in allowed:
                raise DataError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        for name in ("rank", "samples", "batch_size", "eval_batch_size", "max_input_length",
                     "max_output_length", "num_beams"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.depth < 2:
            raise DataError(f"depth must be >= 2, got {self.depth}")
        if self.steps < 0:
            raise DataError(f"steps must be >= 0, got {self.steps}")
        check_finite_positive(self, "lr", "init_scale", "adam_eps")
        if self.test_mrs is not None and self.test_mrs < 1:
            raise DataError(f"test_mrs must be >= 1, got {self.test_mrs}")
        for name in ("eval_every", "dev_mrs"):
            if getattr(self, name) < 0:
                raise DataError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_every and not self.dev_mrs:
            raise DataError(f"eval_every={self.eval_every} needs dev_mrs > 0 (the dev MRs the "
                            "checkpoints are scored on)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Readable, unique directory name: main settings plus a hash of the whole config
        (:data:`LATER_FIELDS` only when set, so the keys of earlier runs stay)."""
        values = {k: v for k, v in self.to_dict().items()
                  if k not in LATER_FIELDS or v != getattr(NLGConfig, k)}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        return (f"{self.task}-{self.method}-{self.preset}-r{self.rank}-n{self.samples}"
                f"-t{self.steps}-{digest[:10]}")


LATER_FIELDS = ("eval_every", "dev_mrs")
"""Fields added after runs were published; :meth:`NLGConfig.key` hashes them only when set."""

PRESET_VALUES: dict[str, dict[str, Any]] = {
    "paper": {"targets": "all-dense"},
    "cpu": {"targets": "all-linear", "steps": 60, "lr": 1e-3, "batch_size": 4,
            "eval_batch_size": 24, "num_beams": 1, "test_mrs": 24, "pad_to_max_length": False},
}


CPU_NOTICE = ("deeplora: no GPU: using the cpu preset (batch 4, 60 steps at lr 1e-3, greedy "
              "decoding, 24 test MRs, adapters on the linear layers); pass --preset paper for "
              "the paper's settings")


def default_preset() -> tuple[str, str | None]:
    """The preset for a command run without ``--preset``: ``paper`` where
    ``torch.cuda.is_available()``, else ``cpu`` and :data:`CPU_NOTICE`, the line that says so."""
    import torch

    return ("paper", None) if torch.cuda.is_available() else ("cpu", CPU_NOTICE)


def nlg_preset(name: str, **overrides: Any) -> NLGConfig:
    """An :class:`NLGConfig` for preset ``name`` with ``overrides`` (``None`` values ignored)."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESET_VALUES[name], **{k: v for k, v in overrides.items() if v is not None}}
    if name == "cpu" and "adam_eps" not in values:
        defaults = NLGConfig()
        eps = preset_adam_eps(name, values.get("init_scale", defaults.init_scale),
                              values.get("depth", defaults.depth))
        if eps is not None:
            values["adam_eps"] = eps
    if values.get("method") == "zero-shot":
        values["steps"] = 0
    return NLGConfig(preset=name, **values)
