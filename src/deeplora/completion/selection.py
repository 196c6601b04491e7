"""Penalty strength chosen per dataset on the validation split of the training ratings.

:class:`~deeplora.completion.estimator.DeepMatrixCompletion` with ``reg="auto"`` (the ratings
preset) calls :func:`search_penalty` instead of one training run. The penalties form a
geometric grid ``λ_k = reg_max · ratio^k`` (:func:`penalty_grid`, strong to weak). Every
visited λ is trained from the same initialization (the compressed construction, built once)
with early stopping on the validation RMSE; the search starts at ``PATH["start"]``, steps
one grid point weaker, and keeps walking in whichever direction improved the best
validation RMSE until a step does not (a 1-D pattern search: 3–4 fits when the optimum is
near the start). The parameters of the best (λ, step) are kept. ``bias_reg="auto"`` ties
the bias penalty to ``λ · bias_ratio``. The validation split is the estimator's
``validation_fraction`` of the observations it is fitted on, so nothing else is read.

Warm starts along the grid (each λ from the previous one's parameters, as Soft-Impute does)
were measured first and are worse here: on MovieLens 100K ``u1.base`` they end at
validation RMSE 0.922–0.923 against 0.915 for a fresh start at the same λ, because a strong
penalty shrinks the deep factors towards the origin, where the small-initialization
dynamics that make early stopping work are lost.

Fitted attributes: ``selected_`` (``{"reg", "bias_reg", "first_step", "step", "val_rmse"}``:
the chosen λ's fit ran from ``first_step`` and was best at ``step``) and ``path_`` (one
``{"reg", "bias_reg", "val_rmse", "first_step", "best_step"}`` per visited λ, in order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

PATH: dict[str, float] = {"reg_max": 0.8, "ratio": 0.5, "n_regs": 8, "start": 0.1,
                          "bias_ratio": 0.2}
"""Default search: λ ∈ {0.8, 0.4, …, 0.00625}, starting at 0.1; ``bias_reg = 0.2·λ`` when
it is ``"auto"``."""


def penalty_grid(reg_max: float = PATH["reg_max"], ratio: float = PATH["ratio"],
                 n_regs: int = int(PATH["n_regs"])) -> np.ndarray:
    """``reg_max · ratio^k`` for k = 0 … n_regs − 1 (strong to weak)."""
    if not (reg_max > 0 and 0 < ratio < 1 and n_regs >= 1):
        raise ValueError(f"need reg_max > 0, 0 < ratio < 1, n_regs >= 1; got {reg_max}, "
                         f"{ratio}, {n_regs}")
    return reg_max * ratio ** np.arange(n_regs)


def search_penalty(train: Callable[[float, float], tuple[float, int, int]],
                   state: Callable[[], Any], restore: Callable[[Any], None],
                   bias_reg: float | str, grid: np.ndarray | None = None,
                   start: float = PATH["start"], bias_ratio: float = PATH["bias_ratio"]
                   ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Pattern search over ``grid``; returns ``(selected, path)``, best parameters left set.

    ``train(reg, bias_reg)`` trains from the current parameters with early stopping, leaves
    its best parameters and returns ``(best validation RMSE, first step, best step)`` (steps
    counted over the whole search); ``state()``/``restore(s)`` copy and set the parameters.
    """
    grid = penalty_grid() if grid is None else np.sort(np.asarray(grid, np.float64))[::-1]
    initial = state()
    scores: dict[int, float] = {}
    path: list[dict[str, float]] = []
    best: tuple[float, int, Any] = (math.inf, -1, None)  # score, index in path, params

    def visit(k: int) -> float:
        nonlocal best
        reg = float(grid[k])
        stage_bias = reg * bias_ratio if bias_reg == "auto" else float(bias_reg)
        restore(initial)
        score, first, step = train(reg, stage_bias)
        path.append({"reg": reg, "bias_reg": stage_bias, "val_rmse": score, "first_step": first,
                     "best_step": step})
        scores[k] = score
        if score < best[0]:
            best = (score, len(path) - 1, state())
        return score

    k = int(np.argmin(np.abs(np.log(grid / start))))
    visit(k)
    direction = 1 if k + 1 < grid.size else -1
    while 0 <= k + direction < grid.size and k + direction not in scores:
        if visit(k + direction) < scores[k]:
            k += direction
        elif len(scores) == 2 and 0 <= k - direction < grid.size:
            direction = -direction  # the first step went the wrong way: try the other side
        else:
            break
    score, index, params = best
    restore(params)
    entry = path[index]
    return ({"reg": entry["reg"], "bias_reg": entry["bias_reg"],
             "first_step": entry["first_step"], "step": entry["best_step"], "val_rmse": score},
            path)
