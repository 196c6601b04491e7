"""One E2E NLG run (train on the few-shot MRs, merge, generate, score) and resumable sweeps.

Given a config and a seed a CPU run is deterministic: the seed fixes the training MRs and
references, the adapter initialization and the batch order. Sweeps write one result file per
(config, seed), ``<out>/<config.key()>/seed-<k>.json``, atomically (temp file + rename), so a
killed sweep leaves no partial result and a rerun trains only the seeds without one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from deeplora.finetune.estimate import Estimate, UnitCosts, seconds_per_step
from deeplora.nlg.config import NLGConfig
from deeplora.nlg.data import Example, eval_subset, few_shot, load_e2e
from deeplora.nlg.metrics import generation_metrics
from deeplora.nlg.models import (
    Formatter,
    add_adapters,
    generate,
    load_generative,
    resolve_generative_model,
)
from deeplora.output import write_json

LEFT_INIT_ATOL = 1e-3
"""A run whose every ΔW has spectral norm at most this never left its initialization."""


class PreparedNLG:
    """Model path, training examples and test MRs, checked before any training step."""

    def __init__(self, config: NLGConfig, seed: int,
                 data_dir: str | os.PathLike[str] | None) -> None:
        self.model_path = resolve_generative_model(config.model)
        self.train = few_shot(load_e2e("dev", data_dir), config.samples, seed)
        test = load_e2e("test", data_dir)
        self.test_total = len(test)
        self.test = eval_subset(test, config.test_mrs)


def _delta_norms(model: torch.nn.Module, rank: int) -> dict[str, float]:
    """Spectral norm of every adapted ΔW, of rank at most ``rank``: the top singular value of a
    randomized SVD with ``rank + 8`` columns (exact up to rounding, as they span ΔW's range;
    a full SVD of the 210 ΔW of SmolLM2 costs about 45 s on a CPU), a full SVD where that is
    no smaller."""
    from deeplora.adapters import adapter_deltas

    norms = {}
    for name, delta in adapter_deltas(model).items():
        delta, columns = delta.float(), rank + 8
        if columns < min(delta.shape):
            norms[name] = float(torch.svd_lowrank(delta, q=columns, niter=2)[1][0])
        else:
            norms[name] = float(torch.linalg.matrix_norm(delta, ord=2))
    return norms


def run_nlg(config: NLGConfig, seed: int, data_dir: str | os.PathLike[str] | None = None,
            progress: bool = True, prepared: PreparedNLG | None = None) -> dict[str, Any]:
    """Train ``config`` with ``seed``, generate for the test MRs and score; the result record.

    Keys: ``config``, ``seed``, ``versions``, ``device_name``, ``metrics`` (BLEU, ROUGE-1/2/L/
    Lsum), ``train_loss`` (per step), ``mrs`` and ``predictions`` (per test MR),
    ``delta_norm_max`` / ``left_init`` (largest spectral norm of any ΔW and whether it exceeds
    :data:`LEFT_INIT_ATOL`; absent for zero-shot), ``train_seconds``, ``generate_seconds``,
    ``wall_time_s``, ``merged``. Generation runs with the adapters merged into the weights,
    unless a merge is refused (an adapted embedding tied to the LM head): then unmerged.
    """
    from deeplora.finetune.train import device_name, library_versions

    start = time.perf_counter()
    prepared = prepared or PreparedNLG(config, seed, data_dir)
    model, formatter = _setup(config, prepared, seed)
    device = next(model.parameters()).device
    losses: list[float] = []
    train_start = time.perf_counter()
    if trains(config):
        losses = _train(model, formatter, prepared.train, config, seed, progress)
    train_seconds = time.perf_counter() - train_start
    result: dict[str, Any] = {"config": config.to_dict(), "seed": seed,
                              "versions": library_versions(), "device_name": device_name(device)}
    if config.method != "zero-shot":
        norms = _delta_norms(model, config.rank)
        result["delta_norm_max"] = max(norms.values())
        result["left_init"] = result["delta_norm_max"] > LEFT_INIT_ATOL
        result["adapted_layers"] = len(norms)
        result["merged"] = _merge(model)
    gen_start = time.perf_counter()
    mrs = [e.mr for e in prepared.test]
    predictions = generate(model, formatter, mrs, config.eval_batch_size, progress=progress,
                           desc=f"generate {config.method} seed {seed}")
    result["generate_seconds"] = time.perf_counter() - gen_start
    result["metrics"] = generation_metrics(predictions, [e.refs for e in prepared.test])
    result.update(train_loss=losses, train_mrs=[e.mr for e in prepared.train], mrs=mrs,
                  predictions=predictions, train_seconds=train_seconds,
                  wall_time_s=time.perf_counter() - start)
    return result


def _merge(model: torch.nn.Module) -> bool:
    """Merge the adapters into the weights; ``False`` (left unmerged) where that is refused."""
    try:
        model.merge_adapter()
    except ValueError as exc:
        if "tied" not in str(exc):
            raise
        return False
    return True


def _train(model: torch.nn.Module, formatter: Formatter, train: list[Example],
           config: NLGConfig, seed: int, progress: bool) -> list[float]:
    """``config.steps`` steps of :func:`_steps` under a progress bar; the per-step losses."""
    losses: list[float] = []
    with tqdm(total=config.steps, desc=f"{config.method} seed {seed}", unit="step",
              disable=not progress) as bar:
        for loss in islice(_steps(model, formatter, train, config, seed), config.steps):
            losses.append(loss)
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
    return losses


def _steps(model: torch.nn.Module, formatter: Formatter, train: list[Example],
           config: NLGConfig, seed: int) -> Iterator[float]:
    """Adam(β=(0.9, 0.999), eps=``config.adam_eps``, no weight decay) at a constant lr over
    shuffled batches (reshuffled each epoch with ``seed``), without end; each step's loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, 0.999), eps=config.adam_eps,
                                 weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.train()
    while True:
        order = torch.randperm(len(train), generator=generator).tolist()
        for i in range(0, len(order), config.batch_size):
            batch = formatter.train_batch([train[j] for j in order[i:i + config.batch_size]])
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            yield float(loss.detach())


