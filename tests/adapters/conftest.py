"""Fixtures: the embedded all-MiniLM-L6-v2, loaded once. Tests never touch the network."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModel, PreTrainedModel

from deeplora.adapters import embedded_model_path


@pytest.fixture(scope="session")
def _minilm() -> PreTrainedModel:
    return AutoModel.from_pretrained(embedded_model_path()).eval()


@pytest.fixture
def minilm(_minilm: PreTrainedModel) -> PreTrainedModel:
    """A fresh copy of the embedded all-MiniLM-L6-v2 encoder (loaded once per session)."""
    return copy.deepcopy(_minilm)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
