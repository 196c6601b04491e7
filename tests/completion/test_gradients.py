"""Closed-form gradients of the explicit objective (``ExplicitGradients``), the estimator's
training step for ratings."""

import math

import numpy as np
import pytest
import torch

from deeplora.completion.estimator import DeepMatrixCompletion
from deeplora.completion.gradients import ExplicitGradients
from deeplora.completion.training import stack_candidates

from .helpers import low_rank_ratings


@pytest.mark.parametrize("kernels", ["dense sample", "sparse", "scipy"])
@pytest.mark.parametrize(("bias", "regs", "bias_regs"), [
    ("all", [0.7, 0.0], [0.2, 0.5]), ("all", None, None), ("global", [0.3, 0.1], None)])
def test_closed_form_gradients_are_autograd_on_the_loss(bias: str, regs: list[float] | None,
                                                         bias_regs: list[float] | None,
                                                         kernels: str) -> None:
    """``ExplicitGradients`` (explicit feedback's training step) writes the gradients autograd
    gives for ``_loss`` of two stacked candidates, and returns its data term (float64), on
    every step it is called (its arrays are reused): with the sampled product gathered from a
    dense product, with torch's in-place CSR kernels, and with SciPy's (a tall matrix)."""
    shape = {"dense sample": (40, 30, 0.5), "sparse": (80, 60, 0.05),
             "scipy": (200, 30, 0.03)}[kernels]
    rows, cols, values, _, _ = low_rank_ratings(*shape, seed=9)
    est = DeepMatrixCompletion(rank=2, depth=3, max_steps=20, validation_fraction=0.0,
                               bias=bias, bias_prior=3.0, reg=0.7, bias_reg=0.2,
                               dtype="float64").fit(rows, cols, values)
    (batch,) = est._batches(rows, cols, values, np.random.default_rng(0), torch.float64)
    index, target, size = batch
    assert (index.dense_sample, index._use_scipy) == {
        "dense sample": (True, False), "sparse": (False, False), "scipy": (False, True)}[kernels]
    generator = torch.Generator().manual_seed(0)
    params = stack_candidates(est._state(), 2)
    with torch.no_grad():
        for param in params:
            param += 0.1 * torch.randn(param.shape, generator=generator, dtype=torch.float64)
    regs_t, bias_regs_t = (None if x is None else torch.tensor(x, dtype=torch.float64)
                           for x in (regs, bias_regs))
    weights = est._penalty_weights([batch], size)
    loss, data = est._loss(params, index, target, size, size, weights, regs_t, bias_regs_t)
    loss.sum().backward()
    expected = [None if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    gradients = ExplicitGradients(params, bias == "all", est.bias_prior)
    trainable = len(params) if bias == "all" else len(params) - 3
    for _ in range(2):
        closed = gradients(index, target, size, size, weights, regs_t, bias_regs_t)
        torch.testing.assert_close(closed, data)
        for k, (param, grad) in enumerate(zip(params, expected, strict=True)):
            if k < trainable:
                torch.testing.assert_close(param.grad, grad, rtol=1e-10, atol=1e-14)
            else:  # μ and the biases of bias="global" are fixed: no gradient
                assert param.grad is None


def test_closed_form_gradients_recover_from_a_non_finite_step() -> None:
    """A step whose parameters held a NaN leaves nothing behind in the reused arrays: the next
    step, on finite parameters, gives the gradients of a fresh instance (the sampled product
    writes its residual in place, where ``β = 0`` alone would keep the NaN)."""
    rows, cols, values, _, _ = low_rank_ratings(80, 60, 0.05, seed=3)
    est = DeepMatrixCompletion(rank=2, max_steps=5, validation_fraction=0.0, dtype="float64"
                               ).fit(rows, cols, values)
    (batch,) = est._batches(rows, cols, values, np.random.default_rng(0), torch.float64)
    index, target, size = batch
    assert not index.dense_sample
    params = stack_candidates(est._state(), 1)
    weights = est._penalty_weights([batch], size)
    gradients = ExplicitGradients(params, True, est.bias_prior)
    finite = [p.detach().clone() for p in params]
    with torch.no_grad():
        params[0][0, 0, 0] = math.nan
    assert math.isnan(float(gradients(index, target, size, size, weights, None, None)[0]))
    with torch.no_grad():
        for param, value in zip(params, finite, strict=True):
            param.copy_(value)
    loss = gradients(index, target, size, size, weights, None, None)
    reused = [p.grad.clone() for p in params]
    torch.testing.assert_close(ExplicitGradients(params, True, est.bias_prior)(
        index, target, size, size, weights, None, None), loss, rtol=0, atol=0)
    for param, grad in zip(params, reused, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)