def trains(config: NLGConfig) -> bool:
    """Whether a run of ``config`` has training steps (zero-shot and 0 steps have none)."""
    return config.method != "zero-shot" and config.steps > 0


def _setup(config: NLGConfig, prepared: PreparedNLG, seed: int
           ) -> tuple[torch.nn.Module, Formatter]:
    """Seed, load the model with its adapters onto the GPU (if any) or CPU; its formatter."""
    from accelerate.utils import set_seed

    set_seed(seed)
    base, tokenizer = load_generative(prepared.model_path)
    formatter = Formatter(tokenizer, config, base.config.is_encoder_decoder)
    model = add_adapters(base, config)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return model, formatter


def measure_nlg_costs(config: NLGConfig, seed: int,
                      data_dir: str | os.PathLike[str] | None = None) -> tuple[UnitCosts, int]:
    """Unit costs of a run of ``config`` on this machine (see
    :mod:`deeplora.finetune.estimate`): reading its data and loading its model, one training
    step (``None`` if it does not train) and one generated test input (one batch of
    ``eval_batch_size`` test MRs, after those steps and the merge, per MR), and the size of the
    whole test split. Trains a throwaway model; writes nothing."""
    from deeplora.finetune.train import device_name

    start = time.perf_counter()
    prepared = PreparedNLG(config, seed, data_dir)
    model, formatter = _setup(config, prepared, seed)
    setup_s = time.perf_counter() - start
    step_s = None
    if trains(config):
        step_s = seconds_per_step(_steps(model, formatter, prepared.train, config, seed))
    if config.method != "zero-shot":
        _merge(model)
    mrs = [e.mr for e in prepared.test[:config.eval_batch_size]]
    start = time.perf_counter()
    generate(model, formatter, mrs, config.eval_batch_size, progress=True,
             desc="measuring: generation", leave=False)
    item_s = (time.perf_counter() - start) / len(mrs)
    device = device_name(next(model.parameters()).device)
    return UnitCosts(setup_s, step_s, item_s, device), prepared.test_total


def estimate_nlg(pairs: Sequence[tuple[NLGConfig, int]], out: str | os.PathLike[str],
                 data_dir: str | os.PathLike[str] | None = None) -> Estimate | None:
    """What the (config, seed) ``pairs`` without a result file under ``out`` will cost, from
    a probe of the first of them that trains (else the first); ``None`` if none is pending."""
    todo = [(config, seed) for config, seed in pairs
            if not result_path(out, config, seed).is_file()]
    if not todo:
        return None
    probe = next((pair for pair in todo if trains(pair[0])), todo[0])
    costs, total = measure_nlg_costs(*probe, data_dir)
    steps = sum(config.steps for config, _ in todo if trains(config))
    items = sum(min(config.test_mrs or total, total) for config, _ in todo)
    beams = sorted({config.num_beams for config, _ in todo})
    decoding = "greedy" if beams == [1] else f"beam {'/'.join(map(str, beams))}"
    return Estimate(len(todo), steps, items, f"test inputs generated ({decoding})", costs)


def result_path(out: str | os.PathLike[str], config: NLGConfig, seed: int) -> Path:
    return Path(out) / config.key() / f"seed-{seed}.json"


def load_nlg_results(out: str | os.PathLike[str], config: NLGConfig,
                     seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The finished results of ``config`` among ``seeds`` (missing seeds left out)."""
    paths = (result_path(out, config, seed) for seed in seeds)
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def run_nlg_sweep(config: NLGConfig, seeds: Iterable[int], out: str | os.PathLike[str],
                  data_dir: str | os.PathLike[str] | None = None, progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Run ``config`` for every seed without a result file under ``out``; all results.

    Data and model are checked before a seed's run, so bad input raises
    :class:`~deeplora.finetune.data.DataError` with nothing written.
    """
    results = []
    for seed in seeds:
        path = result_path(out, config, seed)
        if path.is_file():
            results.append(json.loads(path.read_text()))
            continue
        prepared = PreparedNLG(config, seed, data_dir)
        result = run_nlg(config, seed, data_dir, progress=progress, prepared=prepared)
        write_json(path.parent / "config.json", config.to_dict())
        write_json(path, result)
        results.append(result)
    return results
