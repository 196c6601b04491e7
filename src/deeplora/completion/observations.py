"""Validation of sparse observations ``(rows, cols, values)`` shared by the estimators, and
their error measures.

- :func:`check_observations`: triples → sorted, de-duplicated ``(rows, cols, values, shape)``.
- :func:`check_clip`: a clip interval ``[low, high]`` against the observed range ``[a, b]``.
- :func:`rmse`, :func:`mae`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rmse(predicted: np.ndarray, values: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(values)) ** 2)))


def mae(predicted: np.ndarray, values: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(values))))


def as_index(name: str, value: Any) -> np.ndarray:
    """``value`` as 1-D int64 indices >= 0 (integral floats accepted); ``ValueError`` otherwise."""
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    integral = np.issubdtype(array.dtype, np.integer) or (
        np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array))
        and np.all(array == np.round(array)))
    if array.size and not integral:
        raise ValueError(f"{name} must be integer indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0, found {int(array.min())}")
    return array


def check_observations(
    rows: Any, cols: Any, values: Any, shape: tuple[int, int] | None = None,
    duplicates: str = "raise",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Validate triples; return ``(rows, cols, values, shape)``, sorted row-major.

    Errors (``ValueError``): empty, unequal lengths, non-integer or negative ids, ids outside
    ``shape``, non-finite values, and duplicate (row, col) pairs unless ``duplicates="mean"``,
    which replaces them by their average. ``shape`` defaults to ``(max row + 1, max col + 1)``.
    """
    if duplicates not in ("raise", "mean"):
        raise ValueError(f"duplicates must be 'raise' or 'mean', got {duplicates!r}")
    rows, cols = as_index("rows", rows), as_index("cols", cols)
    values = np.asarray(values, dtype=np.float64)
    if not (rows.shape == cols.shape == values.shape):
        raise ValueError(f"rows, cols and values must have equal length, got {rows.shape}, "
                         f"{cols.shape} and {values.shape}")
    if rows.size == 0:
        raise ValueError("no observations given")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite (found NaN or inf)")
    if shape is None:
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    m, n = shape
    if rows.max() >= m or cols.max() >= n:
        raise ValueError(f"ids must lie in [0, {m}) × [0, {n}), found "
                         f"({int(rows.max())}, {int(cols.max())})")
    key = rows * n + cols
    order = np.argsort(key, kind="stable")
    key, values = key[order], values[order]
    first = np.concatenate([[True], key[1:] != key[:-1]])
    if not first.all():
        if duplicates == "raise":
            i = int(np.argmin(first))
            raise ValueError(f"{int((~first).sum())} duplicate (row, col) pairs, e.g. "
                             f"({key[i] // n}, {key[i] % n}); pass duplicates='mean' to average")
        group = np.cumsum(first) - 1
        values = np.bincount(group, weights=values) / np.bincount(group)
        key = key[first]
    return key // n, key % n, values, (int(m), int(n))


def check_clip(clip: tuple[float, float], values: np.ndarray, name: str = "clip") -> None:
    """``ValueError`` unless clipping to ``clip = (low, high)`` (finite, ``low < high``) leaves
    predictions informative on ratings ``values`` with observed range ``[a, b]``.

    Rule: the two intervals share more than a point, ``max(low, a) < min(high, b)`` (when
    ``a = b``: ``low <= a <= high``). A clip that narrows (``(2, 4)`` on ratings 1–5) or widens
    the range is allowed; one that misses it or only touches an end (``(10, 20)`` or ``(0, 1)``
    on 1–5) would map every prediction to one value and is refused. The message names ``name``
    (``"--clip"`` on the command line).
    """
    low, high = float(clip[0]), float(clip[1])
    a, b = float(np.min(values)), float(np.max(values))
    if not (max(low, a) < min(high, b) if a < b else low <= a <= high):
        shown = (f"{name} {low:g} {high:g}" if name.startswith("--")
                 else f"{name} ({low:g}, {high:g})")
        raise ValueError(f"{shown} does not overlap the ratings' range [{a:g}, {b:g}] (every "
                         "prediction would be clipped to one value)")
