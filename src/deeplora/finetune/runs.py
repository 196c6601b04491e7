"""Sweeps over seeds with one atomically written result file per (config, seed), resumable,
run one after another (:func:`run_sweep`) or in worker processes (:func:`run_parallel`).

Layout: ``<out>/<config.key()>/config.json`` and ``seed-<k>.json`` (the result) plus
``seed-<k>.log.jsonl`` (the training log). A result file appears only complete (temp file +
``os.replace``; NaN is written as null), so a killed sweep leaves no partial result and a
rerun trains exactly the seeds without one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from deeplora.finetune.config import FinetuneConfig
from deeplora.finetune.train import Prepared, distributed_state, run_finetune
from deeplora.output import write_json


def result_path(out: str | os.PathLike[str], config: FinetuneConfig, seed: int) -> Path:
    return Path(out) / config.key() / f"seed-{seed}.json"


def load_results(out: str | os.PathLike[str], config: FinetuneConfig,
                 seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The finished results of ``config`` among ``seeds`` (missing seeds are left out)."""
    paths = (result_path(out, config, seed) for seed in seeds)
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def run_sweep(
    config: FinetuneConfig,
    seeds: Iterable[int],
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``config`` for every seed that has no result file yet; return all results.

    Data and model are validated for a seed before its run starts, so bad input raises
    :class:`~deeplora.finetune.data.DataError` without writing anything.
    """
    results = []
    for seed in seeds:
        path = result_path(out, config, seed)
        if path.is_file():
            results.append(json.loads(path.read_text()))
            continue
        prepared = Prepared(config, seed, data_dir)
        main = distributed_state().is_main_process  # under `accelerate launch`: one writer
        if main:
            write_json(path.parent / "config.json", config.to_dict())
        log = path.with_suffix(".log.jsonl") if main else None
        result = run_finetune(config, seed, data_dir, log_path=log, progress=progress,
                              prepared=prepared)
        if main:
            write_json(path, result)
        results.append(result)
    return results


def run_parallel(
    sweeps: Sequence[tuple[FinetuneConfig, Sequence[int]]],
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> None:
    """Run every (config, seed) of ``sweeps`` that has no result file in ``jobs`` processes.

    Runs go seed-major (the first seed of every config, then the second, …) so that a sweep
    stopped early holds complete pairs. Each worker uses ``torch.get_num_threads() // jobs``
    threads (at least 1); on a GPU machine the workers share the GPU. Results are the same
    files :func:`run_sweep` writes. The first failing run stops the runs not yet started and
    its error is raised.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    longest = max((len(seeds) for _, seeds in sweeps), default=0)
    todo = [(config, seeds[i]) for i in range(longest) for config, seeds in sweeps
            if i < len(seeds) and not result_path(out, config, seeds[i]).is_file()]
    threads = max(1, torch.get_num_threads() // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        futures = [pool.submit(run_sweep, config, (seed,), out, data_dir, False)
                   for config, seed in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"runs ({jobs} jobs)",
                           disable=not progress):
            future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _init_worker(threads: int) -> None:
    from deeplora.finetune.models import quiet_transformers

    torch.set_num_threads(threads)
    quiet_transformers()
