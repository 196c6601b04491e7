"""Export a trained Deep LoRA adapter as a standard PEFT LoRA adapter folder.

Serving stacks (PEFT, and the inference servers that read PEFT LoRA folders) know LoRA only.
A Deep LoRA update ΔW = W_L ⋯ W_1 (d_out×d_in) has rank at most r, and after training usually
fewer directions matter. Each layer's ΔW is factored by SVD, ΔW = U Σ Vᵀ, its numerical rank
k = #{σ_i > max(atol, rtol·σ_1)} is kept and the layer becomes a LoRA layer

    B = U_k Σ_k^{1/2} (d_out×k),   A = Σ_k^{1/2} V_kᵀ (k×d_in),   ΔW_k = (α/k)·B A, α = k,

so PEFT's scaling α/r is 1 on every layer (``rank_pattern`` = ``alpha_pattern``) and the
exported update equals ΔW up to the dropped singular values (‖ΔW − ΔW_k‖₂ = σ_{k+1}).
Embeddings become PEFT's ``lora_embedding_A``/``lora_embedding_B``, Conv1D layers use
``fan_in_fan_out``. A layer whose ΔW has rank 0 at the tolerance is left out of the export.
``modules_to_save`` (e.g. a trained head) are copied as they are. The folder
(``adapter_config.json`` + ``adapter_model.safetensors``) loads with stock PEFT,
``PeftModel.from_pretrained(base, folder)``, in a process that never imports ``deeplora``.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from deeplora.adapters.config import PEFT_TYPE
from deeplora.adapters.loading import check_adapter_folder
from deeplora.adapters.peft_integration import (
    active_adapter_name,
    deeplora_config,
    deeplora_layers,
)
from deeplora.output import check_writable_dir

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


@dataclass
class ExportReport:
    """What :func:`export_lora` wrote.

    ``ranks``: exported rank per layer; ``dropped``: layers whose ΔW is numerically zero (not
    exported); ``truncation``: per layer σ_{k+1}/σ_1, the relative spectral-norm error of the
    export (0 when nothing was cut); ``size_bytes``: size of the exported weights file;
    ``deeplora_parameters`` / ``lora_parameters``: adapter parameters before and after (without
    ``modules_to_save``); ``max_output_difference``: largest absolute difference of the model
    outputs, Deep LoRA vs the exported LoRA loaded by PEFT, on the batch given (``None`` when
    no batch was given).
    """

    folder: str
    ranks: dict[str, int]
    dropped: list[str]
    truncation: dict[str, float]
    size_bytes: int
    deeplora_parameters: int
    lora_parameters: int
    max_output_difference: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lora_factors(delta: Tensor, rtol: float = 1e-4, atol: float = 0.0
                 ) -> tuple[Tensor, Tensor, float]:
    """Balanced rank-k factors of ΔW (d_out×d_in): ``(B (d_out×k), A (k×d_in), cut)``.

    k counts the singular values above ``max(atol, rtol·σ_1)``; ``B A`` is the best rank-k
    approximation of ΔW and ``cut = σ_{k+1}/σ_1`` (0 if nothing was dropped, and when ΔW = 0).
    Computed in float64.
    """
    if rtol < 0 or atol < 0:
        raise ValueError(f"tolerances must be >= 0, got rtol={rtol}, atol={atol}")
    u, s, vh = torch.linalg.svd(delta.detach().to("cpu", torch.float64), full_matrices=False)
    top = float(s[0]) if s.numel() else 0.0
    k = int((s > max(atol, rtol * top)).sum()) if top > 0 else 0
    cut = float(s[k]) / top if top > 0 and k < s.numel() else 0.0
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k], cut


def _lora_keys(name: str, embedding: bool) -> tuple[str, str]:
    prefix = f"base_model.model.{name}"
    if embedding:
        return f"{prefix}.lora_embedding_A", f"{prefix}.lora_embedding_B"
    return f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"


def export_lora(
    model: nn.Module,
    folder: str | os.PathLike[str],
    rtol: float = 1e-4,
    atol: float = 0.0,
    adapter_name: str | None = None,
    batch: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> ExportReport:
    """Write the Deep LoRA adapter of ``model`` (a ``PeftModel``) to ``folder`` as PEFT LoRA.

    Args:
        model: a PEFT model holding a Deep LoRA adapter.
        folder: the new adapter folder; must not exist or be empty. Written to a temporary
            folder beside it and renamed into place, so nothing half-written remains on error.
        rtol, atol: a singular value σ_i of a layer's ΔW is kept if above max(atol, rtol·σ_1).
        adapter_name: the adapter to export (default: the active one).
        batch: model inputs (``model(**batch)``); if given, the exported folder is loaded with
            PEFT into a copy of the base model and the largest output difference is reported
            (needs memory for a second copy of the model).
        dtype: dtype of the exported LoRA weights.

    Raises:
        ValueError: not a Deep LoRA adapter, bad tolerances, ``folder`` not empty, every ΔW
            numerically zero, or Conv1D and Linear targets mixed (one ``fan_in_fan_out`` for
            all layers in a ``LoraConfig``).
    """
    adapter_name = active_adapter_name(model, adapter_name)
    config = deeplora_config(model, adapter_name)
    target = Path(folder)
    check_new_folder(target)
    layers = dict(deeplora_layers(model, adapter_name))
    kinds = {type(layer.get_base_layer()) for layer in layers.values()
             if not layer.is_embedding}
    conv1d = any(issubclass(k, Conv1D) for k in kinds)
    if conv1d and any(not issubclass(k, Conv1D) for k in kinds):
        raise ValueError("the adapter targets both Conv1D and Linear layers; a LoraConfig has "
                         "one fan_in_fan_out for all of them: export them separately")

    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    truncation: dict[str, float] = {}
    dropped: list[str] = []
    for name, layer in layers.items():
        b, a, cut = lora_factors(layer.get_delta_weight(adapter_name), rtol, atol)
        if not a.shape[0]:
            dropped.append(name)
            continue
        key_a, key_b = _lora_keys(name, layer.is_embedding)
        tensors[key_a] = a.to(dtype).contiguous()
        tensors[key_b] = b.to(dtype).contiguous()
        ranks[name], truncation[name] = a.shape[0], cut
    if not ranks:
        raise ValueError(f"every ΔW of adapter {adapter_name!r} is numerically zero at "
                         f"rtol={rtol}, atol={atol}: nothing to export")
    saved = get_peft_model_state_dict(model, adapter_name=adapter_name)
    tensors.update({k: v.detach().to("cpu").contiguous() for k, v in saved.items()
                    if ".deeplora_factors." not in k})

    rank = max(ranks.values())
    # exact names: PEFT matches a name list as dotted suffixes and a pattern key as
    # "(.*\.)?key$", where "^" stops the prefix ("0" would also take "inner.0")
    pattern = {f"^{re.escape(name)}": k for name, k in ranks.items() if k != rank}
    lora_config = LoraConfig(
        r=rank, lora_alpha=rank, rank_pattern=pattern, alpha_pattern=dict(pattern),
        target_modules="|".join(re.escape(name) for name in sorted(ranks)),
        lora_dropout=config.dropout, fan_in_fan_out=conv1d,
        modules_to_save=config.modules_to_save, task_type=config.task_type,
        base_model_name_or_path=config.base_model_name_or_path, revision=config.revision,
        bias="none", inference_mode=True,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(tensors, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        lora_config.save_pretrained(tmp)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = ExportReport(
        folder=str(target), ranks=ranks, dropped=dropped, truncation=truncation,
        size_bytes=(target / WEIGHTS_NAME).stat().st_size,
        deeplora_parameters=sum(p.numel() for layer in layers.values()
                                for p in layer.deeplora_factors[adapter_name].parameters()),
        lora_parameters=sum(t.numel() for k, t in tensors.items() if ".lora_" in k),
    )
    if batch is not None:
        report.max_output_difference = max_output_difference(model, target, batch, adapter_name)
    return report


def _outputs(model: nn.Module, batch: Mapping[str, Any]) -> list[Tensor]:
    """The floating-point tensors of ``model(**batch)`` (logits, hidden states, …)."""
    with torch.no_grad():
        output = model(**batch)
    values = output.values() if isinstance(output, Mapping) else (
        output if isinstance(output, tuple | list) else [output])
    return [v for v in values if isinstance(v, Tensor) and v.is_floating_point()]


def max_output_difference(
    model: nn.Module, folder: str | os.PathLike[str], batch: Mapping[str, Any],
    adapter_name: str | None = None,
) -> float:
    """Largest |Deep LoRA output − exported LoRA output| over every floating output of
    ``model(**batch)``, the LoRA folder loaded by stock PEFT into a copy of the base model."""
    adapter_name = active_adapter_name(model, adapter_name)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        reference = _outputs(model, batch)
        base = copy.deepcopy(model).unload()  # the base model, adapters removed, nothing merged
    finally:
        for module, training in modes.items():
            module.train(training)
    exported = PeftModel.from_pretrained(base, str(folder)).eval()
    got = _outputs(exported, batch)
    if len(got) != len(reference):
        raise ValueError("the exported model returns other outputs than the Deep LoRA model")
    return max(float((g.double() - r.double()).abs().max()) for g, r in zip(got, reference,
                                                                           strict=True))


def check_new_folder(folder: str | os.PathLike[str]) -> None:
    """``ValueError`` unless ``folder`` is absent or an empty folder (nothing is overwritten);
    ``OSError`` if it could not be created."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{str(target)!r} exists and is not an empty folder")
    check_writable_dir(target)


