"""Figures for the matrix-recovery experiments."""

from __future__ import annotations

import os
from collections.abc import Mapping

from deeplora.completion import History
from deeplora.plotting import new_figure, save_figure


def plot_runs(histories: Mapping[str, History], path: str | os.PathLike[str],
              title: str = "") -> None:
    """Recovery error ‖X − Φ‖_F/‖Φ‖_F vs step and vs wall-clock seconds, one line per run."""
    fig, (by_step, by_time) = new_figure(ncols=2)
    for label, history in histories.items():
        by_step.plot(history.steps, history.recovery_error, label=label)
        by_time.plot(history.seconds, history.recovery_error, label=label)
    for ax, xlabel in ((by_step, "step"), (by_time, "wall-clock seconds (incl. build)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative recovery error ‖X − Φ‖/‖Φ‖")
        ax.axhline(1e-2, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
