"""Training loop for recovery problems: GD or Adam, discrepant rates, history, early stop."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from deeplora.checks import check_integer, is_integer
from deeplora.completion.methods import check_dtype, optimizer_options
from deeplora.completion.problems import Problem
from deeplora.factorization import DeepFactorization, discrepant_param_groups, make_optimizer


@dataclass
class History:
    """What was measured at each evaluation.

    ``seconds`` is wall time since the start of model construction (``build_seconds``
    included), excluding the time spent evaluating the recovery error itself. ``diverged``:
    the train loss became non-finite (at ``steps[-1]``) and training stopped there.
    ``stalled``: the :class:`Plateau` detector stopped training at ``steps[-1]``.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    recovery_error: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    build_seconds: float = 0.0
    diverged: bool = False
    stalled: bool = False

    def record(self, step: int, loss: float, error: float, seconds: float) -> None:
        self.steps.append(step)
        self.train_loss.append(loss)
        self.recovery_error.append(error)
        self.seconds.append(seconds)

    def first_below(self, threshold: float) -> tuple[int, float] | None:
        """(step, seconds) of the first evaluation with recovery error <= threshold."""
        for step, error, seconds in zip(self.steps, self.recovery_error, self.seconds,
                                        strict=True):
            if error <= threshold:
                return step, seconds
        return None

    def as_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "train_loss": self.train_loss,
                "recovery_error": self.recovery_error, "seconds": self.seconds,
                "build_seconds": self.build_seconds, "diverged": self.diverged,
                "stalled": self.stalled}


@dataclass
class Plateau:
    """Stall detector on the train loss, fed once per step.

    Armed once the loss has fallen below half its first value (GD from an ε-small
    initialization sits on a long plateau at the start, which is not a stall); from then on it
    fires when the best loss so far has not fallen by the relative amount ``rtol`` within
    ``window`` steps. Saddle plateaus of incremental learning can last tens of thousands of GD
    steps, so ``window`` must be longer than those.
    """

    window: int
    rtol: float = 0.05
    first: float | None = None
    best: float = math.inf
    since: int = 0

    def __post_init__(self) -> None:
        if not (is_integer(self.window) and self.window >= 1 and 0 < self.rtol < 1):
            raise ValueError(f"need window >= 1 and 0 < rtol < 1, got {self.window}, "
                             f"{self.rtol}")

    def update(self, loss: float) -> bool:
        """Feed one step's loss; True when the run has stalled."""
        if self.first is None:
            self.first = loss
        if self.best == math.inf and not loss < 0.5 * self.first:
            return False  # not armed: still at the initialization
        if loss <= (1 - self.rtol) * self.best:
            self.best, self.since = loss, 0
            return False
        self.since += 1
        return self.since >= self.window


def fit(
    model: DeepFactorization,
    problem: Problem,
    optimizer: str = "gd",
    lr: float = 1.0,
    gamma: float = 1.0,
    steps: int = 1000,
    tol: float = 0.0,
    target_error: float = 0.0,
    eval_every: int = 10,
    progress: bool = True,
    build_seconds: float = 0.0,
    lr_patience: int | None = None,
    stall: Plateau | None = None,
    on_eval: Callable[[int, DeepFactorization], None] | None = None,
    **optimizer_kwargs: object,
) -> History:
    """Train ``model`` on ``problem`` in place and return its :class:`History`.

    Outer factors (``model.outer_parameters()``) step at ``gamma·lr``, the others at ``lr``.
    Adam's denominator guard defaults to :data:`~deeplora.completion.methods.ADAM_EPS`;
    ``optimizer_kwargs`` override it. Stops after ``steps`` steps, when the train loss falls
    to ``tol``, when the recovery error falls to ``target_error``, or when the loss becomes
    non-finite (divergence; recorded), or when ``stall`` (a :class:`Plateau`) fires (recorded
    as ``History.stalled``). ``on_eval(step, model)`` is called at every evaluation (e.g. to
    keep snapshots of the end-to-end matrix). With ``lr_patience`` = p, every step size is halved
    whenever the train loss has gone more than p steps without a new minimum
    (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`): it damps the late oscillations of
    Adam at a fixed step size.
    """
    steps, eval_every = check_integer("steps", steps, 0), check_integer("eval_every", eval_every, 1)
    if lr_patience is not None and not (is_integer(lr_patience) and lr_patience >= 0):
        raise ValueError(f"lr_patience must be an integer >= 0 or None, got {lr_patience!r}")
    check_dtype(model.factors[0].dtype)
    outer = model.outer_parameters()
    groups = discrepant_param_groups(outer, model.inner_parameters(), lr, gamma)
    options = {**optimizer_options(optimizer), **optimizer_kwargs}
    opt = make_optimizer(optimizer, groups, **options)
    scheduler = None if lr_patience is None else torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=lr_patience, threshold=0.0)
    factors = list(model.factors)
    history = History(build_seconds=build_seconds)
    elapsed = build_seconds
    bar = tqdm(total=steps, disable=not progress, desc="fit", unit="step", leave=False)
    clock = time.perf_counter()
    for step in range(steps + 1):
        loss, grads = problem.loss_and_grads(model)
        value = float(loss)
        if step % eval_every == 0 or step == steps or not math.isfinite(value) or value <= tol:
            elapsed += time.perf_counter() - clock
            error = problem.recovery_error(model) if math.isfinite(value) else math.inf
            history.record(step, value, error, elapsed)
            if on_eval is not None:
                on_eval(step, model)
            if not math.isfinite(value):
                history.diverged = True
                warnings.warn(f"the train loss became {value} at step {step}: training "
                              f"diverged (step size lr={lr:g} too large?)", RuntimeWarning,
                              stacklevel=2)
            bar.set_postfix(loss=f"{value:.2e}", error=f"{error:.2e}", refresh=False)
            clock = time.perf_counter()
            if step == steps or not math.isfinite(value) or value <= tol or error <= target_error:
                break
        if stall is not None and stall.update(value):
            history.stalled = True
            if history.steps[-1] != step:
                elapsed += time.perf_counter() - clock
                history.record(step, value, problem.recovery_error(model), elapsed)
                if on_eval is not None:
                    on_eval(step, model)
            break
        for factor, grad in zip(factors, grads, strict=True):
            # fused Adam reads a grad in its parameter's layout (pytorch/pytorch#106951); a
            # transposed one gave silently wrong steps on CPU here
            factor.grad = grad.contiguous()
        opt.step()
        if scheduler is not None:
            scheduler.step(value)
        bar.update()
    bar.close()
    return history
