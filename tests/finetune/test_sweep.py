"""What a sweep runs: seeds and jobs parsing."""

from __future__ import annotations

import pytest

from deeplora.finetune.sweep import check_jobs, parse_seeds


def test_parse_seeds() -> None:
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("3,0-1,3") == (3, 0, 1)
    for bad in ("", "a", "4-2", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    check_jobs(1)
    with pytest.raises(ValueError, match="--jobs must be >= 1, got 0"):
        check_jobs(0)
