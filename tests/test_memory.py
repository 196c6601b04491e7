"""deeplora.memory: refusals name what fits."""

import pytest

import deeplora.memory
from deeplora.memory import TooLargeError, check_square_fits


def test_check_square_fits_names_the_largest_square_that_fits(monkeypatch) -> None:
    monkeypatch.setattr(deeplora.memory, "available_bytes", lambda device=None: 10_000)
    check_square_fits(lambda m, n: m * n, (100, 100), "a grid")  # exactly fits
    with pytest.raises(TooLargeError, match=r"^a grid needs about 0 MiB, 0 MiB available; the "
                       r"largest square --size that fits is 100$"):
        check_square_fits(lambda m, n: m * n, (300, 50), "a grid", size_name="--size")
    with pytest.raises(TooLargeError, match=r"nothing fits$"):
        check_square_fits(lambda m, n: 20_000 + m * n, (10, 10), "a grid")
