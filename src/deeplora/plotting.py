"""Matplotlib helpers shared by the CLI and the experiments (headless, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from deeplora.output import write_atomic


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8
               ) -> tuple[Figure, list[plt.Axes]]:
    """A figure with ``nrows × ncols`` axes, returned flat."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


# Formats matplotlib writes with its own backends and Pillow (not "pgf", which needs LaTeX).
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format ``path``'s suffix names (``png`` without a suffix); ``ValueError`` for a
    suffix not in :data:`FIGURE_FORMATS`."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix and suffix not in FIGURE_FORMATS:
        raise ValueError(f"cannot save a figure as {str(path)!r}: unknown suffix .{suffix} "
                         f"(known: {', '.join('.' + f for f in FIGURE_FORMATS)})")
    return suffix or "png"


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``fig`` atomically in the format of ``path``'s suffix (:func:`figure_format`) and
    close it."""
    try:
        format = figure_format(path)
        fig.tight_layout()
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=130, format=format))
    finally:
        plt.close(fig)
