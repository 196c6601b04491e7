"""Deep LoRA as a PEFT method: the only module that touches PEFT internals.

PEFT 0.21 registers methods with ``peft.utils.register_peft_method``, which insists that the
name be a member of the closed ``PeftType`` enum, so an outside package cannot call it. PEFT
does support string ``peft_type`` values (huggingface/peft#2635): we fill the same three
registries that ``register_peft_method`` fills (``peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING``,
``PEFT_TYPE_TO_TUNER_MAPPING``, ``PEFT_TYPE_TO_PREFIX_MAPPING``) under the key ``"DEEPLORA"``.
Importing :mod:`deeplora.adapters` (or ``from deeplora import DeepLoraConfig``) registers it;
after that ``get_peft_model``, ``save_pretrained``, ``PeftModel.from_pretrained`` and
``merge_and_unload`` work as for any built-in method. The tuner follows ``BaseTuner`` /
``BaseTunerLayer``; the hooks overridden are ``_prepare_model``,
``_check_target_module_exists`` (the resolved names match exactly), ``_create_and_replace``,
``_remove_adapter_name_from_key``, ``_enable_peft_forward_hooks`` (to refuse
``adapter_names``) and the layer's ``_move_adapter_to_device_of_base_layer``.
``pyproject.toml`` requires peft 0.21.x and transformers 5.x; the tests prove peft 0.21.2 with
transformers 5.24.0.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar

import torch
from peft.mapping import (
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PEFT_TYPE_TO_PREFIX_MAPPING,
    PEFT_TYPE_TO_TUNER_MAPPING,
)
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import (
    BaseTuner,
    BaseTunerLayer,
    check_adapters_to_merge,
    check_target_module_exists,
    set_adapter,
)
from peft.utils import ModulesToSaveWrapper
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from deeplora.adapters.config import PEFT_TYPE, DeepLoraConfig
from deeplora.adapters.factors import (
    adapter_dtype,
    balanced_factors,
    check_rank,
    checked_shapes,
    init_factors,
)
from deeplora.adapters.targets import embeddings_of, layer_shape, resolve_target_modules
from deeplora.factorization.deep import DeepFactorization


class DeepLoraLayer(nn.Module, BaseTunerLayer):
    """A frozen Linear/Conv1D/Embedding plus ``ΔW x = W_L(⋯(W_1 x))`` per adapter.

    Linear/Conv1D: input x (…, d_in) -> output (…, d_out). The adapter path runs on the
    (optionally dropped out) input cast to the adapter dtype (float32, or float64 for a float64
    base), one thin matmul per factor, and is cast back to the base output dtype; ΔW is only
    formed to merge. Embedding (weight num_embeddings×dim): token ids (…) -> (…, dim), x is the
    one-hot id (d_in = num_embeddings, d_out = dim), so the first factor is looked up
    (``W_1[:, ids]``) instead of multiplied, without dropout (as PEFT's LoRA); a scaled
    embedding's ``embed_scale`` multiplies the adapter output too.
    """

    adapter_layer_names = ("deeplora_factors",)
    other_param_names = ("deeplora_dropout",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: DeepLoraConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.deeplora_factors = nn.ModuleDict()
        self.deeplora_dropout = nn.ModuleDict()
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        base = self.get_base_layer()
        shape = layer_shape(base)
        if shape is None:
            raise TypeError(f"Deep LoRA adapts Linear/Conv1D/Embedding, got "
                            f"{type(base_layer).__name__}")
        if isinstance(base, nn.Embedding) and base.max_norm is not None:
            raise ValueError("Deep LoRA cannot adapt an Embedding with max_norm (the lookup "
                             "would renormalize the adapter factor in place)")
        self.out_features, self.in_features = shape
        self.is_embedding = isinstance(base, nn.Embedding)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: DeepLoraConfig) -> None:
        """Add adapter ``adapter_name`` with fresh factors as ``config`` says."""
        check_rank(config.r, self.out_features, self.in_features)
        weight = self.get_base_layer().weight
        self.deeplora_factors[adapter_name] = init_factors(
            self.out_features, self.in_features, config, adapter_dtype(weight.dtype), weight.device
        )
        self.deeplora_dropout[adapter_name] = (
            nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        )
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def set_factors(self, adapter_name: str, factors: Sequence[Tensor], init: str, scale: float
                    ) -> None:
        """Replace the factors of ``adapter_name`` (shapes may change), keeping dtype, device
        and ``requires_grad``."""
        old = self.deeplora_factors[adapter_name].factors[0]
        new = DeepFactorization.from_factors(
            [f.to(dtype=old.dtype, device=old.device) for f in factors], init=init, scale=scale
        )
        new.requires_grad_(old.requires_grad)
        self.deeplora_factors[adapter_name] = new

    def get_delta_weight(self, adapter_name: str) -> Tensor:
        """ΔW = W_L ⋯ W_1 (d_out×d_in), in the adapter dtype."""
        return self.deeplora_factors[adapter_name].product()

    def _delta_in_base_layout(self, adapter_name: str) -> Tensor:
        base = self.get_base_layer()
        delta = self.get_delta_weight(adapter_name).detach()
        if isinstance(base, Conv1D | nn.Embedding):  # weight stored d_in×d_out
            delta = delta.T
        return delta.to(dtype=base.weight.dtype, device=base.weight.device)

    @property
    def quantized(self) -> bool:
        """The base weight is not a float tensor (bitsandbytes 4-bit/8-bit packed integers)."""
        return not self.get_base_layer().weight.is_floating_point()

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add ΔW of the active (or given) adapters into the base weight.

        Raises:
            ValueError: the base weight is quantized (packed integers): adding ΔW to it would
                be wrong, so nothing is merged.
        """
        if self.quantized:
            raise ValueError(quantized_merge_message([type(self.get_base_layer()).__name__]))
        weight = self.get_base_layer().weight
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.deeplora_factors:
                continue
            delta = self._delta_in_base_layout(name)
            with torch.no_grad():
                if safe_merge:
                    merged = weight.data + delta
                    if not torch.isfinite(merged).all():
                        raise ValueError(f"merging adapter {name!r} gives non-finite weights")
                    weight.data = merged
                else:
                    weight.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract ΔW of every merged adapter from the base weight, last merged first."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            with torch.no_grad():
                weight.data -= self._delta_in_base_layout(name)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.deeplora_factors:
                continue
            factors = list(self.deeplora_factors[name].factors)
            if self.is_embedding:
                h = self._lookup(x, factors.pop(0))
            else:
                h = self.deeplora_dropout[name](x).to(factors[0].dtype)
            for factor in factors:
                h = F.linear(h, factor)
            if self.is_embedding and (scale := self._get_embed_scale()) is not None:
                h = h * scale.to(h.dtype)
            result = result + h.to(result.dtype)
        return result

    def _lookup(self, ids: Tensor, first: Tensor) -> Tensor:
        """``W_1 onehot(ids)`` (…, r) for an Embedding base: columns of W_1 (r×num_embeddings),
        with the base's padding index and gradient scaling."""
        base = self.get_base_layer()
        return F.embedding(ids, first.T, padding_idx=base.padding_idx,
                           scale_grad_by_freq=base.scale_grad_by_freq)

    def delta_weight_gradient(self, x: Tensor, grad_output: Tensor) -> Tensor:
        """∂ℒ/∂ΔW (d_out×d_in) from the layer input ``x`` and the gradient at its output
        (…, d_out): ``Σ_tokens δ xᵀ``; for an Embedding, δ summed into the columns of the ids.
        Computed in float32 at least."""
        dtype = torch.promote_types(grad_output.dtype, torch.float32)
        delta = grad_output.reshape(-1, grad_output.shape[-1]).to(dtype)
        if self.is_embedding:
            grad = torch.zeros(self.out_features, self.in_features, dtype=dtype,
                               device=delta.device)
            return grad.index_add_(1, x.reshape(-1), delta.T)
        return delta.T @ x.reshape(-1, x.shape[-1]).to(dtype)

    def _move_adapter_to_device_of_base_layer(
        self, adapter_name: str, device: torch.device | None = None
    ) -> None:
        """Follow the base layer's device but keep the adapter dtype (PEFT would cast a
        half-precision base's adapters to half, where ΔW(0) ≈ ε^L underflows)."""
        target = device if device is not None else self.get_base_layer().weight.device
        for attr in self.adapter_layer_names + self.other_param_names:
            container = getattr(self, attr)
            if adapter_name in container:
                container[adapter_name] = container[adapter_name].to(target)

    def __repr__(self) -> str:
        return "deeplora." + super().__repr__()


def quantized_merge_message(layers: list[str]) -> str:
    """Why a merge into quantized weights is refused."""
    return (f"cannot merge Deep LoRA into quantized (bitsandbytes 4-bit/8-bit) weights of "
            f"{layers}: they hold packed integers (and bitsandbytes may repack them for the CPU "
            f"at inference), so adding ΔW would corrupt them. Use the adapter unmerged, or load "
            f"the base model without quantization_config, load the adapter and merge there")


def prepare_targets(model: nn.Module, config: DeepLoraConfig) -> None:
    """Resolve ``config.target_modules`` on ``model`` to explicit names and check every target.

    Checks, before anything is modified: the targets exist and are adaptable, ``r`` fits
    each of them, and their shapes equal ``config.target_shapes`` when recorded (an adapter
    saved from another model). Then records names and shapes in ``config``. Recorded names
    are full names and match exactly, not as dotted suffixes (``"0"`` is not ``"1.0"``).
    """
    targets = config.target_modules
    if config.target_shapes is not None:
        targets = "|".join(re.escape(name) for name in config.target_shapes)
    names = resolve_target_modules(model, targets, config.modules_to_save)
    shapes = checked_shapes(model, names, config.r)
    if config.target_shapes is not None:
        recorded = {n: list(s) for n, s in config.target_shapes.items()}
        wrong = {
            n: f"adapter {tuple(recorded.get(n, ())) or 'none'} vs model "
               f"{tuple(shapes.get(n, ())) or 'none'}"
            for n in sorted(recorded.keys() | shapes.keys())
            if recorded.get(n) != shapes.get(n)
        }
        if wrong:
            raise ValueError(f"adapter does not fit this model; (d_out, d_in) differ: {wrong}")
    config.target_modules = names
    config.target_shapes = shapes


class DeepLoraModel(BaseTuner):
    """PEFT tuner that replaces each target Linear/Conv1D/Embedding by a
    :class:`DeepLoraLayer`."""

    prefix: str = "deeplora_"
    tuner_layer_cls = DeepLoraLayer
    target_module_mapping: ClassVar[dict[str, list[str]]] = {}

    def _prepare_model(self, peft_config: DeepLoraConfig, model: nn.Module) -> None:
        """Runs in every injection (new model, ``add_adapter``, loading) before any change."""
        prepare_targets(model, peft_config)

    @staticmethod
    def _check_target_module_exists(peft_config: DeepLoraConfig, key: str) -> bool:
        """Exactly the modules :func:`prepare_targets` resolved: PEFT would match the names
        as dotted suffixes (a regex selecting ``"0"`` would also adapt ``"1.0"``)."""
        if peft_config.target_shapes is None:
            return bool(check_target_module_exists(peft_config, key))
        return key in peft_config.target_shapes

    def _create_and_replace(
        self,
        peft_config: DeepLoraConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, DeepLoraLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = DeepLoraLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        """``PeftModel.forward``/``generate`` enter this with the call's arguments (while an
        adapter is enabled). PEFT's LoRA routes ``adapter_names`` (one adapter per row) through
        it; Deep LoRA has no per-row routing, and PEFT would otherwise drop the argument and
        apply the active adapter to every row, so it is refused."""
        if kwargs.get("adapter_names") is not None:
            raise ValueError(
                "Deep LoRA does not support mixed-adapter batches (adapter_names="
                f"{kwargs['adapter_names']!r}): run one batch per adapter after "
                "set_adapter(name), or use disable_adapter() for the base model"
            )
        yield

    def _check_merge_allowed(self) -> None:
        """Before any layer merges: refuse quantized base weights (see
        :func:`quantized_merge_message`) and an embedding whose weight is also the output
        embedding's (tied word embeddings): the unmerged adapter changes only the input lookup,
        a merge would change the LM head too."""
        quantized = [name for name, module in self.model.named_modules()
                     if isinstance(module, DeepLoraLayer) and module.quantized]
        if quantized:
            raise ValueError(quantized_merge_message(quantized))
        output = embeddings_of(self.model, "output")
        tied = [name for name, module in self.model.named_modules()
                if isinstance(module, DeepLoraLayer) and module.is_embedding and output is not None
                and module.get_base_layer().weight is output.weight]
        if tied:
            raise ValueError(
                f"cannot merge Deep LoRA into {tied}: the weight is tied to the output embeddings, "
                f"so a merge would add ΔW to the LM head too; keep the adapter unmerged, or untie "
                f"first (load with tie_word_embeddings=False and copy the input embeddings into "
                f"the LM head)"
            )

    def add_weighted_adapter(
        self,
        adapters: list[str],
        weights: list[float],
        adapter_name: str,
        r: int | None = None,
        depth: int | None = None,
    ) -> dict[str, float]:
        """Add adapter ``adapter_name`` with ΔW = Σ_i weights[i]·ΔW_i on every layer that any of
        ``adapters`` adapts, refactored by SVD into balanced Deep LoRA factors
        (:func:`deeplora.adapters.factors.balanced_factors`), like LoRA's ``"svd"`` combination.

        ``r`` defaults to the sum of the adapters' ranks (capped by the smallest layer), which
        makes the result exact; ``depth`` (the result's number of factors) to the first adapter's
        ``depth`` (L, also for a compressed adapter holding L + 2 factors). The new
        adapter is frozen and inactive (``set_adapter`` to use it) and has no
        ``modules_to_save``. Returns per layer the relative spectral error σ_{r+1}/σ_1 of the
        truncation (0 when exact).

        Raises:
            ValueError: unknown or non-Deep-LoRA adapters, a taken name, weights of another
                length, several of the adapters with their own copy of one module
                (``modules_to_save``, e.g. two task heads: they cannot be summed), or ``r``
                above min(d_out, d_in) of a layer; nothing is added then.
        """
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter {adapter_name!r} already exists")
        if not adapters or len(weights) != len(adapters):
            raise ValueError(f"need one weight per adapter, got {len(weights)} for {adapters}")
        configs = [self.peft_config.get(name) for name in adapters]
        if not all(isinstance(c, DeepLoraConfig) for c in configs):
            raise ValueError(f"all of {adapters} must be Deep LoRA adapters of this model")
        heads = [name for name, module in self.model.named_modules()
                 if isinstance(module, ModulesToSaveWrapper)
                 and sum(a in module.modules_to_save for a in adapters) > 1]
        if heads:  # PEFT's rule for LoRA's add_weighted_adapter
            raise ValueError(f"several of {adapters} hold their own copy of {heads} "
                             f"(modules_to_save): a trained head is not a sum of updates")
        layers = {name: module for name, module in self.model.named_modules()
                  if isinstance(module, DeepLoraLayer)
                  and any(a in module.deeplora_factors for a in adapters)}
        smallest = min(min(layer.out_features, layer.in_features) for layer in layers.values())
        rank = min(sum(c.r for c in configs), smallest) if r is None else r
        new_depth = configs[0].depth if depth is None else depth
        self.peft_config[adapter_name] = replace(  # exactly these layers: a regex of the names
            configs[0], r=rank, depth=new_depth, init="orthogonal",
            target_modules="|".join(re.escape(name) for name in sorted(layers)),
            target_shapes=None, inference_mode=True, modules_to_save=None,
        )
        try:  # the checks run before any module changes (prepare_targets)
            self.inject_adapter(self.model, adapter_name)
        except Exception:
            del self.peft_config[adapter_name]  # as PeftModel.add_adapter does
            raise
        cuts = {}
        for name, layer in layers.items():
            delta = sum(w * layer.get_delta_weight(a).double()
                        for a, w in zip(adapters, weights, strict=True)
                        if a in layer.deeplora_factors)
            factors, cuts[name] = balanced_factors(delta, rank, new_depth)
            layer.set_factors(adapter_name, factors, "combined", configs[0].init_scale)
            layer.deeplora_factors[adapter_name].requires_grad_(False)
        return cuts

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``….deeplora_factors.<adapter>.factors.0`` -> ``….deeplora_factors.factors.0``."""
        return key.replace(f".deeplora_factors.{adapter_name}.", ".deeplora_factors.")


def register() -> None:
    """Register Deep LoRA in PEFT's method registries (idempotent)."""
    PEFT_TYPE_TO_CONFIG_MAPPING.setdefault(PEFT_TYPE, DeepLoraConfig)
    PEFT_TYPE_TO_TUNER_MAPPING.setdefault(PEFT_TYPE, DeepLoraModel)
    PEFT_TYPE_TO_PREFIX_MAPPING.setdefault(PEFT_TYPE, DeepLoraModel.prefix)


register()


def base_model_of(model: nn.Module) -> nn.Module:
    """The wrapped transformers/torch model of a ``PeftModel``; ``model`` itself otherwise."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def active_adapter_name(model: nn.Module, adapter_name: str | None) -> str:
    """``adapter_name``, or the one adapter active in the PEFT layers of ``model``."""
    if adapter_name is not None:
        return adapter_name
    active = {name for module in model.modules() if isinstance(module, BaseTunerLayer)
              for name in module.active_adapters}
    if len(active) > 1:
        raise ValueError(f"several adapters are active ({sorted(active)}); pass adapter_name")
    return active.pop() if active else "default"


@contextmanager
def adapter_activated(model: nn.Module, adapter_name: str) -> Iterator[None]:
    """Within the block only ``adapter_name`` is active in ``model``: in its PEFT layers and
    ``modules_to_save`` copies (PEFT's ``set_adapter``) and its tuner's ``active_adapter``.
    On leaving, also by an exception, the adapters active before and the ``requires_grad`` of
    every parameter (which ``set_adapter`` changes) are restored."""
    layers = [(m, m._active_adapter) for m in model.modules()
              if isinstance(m, BaseTunerLayer | AuxiliaryTrainingWrapper)]
    tuners = [(m, m.active_adapter) for m in model.modules() if isinstance(m, BaseTuner)]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        set_adapter(model, adapter_name)
        for tuner, _ in tuners:
            tuner.active_adapter = adapter_name
        yield
    finally:
        for module, active in layers:
            module._active_adapter = active
        for tuner, active in tuners:
            tuner.active_adapter = active
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def deeplora_layers(model: nn.Module, adapter_name: str) -> Iterator[tuple[str, DeepLoraLayer]]:
    """``(name, layer)`` of every Deep LoRA layer holding ``adapter_name``; names relative to
    the base model."""
    for name, module in base_model_of(model).named_modules():
        if isinstance(module, DeepLoraLayer) and adapter_name in module.deeplora_factors:
            yield name, module


def adapter_factorizations(model: nn.Module, adapter_name: str | None = None
                           ) -> dict[str, DeepFactorization]:
    """Factors of every Deep LoRA layer of ``model`` (active adapter by default)."""
    adapter_name = active_adapter_name(model, adapter_name)
    return {name: layer.deeplora_factors[adapter_name]
            for name, layer in deeplora_layers(model, adapter_name)}


@torch.no_grad()
def adapter_deltas(model: nn.Module, adapter_name: str | None = None) -> dict[str, Tensor]:
    """ΔW (d_out×d_in, detached) of every adapted layer, by module name (base-model relative).

    Covers Deep LoRA / vanilla LoRA layers (``W_L ⋯ W_1``) and PEFT's own LoRA layers
    (``(α/r)·B A``, Linear and Embedding); the active adapter unless ``adapter_name`` is given.
    """
    adapter_name = active_adapter_name(model, adapter_name)
    deltas = {}
    for name, module in base_model_of(model).named_modules():
        if isinstance(module, DeepLoraLayer) and adapter_name in module.deeplora_factors:
            deltas[name] = module.get_delta_weight(adapter_name)
        elif isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            a, b = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
            deltas[name] = (b @ a) * module.scaling[adapter_name]
        elif isinstance(module, LoraLayer) and adapter_name in module.lora_embedding_A:
            a, b = module.lora_embedding_A[adapter_name], module.lora_embedding_B[adapter_name]
            deltas[name] = (b @ a) * module.scaling[adapter_name]  # (dim×num_embeddings)
    if not deltas:
        raise ValueError(f"model has no LoRA or Deep LoRA layer with adapter {adapter_name!r}")
    return deltas


def deeplora_config(model: nn.Module, adapter_name: str) -> DeepLoraConfig:
    """The :class:`DeepLoraConfig` of ``adapter_name`` on a PEFT model."""
    config = getattr(model, "peft_config", {}).get(adapter_name)
    if not isinstance(config, DeepLoraConfig):
        raise ValueError(f"adapter {adapter_name!r} of this model is not a Deep LoRA adapter")
    return config
