"""What a sweep will cost on this machine, measured before it starts, as one line on stderr.

A probe (:func:`deeplora.finetune.train.measure_costs` for GLUE,
:func:`deeplora.nlg.train.measure_nlg_costs` for E2E NLG) builds the first pending run's model
as the run does, times its setup (data and model), :data:`PROBE_STEPS` training steps (the
first is a warm-up and not counted) and one evaluation batch, under a progress bar, and throws
the model away. :class:`Estimate` multiplies those unit costs by the pending work::

    deeplora: about 400 train steps × 14 s + 630 test inputs generated (beam 4) × 2.1 s
    + 1 run × 4.8 s setup ≈ 2.1 h on this machine (cpu (2 cores, x86_64))

(one line). The runs reseed at their start, so the probe does not change their results.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from tqdm.auto import tqdm

PROBE_STEPS = 2
"""Training steps a probe runs; the first is a warm-up (allocations, kernel choice)."""


@dataclass(frozen=True)
class UnitCosts:
    """Measured seconds: building one run's model (``setup_s``), one training step (``step_s``;
    ``None`` when nothing was trained), one evaluated input (``item_s``) and one dev input
    scored at a checkpoint (``dev_s``; 0 where there are none), on ``device``."""

    setup_s: float
    step_s: float | None
    item_s: float
    device: str
    dev_s: float = 0.0


@dataclass(frozen=True)
class Estimate:
    """``runs`` pending runs with ``steps`` training steps, ``items`` evaluated inputs
    (``item_label`` says what an input is) and ``dev_items`` dev inputs scored at checkpoints in
    all, at ``costs``; ``processes`` runs at once."""

    runs: int
    steps: int
    items: int
    item_label: str
    costs: UnitCosts
    processes: int = 1
    dev_items: int = 0

    @property
    def seconds(self) -> float:
        """runs·setup + steps·step + items·item + dev_items·dev, divided by ``processes``."""
        work = (self.runs * self.costs.setup_s + self.steps * (self.costs.step_s or 0.0)
                + self.items * self.costs.item_s + self.dev_items * self.costs.dev_s)
        return work / self.processes

    def line(self) -> str:
        parts = []
        if self.steps and self.costs.step_s is not None:
            parts.append(f"{self.steps} train steps × {_seconds(self.costs.step_s)} s")
        parts.append(f"{self.items} {self.item_label} × {_seconds(self.costs.item_s)} s")
        if self.dev_items:
            parts.append(f"{self.dev_items} dev inputs scored × {_seconds(self.costs.dev_s)} s")
        parts.append(f"{self.runs} run{'s' * (self.runs != 1)} × "
                     f"{_seconds(self.costs.setup_s)} s setup")
        where = f"on this machine ({self.costs.device})"
        if self.processes > 1:
            where += f" in {self.processes} processes"
        return f"deeplora: about {' + '.join(parts)} ≈ {duration(self.seconds)} {where}"


def _seconds(value: float) -> str:
    """Two significant digits, never in exponent form (0.00043, 0.31, 14, 130)."""
    if value >= 10:
        return f"{value:.0f}"
    digits = max(1, 1 - math.floor(math.log10(value))) if value > 0 else 1
    return f"{value:.{digits}f}"


def duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"2.1 h"``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def seconds_per_step(steps: Iterable[object], count: int = PROBE_STEPS) -> float:
    """Mean seconds per item of the first ``count`` items of ``steps`` after the first, a
    warm-up (iterating ``steps`` runs one training step per item), under a progress bar that
    is removed when done."""
    times = []
    start = time.perf_counter()
    for _ in tqdm(islice(steps, count), total=count, desc="measuring: train steps",
                  unit="step", leave=False):
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return statistics.fmean(times[1:] or times)


def announce(estimate: Estimate | None) -> None:
    """Write ``estimate.line()`` to stderr (between progress bars); nothing for ``None``."""
    if estimate is not None:
        tqdm.write(estimate.line(), file=sys.stderr)
