"""Training loop and validation scores of the deep matrix completion estimator.

:class:`TrainingMixin` gives the estimator its optimizer loop (:meth:`~TrainingMixin._train`:
Adam or another optimizer with the discrepant rates of the compressed model, early stopping
on a validation score, best-state restore, divergence check), the objective it minimizes
(:meth:`~TrainingMixin._loss`: data term plus the count-weighted penalties) and the two
validation scores early stopping uses: RMSE of the clipped predictions (explicit feedback)
and NDCG@10 of held-out positives (implicit feedback). Recovery problems with a known
ground truth train with :mod:`deeplora.completion.train` instead.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from deeplora.completion.implicit import gramian_norm, implicit_loss, positives
from deeplora.completion.methods import default_settings, optimizer_options
from deeplora.completion.recommend import seen_crow
from deeplora.factorization import discrepant_param_groups, make_optimizer
from deeplora.factorization.sampled import ObservedIndex

VALIDATION_USERS = 2000
"""Implicit feedback: at most this many users score the validation NDCG."""


class TrainingMixin:
    """Training for :class:`~deeplora.completion.estimator.DeepMatrixCompletion`.

    Needs ``shape_``, ``model_``, ``_mean``, ``_row_bias``, ``_col_bias``, ``_parallel`` (a
    :class:`~deeplora.completion.distributed.DataParallel`), the estimator's settings,
    ``history_``, ``eval_seconds_`` and the methods ``_end_to_end()``, ``_augmented()``,
    ``_raw_predict()``, ``_clip()``, ``_state()``, ``_restore()``, ``_parameters_list()``,
    ``_device()`` and ``_ranking_quality()``."""

    def _penalty_weights(self, batches: list[tuple[ObservedIndex, Tensor, int]], total: int
                         ) -> tuple[Tensor, Tensor]:
        """``(row weights (m,), column weights (n,))`` of the penalties: each row's and
        column's share of the ``total`` training observations (explicit feedback), or
        ``1 / total`` for every one (implicit feedback, plain L2)."""
        m, n = self.shape_
        dtype, device = self._mean.dtype, self._mean.device
        if self.feedback == "implicit":
            return (torch.full((m,), 1 / total, dtype=dtype, device=device),
                    torch.full((n,), 1 / total, dtype=dtype, device=device))
        rows = sum(torch.diff(index.crow) for index, *_ in batches)
        cols = sum(torch.bincount(index.col, minlength=n) for index, *_ in batches)
        return (self._parallel.all_reduce(rows.to(dtype)) / total,
                self._parallel.all_reduce(cols.to(dtype)) / total)

    def _loss(self, index: ObservedIndex, target: Tensor, size: int, total: int,
              weights: tuple[Tensor, Tensor], reg: float, bias_reg: float
              ) -> tuple[Tensor, Tensor]:
        """``(objective, data term detached)`` of one batch of ``size`` observations (this
        process's part at ``index``, ``target``): the data term (½ mean squared error, or
        :func:`~deeplora.completion.implicit.implicit_loss`) plus, with ``(w_row, w_col) =
        weights``, ``½λ (w_rowᵀ ‖A‖²_rows + w_colᵀ ‖B‖²_rows)``, the same with ``bias_reg`` on
        the biases and ``½κ (‖b‖² + ‖c‖²) / total``; each process adds its share of the
        penalties."""
        share = self._parallel.share
        a, b = self._end_to_end()
        predicted = self._raw_predict(index, (a, b))
        if self.feedback == "implicit":
            loss = implicit_loss(predicted, target, size, gramian_norm(*self._augmented(a, b)),
                                 total, share)
        else:
            loss = 0.5 * torch.sum((predicted - target) ** 2) / size
        data_loss = loss.detach()
        row_weight, col_weight = weights
        if reg:
            loss = loss + 0.5 * reg * share * (row_weight @ (a * a).sum(1)
                                               + col_weight @ (b * b).sum(1))
        if bias_reg and self.bias == "all":
            loss = loss + 0.5 * bias_reg * share * (row_weight @ self._row_bias**2
                                                    + col_weight @ self._col_bias**2)
        if self.bias_prior and self.bias == "all":
            loss = loss + 0.5 * self.bias_prior * share / total * (
                self._row_bias @ self._row_bias + self._col_bias @ self._col_bias)
        return loss, data_loss

    def _train(self, batches: list[tuple[ObservedIndex, Tensor, int]],
               validation: tuple[str, Callable[[], float]] | None,
               rng: np.random.Generator, start: float, reg: float, bias_reg: float,
               first_step: int = 0, max_steps: int | None = None) -> float:
        """Train from the current parameters with penalties ``reg``/``bias_reg`` for up to
        ``max_steps`` (default ``self.max_steps``) steps numbered from ``first_step``, early
        stopping on ``validation`` (``(history key, score)``; lower RMSE or higher NDCG is
        better); leaves the best parameters and returns their score, lower is better
        (validation RMSE or −NDCG; without a validation split, the lowest train loss)."""
        m, n = self.shape_
        total = sum(size for *_, size in batches)
        weights = self._penalty_weights(batches, total)
        implicit = self.feedback == "implicit"
        key, validate = validation or ("val_ndcg" if implicit else "val_rmse", None)
        sign = -1.0 if key == "val_ndcg" else 1.0
        fraction = total / (m * n)
        _, lr, gamma = default_settings(self.method, self.optimizer, self.lr, self.gamma,
                                        fraction)
        outer = self.model_.outer_parameters() if self.method == "compressed" else []
        inner = [p for p in self.model_.factors if all(p is not o for o in outer)]
        if self.bias == "all":
            inner += [self._row_bias, self._col_bias] + ([] if implicit else [self._mean])
        groups = discrepant_param_groups(outer, inner, lr, gamma)
        opt = make_optimizer(self.optimizer, groups, weight_decay=self.weight_decay,
                             **optimizer_options(self.optimizer))
        best, best_state, self.best_step_, stale = math.inf, self._state(), first_step, 0
        budget = self.max_steps if max_steps is None else max_steps
        last = first_step + budget
        order: list[int] = []
        bar = tqdm(total=budget, disable=not self.progress, desc="fit", unit="step",
                   leave=False)
        step = first_step
        for step in range(first_step, last + 1):
            if not order:
                order = list(rng.permutation(len(batches)))
            index, target, size = batches[order.pop()]
            opt.zero_grad(set_to_none=True)
            loss, data_loss = self._loss(index, target, size, total, weights, reg, bias_reg)
            loss.backward()
            value = self._parallel.reduce_gradients(self._parameters_list(), data_loss)
            if not math.isfinite(value):
                self.diverged_ = True
                warnings.warn(f"the train loss became {value} at step {step}: training "
                              f"diverged (lr={lr:g} too large?); the parameters of step "
                              f"{self.best_step_} are kept", RuntimeWarning, stacklevel=3)
                break
            if (step - first_step) % self.eval_every == 0 or step == last:
                clock = time.perf_counter()
                if validate is None:  # no split: the train loss (implicit: no NDCG, NaN)
                    measured, score = (math.nan if implicit else value), value
                else:
                    measured = validate()
                    score = sign * measured
                for name, item in (("step", step), ("train_loss", value), (key, measured),
                                   ("seconds", time.perf_counter() - start)):
                    self.history_[name].append(item)
                bar.set_postfix(loss=f"{value:.3e}", val=f"{measured:.4f}", refresh=False)
                if score < best:
                    best, best_state, self.best_step_, stale = score, self._state(), step, 0
                else:
                    stale += 1
                    if validate is not None and stale >= self.patience:
                        break
                self.eval_seconds_ += time.perf_counter() - clock
            if step == last:
                break
            opt.step()
            bar.update()
        bar.close()
        self._restore(best_state)
        self.n_steps_ = step
        return best


    def _rmse_validation(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                         val: np.ndarray) -> tuple[str, Callable[[], float]] | None:
        """``("val_rmse", RMSE of the clipped predictions on the validation split)``; this
        process's share when distributed."""
        val = self._parallel.shard(val)
        n_val = int(self._parallel.all_sum(float(val.size), self._mean.device))
        if not n_val:
            return None
        index = ObservedIndex(torch.from_numpy(rows[val]), torch.from_numpy(cols[val]),
                              self.shape_).to(self._device())

        def validate() -> float:
            with torch.no_grad():
                predicted = (self._raw_predict(index).double().cpu().numpy()
                             if val.size else np.zeros(0))
            squared = float(np.sum((self._clip(predicted) - values[val]) ** 2))
            return math.sqrt(self._parallel.all_sum(squared, self._mean.device) / n_val)

        return "val_rmse", validate

    def _ndcg_validation(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                         train: np.ndarray, val: np.ndarray, rng: np.random.Generator
                         ) -> tuple[str, Callable[[], float]] | None:
        """``("val_ndcg", NDCG@10 of the held-out positives)`` for at most
        :data:`VALIDATION_USERS` users, ranking every item but their training entries."""
        mask, _ = positives(values[val], self.positive_threshold, self.alpha)
        if not mask.any():
            return None
        users, inverse = np.unique(rows[val][mask], return_inverse=True)
        truth = [cols[val][mask][inverse == u] for u in range(users.size)]
        if users.size > VALIDATION_USERS:
            keep = np.sort(rng.choice(users.size, VALIDATION_USERS, replace=False))
            users, truth = users[keep], [truth[u] for u in keep]
        train_seen = (torch.from_numpy(seen_crow(rows[train], self.shape_[0])),
                      torch.from_numpy(cols[train]))
        k = min(10, self.shape_[1])
        return "val_ndcg", lambda: self._ranking_quality(users, truth, k, train_seen)
