import pytest


@pytest.fixture(autouse=True)
def _small_matrices_on_one_thread(one_thread):
    """Every test here works on small matrices."""
