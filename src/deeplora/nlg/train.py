"""One E2E NLG run (train on the few-shot MRs, merge, generate, score) and resumable sweeps.

Given a config and a seed a CPU run is deterministic: the seed fixes the training MRs and
references, the adapter initialization and the batch order. Sweeps write one result file per
(config, seed), ``<out>/<config.key()>/seed-<k>.json``, atomically (temp file + rename), so a
killed sweep leaves no partial result and a rerun trains only the seeds without one.

With ``config.eval_every`` a run records checkpoints instead of generating at its end: at step
0, every ``eval_every`` steps and the last step, a ``history`` entry ``{"step", "heldout":
{"loss", "neg_loss"}, "metrics": {}}`` (the teacher-forced loss on the dev MRs, see
:func:`dev_loss`) and the trainable parameters in ``<out>/<config.key()>/checkpoints/
seed-<k>/step-<s>.pt`` (not result files: about 10 MB each for SmolLM2 at rank 8).
:func:`score_checkpoint` later generates for the test MRs at a chosen checkpoint and writes
``metrics`` and ``predictions`` into its entry, so test generation (about 2.3 s per MR
greedy on a CPU core) is paid only where a selection asks for it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from deeplora.finetune.estimate import Estimate, UnitCosts, seconds_per_step
from deeplora.finetune.sweep import check_seed
from deeplora.nlg.config import NLGConfig
from deeplora.nlg.data import Example, eval_subset, few_shot, hold_out, load_e2e
from deeplora.nlg.metrics import generation_metrics
from deeplora.nlg.models import (
    Formatter,
    add_adapters,
    generate,
    load_generative,
    resolve_generative_model,
)
from deeplora.output import read_result, write_atomic, write_json

LEFT_INIT_ATOL = 1e-3
"""A run whose every ΔW has spectral norm at most this never left its initialization."""


class PreparedNLG:
    """Model path, training examples, dev MRs (``config.dev_mrs`` held out of the dev split,
    never training examples; empty without) and test MRs, checked before any training step."""

    def __init__(self, config: NLGConfig, seed: int,
                 data_dir: str | os.PathLike[str] | None) -> None:
        check_seed(seed)
        self.model_path = resolve_generative_model(config.model)
        pool, self.dev = load_e2e("dev", data_dir), []
        if config.dev_mrs:
            pool, self.dev = hold_out(pool, config.dev_mrs)
        self.train = few_shot(pool, config.samples, seed)
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
            progress: bool = True, prepared: PreparedNLG | None = None,
            checkpoints: Path | None = None) -> dict[str, Any]:
    """Train ``config`` with ``seed``, generate for the test MRs and score; the result record.

    With ``config.eval_every`` (and a training method) the run saves its checkpoints into the
    folder ``checkpoints`` and generates nothing: ``metrics`` is empty, ``history`` holds the
    dev loss per checkpoint (module docstring). With ``config.dev_mrs`` alone, ``history`` is
    one entry at the end with the dev loss and the test metrics.

    Keys: ``config``, ``seed``, ``versions``, ``device_name``, ``metrics`` (BLEU, ROUGE-1/2/L/
    Lsum), ``train_loss`` (per step), ``mrs`` and ``predictions`` (per test MR),
    ``delta_norm_max`` / ``left_init`` (largest spectral norm of any ΔW and whether it exceeds
    :data:`LEFT_INIT_ATOL`; absent for zero-shot), ``train_seconds``, ``generate_seconds``,
    ``wall_time_s``, ``merged``. Generation runs with the adapters merged into the weights,
    unless a merge is refused (an adapted embedding tied to the LM head): then unmerged.
    """
    from deeplora.finetune.train import device_name, library_versions

    seed = check_seed(seed)
    start = time.perf_counter()
    prepared = prepared or PreparedNLG(config, seed, data_dir)
    model, formatter = _setup(config, prepared, seed)
    device = next(model.parameters()).device
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    checkpointed = bool(config.eval_every) and trains(config)
    if checkpointed and checkpoints is None:
        raise ValueError("a checkpointed run needs a checkpoints folder")

    def checkpoint(step: int) -> None:
        if checkpointed and (step % config.eval_every == 0 or step == config.steps):
            history.append({"step": step, "heldout": _dev_scores(model, formatter, prepared,
                                                                 config), "metrics": {}})
            save_adapter(model, checkpoints / f"step-{step}.pt")

    train_start = time.perf_counter()
    checkpoint(0)
    if trains(config):
        losses = _train(model, formatter, prepared.train, config, seed, progress, checkpoint)
    train_seconds = time.perf_counter() - train_start
    result: dict[str, Any] = {"config": config.to_dict(), "seed": seed,
                              "versions": library_versions(), "device_name": device_name(device)}
    if config.dev_mrs:
        result["dev_mrs"] = [e.mr for e in prepared.dev]
    if config.method != "zero-shot":
        norms = _delta_norms(model, config.rank)
        result["delta_norm_max"] = max(norms.values())
        result["left_init"] = result["delta_norm_max"] > LEFT_INIT_ATOL
        result["adapted_layers"] = len(norms)
    mrs = [e.mr for e in prepared.test]
    result.update(train_loss=losses, train_mrs=[e.mr for e in prepared.train], mrs=mrs,
                  train_seconds=train_seconds)
    if checkpointed:
        result.update(history=history, metrics={})
    else:
        if config.method != "zero-shot":
            result["merged"] = _merge(model)
        result.update(_generate_test(model, formatter, prepared, config,
                                     f"generate {config.method} seed {seed}", progress))
        if config.dev_mrs:
            result["history"] = [{"step": config.steps, "metrics": result["metrics"],
                                  "heldout": _dev_scores(model, formatter, prepared, config)}]
    result["wall_time_s"] = time.perf_counter() - start
    return result


def _generate_test(model: torch.nn.Module, formatter: Formatter, prepared: PreparedNLG,
                   config: NLGConfig, desc: str, progress: bool) -> dict[str, Any]:
    """``metrics``, ``predictions`` (per test MR) and ``generate_seconds`` of ``model``."""
    start = time.perf_counter()
    predictions = generate(model, formatter, [e.mr for e in prepared.test],
                           config.eval_batch_size, progress=progress, desc=desc)
    return {"metrics": generation_metrics(predictions, [e.refs for e in prepared.test]),
            "predictions": predictions, "generate_seconds": time.perf_counter() - start}


@torch.no_grad()
def dev_loss(model: torch.nn.Module, formatter: Formatter, examples: Sequence[Example],
             batch_size: int) -> float:
    """Teacher-forced loss of ``model`` on ``examples``, each MR with its first reference: the
    mean negative log-likelihood per target token (reference tokens and EOS), the training
    loss's definition on held-out MRs. Leaves the model's train/eval mode as it found it."""
    mode, device = model.training, next(model.parameters()).device
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = formatter.train_batch(examples[start:start + batch_size])
        count = int((batch["labels"] != -100).sum())
        total += float(model(**{k: v.to(device) for k, v in batch.items()}).loss) * count
        tokens += count
    model.train(mode)
    return total / tokens


def _dev_scores(model: torch.nn.Module, formatter: Formatter, prepared: PreparedNLG,
                config: NLGConfig) -> dict[str, float]:
    """``{"loss": dev loss, "neg_loss": −dev loss}`` (the selection maximizes ``neg_loss``)."""
    loss = dev_loss(model, formatter, prepared.dev, config.eval_batch_size)
    return {"loss": loss, "neg_loss": -loss}


def save_adapter(model: torch.nn.Module, path: Path) -> None:
    """The trainable parameters of ``model`` (its adapters) to ``path``, atomically."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_adapter(model: torch.nn.Module, path: Path) -> None:
    """Load :func:`save_adapter`'s file into ``model`` (built with the same config)."""
    state = torch.load(path, map_location=next(model.parameters()).device)
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{path}: parameters {unexpected[:3]} are not in the model")


