"""Penalty strength chosen per dataset on the validation split of the training ratings.

:class:`~deeplora.completion.estimator.DeepMatrixCompletion` with ``reg="auto"`` (the ratings
preset) calls :func:`search_penalty` instead of one training run. The penalties form a
geometric grid ``λ_k = reg_max · ratio^k`` (:func:`penalty_grid`, strong to weak). Every
visited λ is trained from the same initialization (the compressed construction, built once)
with early stopping on the validation RMSE. The search trains ``PATH["start"]`` and its two
neighbours together, as one stacked model (one optimizer step advances all three; each
stops on its own validation RMSE, or is raced out once it trails one listed before it by
more than it gained over its last ``patience`` evaluations:
:meth:`~deeplora.completion.training.TrainingMixin._early_stop`), and, while the best λ so far
lies at the end of what was trained, the next :data:`AHEAD` grid points beyond it, again
together (a 1-D pattern search: one stacked run when the optimum is the start, 2–3 when it
lies further away). Training several λ at once costs less than one after another because
part of a step (Python, the optimizer call) is paid once however many candidates it
carries; racing stops the fits that trail early, mostly the slow strong penalties. The
parameters of the best (λ, step) are kept.
``bias_reg="auto"`` ties the bias penalty to ``λ · bias_ratio``. The validation split is
the estimator's ``validation_fraction`` of the observations it is fitted on, so nothing
else is read.

Warm starts along the grid (each λ from the previous one's parameters, as Soft-Impute does)
were measured first and are worse here: on MovieLens 100K ``u1.base`` they end at
validation RMSE 0.922–0.923 against 0.915 for a fresh start at the same λ, because a strong
penalty shrinks the deep factors towards the origin, where the small-initialization
dynamics that make early stopping work are lost.

Fitted attributes: ``selected_`` (``{"reg", "bias_reg", "first_step", "step", "val_rmse"}``:
the chosen λ's fit ran from ``first_step`` and was best at ``step``) and ``path_`` (one
``{"reg", "bias_reg", "val_rmse", "first_step", "best_step"}`` per visited λ, in order;
steps are numbered as if the fits had run one after another).
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
AHEAD = 2
"""Grid points trained together per step of the walk after the first three."""


def penalty_grid(reg_max: float = PATH["reg_max"], ratio: float = PATH["ratio"],
                 n_regs: int = int(PATH["n_regs"])) -> np.ndarray:
    """``reg_max · ratio^k`` for k = 0 … n_regs − 1 (strong to weak)."""
    if not (reg_max > 0 and 0 < ratio < 1 and n_regs >= 1):
        raise ValueError(f"need reg_max > 0, 0 < ratio < 1, n_regs >= 1; got {reg_max}, "
                         f"{ratio}, {n_regs}")
    return reg_max * ratio ** np.arange(n_regs)


def search_penalty(
        train: Callable[[list[tuple[float, float]], Callable[[dict[int, float]], set[int]]],
                        list[tuple[float, int, int, Any] | None]],
        restore: Callable[[Any], None], bias_reg: float | str, grid: np.ndarray | None = None,
        start: float = PATH["start"], bias_ratio: float = PATH["bias_ratio"],
        ahead: int = AHEAD) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Pattern search over ``grid``; returns ``(selected, path)``, best parameters restored.

    ``train(penalties, drop)`` trains one fit per ``(reg, bias_reg)`` from the same
    initialization (together, as :meth:`~deeplora.completion.training.TrainingMixin._train`
    does) with early stopping, stops those that ``drop(best scores of the finished fits, by
    position)`` names, and returns per fit ``(best validation RMSE, first step, best step,
    parameters)`` (steps counted over the whole search), or ``None`` for a dropped one;
    ``restore(parameters)`` sets them. The λ's visited and the one chosen are those of a walk
    one λ at a time: the start, one step weaker and, if that was not better, one stronger;
    then on in the better direction while each step improves. The first batch trains the
    start and both neighbours (the stronger one dropped once the weaker one is known to be
    better; a start at an end of the grid has one neighbour), later ones the next ``ahead``
    λ's (the farther dropped once the nearer one is known not to improve). Each batch lists
    its λ's in the walk's order (start, weaker, stronger; nearer before farther), so a fit
    raced out by one before it is one the walk would not have taken.
    """
    grid = penalty_grid() if grid is None else np.sort(np.asarray(grid, np.float64))[::-1]
    scores: dict[int, float] = {}
    path: list[dict[str, float]] = []
    best: tuple[float, int, Any, int] = (math.inf, -1, None, -1)  # score, path, params, k

    def visit(ks: list[int], drop: Callable[[dict[int, float]], set[int]]) -> int:
        """Train the grid points ``ks``; the index of the best one scored so far."""
        nonlocal best
        penalties = [(float(grid[k]), float(grid[k]) * bias_ratio if bias_reg == "auto"
                      else float(bias_reg)) for k in ks]
        for k, (reg, stage_bias), result in zip(ks, penalties, train(penalties, drop),
                                                strict=True):
            if result is None:
                continue
            score, first, step, params = result
            path.append({"reg": reg, "bias_reg": stage_bias, "val_rmse": score,
                         "first_step": first, "best_step": step})
            scores[k] = score
            if score < best[0]:
                best = (score, len(path) - 1, params, k)
        return best[3]

    k = int(np.argmin(np.abs(np.log(grid / start))))
    first = [j for j in (k, k + 1, k - 1) if 0 <= j < grid.size]  # at a grid end: 2 or 1

    def first_drop(done: dict[int, float]) -> set[int]:  # the stronger one, if weaker is better
        if len(first) < 3 or not (0 in done and 1 in done and done[1] < done[0]):
            return set()
        return {2}

    best_k = visit(first, first_drop)
    direction = int(np.sign(best_k - k))
    while direction and 0 <= best_k + direction < grid.size and best_k + direction not in scores:
        ks = [best_k + direction * i for i in range(1, ahead + 1)
              if 0 <= best_k + direction * i < grid.size]
        record = best[0]

        def walk_drop(done: dict[int, float], record: float = record, n: int = len(ks)
                      ) -> set[int]:  # all beyond the first fit that does not improve
            for i in range(n):
                if i not in done:
                    return set()
                if done[i] >= record:
                    return set(range(i + 1, n))
                record = done[i]
            return set()

        best_k = visit(ks, walk_drop)
    score, index, params, _ = best
    restore(params)
    entry = path[index]
    return ({"reg": entry["reg"], "bias_reg": entry["bias_reg"],
             "first_step": entry["first_step"], "step": entry["best_step"], "val_rmse": score},
            path)
