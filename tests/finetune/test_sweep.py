"""What a sweep runs: seeds and jobs parsing."""

from __future__ import annotations

import numpy as np
import pytest

from deeplora.finetune.data import DataError
from deeplora.finetune.sweep import check_jobs, check_seed, parse_seeds


def test_parse_seeds() -> None:
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("3,0-1,3") == (3, 0, 1)
    assert parse_seeds(" 1 - 2 ,0") == (1, 2, 0)
    for bad in ("", "a", "4-2", "-1", "0-", "1,,2", "1-2-3", "+1", "\u0663", "0-4294967296"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="more than 10000 seeds"):
        parse_seeds("5,0-4000000000")  # refused before 4·10^9 seeds are listed
    check_jobs(1)
    with pytest.raises(ValueError, match="--jobs must be >= 1, got 0"):
        check_jobs(0)


def test_check_seed_refuses_a_bool() -> None:
    """seed=True was taken as seed 1 (a bool is a numbers.Integral)."""
    check_seed(np.int64(3))
    with pytest.raises(DataError, match=r"seed must be an integer in \[0, 2\*\*32\), got True"):
        check_seed(True)