def checkpoint_folder(out: str | os.PathLike[str], config: NLGConfig, seed: int) -> Path:
    """Where run (``config``, ``seed``) of a sweep under ``out`` keeps its checkpoints."""
    return Path(out) / config.key() / "checkpoints" / f"seed-{seed}"


def score_checkpoint(config: NLGConfig, seed: int, step: int, out: str | os.PathLike[str],
                     data_dir: str | os.PathLike[str] | None = None, progress: bool = True
                     ) -> dict[str, Any]:
    """Generate for the test MRs with run (``config``, ``seed``)'s adapters at ``step`` (its
    checkpoint under ``out``, merged) and write ``metrics``, ``predictions`` and
    ``generate_seconds`` into that step's ``history`` entry of its result file; the entry."""
    seed = check_seed(seed)
    path = result_path(out, config, seed)
    result = json.loads(path.read_text())
    entry = next(e for e in result["history"] if e["step"] == step)
    prepared = PreparedNLG(config, seed, data_dir)
    model, formatter = _setup(config, prepared, seed)
    load_adapter(model, checkpoint_folder(out, config, seed) / f"step-{step}.pt")
    _merge(model)
    entry.update(_generate_test(model, formatter, prepared, config,
                                f"test {config.method} seed {seed} step {step}", progress))
    write_json(path, result)
    return entry


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
           config: NLGConfig, seed: int, progress: bool,
           after_step: Callable[[int], None] | None = None) -> list[float]:
    """``config.steps`` steps of :func:`_steps` under a progress bar, calling ``after_step``
    with each step's number (1, 2, …); the per-step losses."""
    losses: list[float] = []
    with tqdm(total=config.steps, desc=f"{config.method} seed {seed}", unit="step",
              disable=not progress) as bar:
        for loss in islice(_steps(model, formatter, train, config, seed), config.steps):
            losses.append(loss)
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
            if after_step is not None:
                after_step(len(losses))
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
    step (``None`` if it does not train), one dev MR's loss (one batch of ``eval_batch_size``,
    after those steps; only with ``config.dev_mrs``) and one generated test input (one batch of
    ``eval_batch_size`` test MRs, after the merge, per MR), and the size of the whole test
    split. Trains a throwaway model; writes nothing."""
    from deeplora.finetune.train import device_name

    seed = check_seed(seed)
    start = time.perf_counter()
    prepared = PreparedNLG(config, seed, data_dir)
    model, formatter = _setup(config, prepared, seed)
    setup_s = time.perf_counter() - start
    step_s = None
    if trains(config):
        step_s = seconds_per_step(_steps(model, formatter, prepared.train, config, seed))
    dev_s = 0.0
    if prepared.dev:
        dev = prepared.dev[:config.eval_batch_size]
        start = time.perf_counter()
        dev_loss(model, formatter, dev, config.eval_batch_size)
        dev_s = (time.perf_counter() - start) / len(dev)
    if config.method != "zero-shot":
        _merge(model)
    mrs = [e.mr for e in prepared.test[:config.eval_batch_size]]
    start = time.perf_counter()
    generate(model, formatter, mrs, config.eval_batch_size, progress=True,
             desc="measuring: generation", leave=False)
    item_s = (time.perf_counter() - start) / len(mrs)
    device = device_name(next(model.parameters()).device)
    return UnitCosts(setup_s, step_s, item_s, device, dev_s), prepared.test_total


def estimate_nlg(pairs: Sequence[tuple[NLGConfig, int]], out: str | os.PathLike[str],
                 data_dir: str | os.PathLike[str] | None = None) -> Estimate | None:
    """What the (config, seed) ``pairs`` without a result under ``out`` will cost (a file that
    is not a result is renamed ``*.invalid``, and its seed counted), from a probe of the first
    of them that trains (else the first); ``None`` if none is pending.
    A checkpointed run counts its dev MRs at each checkpoint and test MRs at
    :data:`SCORED_CHECKPOINTS` checkpoints (what a selection scores at most)."""
    todo = [(config, seed) for config, seed in pairs
            if read_result(result_path(out, config, seed), RESULT_KEYS) is None]
    if not todo:
        return None
    probe = next((pair for pair in todo if trains(pair[0])), todo[0])
    costs, total = measure_nlg_costs(*probe, data_dir)
    steps = sum(config.steps for config, _ in todo if trains(config))
    items = sum(min(config.test_mrs or total, total) * _test_passes(config) for config, _ in todo)
    dev_items = sum(config.dev_mrs * _checkpoints(config) for config, _ in todo)
    beams = sorted({config.num_beams for config, _ in todo})
    decoding = "greedy" if beams == [1] else f"beam {'/'.join(map(str, beams))}"
    return Estimate(len(todo), steps, items, f"test inputs generated ({decoding})", costs,
                    dev_items=dev_items)


SCORED_CHECKPOINTS = 3
"""Checkpoints of a run that a selection generates the test MRs at, at most: the best on dev,
the one at the training loss matched with the other method, and the last."""


def _checkpoints(config: NLGConfig) -> int:
    """Dev evaluations of a run: step 0, every ``eval_every`` steps and the last (1 without
    checkpoints, where ``dev_mrs`` is scored once at the end)."""
    if not (config.eval_every and trains(config)):
        return 1
    return 1 + config.steps // config.eval_every + bool(config.steps % config.eval_every)


def _test_passes(config: NLGConfig) -> int:
    return SCORED_CHECKPOINTS if config.eval_every and trains(config) else 1


def result_path(out: str | os.PathLike[str], config: NLGConfig, seed: int) -> Path:
    return Path(out) / config.key() / f"seed-{seed}.json"


RESULT_KEYS = ("config", "seed", "metrics", "train_loss")
"""Keys every result file has (the reports read them); a file without one is not a result."""


def load_nlg_results(out: str | os.PathLike[str], config: NLGConfig,
                     seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The finished results of ``config`` among ``seeds`` (missing seeds left out; a file that
    is not a result is renamed ``*.invalid``, with a message naming it, and left out too)."""
    results = (read_result(result_path(out, config, seed), RESULT_KEYS) for seed in seeds)
    return [r for r in results if r is not None]


def run_nlg_sweep(config: NLGConfig, seeds: Iterable[int], out: str | os.PathLike[str],
                  data_dir: str | os.PathLike[str] | None = None, progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Run ``config`` for every seed without a result file under ``out``; all results.

    Data and model are checked before a seed's run, so bad input raises
    :class:`~deeplora.finetune.data.DataError` with nothing written. A result file that is not
    a result (not JSON, cut short, edited by hand) is renamed ``*.invalid``, with a message
    naming it, and the seed runs again.
    """
    results = []
    for seed in seeds:
        path = result_path(out, config, seed)
        found = read_result(path, RESULT_KEYS)
        if found is not None:
            results.append(found)
            continue
        prepared = PreparedNLG(config, seed, data_dir)
        result = run_nlg(config, seed, data_dir, progress=progress, prepared=prepared,
                         checkpoints=checkpoint_folder(out, config, seed))
        write_json(path.parent / "config.json", config.to_dict())
        write_json(path, result)
        results.append(result)
    return results
