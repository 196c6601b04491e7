"""The shared argument checks."""

import numpy as np
import pytest

from deeplora.checks import check_seed


def test_check_seed_takes_any_integer_type_in_numpys_range() -> None:
    for value in (0, np.int64(1), np.uint32(2**32 - 1)):
        seed = check_seed("seed", value)
        assert seed == value and type(seed) is int
    for bad in (-1, 2**32, 1.5, 1.0, True, "1", None):
        with pytest.raises(ValueError, match=rf"^random_state must be an integer in "
                                             rf"\[0, 2\*\*32\), got {bad!r}$"):
            check_seed("random_state", bad)
