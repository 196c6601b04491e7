"""Run configuration and the two training presets.

``paper`` is the authors' protocol (Yaras et al. 2024, Sec. 4): Adam(β=(0.9, 0.999), eps=1e-6),
weight decay 0, lr 1e-4, linear schedule from lr to ``decay_ratio``·lr, batch 16, inputs padded
to 128 tokens, adapters on every dense layer including the pooler and on the word and position
embeddings (the authors' "all-dense"), head frozen at its random initialization. ``practical``
differs in three ways: the head trains, batches are padded to their longest input (same math,
about 2× faster on CPU), and Adam's eps is scaled to the factor gradients, 1e-6·ε^{L-1} (1e-12
at ε = 1e-3, L = 3). A depth-L factor's gradient is about ε^{L-1} times ∂L/∂ΔW at the ε-small
start; with the ``bi`` head that is ~1e-8, below the paper's eps = 1e-6, so under ``paper`` Adam
degenerates to slow SGD and Deep LoRA never leaves its initialization (σ₁(ΔW) stays ≈ ε^L;
reports mark such runs "did not train").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from deeplora.checks import is_finite_number, is_integer, is_number
from deeplora.finetune.data import DataError, get_task

METHODS = ("deep-lora", "lora", "lora-hu", "peft-lora", "deep-lora-compressed", "zero-shot")
HEADS = ("cross", "bi", "prompt")
TEMPLATES = ("chat", "plain")
PRESETS = ("paper", "practical")
TARGETS = ("all-dense", "attention-mlp", "query-value")
PADDINGS = ("max-length", "longest")
SAMPLINGS = ("without-replacement", "authors")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that determines one fine-tuning run except the seed.

    ``model``: ``None`` means the embedded all-MiniLM-L6-v2. ``samples``: few-shot training
    examples, a seeded draw (``None``: the whole training split). ``dev_samples``: evaluate on a
    seeded subset of the dev split of this size (``None``: the full split). ``eval_every``:
    evaluate every that many steps (0: only at the end). ``lr_outer_ratio`` is the compressed
    method's γ (outer factors train at γ·lr). ``template``: how the ``prompt`` head writes the
    task (``chat``: the tokenizer's chat template; ``plain``: text ending in ``Answer:``).
    ``heldout_samples``: that many training rows, drawn once (seed 0) before and apart from the
    few-shot draw and repeating no few-shot row's text, are a held-out dev set scored at every
    evaluation (for checkpoint and learning-rate selection; the GLUE dev split then serves as
    the test set).
    ``singular_values``: how many of each ΔW's top singular values a result keeps (``None``:
    min(2·rank, 64)); σ₁ and the ranks are kept whatever it is. ``snapshot_steps``: the steps
    (in 0..``steps``) at which ΔW's top-``subspace_rank`` subspace is compared with the end's.
    """

    task: str = "stsb"
    method: str = "deep-lora"
    model: str | None = None
    head: Literal["cross", "bi", "prompt"] = "cross"
    preset: Literal["paper", "practical"] = "paper"
    rank: int = 8
    depth: int = 3
    init_scale: float = 1e-3
    targets: str = "all-dense"
    samples: int | None = 16
    steps: int = 500
    lr: float = 1e-4
    lr_outer_ratio: float = 1e-2
    decay_ratio: float = 1.0
    batch_size: int = 16
    eval_batch_size: int = 32
    max_length: int = 128
    train_head: bool = False
    pad_to_max_length: bool = True
    eval_every: int = 0
    dev_samples: int | None = None
    snapshot_steps: tuple[int, ...] = ()
    adam_eps: float = 1e-6
    sampling: Literal["without-replacement", "authors"] = "without-replacement"
    subspace_rank: int = 8
    template: Literal["chat", "plain"] = "chat"
    heldout_samples: int = 0
    singular_values: int | None = None

    def __post_init__(self) -> None:
        plain_numbers(self)
        check_field_types(self)
        get_task(self.task)
        for value, allowed, what in [
            (self.method, METHODS, "method"),
            (self.head, HEADS, "head"),
            (self.preset, PRESETS, "preset"),
            (self.targets, TARGETS, "targets"),
            (self.sampling, SAMPLINGS, "sampling"),
            (self.template, TEMPLATES, "template"),
        ]:
            if value not in allowed:
                raise DataError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if self.samples is not None and self.samples < 1:
            raise DataError(f"samples must be >= 1, got {self.samples}")
        for name in ("rank", "batch_size", "eval_batch_size", "max_length", "depth",
                     "subspace_rank"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "eval_every", "heldout_samples"):
            if getattr(self, name) < 0:
                raise DataError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.singular_values is not None and self.singular_values < 0:
            raise DataError(f"singular_values must be >= 0 (or None), got "
                            f"{self.singular_values}")
        outside = [s for s in self.snapshot_steps if not 0 <= s <= self.steps]
        if outside:
            raise DataError(f"snapshot_steps must lie in 0..{self.steps} (the training steps), "
                            f"got {outside}")
        if self.dev_samples is not None and self.dev_samples < 1:
            raise DataError(f"dev_samples must be >= 1 (or None: the whole dev split), got "
                            f"{self.dev_samples}")
        check_finite_positive(self, "lr", "init_scale", "adam_eps")
        if not (math.isfinite(self.lr_outer_ratio) and self.lr_outer_ratio >= 0):
            raise DataError(f"lr_outer_ratio must be a finite number >= 0, got "
                            f"{self.lr_outer_ratio}")
        if not 0 < self.decay_ratio <= 1:
            raise DataError(f"decay_ratio must be in (0, 1], got {self.decay_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        values = dict(values)
        values["snapshot_steps"] = tuple(values.get("snapshot_steps", ()))
        return cls(**values)

    def key(self) -> str:
        """Readable, unique directory name: main settings plus a hash of every field that differs
        from its default (so adding a field with a default keeps existing keys)."""
        defaults = FinetuneConfig().to_dict()
        changed = {k: v for k, v in self.to_dict().items() if v != defaults[k]}
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()
        return (
            f"{self.task}-{self.method}-{self.head}-{self.preset}-r{self.rank}"
            f"-n{'all' if self.samples is None else self.samples}-t{self.steps}-{digest[:10]}"
        )


def plain_numbers(config: Any) -> None:
    """Set the numpy numbers among the fields of ``config`` (a frozen dataclass), also inside
    tuples, to Python ``int``/``float``: :meth:`~FinetuneConfig.key` hashes the fields as JSON,
    which has no numpy types."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(plain(item) for item in value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return value
        return int(value) if isinstance(value, numbers.Integral) else float(value)

    for name in (f.name for f in dataclasses.fields(config)):
        object.__setattr__(config, name, plain(getattr(config, name)))


FIELD_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", is_integer),
    "float": ("a number", is_number),
    "tuple[int, ...]": ("a tuple of integers",
                        lambda value: isinstance(value, tuple) and all(map(is_integer, value))),
    "bool": ("True or False", lambda value: isinstance(value, bool)),
}
"""The numeric and boolean field annotations of the configs: what a value must be, and its
test."""


def check_field_types(config: Any) -> None:
    """:class:`DataError` naming the first field of ``config`` (a frozen dataclass) annotated
    with a type of :data:`FIELD_TYPES` (``| None`` allowing ``None``) whose value is not of it:
    ``rank=2.5`` or ``rank="8"``, which the range checks that follow took or failed on with a
    ``TypeError``, or ``train_head="no"``, which counted as true. Integers and numbers of
    numpy's types pass (``bool`` not, except for a boolean field)."""
    for field in dataclasses.fields(config):
        annotation = str(field.type)
        optional = annotation.endswith(" | None")
        kind = FIELD_TYPES.get(annotation.removesuffix(" | None"))
        value = getattr(config, field.name)
        if kind is None or (optional and value is None) or kind[1](value):
            continue
        allowed = f"{kind[0]} (or None)" if optional else kind[0]
        raise DataError(f"{field.name} must be {allowed}, got {value!r}")


def check_finite_positive(config: Any, *names: str) -> None:
    """:class:`DataError` naming the first of the fields ``names`` of ``config`` that is not a
    finite number > 0."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"{name} must be a finite number > 0, got {value}")


def padding_override(padding: str | None) -> dict[str, bool]:
    """``{"pad_to_max_length": …}`` for ``padding`` in :data:`PADDINGS`; ``{}`` for ``None``
    (keep the preset's choice). Both give the same model outputs (padding is masked); only
    dropout masks, drawn per padded shape, and the cost differ."""
    if padding is None:
        return {}
    if padding not in PADDINGS:
        raise DataError(f"unknown padding {padding!r}; choose one of {', '.join(PADDINGS)}")
    return {"pad_to_max_length": padding == "max-length"}


def factor_adam_eps(init_scale: float, depth: int, base: float = 1e-6) -> float:
    """Adam's eps scaled to a depth-``depth`` factor's gradient, ``base``·ε^(L−1): at the
    ε-small start a factor's gradient is about ε^(L−1) times ∂loss/∂ΔW."""
    return base * init_scale ** (depth - 1)


def preset_adam_eps(preset: str, init_scale: Any, depth: Any) -> float | None:
    """:func:`factor_adam_eps`, the eps of ``preset`` (``practical``, ``cpu``) when none is
    given: ``None`` when ``init_scale`` or ``depth`` is invalid itself (the config names it);
    :class:`DataError` naming both when the eps is 0 or too large for a float."""
    if not (is_finite_number(init_scale) and init_scale > 0 and is_integer(depth) and depth >= 1):
        return None
    try:
        eps = factor_adam_eps(init_scale, depth)
    except OverflowError:
        eps = math.inf
    if eps == 0 or math.isinf(eps):
        raise DataError(
            f"adam_eps derived from init_scale={init_scale!r} and depth={depth!r} (the {preset} "
            f"preset's 1e-6·init_scale^(depth−1)) "
            + ("underflows to 0; give adam_eps, a larger init_scale or a smaller depth"
               if eps == 0 else "overflows; give adam_eps or a smaller init_scale"))
    return eps


def preset(name: str, **overrides: Any) -> FinetuneConfig:
    """A :class:`FinetuneConfig` for preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    practical = name == "practical"
    base: dict[str, Any] = {"preset": name, "train_head": practical,
                            "pad_to_max_length": not practical,
                            "sampling": "without-replacement" if practical else "authors"}
    if practical and "adam_eps" not in overrides:
        defaults = FinetuneConfig()
        eps = preset_adam_eps(name, overrides.get("init_scale", defaults.init_scale),
                              overrides.get("depth", defaults.depth))
        if eps is not None:
            base["adam_eps"] = eps
    return FinetuneConfig(**{**base, **overrides})
