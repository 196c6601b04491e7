"""Ω sharded over 2 CPU processes (gloo) gives the factors of one process."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deeplora.completion.estimator import DeepMatrixCompletion

SETTINGS = {"rank": 2, "dtype": "float64", "max_steps": 60, "reg": 0.01, "bias_reg": 0.01,
            "validation_fraction": 0.1, "patience": 100, "eval_every": 10, "lr": 0.05}


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    full = 3 + rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    rows, cols = np.nonzero(rng.random((40, 30)) < 0.5)
    return rows, cols, full[rows, cols]


def _parameters(est: DeepMatrixCompletion) -> list[torch.Tensor]:
    return [p.detach().clone() for p in est._parameters_list()]


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        fitted = [_parameters(DeepMatrixCompletion(distributed=True, device="cpu",
                                                   batch_size=batch_size, **SETTINGS)
                              .fit(*_data())) for batch_size in BATCH_SIZES]
        if rank == 0:
            torch.save(fitted, out)
    finally:
        dist.destroy_process_group()


BATCH_SIZES = (None, 300)  # full batch; minibatches (each split over the processes)


def test_two_processes_match_one(tmp_path: Path) -> None:
    out = tmp_path / "factors.pt"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'store'}", str(out)), nprocs=2)
    sharded = torch.load(out, weights_only=True)
    for batch_size, parameters in zip(BATCH_SIZES, sharded, strict=True):
        single = DeepMatrixCompletion(device="cpu", batch_size=batch_size, **SETTINGS)
        single.fit(*_data())
        assert single.n_steps_ == 60
        for got, want in zip(parameters, _parameters(single), strict=True):
            assert torch.linalg.norm(got - want) <= 1e-6 * torch.linalg.norm(want)
        # the run moved far from its start (the comparison is not of two initializations)
        assert single.history_["train_loss"][-1] < 0.5 * single.history_["train_loss"][0]


def test_distributed_needs_a_process_group() -> None:
    with pytest.raises(ValueError, match="process group"):
        DeepMatrixCompletion(distributed=True, max_steps=1).fit(*_data())
