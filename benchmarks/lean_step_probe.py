"""Probe, not library code: ``bench_ratings_fit.py`` with a leaner explicit training step.

Runs ``benchmarks/bench_ratings_fit.py`` (same arguments) with two methods of the estimator's
training loop replaced in this process only, to measure what a leaner step would save on a
whole fit before building it into the library (BENCHMARKS.md §3):

- ``TrainingMixin._loss_and_grads``: the same closed-form gradients, on arrays allocated
  once per stacked parameter set (augmented factors, residual, the sparse products' results,
  gradients), the residual's CSR tensors built once, the penalties added in place. The same
  arithmetic up to floating-point rounding (predictions within 2e-8 of the library's after 30
  float64 steps); ``bias="all"``, no bias penalty, one process (the ratings preset).
- ``TrainingMixin._optimizer``: for Adam without weight decay, an optimizer that calls torch's
  functional fused ``torch.optim.adam.adam`` on each group's list of tensors instead of
  ``Optimizer.step`` (its state kept per parameter as torch keeps it, so that dropping
  candidates from the stack works unchanged).

    OMP_NUM_THREADS=1 python benchmarks/lean_step_probe.py --dataset filmtrust --repeats 2 \\
        --out runs/lean-filmtrust.json
"""

from __future__ import annotations

import runpy
import sys
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as functional_adam

from deeplora.completion import training
from deeplora.factorization.sampled import ObservedIndex, _csr, chain_rule, suffix_products

_library_optimizer = training.TrainingMixin._optimizer
_buffers: dict[tuple[int, int], dict[str, Any]] = {}


class FunctionalAdam:
    """Adam (no weight decay) over ``groups`` by torch's functional fused update."""

    def __init__(self, groups: list[dict[str, Any]], eps: float) -> None:
        self.param_groups, self.eps = groups, eps
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing: the step overwrites every gradient."""

    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                self.state.setdefault(p, {"step": torch.zeros((), dtype=torch.float32),
                                          "exp_avg": torch.zeros_like(p),
                                          "exp_avg_sq": torch.zeros_like(p)})
            states = [self.state[p] for p in params]
            functional_adam(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                            [s["exp_avg_sq"] for s in states], [],
                            [s["step"] for s in states], fused=True, amsgrad=False,
                            beta1=0.9, beta2=0.999, lr=group["lr"], weight_decay=0.0,
                            eps=self.eps, maximize=False)


def _optimizer(self: Any, params: list[Tensor], lr: float, gamma: float) -> Any:
    opt = _library_optimizer(self, params, lr, gamma)
    if self.optimizer != "adam" or self.weight_decay:
        return opt
    return FunctionalAdam([{"params": g["params"], "lr": g["lr"]} for g in opt.param_groups],
                          opt.defaults["eps"])


def _workspace(params: list[Tensor], index: ObservedIndex, target: Tensor) -> dict[str, Any]:
    """The step's arrays for these stacked ``params`` and this batch, built on first use."""
    key = (id(params[0]), id(index))
    space = _buffers.get(key)
    if space is not None and space["params"]() is params[0] and space["index"]() is index:
        return space
    _buffers.clear()
    factors, mean = params[:-3], params[-3]
    count, k, n = factors[0].shape
    m = factors[-1].shape[-2]
    like = {"dtype": mean.dtype}
    space = {"a_aug": torch.ones(count, m, k + 2, **like),
             "b_aug": torch.ones(count, n, k + 2, **like),
             "residual": torch.empty(count, index.nnz, **like),
             "reordered": torch.empty(count, index.nnz, **like),
             "ga": torch.empty(count, m, k + 2, **like),
             "gb": torch.empty(count, n, k + 2, **like),
             "grads": [torch.empty_like(p) for p in params],
             "loss": torch.empty(count, **like),
             "target": index.to_sorted(target).contiguous(),
             "params": weakref.ref(params[0]), "index": weakref.ref(index)}
    crow, col = index._kernel
    order, t_crow, t_col = index._transposed
    space["order"] = order
    space["csr"] = [_csr(crow, col, r, (m, n)) for r in space["residual"]]
    space["csr_t"] = [_csr(t_crow, t_col, r, (n, m)) for r in space["reordered"]]
    _buffers[key] = space
    return space


def _loss_and_grads(self: Any, params: list[Tensor], index: ObservedIndex, target: Tensor,
                    size: int, total: int, weights: tuple[Tensor, Tensor],
                    reg: Tensor | None, bias_reg: Tensor | None) -> Tensor:
    if self.bias != "all" or bias_reg is not None or self._parallel.enabled:
        raise NotImplementedError("the probe covers the ratings preset only")
    space = _workspace(params, index, target)
    a_aug, b_aug, residual = space["a_aug"], space["b_aug"], space["residual"]
    ga, gb, grads = space["ga"], space["gb"], space["grads"]
    factors, (mean, row_bias, col_bias) = params[:-3], params[-3:]
    k = factors[0].shape[1]
    share = self._parallel.share
    with torch.no_grad():
        suffix, a = suffix_products(factors)
        b = factors[0].mT
        a_aug[..., :k] = a
        torch.add(row_bias, mean[:, None], out=a_aug[..., k])
        b_aug[..., :k] = b
        b_aug[..., k + 1] = col_bias
        residual.zero_()  # in place, β = 0 would keep a NaN found there
        for csr, x, y in zip(space["csr"], a_aug, b_aug, strict=True):
            torch.sparse.sampled_addmm(csr, x, y.T, beta=0.0, out=csr)
        residual -= space["target"]
        for j, r in enumerate(residual):
            space["loss"][j] = torch.dot(r, r)
        residual *= 1.0 / size
        for j, (x, y) in enumerate(zip(a_aug, b_aug, strict=True)):
            torch.mm(space["csr"][j], y, out=ga[j])
            torch.index_select(residual[j], 0, space["order"], out=space["reordered"][j])
            torch.mm(space["csr_t"][j], x, out=gb[j])
        grad_a, grad_b = ga[..., :k], gb[..., :k]
        if reg is not None:
            row_weight, col_weight = weights
            scale = (share * reg)[:, None, None]
            grad_a.addcmul_(scale * row_weight[:, None], a)
            grad_b.addcmul_(scale * col_weight[:, None], b)
        for grad, value in zip(grads, chain_rule(factors, suffix, grad_a, grad_b),
                               strict=False):
            grad.copy_(value)
        prior = self.bias_prior * share / total
        torch.add(ga[..., k], row_bias, alpha=prior, out=grads[-2])
        torch.add(gb[..., k + 1], col_bias, alpha=prior, out=grads[-1])
        torch.sum(residual, 1, out=grads[-3])
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    return space["loss"] * (0.5 / size)


if __name__ == "__main__":
    training.TrainingMixin._optimizer = _optimizer
    training.TrainingMixin._loss_and_grads = _loss_and_grads
    script = Path(__file__).with_name("bench_ratings_fit.py")
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
