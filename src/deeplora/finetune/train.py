"""One few-shot fine-tuning run: data, model, Adam + linear schedule through ``accelerate``.

Given a config and a seed the run is deterministic on CPU: the seed fixes the few-shot subset,
the head and adapter initialization, dropout and the batch order. The dev subset (when
``dev_samples`` is set) is drawn with seed 0 so all runs are scored on the same rows.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from contextlib import nullcontext
from itertools import cycle
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, send_to_device, set_seed
from accelerate.utils.environment import parse_flag_from_env
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deeplora.adapters import adapter_deltas, adapter_param_groups, compress_adapters
from deeplora.adapters.inspection import (
    adapter_subspaces,
    principal_angle_cosines,
    subspace_principal_angles,
)
from deeplora.factorization.subspace import singular_values
from deeplora.finetune.config import FinetuneConfig
from deeplora.finetune.data import HeldOut, few_shot, get_task, load_split
from deeplora.finetune.estimate import UnitCosts, seconds_per_step
from deeplora.finetune.metrics import compute_metrics
from deeplora.finetune.models import (
    BiEncoder,
    Collator,
    CrossEncoder,
    build_task_model,
    check_max_length,
    load_tokenizer,
    make_collator,
    resolve_model,
)
from deeplora.finetune.prompt import PromptCollator, answer_words
from deeplora.finetune.sweep import check_seed
from deeplora.output import finite_json

if TYPE_CHECKING:
    import datasets

RANK_ATOL = 1e-3
"""Numerical rank of ΔW counts singular values above this (the paper's threshold)."""


def device_name(device: torch.device) -> str:
    """What ran the run: the GPU's name (e.g. ``"NVIDIA H100 80GB HBM3"``), else CPU cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores, {platform.machine()})"


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import accelerate
    import datasets
    import peft
    import transformers

    import deeplora

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "deeplora": deeplora.__version__,
    }


UNSUPPORTED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
               "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}
"""``accelerate launch`` sets these for sharded training, which ``deeplora finetune`` refuses."""


def distributed_state() -> PartialState:
    """The process group this run belongs to (one process without ``accelerate launch``).

    Raises:
        ValueError: FSDP, DeepSpeed or Megatron-LM (``deeplora finetune`` runs DDP only), or a
            launch of several processes that accelerate does not join into one group (on a
            CPU-only machine ``accelerate launch --multi_gpu`` needs ``ACCELERATE_USE_CPU=1``):
            each process would otherwise train alone.
    """
    sharded = [name for flag, name in UNSUPPORTED.items() if parse_flag_from_env(flag)]
    if sharded:
        raise ValueError(f"deeplora finetune runs on one device or with DDP (accelerate launch "
                         f"--multi_gpu); {sharded[0]} is not supported: see docs/adapters.md, "
                         f"'Several devices'")
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and state.num_processes != world:
        raise ValueError(f"launched as {world} processes but accelerate joined "
                         f"{state.num_processes}: on a machine without GPUs set "
                         f"ACCELERATE_USE_CPU=1 (gloo backend)")
    return state


def make_accelerator() -> Accelerator:
    """The run's ``Accelerator``: under ``accelerate launch`` (DDP) every batch of
    ``config.batch_size`` rows is split across the processes (``split_batches``), so the global
    batch, and the gradient (averaged by DDP), are those of a one-process run."""
    distributed_state()
    return Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True))


def adapted_backbone(model: CrossEncoder | BiEncoder) -> nn.Module:
    return model.model if isinstance(model, CrossEncoder) else model.encoder


def spectra(deltas: dict[str, Tensor], keep: int) -> dict[str, dict[str, Any]]:
    """Per layer (one SVD each): σ₁(ΔW) (``sigma_max``), the top ``keep`` singular values,
    ``numerical_rank`` (singular values above :data:`RANK_ATOL`) and ``matrix_rank`` (above
    NumPy/torch ``matrix_rank``'s default tolerance σ₁·max(m, n)·eps of ΔW's dtype)."""
    out = {}
    for name, delta in deltas.items():
        values = singular_values(delta)
        tol = float(values[0]) * max(delta.shape) * torch.finfo(delta.dtype).eps
        out[name] = {"sigma_max": float(values[0]), "singular_values": values[:keep].tolist(),
                     "numerical_rank": int((values > RANK_ATOL).sum()),
                     "matrix_rank": int((values > tol).sum())}
    return out


@torch.no_grad()
def evaluate(
    model: CrossEncoder | BiEncoder, loader: DataLoader, accelerator: Accelerator
) -> dict[str, float]:
    """The task's GLUE metrics of ``model`` on every row of ``loader``."""
    model.eval()
    predictions, labels = [], []
    for batch in loader:
        pred = accelerator.unwrap_model(model).predict(batch)
        pred, gold = accelerator.gather_for_metrics((pred, batch["labels"]))
        predictions.append(pred.float().cpu().numpy())
        labels.append(gold.float().cpu().numpy())
    model.train()
    task = accelerator.unwrap_model(model).task
    return compute_metrics(task, np.concatenate(predictions), np.concatenate(labels))


def training_rows(config: FinetuneConfig, train: datasets.Dataset, model_path: str,
                  seed: int) -> datasets.Dataset:
    """The run's training examples. ``samples=None``: the whole split. ``sampling``:
    ``"without-replacement"``: ``samples`` distinct rows; ``"authors"`` (the paper preset): drop
    the rows whose input is longer than ``max_length`` tokens, then draw ``samples`` rows with
    replacement (the authors' rule), both seeded by ``seed``."""
    if config.sampling == "authors":
        collate = make_collator(load_tokenizer(model_path), config, False)
        keep = [i for i, n in enumerate(collate.lengths(train)) if n <= config.max_length]
        train = train.select(keep)
    if config.samples is None:
        return train
    return few_shot(train, config.samples, seed, replace=config.sampling == "authors")


class Prepared:
    """Everything a run needs, built and validated before any training step: ``train`` (the
    few-shot rows), ``dev`` (the GLUE dev rows scored, the test set when ``heldout`` is used)
    and ``heldout`` (``config.heldout_samples`` training rows apart from the few-shot pool that
    repeat no training row's text, see :class:`deeplora.finetune.data.HeldOut`; ``None``
    without)."""

    def __init__(self, config: FinetuneConfig, seed: int, data_dir: str | os.PathLike[str] | None):
        check_seed(seed)
        self.task = get_task(config.task)
        self.model_path = resolve_model(config.model)
        check_max_length(config.max_length, self.model_path)
        train = load_split(self.task, "train", data_dir)
        full_dev = load_split(self.task, "dev", data_dir)
        split = (HeldOut(self.task, train, config.heldout_samples, full_dev)
                 if config.heldout_samples else None)
        self.train = training_rows(config, train if split is None else split.pool,
                                   self.model_path, seed)
        self.heldout = None if split is None else split.rows(self.train)
        dev = full_dev
        if config.dev_samples is not None and config.dev_samples < len(dev):
            dev = few_shot(dev, config.dev_samples, seed=0)
        self.dev = dev


def _log(handle: IO[str] | None, record: dict[str, Any]) -> None:
    """One JSON line; non-finite numbers are written as null (JSON has no NaN)."""
    if handle is not None:
        handle.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
        handle.flush()


def trains(config: FinetuneConfig) -> bool:
    """Whether a run of ``config`` has training steps (zero-shot and 0 steps have none)."""
    return config.method != "zero-shot" and config.steps > 0


def _setup(config: FinetuneConfig, prepared: Prepared, seed: int, dev: datasets.Dataset
           ) -> tuple[CrossEncoder | BiEncoder, Collator | PromptCollator, DataLoader,
                      DataLoader]:
    """Seed, then build the model, the training collator and the training and ``dev`` loaders
    (batch order seeded by ``seed``)."""
    set_seed(seed)
    tokenizer = load_tokenizer(prepared.model_path)
    model = build_task_model(config, prepared.model_path)
    collate = make_collator(tokenizer, config, config.pad_to_max_length)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(prepared.train, batch_size=config.batch_size, shuffle=True,
                              collate_fn=collate, generator=generator, drop_last=False)
    # Evaluation always pads per batch: same outputs (masked), far less work than 128 tokens.
    dev_collate = make_collator(tokenizer, config, False)
    dev_loader = DataLoader(dev, batch_size=config.eval_batch_size, collate_fn=dev_collate)
    return model, collate, train_loader, dev_loader


def _step(model: nn.Module, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, accelerator: Accelerator) -> Tensor:
    """One optimizer step on ``batch``; its loss."""
    loss = model(batch)
    accelerator.backward(loss)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss


def measure_costs(config: FinetuneConfig, seed: int,
                  data_dir: str | os.PathLike[str] | None = None) -> UnitCosts:
    """Unit costs of a run of ``config`` on this machine (see
    :mod:`deeplora.finetune.estimate`): reading its data and building its model, one
    training step (``None`` if it
    does not train) and one dev row (one evaluation batch of ``eval_batch_size`` rows, per
    row). Trains a throwaway model; writes nothing."""
    seed = check_seed(seed)
    start = time.perf_counter()
    prepared = Prepared(config, seed, data_dir)
    dev = prepared.dev.select(range(min(config.eval_batch_size, len(prepared.dev))))
    model, _, train_loader, dev_loader = _setup(config, prepared, seed, dev)
    accelerator = make_accelerator()
    model, train_loader, dev_loader = accelerator.prepare(model, train_loader, dev_loader)
    setup_s = time.perf_counter() - start
    step_s = None
    if trains(config):
        optimizer, scheduler = accelerator.prepare(*_optimizer(config, model))
        model.train()
        step_s = seconds_per_step(_step(model, batch, optimizer, scheduler, accelerator).item()
                                  for batch in cycle(train_loader))
    start = time.perf_counter()
    evaluate(model, dev_loader, accelerator)
    item_s = (time.perf_counter() - start) / len(dev)
    return UnitCosts(setup_s, step_s, item_s, device_name(accelerator.device))


def run_finetune(
    config: FinetuneConfig,
    seed: int,
    data_dir: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    prepared: Prepared | None = None,
) -> dict[str, Any]:
    """Train ``config`` with ``seed`` and return the result record (JSON-serializable).

    Keys: ``config``, ``seed``, ``versions``, ``device`` (e.g. ``"cuda:0"``), ``device_name``
    (the GPU's name, or ``"cpu"`` with the core count), ``processes`` (data-parallel processes
    sharing each batch), ``metrics`` (final dev metrics), ``history``
    (``[{"step", "metrics"}]`` at each evaluation, plus ``"heldout"``: the held-out rows'
    metrics when ``config.heldout_samples`` is set), ``train_loss`` (per step, of the whole
    batch across processes), ``dev_rows`` (how many dev rows were scored),
    ``majority_rate`` (classification: share of the most frequent
    label among the dev rows scored, the accuracy of a constant guess), ``prompt`` (``prompt``
    head: the first dev row's prompt and the label words), ``wall_time_s``,
    ``layers`` (per adapted layer at the end: σ₁(ΔW) as ``sigma_max``, its top min(2r, 64)
    singular values (``config.singular_values`` of them when set), ``numerical_rank`` and
    ``matrix_rank``, see :func:`spectra`)
    and, when ``config.snapshot_steps`` is set, ``subspace``: per layer the cosines of the
    smallest (the authors' quantity) and largest principal angle between the top-
    ``subspace_rank`` left singular subspace of ΔW at each snapshot step and at the end.
    ``log_path`` receives one JSON line per step (loss, lr) and per evaluation.
    ``status`` is ``"finished"``, or ``"diverged"`` when the training loss became non-finite:
    training stops at that step (``diverged_at_step``), ``metrics`` and ``layers`` are empty.
    """
    seed = check_seed(seed)
    start = time.perf_counter()
    prepared = prepared or Prepared(config, seed, data_dir)
    model, collate, train_loader, dev_loader = _setup(config, prepared, seed, prepared.dev)
    heldout_loader = None if prepared.heldout is None else DataLoader(
        prepared.heldout, batch_size=config.eval_batch_size, collate_fn=dev_loader.collate_fn)
    accelerator = make_accelerator()
    training = trains(config)
    if config.method == "deep-lora-compressed":
        _compress(model, collate, prepared, config, seed, accelerator)
    model, train_loader, dev_loader = accelerator.prepare(model, train_loader, dev_loader)
    if heldout_loader is not None:
        heldout_loader = accelerator.prepare(heldout_loader)
    task_model = accelerator.unwrap_model(model)
    history: list[dict[str, Any]] = []
    losses: list[float] = []
    snapshots: dict[int, dict[str, Tensor]] = {}
    track = training and bool(config.snapshot_steps)

    def snapshot(step: int) -> None:
        if track and step in config.snapshot_steps:
            snapshots[step] = adapter_subspaces(adapter_deltas(adapted_backbone(task_model)),
                                                config.subspace_rank)

    def record_eval(step: int) -> dict[str, float]:
        entry: dict[str, Any] = {"step": step}
        if heldout_loader is not None:
            entry["heldout"] = evaluate(model, heldout_loader, accelerator)
        entry["metrics"] = evaluate(model, dev_loader, accelerator)
        history.append(entry)
        _log(handle, {"step": step, "eval": entry["metrics"], "heldout": entry.get("heldout")})
        return entry["metrics"]

    status, diverged_at = "finished", None
    if training:
        optimizer, scheduler = _optimizer(config, model)
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    # the log is opened only now: a model or setting that fails to build leaves no file behind
    with (open(log_path, "w") if log_path is not None else nullcontext()) as handle:
        if training:
            model.train()
            snapshot(0)
            if config.eval_every:
                record_eval(0)
            bar = tqdm(total=config.steps, desc=f"{config.method} seed {seed}",
                       disable=not progress or not accelerator.is_local_main_process)
            step = 0
            while step < config.steps:
                for batch in train_loader:
                    loss = _step(model, batch, optimizer, scheduler, accelerator)
                    step += 1
                    losses.append(float(accelerator.reduce(loss.detach(), "mean")))
                    _log(handle, {"step": step, "loss": losses[-1],
                                  "lr": scheduler.get_last_lr()[-1]})
                    if not math.isfinite(losses[-1]):
                        status, diverged_at = "diverged", step
                        _log(handle, {"step": step, "status": status})
                        break
                    bar.update()
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                    snapshot(step)
                    if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                        record_eval(step)
                    if step == config.steps:
                        break
                if status == "diverged":
                    break
            bar.close()
        # a diverged model predicts NaN: no dev metrics, no spectra of ΔW
        final = record_eval(config.steps if training else 0) if status == "finished" else {}
    result: dict[str, Any] = {
        "config": config.to_dict(),
        "seed": seed,
        "versions": library_versions(),
        "device": str(accelerator.device),
        "device_name": device_name(accelerator.device),
        "processes": accelerator.num_processes,
        "status": status,
        "diverged_at_step": diverged_at,
        "metrics": final,
        "history": history,
        "train_loss": losses,
    }
    if isinstance(collate, PromptCollator):  # the exact prompt and label words of the run
        result["prompt"] = {"example": collate.prompts([prepared.dev[0]])[0],
                            "label_words": list(answer_words(prepared.task, config.template))}
    result["dev_rows"] = len(prepared.dev)
    if not prepared.task.is_regression:
        result["majority_rate"] = float(np.bincount(prepared.dev["label"]).max()
                                        / len(prepared.dev))
    if status == "diverged":
        result["layers"] = {}
    elif config.method != "zero-shot":
        deltas = adapter_deltas(adapted_backbone(task_model))
        keep = config.singular_values
        result["layers"] = spectra(deltas, keep=min(2 * config.rank, 64) if keep is None
                                   else keep)
        if snapshots:
            result["subspace"] = _subspace_cosines(snapshots, deltas, config.subspace_rank)
    result["wall_time_s"] = time.perf_counter() - start
    return result


def _compress(model: CrossEncoder | BiEncoder, collate: Collator | PromptCollator,
              prepared: Prepared,
              config: FinetuneConfig, seed: int, accelerator: Accelerator) -> None:
    """Build the narrow factors from one gradient (no dropout) on the first training batch."""
    rows = prepared.train.select(range(min(config.batch_size, len(prepared.train))))
    batch = send_to_device(collate(list(rows)), accelerator.device)
    model.to(accelerator.device).eval()
    compress_adapters(adapted_backbone(model), lambda _: model(batch),
                      generator=torch.Generator().manual_seed(seed))
    model.train()


def _subspace_cosines(
    snapshots: dict[int, dict[str, Tensor]], final: dict[str, Tensor], rank: int
) -> dict[str, dict[str, list[float]]]:
    """Per layer, between the top-``rank`` left singular subspace of ΔW at each snapshot step
    (``snapshots``: the bases, :func:`~deeplora.adapters.inspection.adapter_subspaces`) and at
    the end (``final``: ΔW): ``cos_smallest_angle`` = σ_max(U_tᵀ U_T), the authors' Figure 1
    quantity, and ``cos_largest_angle`` = σ_min(U_tᵀ U_T), the stricter one (every direction
    kept)."""
    steps = sorted(snapshots)
    end = adapter_subspaces(final, rank)
    angles = [subspace_principal_angles(snapshots[s], end) for s in steps]
    cosines = {kind: [principal_angle_cosines(a, kind) for a in angles]
               for kind in ("smallest", "largest")}
    return {name: {"steps": steps,
                   "cos_smallest_angle": [c[name] for c in cosines["smallest"]],
                   "cos_largest_angle": [c[name] for c in cosines["largest"]]}
            for name in end}


def _optimizer(
    config: FinetuneConfig, model: CrossEncoder | BiEncoder
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam(β=(0.9, 0.999), eps=``config.adam_eps``, no weight decay) and a linear
    lr → decay_ratio·lr.

    Compressed Deep LoRA trains its outer factors at γ·lr (``lr_outer_ratio``), all other
    trainable parameters at lr.
    """
    if config.method == "deep-lora-compressed":
        groups = adapter_param_groups(adapted_backbone(model), config.lr, config.lr_outer_ratio)
    else:
        groups = [{"params": [], "lr": config.lr}]
    grouped = {id(p) for group in groups for p in group["params"]}
    groups[-1]["params"] += [p for p in model.parameters()
                             if p.requires_grad and id(p) not in grouped]
    optimizer = torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=config.adam_eps,
                                 weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=config.decay_ratio, total_iters=config.steps
    )
    return optimizer, scheduler
