"""Matplotlib helpers shared by the CLI and the experiments (headless, Agg backend)."""

from __future__ import annotations

import os

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


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    finally:
        plt.close(fig)
