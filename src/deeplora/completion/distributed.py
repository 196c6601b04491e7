"""Data-parallel training over the default :mod:`torch.distributed` process group.

Every process holds the same data and model; :class:`DataParallel` gives each its contiguous
1/world share of an index array, sums tensors and gradients over the processes (one
``all_reduce`` per step) and broadcasts rank 0's parameters, so all take the same optimizer
step. With ``enabled=False`` every operation is the identity (one process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def check_process_group() -> None:
    """``ValueError`` unless a default process group is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialized torch.distributed process "
                         "group (launch with torchrun and call init_process_group)")


def local_cuda_index(enabled: bool) -> int:
    """The CUDA device of this process: ``$LOCAL_RANK`` when distributed (torchrun), else 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) if enabled else 0


@dataclass(frozen=True)
class DataParallel:
    """Sharding and reductions over the default process group; identities unless ``enabled``."""

    enabled: bool

    @property
    def share(self) -> float:
        """1 / world size (1 unless enabled)."""
        return 1.0 / dist.get_world_size() if self.enabled else 1.0

    def shard(self, part: np.ndarray) -> np.ndarray:
        """This process's contiguous share of ``part`` (all of it unless enabled)."""
        if not self.enabled:
            return part
        return np.array_split(part, dist.get_world_size())[dist.get_rank()]

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum of ``tensor`` over the processes (in place)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def all_sum(self, value: float, device: torch.device) -> float:
        """Sum of a float over the processes (float64)."""
        return float(self.all_reduce(torch.tensor([value], dtype=torch.float64,
                                                  device=device)).item())

    def broadcast(self, params: Iterable[Tensor]) -> None:
        """Overwrite ``params`` by rank 0's."""
        if self.enabled:
            for param in params:
                dist.broadcast(param.data, src=0)

    def reduce_gradients(self, params: Iterable[Tensor], loss: Tensor) -> Tensor:
        """Sum the gradients of ``params`` (those that have one) and the data ``loss`` (any
        shape) over the processes in one ``all_reduce``; returns the loss of the whole
        batch."""
        if not self.enabled:
            return loss
        params = [p for p in params if p.grad is not None]
        flat = torch.cat([*(p.grad.reshape(-1) for p in params), loss.reshape(-1)])
        dist.all_reduce(flat)
        offset = 0
        for param in params:
            param.grad.copy_(flat[offset:offset + param.numel()].view_as(param))
            offset += param.numel()
        return flat[offset:].view_as(loss)
