"""Sweeps over seeds with one atomically written result file per (config, seed), resumable.

Layout: ``<out>/<config.key()>/config.json`` and ``seed-<k>.json`` (the result) plus
``seed-<k>.log.jsonl`` (the training log). A result file appears only complete (temp file +
``os.replace``; NaN is written as null), so a killed sweep leaves no partial result and a
rerun trains exactly the seeds without one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from accelerate import PartialState

from deeplora.cli.output import write_json
from deeplora.finetune.config import FinetuneConfig
from deeplora.finetune.train import Prepared, run_finetune


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
        main = PartialState().is_main_process  # under `accelerate launch`: one writer
        if main:
            write_json(path.parent / "config.json", config.to_dict())
        log = path.with_suffix(".log.jsonl") if main else None
        result = run_finetune(config, seed, data_dir, log_path=log, progress=progress,
                              prepared=prepared)
        if main:
            write_json(path, result)
        results.append(result)
    return results