def read_deeplora_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``adapter_config.json`` of a saved Deep LoRA folder after
    :func:`~deeplora.adapters.loading.check_adapter_folder`; ``ValueError`` for another PEFT
    method's folder."""
    config = check_adapter_folder(folder)
    if config.get("peft_type") != PEFT_TYPE:
        raise ValueError(f"{str(folder)!r} holds a {config.get('peft_type')!r} adapter, not a "
                         f"Deep LoRA one (peft_type {PEFT_TYPE!r})")
    return config


TASK_CLASSES = {
    None: "AutoModel",
    "FEATURE_EXTRACTION": "AutoModel",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}
"""transformers' auto class of the base model for each ``task_type`` of a saved adapter (the
classes ``peft.AutoPeftModel*`` use)."""


def saved_num_labels(folder: str | os.PathLike[str]) -> int | None:
    """Output size of a classification head saved with the adapter (``modules_to_save``
    ``classifier``/``score``/``out_proj`` weight), ``None`` if there is none."""
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        heads = [k for k in handle.keys()  # noqa: SIM118 (safe_open is not a mapping)
                 if k.endswith(".weight") and k.rsplit(".", 2)[-2] in ("classifier", "score",
                                                                        "out_proj")]
        return handle.get_slice(heads[-1]).get_shape()[0] if heads else None


