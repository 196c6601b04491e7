"""Argument checks shared by the packages: integers and real numbers of any type (Python's and
numpy's, as ``np.arange``/``np.logspace`` grids pass them), ``bool`` excluded, and seeds."""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer of any type (``int``, ``np.int64``, …), not a ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number of any type (``int``, ``float``, ``np.float32``, …;
    NaN and ±inf too), not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number of any type (``int``, ``float``,
    ``np.float32``, …), not a ``bool``."""
    return is_number(value) and math.isfinite(value)


def check_integer(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (any integer type, numpy's included, but not
    ``bool``); ``ValueError`` naming ``name`` otherwise."""
    if not (is_integer(value) and low <= value and (high is None or value <= high)):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


SEED_LIMIT = 2**32
"""Seeds lie in [0, 2**32): NumPy's global seeding and scikit-learn take no other."""


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a seed: an integer of any type (not ``bool``) in [0, 2**32)."""
    return is_integer(value) and 0 <= value < SEED_LIMIT


def check_seed(name: str, value: Any) -> int:
    """``value`` as an ``int`` seed (:func:`is_seed`), for ``torch.Generator.manual_seed``
    (which takes no numpy integer); ``ValueError`` naming ``name`` otherwise."""
    if not is_seed(value):
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    return int(value)
