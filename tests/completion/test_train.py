import math

import numpy as np
import pytest
import torch

from deeplora.completion import MatrixCompletion, build_model, fit, random_low_rank
from deeplora.completion.problems import Problem


@pytest.fixture
def problem():
    return MatrixCompletion.random(random_low_rank(40, 40, 2, seed=0), 0.5, seed=1)


@pytest.mark.parametrize("method", ["original", "compressed", "narrow"])
def test_fit_recovers_small_problem(problem, method):
    model, _ = build_model(method, problem, depth=3, rank=2, seed=0, dtype=torch.float64)
    history = fit(model, problem, "adam", 3e-2 if method != "original" else 1e-2,
                  gamma=0.01 if method == "compressed" else 1.0, steps=800, progress=False)
    assert history.recovery_error[0] == pytest.approx(1.0, abs=1e-3)
    assert history.recovery_error[-1] < 1e-2
    assert history.first_below(1e-2) is not None
    assert history.seconds == sorted(history.seconds)


def test_stops_at_tolerance_and_target_error(problem):
    model, _ = build_model("compressed", problem, rank=2, dtype=torch.float64)
    history = fit(model, problem, "adam", 3e-2, 0.01, steps=2000, target_error=0.1,
                  progress=False)
    assert history.recovery_error[-1] <= 0.1 < history.recovery_error[-2]
    model, _ = build_model("compressed", problem, rank=2, dtype=torch.float64)
    history = fit(model, problem, "adam", 3e-2, 0.01, steps=2000, tol=1e-3, progress=False)
    assert history.train_loss[-1] <= 1e-3 and history.steps[-1] < 2000


def test_divergence_is_recorded_and_warned_not_raised(problem):
    model, _ = build_model("narrow", problem, rank=2, scale=1.0, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="diverged"):
        history = fit(model, problem, "gd", 1e6, steps=50, progress=False)
    assert not math.isfinite(history.train_loss[-1])
    assert history.steps[-1] < 50
    assert history.diverged and history.as_dict()["diverged"] is True
    model, _ = build_model("narrow", problem, rank=2, dtype=torch.float64)
    assert not fit(model, problem, "adam", 1e-2, steps=5, progress=False).diverged


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_refused(problem, dtype):
    with pytest.raises(ValueError, match="cannot train a deep factorization"):
        build_model("narrow", problem, rank=2, dtype=dtype)
    model, _ = build_model("narrow", problem, rank=2)
    model.to(dtype)
    with pytest.raises(ValueError, match=r"use torch\.float32"):
        fit(model, problem, steps=1, progress=False)


def test_model_too_large_for_memory_refused(problem, monkeypatch):
    import deeplora.memory

    monkeypatch.setattr(deeplora.memory, "available_bytes", lambda device=None: 10_000)
    with pytest.raises(deeplora.memory.TooLargeError,
                       match=r"original model of a 40×40 matrix .* needs about .*available; "
                             r"use method 'compressed'"):
        build_model("original", problem, rank=2)


