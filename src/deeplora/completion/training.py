"""Training loop and validation scores of the deep matrix completion estimator.

:class:`TrainingMixin` gives the estimator its optimizer loop (:meth:`~TrainingMixin._train`:
Adam or another optimizer with the discrepant rates of the compressed model, early stopping
on a validation score, best-state restore, divergence check), the objective it minimizes
(:meth:`~TrainingMixin._loss`: data term plus the count-weighted penalties; for explicit
feedback its gradients in closed form,
:class:`~deeplora.completion.gradients.ExplicitGradients`) and the two
validation scores early stopping uses: RMSE of the clipped predictions (explicit feedback)
and NDCG@10 of held-out positives (implicit feedback). Recovery problems with a known
ground truth train with :mod:`deeplora.completion.train` instead.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from deeplora.completion.gradients import ExplicitGradients
from deeplora.completion.implicit import gramian_norm, implicit_loss, positives
from deeplora.completion.methods import default_settings, optimizer_options
from deeplora.completion.recommend import seen_crow
from deeplora.factorization import discrepant_param_groups, make_optimizer
from deeplora.factorization.optim import step_function
from deeplora.factorization.sampled import ObservedIndex, sampled_product

VALIDATION_USERS = 2000
"""Implicit feedback: at most this many users score the validation NDCG."""
class NeverLeftInitWarning(RuntimeWarning):
    """A fit whose interaction term never left its initialization
    (:meth:`TrainingMixin._check_left_init`): a model of its biases alone."""


LEFT_INIT_RTOL = 1e-3
"""A fit left its initialization when the RMS change of its interaction term ``X = A Bᵀ`` over
the training entries exceeds this share of the targets' spread
(:meth:`TrainingMixin._check_left_init`)."""


@dataclass
class Candidate:
    """One penalty's run in :meth:`TrainingMixin._train`: ``score`` (best validation score,
    lower is better) at local step ``best_step`` with parameters ``state``; ``last_step``
    trained, ``active`` until it stops, ``diverged``, ``dropped`` (stopped because the
    others' results made it unnecessary), its evaluations ``history`` (local steps) and
    ``curve``, its best score after each evaluation (what early stopping reads)."""

    reg: float
    bias_reg: float
    state: list[Tensor]
    history: dict[str, list[float]]
    score: float = math.inf
    best_step: int = 0
    last_step: int = 0
    active: bool = True
    diverged: bool = False
    dropped: bool = False
    curve: list[float] = field(default_factory=list)


def end_to_end(factors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``(A, B)`` with ``X = A Bᵀ`` for factors ``[W_1, …, W_L]`` (each possibly with leading
    batch axes): ``A = W_L ⋯ W_2`` (m×k), ``B = W_1ᵀ`` (n×k)."""
    a = factors[-1]
    for factor in factors[-2:0:-1]:
        a = a @ factor
    return a, factors[0].mT


def stack_candidates(state: list[Tensor], count: int) -> list[nn.Parameter]:
    """``count`` copies of a parameter ``state`` ``[W_1, …, W_L, μ, b, c]`` stacked along a
    leading axis (K = ``count``), the first factor stored as ``B = W_1ᵀ`` (K×n×k, contiguous:
    the sparse products read B and write its gradient row by row)."""
    first, *rest = state
    return [nn.Parameter(t.expand(count, *t.shape).clone(memory_format=torch.contiguous_format))
            for t in (first.mT, *rest)]


def candidate_state(params: list[Tensor], row: int) -> list[Tensor]:
    """Row ``row`` of :func:`stack_candidates`' ``params`` as a state ``[W_1, …, c]`` (views,
    detached)."""
    first, *rest = params
    return [first[row].detach().mT, *(p[row].detach() for p in rest)]


class TrainingMixin:
    """Training for :class:`~deeplora.completion.estimator.DeepMatrixCompletion`.

    Needs ``shape_``, ``model_``, ``_mean``, ``_row_bias``, ``_col_bias``, ``_parallel`` (a
    :class:`~deeplora.completion.distributed.DataParallel`), the estimator's settings,
    ``history_``, ``eval_seconds_`` and the methods ``_end_to_end()``, ``_augmented()``,
    ``_raw_predict()``, ``_clip()``, ``_state()``, ``_restore()``, ``_parameters_list()``,
    ``_device()`` and ``_ranking_quality()``."""

    def _penalty_weights(self, batches: list[tuple[ObservedIndex, Tensor, int]], total: int
                         ) -> tuple[Tensor, Tensor]:
        """``(row weights (m,), column weights (n,))`` of the penalties: explicit feedback,
        ``(1 − β)`` × each row's and column's share of the ``total`` training observations
        plus ``β / m`` and ``β / n`` (β = ``reg_uniform``); implicit feedback, ``1 / total``
        for every one (plain L2)."""
        m, n = self.shape_
        dtype, device = self._mean.dtype, self._mean.device
        if self.feedback == "implicit":
            return (torch.full((m,), 1 / total, dtype=dtype, device=device),
                    torch.full((n,), 1 / total, dtype=dtype, device=device))
        rows = sum(torch.diff(index.crow) for index, *_ in batches)
        cols = sum(torch.bincount(index.col, minlength=n) for index, *_ in batches)
        uniform = self.reg_uniform
        return ((1 - uniform) * self._parallel.all_reduce(rows.to(dtype)) / total + uniform / m,
                (1 - uniform) * self._parallel.all_reduce(cols.to(dtype)) / total + uniform / n)

    def _loss(self, params: list[Tensor], index: ObservedIndex, target: Tensor, size: int,
              total: int, weights: tuple[Tensor, Tensor], reg: Tensor | None,
              bias_reg: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(objective (K,), data term detached (K,))`` of K candidates on one batch of
        ``size`` observations (this process's part: ``index``, ``target``).

        ``params`` are the estimator's parameters (factors, μ, b, c) stacked along a leading
        K axis, the first factor as ``B = W_1ᵀ`` (:func:`stack_candidates`); the K products at
        ``index`` are K sparse products of
        :func:`~deeplora.factorization.sampled.sampled_product`. Per candidate: the data term
        (½ mean squared error, or :func:`~deeplora.completion.implicit.implicit_loss`) plus,
        with ``(w_row, w_col) = weights``, ``½λ (w_rowᵀ ‖A‖²_rows + w_colᵀ ‖B‖²_rows)``, the
        same with ``bias_reg`` on the biases and ``½κ (‖b‖² + ‖c‖²) / total``; each process
        adds its share of the penalties. ``reg``/``bias_reg`` ``None``: no such penalty."""
        share = self._parallel.share
        b, *factors = params[:-3]
        mean, row_bias, col_bias = params[-3:]
        a, _ = end_to_end([b.mT, *factors])
        if self.bias == "all":  # μ rides in the row-bias column: [A, b + μ, 1]·[B, 1, c]ᵀ
            a_aug, b_aug = self._augmented(a, b, row_bias + mean[:, None], col_bias)
            predicted = sampled_product(a_aug, b_aug, index)
        else:  # μ fixed
            a_aug, b_aug = a, b
            predicted = sampled_product(a, b, index) + mean.detach()[:, None]
        if self.feedback == "implicit":
            loss = torch.stack([
                implicit_loss(x, target, size, gramian_norm(a_k, b_k), total, share)
                for x, a_k, b_k in zip(predicted, a_aug, b_aug, strict=True)])
        else:  # one fused kernel per candidate, forward and backward
            loss = torch.stack([F.mse_loss(x, target, reduction="sum")
                                for x in predicted]) * (0.5 / size)
        data_loss = loss.detach()
        row_weight, col_weight = weights
        if reg is not None:  # weighted sums elementwise: a batched matmul costs more here
            loss = loss + 0.5 * share * reg * ((a * a).sum(2).mul(row_weight).sum(1)
                                               + (b * b).sum(2).mul(col_weight).sum(1))
        if bias_reg is not None and self.bias == "all":
            loss = loss + 0.5 * share * bias_reg * ((row_bias**2).mul(row_weight).sum(1)
                                                    + (col_bias**2).mul(col_weight).sum(1))
        if self.bias_prior and self.bias == "all":
            loss = loss + 0.5 * self.bias_prior * share / total * (
                (row_bias * row_bias).sum(1) + (col_bias * col_bias).sum(1))
        return loss, data_loss

    def _optimizer(self, params: list[Tensor], lr: float, gamma: float
                   ) -> torch.optim.Optimizer:
        """The optimizer of the stacked ``params`` (ordered as :meth:`_parameters_list`): the
        compressed model's outer factors at γ·η, the other factors (and the trainable
        biases) at η."""
        outer_ids = ({id(p) for p in self.model_.outer_parameters()}
                     if self.method == "compressed" else set())
        factors = list(self.model_.factors)
        outer = [params[i] for i, p in enumerate(factors) if id(p) in outer_ids]
        inner = [params[i] for i, p in enumerate(factors) if id(p) not in outer_ids]
        if self.bias == "all":
            *_, mean, row_bias, col_bias = params
            inner += [row_bias, col_bias] + ([] if self.feedback == "implicit" else [mean])
        return make_optimizer(self.optimizer, discrepant_param_groups(outer, inner, lr, gamma),
                              weight_decay=self.weight_decay, **optimizer_options(self.optimizer))

    def _step(self, params: list[nn.Parameter], opt: torch.optim.Optimizer
              ) -> tuple[ExplicitGradients | None, Callable[[], None]]:
        """For the stacked ``params`` and their optimizer ``opt``: the explicit objective's
        closed-form gradients (:class:`~deeplora.completion.gradients.ExplicitGradients`;
        ``None`` for implicit feedback, which uses autograd) and the optimizer's update
        (:func:`~deeplora.factorization.optim.step_function`)."""
        gradients = (None if self.feedback == "implicit" else
                     ExplicitGradients(params, self.bias == "all", self.bias_prior,
                                       self._parallel.share))
        return gradients, step_function(opt)

    def _train(self, batches: list[tuple[ObservedIndex, Tensor, int]],
               validation: tuple[str, Callable[[], float]] | None,
               rng: np.random.Generator, start: float, penalties: list[tuple[float, float]],
               max_steps: int | None = None,
               drop: Callable[[dict[int, float]], set[int]] | None = None) -> list[Candidate]:
        """Train K = ``len(penalties)`` candidates, each ``(reg, bias_reg)``, from the current
        parameters for up to ``max_steps`` (default ``self.max_steps``) steps, as one model.

        The candidates' parameters are stacked along a leading K axis and trained by one
        optimizer on the sum of their objectives (:meth:`_loss`, whose gradients explicit
        feedback takes from :class:`~deeplora.completion.gradients.ExplicitGradients`): their
        parameters are
        disjoint, so each gets exactly its own gradient, and Adam's update is elementwise, so
        every candidate follows the path it would follow alone (up to floating-point
        rounding) while the fixed cost of a step is paid once. Each candidate stops early on
        its own ``validation`` (``(history key, score of the estimator's current
        parameters)``; lower RMSE or higher NDCG is better) after ``patience`` evaluations
        without improvement or when it trails a candidate before it by more than it improved
        over them (:meth:`_early_stop`), or when its train loss
        becomes non-finite (a warning); the batch stops when all have. ``drop(scores of the
        finished candidates, by position)``, asked
        whenever one finishes, names candidates not needed (by a search that will not use
        them, finished or not): they stop and are marked ``dropped``. Without a validation
        split the last step's parameters are kept. Returns one :class:`Candidate` per penalty
        (best parameters, score and local step); the estimator's parameters are left as they
        were."""
        m, n = self.shape_
        total = sum(size for *_, size in batches)
        weights = self._penalty_weights(batches, total)
        implicit = self.feedback == "implicit"
        key, validate = validation or ("val_ndcg" if implicit else "val_rmse", None)
        _, lr, gamma = default_settings(self.method, self.optimizer, self.lr, self.gamma,
                                        total / (m * n))
        initial = self._state()
        candidates = [Candidate(r, br, state=initial, history={
            "step": [], "train_loss": [], key: [], "seconds": []}) for r, br in penalties]
        running = list(range(len(candidates)))  # the candidates stacked in params
        params = stack_candidates(initial, len(running))
        opt = self._optimizer(params, lr, gamma)
        gradients, opt_step = self._step(params, opt)
        reg, bias_reg = self._penalties(candidates, running)
        budget = self.max_steps if max_steps is None else max_steps
        order: list[int] = []
        bar = tqdm(total=budget, disable=not self.progress, desc="fit", unit="step",
                   leave=False)
        for step in range(budget + 1):
            if not order:
                order = list(rng.permutation(len(batches)))
            index, target, size = batches[order.pop()]
            if gradients is None:  # implicit
                opt.zero_grad(set_to_none=True)
                loss, data_loss = self._loss(params, index, target, size, total, weights, reg,
                                             bias_reg)
                loss.sum().backward()
            else:
                data_loss = gradients(index, target, size, total, weights, reg, bias_reg)
            values = self._parallel.reduce_gradients(params, data_loss).tolist()
            evaluate = step % self.eval_every == 0 or step == budget
            clock = time.perf_counter()
            for row, (k, value) in enumerate(zip(running, values, strict=True)):
                candidate = candidates[k]
                candidate.last_step = step
                if not math.isfinite(value):
                    candidate.active, candidate.diverged = False, True
                    warnings.warn(f"the train loss became {value} at step {step}: training "
                                  f"diverged (lr={lr:g} too large?); the parameters of step "
                                  f"{candidate.best_step} are kept", RuntimeWarning,
                                  stacklevel=3)
                elif evaluate:
                    self._evaluate(candidate, candidate_state(params, row), step, value,
                                   key, validate, start)
            if evaluate and validate is not None:
                self._early_stop(candidates, running)
            if evaluate:
                bar.set_postfix(loss=f"{min(values):.3e}", refresh=False)
                self.eval_seconds_ += time.perf_counter() - clock
            if drop is not None and not all(candidates[k].active for k in running):
                for k in drop({k: c.score for k, c in enumerate(candidates)
                               if not (c.active or c.dropped)}):
                    candidates[k].active, candidates[k].dropped = False, True
            if step == budget or not any(c.active for c in candidates):
                break
            opt_step()
            bar.update()
            if not all(candidates[k].active for k in running):  # unstack the stopped ones
                keep = [row for row, k in enumerate(running) if candidates[k].active]
                running = [running[row] for row in keep]
                params, opt = self._compact(params, opt, keep, lr, gamma)
                gradients, opt_step = self._step(params, opt)
                reg, bias_reg = self._penalties(candidates, running)
        bar.close()
        self._restore(initial)
        return candidates

    def _train_one(self, batches: list[tuple[ObservedIndex, Tensor, int]],
                   validation: tuple[str, Callable[[], float]] | None,
                   rng: np.random.Generator, start: float, penalty: tuple[float, float],
                   first_step: int, max_steps: int | None = None) -> float:
        """One fit (:meth:`_train` with K = 1) with ``penalty = (reg, bias_reg)``: its
        evaluations recorded from ``first_step`` on, its best parameters set; its score."""
        (candidate,) = self._train(batches, validation, rng, start, [penalty], max_steps)
        self._record(candidate, first_step)
        self._restore(candidate.state)
        return candidate.score

    def _penalties(self, candidates: list[Candidate], running: list[int]
                   ) -> tuple[Tensor | None, Tensor | None]:
        """``(reg, bias_reg)`` of the ``running`` candidates, as tensors (K,), each ``None``
        when it is 0 for all of them (decided here once, not by a device sync every step)."""
        def values(name: str) -> Tensor | None:
            items = [getattr(candidates[k], name) for k in running]
            return (torch.tensor(items, dtype=self._mean.dtype, device=self._mean.device)
                    if any(items) else None)

        return values("reg"), values("bias_reg")

    def _evaluate(self, candidate: Candidate, current: list[Tensor], step: int, value: float,
                  key: str, validate: Callable[[], float] | None, start: float) -> None:
        """Score ``candidate``'s ``current`` parameters (at ``step``, train loss ``value``):
        the validation score (lower RMSE or higher NDCG is better); record it and keep the
        parameters if best (:meth:`_early_stop` then decides whether the candidate goes on).
        Without a validation split every evaluation is kept (score: its train
        loss), so the run ends with the parameters of its last step: the refit trains exactly
        the chosen number of steps, whatever the penalty does to the data term."""
        if validate is None:  # no split (implicit: no NDCG, NaN)
            measured = math.nan if key == "val_ndcg" else value
            score, better = value, True
        else:
            self._restore(current)
            measured = validate()
            score = -measured if key == "val_ndcg" else measured
            better = score < candidate.score
        for name, item in (("step", step), ("train_loss", value), (key, measured),
                           ("seconds", time.perf_counter() - start)):
            candidate.history[name].append(item)
        if better:
            candidate.score, candidate.best_step = score, step
            candidate.state = [t.clone() for t in current]
        candidate.curve.append(candidate.score)

    def _early_stop(self, candidates: list[Candidate], running: list[int]) -> None:
        """Stop the running candidates whose best validation score ``s`` (lower is better;
        NDCG negated) did not improve over their last ``patience`` evaluations (patience),
        or trails the best ``s*`` of a candidate before it in ``candidates`` (running or
        finished, not dropped; all evaluated after the same steps) by more than it improved
        over them, ``s − s* > s_then − s`` (``s_then``: its best before them; the race): at
        that rate it would not catch up within another patience window, and improvements
        shrink as a fit converges. A search that lists its candidates in the order a
        one-at-a-time walk would visit them keeps that walk's choice whenever a raced
        candidate would indeed not have beaten the ones before it. Its best so far stays
        its result."""
        for k in running:
            candidate = candidates[k]
            if not candidate.active or len(candidate.curve) <= self.patience:
                continue
            then = candidate.curve[-self.patience - 1]
            rivals = [c.score for c in candidates[:k] if not c.dropped]
            if then == candidate.score or (rivals and
                                           candidate.score - min(rivals) > then - candidate.score):
                candidate.active = False

    def _compact(self, params: list[nn.Parameter], opt: torch.optim.Optimizer,
                 keep: list[int], lr: float, gamma: float
                 ) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
        """The stacked ``params`` and their optimizer restricted to the rows ``keep`` (the
        optimizer state's per-element tensors sliced the same way, scalars such as Adam's
        step count kept)."""
        rows = torch.tensor(keep, device=params[0].device)
        kept = [nn.Parameter(p.detach().index_select(0, rows)) for p in params]
        new_opt = self._optimizer(kept, lr, gamma)
        for old, new in zip(params, kept, strict=True):
            new_opt.state[new] = {
                name: (value.index_select(0, rows)
                       if isinstance(value, Tensor) and value.shape == old.shape else value)
                for name, value in opt.state[old].items()}
        return kept, new_opt

    def _record(self, candidate: Candidate, first_step: int) -> None:
        """Append ``candidate``'s evaluations to ``history_``, its steps numbered from
        ``first_step``, and set ``best_step_``, ``n_steps_`` and ``diverged_`` on that
        numbering."""
        for name, items in candidate.history.items():
            self.history_[name] += ([first_step + s for s in items] if name == "step"
                                    else items)
        self.best_step_ = first_step + candidate.best_step
        self.n_steps_ = first_step + candidate.last_step
        self.diverged_ = self.diverged_ or candidate.diverged

    def _check_left_init(self, batches: list[tuple[ObservedIndex, Tensor, int]],
                         origin: tuple[Tensor, Tensor], spread: float) -> None:
        """Set ``interaction_rms_``, the RMS over the entries of ``batches`` (this process's
        share of the final fit's training entries) of ``X − X₀`` (``X₀ = A₀ B₀ᵀ``, ``origin``:
        the end-to-end factors the fit started from), and ``left_init_``, whether it exceeds
        :data:`LEFT_INIT_RTOL` × ``spread`` (the targets' scale); warn when it does not.

        The deep factors start at scale ε (at the presets' ε = 1e-3, X₀'s RMS is about 1e-11
        of the spread) and the biases learn within a few steps, so a fit whose X never grew
        (a penalty that holds it near 0, an η too small or too few steps to escape the small
        initialization) is a model of its biases alone. Measured in units of the spread, the
        ratings preset moves X by 0.23–0.27 on MovieLens 100K, 0.20–0.25 on FilmTrust,
        0.0042–0.15 on the Book-Crossing 10-core and 0.020–0.052 on its 5-core (the 21
        splits of ``docs/results.md``; 0.0042 at λ = 0.8, the grid's strongest), the implicit
        preset by 0.27, 0.23, 0.24 and 0.20 (MovieLens ``u1.base``, the others' 80 % split
        with seed 0); fits held at their initialization by ``max_steps=0`` (0), ``reg=1e3``
        (explicit; 2e-5 and 9e-5), ``reg=1e4`` (implicit; 7e-5) or ``lr=1e-6`` (explicit;
        8e-7 and 2e-6) stay below 1e-4: the threshold lies 4 times below the weakest fit and
        10 times above the strongest held one."""
        a0, b0 = origin
        with torch.no_grad():
            a, b = self._end_to_end()
            squares = sum(float(torch.sum((sampled_product(a, b, index)
                                           - sampled_product(a0, b0, index)) ** 2))
                          for index, *_ in batches)
        total = sum(size for *_, size in batches)
        self.interaction_rms_ = math.sqrt(self._parallel.all_sum(squares, self._mean.device)
                                          / total)
        self.left_init_ = self.interaction_rms_ > LEFT_INIT_RTOL * spread
        if not self.left_init_:
            warnings.warn(f"the interaction term X = A Bᵀ never left its initialization (RMS "
                          f"change {self.interaction_rms_:.1e} over the training entries, at "
                          f"most {LEFT_INIT_RTOL:g} × the targets' spread {spread:.3g}): the "
                          f"fit is a model of its biases alone (reg too strong, lr too small "
                          f"or too few steps?)", NeverLeftInitWarning, stacklevel=3)

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
