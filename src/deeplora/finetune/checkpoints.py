"""Checkpoint and learning-rate selection on held-out training rows, never on the test split.

A run with ``heldout_samples`` and ``eval_every`` records at every evaluation step s a
``history`` entry ``{"step": s, "heldout": {...}, "metrics": {...}}``: ``heldout`` holds the
metrics on training rows held out from the few-shot pool (the dev set), ``metrics`` those on
the GLUE dev split (the test set, GLUE's own test labels being private). Selection reads
``step`` and ``heldout`` only; the test metrics of the chosen entry are read afterwards.

- :func:`best_checkpoint`: the evaluation with the highest held-out main metric (earliest on
  ties), i.e. early stopping chosen on dev;
- :func:`window_loss`: the training loss at a checkpoint, the mean over the ``window`` steps
  before it;
- :func:`matched_checkpoints`: for two runs, the first checkpoint of each whose window loss is
  at most the lowest loss both reach (compare methods at the same fit, not the same step);
- :func:`choose_lr`: per method, the learning rate with the best mean held-out score at the
  best checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def best_checkpoint(history: Sequence[Mapping[str, Any]], metric: str) -> int | None:
    """Index into ``history`` of the entry with the highest ``entry["heldout"][metric]`` (the
    earliest of equals); ``None`` when no entry has a finite held-out value. Reads nothing but
    ``"heldout"`` of each entry.

    Raises:
        ValueError: an entry has no ``"heldout"`` (a run without held-out rows: there is
            nothing to select on, and the test metrics are never used), or no entry has
            ``metric`` (e.g. a misspelt name, which would otherwise select nothing silently).
    """
    best, best_value, named = None, -math.inf, False
    for i, entry in enumerate(history):
        if "heldout" not in entry:
            raise ValueError(f"history entry {i} (step {entry.get('step')}) has no held-out "
                             "metrics: checkpoints are chosen on a run with held-out rows "
                             "(heldout_samples > 0), never on the test metrics")
        named = named or metric in entry["heldout"]
        value = entry["heldout"].get(metric)
        if _finite(value) and value > best_value:
            best, best_value = i, value
    if history and not named:
        raise ValueError(f"no held-out metric {metric!r} in the history; it has "
                         f"{sorted(history[0]['heldout'])}")
    return best


def window_loss(losses: Sequence[float | None], step: int, window: int) -> float | None:
    """Mean training loss over steps ``step − window + 1 … step`` (``losses[k]`` is step k+1);
    ``None`` at step 0 or when a loss in the window is missing or not finite."""
    part = losses[max(0, step - window): step]
    if not part or not all(_finite(v) for v in part):
        return None
    return sum(part) / len(part)


def loss_curve(result: Mapping[str, Any]) -> list[float | None]:
    """:func:`window_loss` at each history entry of ``result`` (window: its ``eval_every``)."""
    window = result["config"]["eval_every"] or len(result["train_loss"])
    return [window_loss(result["train_loss"], e["step"], window) for e in result["history"]]


def matched_checkpoints(a: Mapping[str, Any], b: Mapping[str, Any]
                        ) -> tuple[int, int, float] | None:
    """History indices (i, j) where runs ``a`` and ``b`` first reach the training loss
    ``target`` = the larger of their two lowest checkpoint losses (the lowest fit both
    reach), and ``target``; ``None`` if either run has no finite checkpoint loss."""
    curves = [loss_curve(a), loss_curve(b)]
    lows = [min((v for v in c if v is not None), default=None) for c in curves]
    if None in lows:
        return None
    target = max(lows)
    i, j = (next(k for k, v in enumerate(c) if v is not None and v <= target) for c in curves)
    return i, j, target


def choose_lr(scores: Mapping[float, Sequence[float]]) -> float | None:
    """The learning rate whose finite held-out scores have the highest mean (the smallest lr
    of equals); ``None`` when none has a finite score."""
    means = {lr: sum(f) / len(f) for lr, values in scores.items()
             if (f := [v for v in values if _finite(v)])}
    if not means:
        return None
    return max(sorted(means), key=lambda lr: means[lr])
