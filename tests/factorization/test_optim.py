import numpy as np
import pytest
import torch

from deeplora.factorization import DeepFactorization, discrepant_param_groups, make_optimizer
from deeplora.factorization.optim import step_function


def test_groups_give_outer_factors_gamma_lr():
    model = DeepFactorization(6, 5, depth=4, width=4)
    groups = discrepant_param_groups(model.outer_parameters(), model.inner_parameters(), 0.1, 0.01)
    by_name = {g["name"]: g for g in groups}
    assert by_name["outer"]["lr"] == pytest.approx(1e-3)
    assert by_name["inner"]["lr"] == pytest.approx(0.1)
    assert len(by_name["outer"]["params"]) == 2 and len(by_name["inner"]["params"]) == 2


@pytest.mark.parametrize("name", ["gd", "sgd", "adam", "adamw"])
def test_gamma_zero_freezes_outer(name):
    model = DeepFactorization(6, 5, depth=3, width=4, scale=0.5)
    outer_before = [p.detach().clone() for p in model.outer_parameters()]
    inner_before = [p.detach().clone() for p in model.inner_parameters()]
    opt = make_optimizer(name, discrepant_param_groups(model.outer_parameters(),
                                                       model.inner_parameters(), 0.1, 0.0))
    model.product().sum().backward()
    opt.step()
    outer, inner = model.outer_parameters(), model.inner_parameters()
    assert all(torch.equal(a, p) for a, p in zip(outer_before, outer, strict=True))
    assert not any(torch.equal(a, p) for a, p in zip(inner_before, inner, strict=True))


def test_bad_arguments():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="learning rate"):
        discrepant_param_groups([], [p], 0.0, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        discrepant_param_groups([], [p], 0.1, -1.0)
    # True was taken as lr 1, a string or None was a TypeError of math.isfinite
    for lr in (True, "0.1", None):
        with pytest.raises(ValueError, match=f"learning rate must be a finite number > 0, got "
                                             f"{lr!r}"):
            discrepant_param_groups([], [p], lr, 0.1)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0, got None"):
        discrepant_param_groups([], [p], 0.1, None)
    assert discrepant_param_groups([p], [], np.float32(0.5), np.int64(1))[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="both outer and inner"):
        discrepant_param_groups([p], [p], 0.1, 0.1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", [{"params": [p], "lr": 0.1}])
    # torch takes eps = inf (every Adam step 0: nothing trains) and an infinite weight decay
    for name, key in [("adam", "eps"), ("adamw", "weight_decay"), ("gd", "momentum")]:
        for value in (float("inf"), float("nan")):
            with pytest.raises(ValueError, match=f"{key} must be a finite number, got {value}"):
                make_optimizer(name, [{"params": [p], "lr": 0.1}], **{key: value})


def test_adam_is_fused_unless_told_otherwise():
    model = DeepFactorization(4, 3, depth=2, generator=torch.Generator().manual_seed(0))
    groups = discrepant_param_groups([], model.parameters(), 0.1, 1.0)
    assert make_optimizer("adam", groups).defaults["fused"]
    assert not make_optimizer("adamw", groups, foreach=True).defaults["fused"]


def _two_groups(seed: int, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype))
            for shape in [(3, 5, 4), (3, 4), (3,), (2, 2)]]


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_function_is_bitwise_the_optimizers_step(name: str, dtype: torch.dtype) -> None:
    """``step_function`` of a fused Adam/AdamW makes the same updates as ``opt.step()``, bit for
    bit, over several steps with two groups (one with weight decay) and a parameter without a
    gradient (skipped, as torch skips it)."""
    runs = []
    for lean in (False, True):
        params = _two_groups(0, dtype)
        opt = make_optimizer(name, [{"params": params[:2], "lr": 1e-2, "weight_decay": 0.1},
                                    {"params": params[2:], "lr": 1e-3}])
        step = step_function(opt) if lean else opt.step
        assert (step == opt.step) is not lean
        generator = torch.Generator().manual_seed(1)
        for _ in range(4):
            for param in params[:3]:
                param.grad = torch.randn(param.shape, generator=generator, dtype=dtype)
            step()
        runs.append([p.detach().clone() for p in params] + [
            opt.state[p][key] for p in params[:3] for key in ("exp_avg", "exp_avg_sq", "step")])
        assert params[3] not in opt.state
    for lean, plain in zip(*runs, strict=True):
        torch.testing.assert_close(lean, plain, rtol=0, atol=0)


def test_step_function_keeps_opt_step_where_it_must() -> None:
    """Optimizers other than fused Adam get ``opt.step`` itself; a step hook registered later
    still runs (the lean update then goes through ``opt.step()``)."""
    params = _two_groups(0, torch.float32)
    for opt in (make_optimizer("sgd", [{"params": params, "lr": 0.1}]),
                make_optimizer("adam", [{"params": params, "lr": 0.1}], foreach=True),
                make_optimizer("adam", [{"params": params, "lr": 0.1, "amsgrad": True}])):
        assert step_function(opt) == opt.step
    opt = make_optimizer("adam", [{"params": params, "lr": 0.1}])
    step = step_function(opt)
    for param in params:
        param.grad = torch.ones_like(param)
    step()
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    step()
    assert calls == [1]
