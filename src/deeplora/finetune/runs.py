"""Sweeps over seeds with one atomically written result file per (config, seed), resumable,
run one after another (:func:`run_sweep`) or in worker processes (:func:`run_parallel`).

Layout: ``<out>/<config.key()>/config.json`` and ``seed-<k>.json`` (the result) plus
``seed-<k>.log.jsonl`` (the training log). A result file appears only complete (temp file +
``os.replace``; NaN is written as null), so a killed sweep leaves no partial result and a
rerun trains exactly the seeds without one. A result file that is not valid JSON (cut by a
full disk, edited by hand) or not an object with a result's keys counts as unfinished: it is
renamed ``seed-<k>.json.invalid`` and the seed runs again, with a message.

While a seed runs, its process holds an exclusive lock (``flock``) on ``seed-<k>.lock``;
another sweep into the same ``out`` skips that seed, runs the others, then waits for the lock
and reads the result (or runs the seed itself if the holder died or failed). A killed process
releases its lock; the lock file is removed when the seed ends. Nothing is written for a seed
whose data, model or settings are rejected.
"""

from __future__ import annotations

import fcntl
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from deeplora.finetune.config import FinetuneConfig
from deeplora.finetune.data import get_task, load_split
from deeplora.finetune.estimate import Estimate, announce
from deeplora.finetune.sweep import seed_major
from deeplora.finetune.train import (
    Prepared,
    distributed_state,
    measure_costs,
    run_finetune,
    trains,
)
from deeplora.output import read_result as read_json_result
from deeplora.output import write_json


def result_path(out: str | os.PathLike[str], config: FinetuneConfig, seed: int) -> Path:
    return Path(out) / config.key() / f"seed-{seed}.json"


RESULT_KEYS = ("config", "seed", "metrics", "wall_time_s")
"""Keys every result file has (the reports read them); a file without one is not a result."""


def read_result(path: Path) -> dict[str, Any] | None:
    """The result at ``path``; ``None`` if there is none or it is not one (not JSON, or not an
    object with :data:`RESULT_KEYS`; then it is renamed ``*.invalid``, with a message naming
    it, so that the seed runs again)."""
    return read_json_result(path, RESULT_KEYS)


def load_results(out: str | os.PathLike[str], config: FinetuneConfig,
                 seeds: Iterable[int]) -> list[dict[str, Any]]:
    """The finished results of ``config`` among ``seeds`` (missing seeds are left out)."""
    results = (read_result(result_path(out, config, seed)) for seed in seeds)
    return [r for r in results if r is not None]


@contextmanager
def claim(path: Path, wait: bool) -> Iterator[bool]:
    """Hold the exclusive lock of result ``path`` (``seed-<k>.lock``) for the body; yields
    ``False`` at once if another process holds it and ``wait`` is false. Folders created for
    the lock are removed again if the body leaves them empty (e.g. the run was rejected)."""
    lock = path.with_suffix(".lock")
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:  # the holder before us may have removed the file: lock the current one
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        for folder in created:
            with suppress(OSError):
                folder.rmdir()  # only if empty


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
    return run_pairs([(config, seed) for seed in seeds], out, data_dir, progress)


def run_pairs(
    pairs: Sequence[tuple[FinetuneConfig, int]],
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_result: Callable[[FinetuneConfig, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_sweep` over (config, seed) ``pairs`` in their order (e.g. seed-major);
    the results in that order. A pair another process is running is skipped and awaited
    after the others, so two identical sweeps share the work. ``on_result`` is called with
    each result as it is obtained. With ``progress`` (and not under ``accelerate launch``),
    the measured cost of the pending runs (:func:`estimate`) goes to stderr first."""
    results: dict[int, dict[str, Any]] = {}
    main = distributed_state().is_main_process  # under `accelerate launch`: one writer
    if progress and distributed_state().num_processes == 1:
        announce(estimate(pairs, out, data_dir))
    # first the runs nobody runs, then wait for the others (processes of one `accelerate
    # launch` must run the same runs in step: they wait at once)
    for wait in (False, True) if distributed_state().num_processes == 1 else (True,):
        for i, (config, seed) in enumerate(pairs):
            if i in results:
                continue
            path = result_path(out, config, seed)
            found = read_result(path)
            if found is None and main:
                with claim(path, wait) as mine:
                    if not mine:
                        tqdm.write(f"deeplora: {config.method} seed {seed} is being run by "
                                   "another process; it is awaited at the end", file=sys.stderr)
                        continue
                    found = read_result(path)  # finished while we waited for the lock
                    if found is None:
                        found = _run_one(config, seed, path, data_dir, progress)
            elif found is None:
                found = run_finetune(config, seed, data_dir, progress=progress)
            results[i] = found
            if on_result is not None:
                on_result(config, found)
    return [results[i] for i in range(len(pairs))]


def estimate(pairs: Sequence[tuple[FinetuneConfig, int]], out: str | os.PathLike[str],
             data_dir: str | os.PathLike[str] | None = None, processes: int = 1
             ) -> Estimate | None:
    """What the (config, seed) ``pairs`` without a result under ``out`` will cost (a file that
    is not a result is renamed ``*.invalid`` by :func:`read_result`, and its seed counted), from
    a probe of the first of them that trains (else the first); ``None`` if none is pending.
    Counts each run's training steps and its evaluations (at step 0 and every ``eval_every``
    steps when set, and at the end), each of the dev rows and the held-out rows."""
    todo = [(config, seed) for config, seed in pairs
            if read_result(result_path(out, config, seed)) is None]
    if not todo:
        return None
    probe = next((pair for pair in todo if trains(pair[0])), todo[0])
    costs = measure_costs(*probe, data_dir)
    dev_rows: dict[str, int] = {}
    steps = rows = 0
    for config, _ in todo:
        if config.task not in dev_rows:
            dev_rows[config.task] = len(load_split(get_task(config.task), "dev", data_dir))
        evaluations = 1
        if trains(config):
            steps += config.steps
            if config.eval_every:
                evaluations += 1 + (config.steps - 1) // config.eval_every
        scored = min(dev_rows[config.task], config.dev_samples or math.inf)
        rows += evaluations * (scored + config.heldout_samples)
    return Estimate(len(todo), steps, int(rows), "dev rows evaluated", costs, processes)


def _run_one(config: FinetuneConfig, seed: int, path: Path,
             data_dir: str | os.PathLike[str] | None, progress: bool) -> dict[str, Any]:
    """Validate, train, and write ``config.json``, the log and the result of one seed."""
    prepared = Prepared(config, seed, data_dir)
    result = run_finetune(config, seed, data_dir, log_path=path.with_suffix(".log.jsonl"),
                          progress=progress, prepared=prepared)
    write_json(path.parent / "config.json", config.to_dict())
    write_json(path, result)
    return result


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
    its error is raised. With ``progress``, the cost of the pending runs, measured with a
    worker's threads and divided among the processes, goes to stderr first.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    todo = [(config, seed) for config, seed in seed_major(sweeps)
            if read_result(result_path(out, config, seed)) is None]
    threads = max(1, torch.get_num_threads() // jobs)
    if progress and todo:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # measured as a worker runs
        try:
            announce(estimate(todo, out, data_dir, processes=min(jobs, len(todo))))
        finally:
            torch.set_num_threads(before)
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