def load_deeplora(folder: str | os.PathLike[str], model: str | None = None,
                  num_labels: int | None = None) -> PeftModel:
    """A saved Deep LoRA adapter on its base model, as ``peft.AutoPeftModel*`` would load it.

    The base class follows the adapter's ``task_type`` (:data:`TASK_CLASSES`); the base is
    ``model`` or the adapter's ``base_model_name_or_path``; a sequence classifier gets
    ``num_labels`` or the size of the head saved with the adapter. The folder is checked
    first (:func:`read_deeplora_config`); a base model that cannot be loaded is an ``OSError``
    naming it.
    """
    import transformers  # (DEEPLORA is registered with PEFT: peft_integration is imported)

    config = read_deeplora_config(folder)
    task = config.get("task_type")
    if task not in TASK_CLASSES:
        raise ValueError(f"unsupported task_type {task!r}; one of {list(TASK_CLASSES)}")
    base = model or config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{str(folder)!r} names no base model: pass the base model")
    kwargs: dict[str, Any] = {}
    if task == "SEQ_CLS" and (labels := num_labels or saved_num_labels(folder)):
        kwargs["num_labels"] = labels
    auto = getattr(transformers, TASK_CLASSES[task])
    try:
        base_model = auto.from_pretrained(base, **kwargs)
    except OSError as exc:  # a missing folder reads as a hub id: a long hub message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"base model {base!r} of {str(folder)!r} cannot be loaded ({first})"
                      ) from None
    return PeftModel.from_pretrained(base_model, str(folder)).eval()


def random_batch(model: nn.Module, batch: int = 4, length: int = 32, seed: int = 0
                 ) -> dict[str, Tensor]:
    """Random token ids (``batch``×``length``, seeded) that ``model`` accepts: ``input_ids``,
    ``attention_mask`` and, for an encoder-decoder, ``decoder_input_ids``."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, : max(1, length // 4)]
    return inputs
