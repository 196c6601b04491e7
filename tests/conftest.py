import pytest
import torch


@pytest.fixture
def one_thread():
    """Small-matrix tests run faster on one thread (and do not thrash a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