def test_bad_arguments(problem):
    model, _ = build_model("narrow", problem, rank=2)
    with pytest.raises(ValueError, match="steps"):
        fit(model, problem, steps=-1, progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        fit(model, problem, eval_every=0, progress=False)
    with pytest.raises(ValueError, match="lr_patience"):
        fit(model, problem, lr_patience=-1, progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        build_model("wide", problem)
    with pytest.raises(ValueError, match="rank"):
        build_model("compressed", problem, rank=21)
    for name in ("steps", "eval_every"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= ., got True"):
            fit(model, problem, **{name: True}, progress=False)


@pytest.mark.parametrize("method", ["compressed", "narrow"])
def test_numpy_integers_are_accepted(problem, method):
    """build_model(rank=np.int64(2)), fit(steps=np.int64(3)), Plateau(np.int64(5)) (grids over
    np.arange) were refused as 'not an integer'."""
    from deeplora.completion import Plateau

    model, _ = build_model(method, problem, depth=np.int64(3), rank=np.int64(2))
    assert model.width == 4
    history = fit(model, problem, "adam", 1e-2, steps=np.int64(3), eval_every=np.int64(2),
                  lr_patience=np.int64(1), stall=Plateau(np.int64(5)), progress=False)
    assert history.steps == [0, 2, 3]


@pytest.mark.parametrize("method", ["compressed", "narrow"])
def test_closed_form_fused_step_follows_autograd_and_default_adam(problem, method,
                                                                  monkeypatch):
    """fit's closed-form gradients + fused Adam take the same steps as autograd + torch's
    default Adam (a transposed gradient once made fused Adam go astray)."""
    runs = []
    for closed_form, kwargs in ((True, {}), (False, {"foreach": False})):
        model, _ = build_model(method, problem, rank=2, seed=0, dtype=torch.float64)
        if not closed_form:  # route fit through the base class's autograd gradients
            monkeypatch.setattr(problem, "loss_and_grads",
                                lambda m: Problem.loss_and_grads(problem, m))
        fit(model, problem, "adam", 3e-2, 0.01, steps=30, progress=False, **kwargs)
        runs.append([f.detach() for f in model.factors])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b)


def test_lr_patience_damps_adam_spikes(problem):
    """At a step size where Adam spikes back far above 1e-2 after reaching it, halving the step
    sizes when the loss stalls keeps the error near 1e-2 and ends lower."""
    worst, last = {}, {}
    for patience in (None, 2):
        model, _ = build_model("narrow", problem, rank=2, seed=0, dtype=torch.float64)
        history = fit(model, problem, "adam", 0.1, steps=800, eval_every=1, progress=False,
                      lr_patience=patience)
        reached, _ = history.first_below(1e-2)
        worst[patience] = max(history.recovery_error[reached:])
        last[patience] = history.recovery_error[-1]
    assert worst[None] > 5e-2 and worst[2] < 2e-2
    assert last[2] < last[None]


@pytest.mark.parametrize("method", ["compressed", "narrow", "original"])
def test_device_parameter_on_cpu(method: str) -> None:
    problem = MatrixCompletion.random(random_low_rank(20, 16, 2, seed=0), 0.5, seed=1)
    model, _ = build_model(method, problem, rank=2, device="cpu")
    default, _ = build_model(method, problem, rank=2)
    assert all(f.device.type == "cpu" for f in model.factors)
    for a, b in zip(model.factors, default.factors, strict=True):
        assert torch.equal(a, b)
    history = fit(model, problem, "adam", 1e-2, 1.0, steps=5, progress=False)
    assert history.recovery_error[-1] <= 1.0


def test_plateau_arms_after_the_loss_halves_then_fires_without_progress():
    from deeplora.completion import Plateau

    plateau = Plateau(window=3, rtol=0.1)
    assert not any(plateau.update(1.0) for _ in range(10))  # the initial plateau: not armed
    assert not plateau.update(0.4)  # armed, best 0.4
    assert [plateau.update(x) for x in (0.39, 0.38, 0.35, 0.37, 0.36, 0.34)] == \
        [False, False, False, False, False, True]  # 0.35 <= 0.9·0.4 restarts the window
    with pytest.raises(ValueError):
        Plateau(window=0)
    with pytest.raises(ValueError):
        Plateau(window=5, rtol=1.5)


def test_fit_stops_when_stalled_and_reports_every_evaluation():
    from deeplora.completion import Plateau

    # width 2 cannot fit a rank-4 target: the loss floors at the rank-2 residual
    problem = MatrixCompletion.random(random_low_rank(30, 30, 4, seed=0), 0.6, seed=1)
    model, _ = build_model("narrow", problem, depth=2, rank=1, dtype=torch.float64)
    seen = []
    history = fit(model, problem, "adam", 3e-2, steps=20_000, eval_every=50, progress=False,
                  stall=Plateau(200, 0.01), on_eval=lambda step, m: seen.append(step))
    assert history.stalled and history.as_dict()["stalled"] is True
    assert history.steps[-1] < 20_000 and seen == history.steps
    assert history.train_loss[-1] > 1e-3
