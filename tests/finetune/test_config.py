"""Run configuration, presets and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from deeplora.finetune.config import FinetuneConfig, padding_override, preset
from deeplora.finetune.data import DataError


@pytest.mark.parametrize(("field", "value"), [
    ("depth", 3), ("rank", 8), ("init_scale", 1e-3), ("lr", 1e-4), ("adam_eps", 1e-6),
    ("decay_ratio", 1.0), ("batch_size", 16), ("max_length", 128), ("pad_to_max_length", True),
    ("eval_batch_size", 32), ("targets", "all-dense"), ("train_head", False),
    ("samples", 16), ("steps", 500), ("sampling", "authors"), ("lr_outer_ratio", 1e-2),
])
def test_paper_preset_is_paper_md(field: str, value: object) -> None:
    """PAPER.md, Deep LoRA (Sec. 4): few-shot STS-B, 500 steps, and the authors'
    few-shot draw (drop rows over max length, draw with replacement); γ of the compressed
    narrow model. Adam's betas, weight decay and the schedule: tests/finetune/test_train.py."""
    assert getattr(preset("paper"), field) == value


def test_presets_differ_in_head_padding_adam_eps_and_sampling() -> None:
    paper, practical = preset("paper").to_dict(), preset("practical").to_dict()
    diff = {k for k in paper if paper[k] != practical[k]}
    assert diff == {"preset", "train_head", "pad_to_max_length", "adam_eps", "sampling"}
    assert practical["train_head"] and practical["sampling"] == "without-replacement"
    # eps scaled to the factor gradients, ε^{L-1} times ∂L/∂ΔW
    assert practical["adam_eps"] == pytest.approx(1e-12)
    assert preset("practical", init_scale=1e-2, depth=2).adam_eps == pytest.approx(1e-8)
    assert preset("practical", adam_eps=1e-7).adam_eps == 1e-7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "wnli"}, "unknown task 'wnli'"),
        ({"method": "dora"}, "unknown method 'dora'"),
        ({"head": "pooled"}, "unknown head 'pooled'"),
        ({"samples": 0}, "samples must be >= 1"),
        ({"decay_ratio": 0.0}, "decay_ratio must be in"),
        ({"dev_samples": 0}, r"dev_samples must be >= 1 \(or None: the whole dev split\), got 0"),
        ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"init_scale": 0.0}, "init_scale must be a finite number > 0, got 0.0"),
        ({"adam_eps": 0.0}, "adam_eps must be a finite number > 0, got 0.0"),
        ({"adam_eps": float("inf")}, "adam_eps must be a finite number > 0, got inf"),
        ({"lr_outer_ratio": -1.0}, "lr_outer_ratio must be a finite number >= 0"),
        ({"singular_values": -1}, r"singular_values must be >= 0 \(or None\), got -1"),
        ({"steps": 500, "snapshot_steps": (0, 1000)},
         r"snapshot_steps must lie in 0\.\.500 \(the training steps\), got \[1000\]"),
        ({"snapshot_steps": (-1, 10)}, r"snapshot_steps must lie in 0\.\.500.*got \[-1\]"),
    ],
)
def test_bad_values_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        preset("paper", **overrides)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="unknown preset"):
        preset("fast")


def test_key_is_stable_and_unique() -> None:
    a = preset("paper", samples=16)
    assert a.key() == preset("paper", samples=16).key()
    assert a.key().startswith("stsb-deep-lora-cross-paper-r8-n16-t500-")
    assert a.key() != preset("paper", samples=16, lr=2e-4).key()
    assert FinetuneConfig.from_dict(a.to_dict()) == a
    # only non-default fields enter the hash: a new field with a default keeps every key
    assert FinetuneConfig().key() == "stsb-deep-lora-cross-paper-r8-n16-t500-44136fa355"


def test_padding_override_keeps_or_replaces_the_presets_choice() -> None:
    assert preset("paper", **padding_override(None)).pad_to_max_length
    assert not preset("paper", **padding_override("longest")).pad_to_max_length
    assert preset("practical", **padding_override("max-length")).pad_to_max_length
    with pytest.raises(DataError, match="unknown padding 'none'; choose one of max-length"):
        padding_override("none")


def test_numpy_numbers_become_python_numbers_and_keep_the_key() -> None:
    """rank=np.int64(4), lr=np.float32(…) or snapshot_steps of np.int64 (numpy grids) were
    accepted, then key() failed: 'Object of type int64 is not JSON serializable'."""
    given = preset("paper", rank=np.int64(4), lr=np.float64(2e-4), steps=np.int64(10),
                   snapshot_steps=(np.int64(0), 5))
    plain = preset("paper", rank=4, lr=2e-4, steps=10, snapshot_steps=(0, 5))
    assert given == plain and given.key() == plain.key()
    assert type(given.rank) is int and type(given.lr) is float
    assert type(given.snapshot_steps[0]) is int


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rank": 2.5}, "rank must be an integer, got 2.5"),  # was accepted (key …-r2.5-…)
    ({"rank": "8"}, "rank must be an integer, got '8'"),  # was a TypeError of '<'
    ({"steps": 10.0}, "steps must be an integer, got 10.0"),
    ({"samples": "all"}, r"samples must be an integer \(or None\), got 'all'"),
    ({"dev_samples": 1.5}, r"dev_samples must be an integer \(or None\), got 1.5"),
    ({"singular_values": True}, r"singular_values must be an integer \(or None\), got True"),
    ({"snapshot_steps": (0, 2.5)}, r"snapshot_steps must be a tuple of integers, got \(0, 2.5\)"),
    ({"lr": "1e-4"}, "lr must be a number, got '1e-4'"),
    ({"decay_ratio": None}, "decay_ratio must be a number, got None"),
    ({"lr_outer_ratio": True}, "lr_outer_ratio must be a number, got True"),
    ({"train_head": "no"}, "train_head must be True or False, got 'no'"),  # counted as true
    ({"pad_to_max_length": 0}, "pad_to_max_length must be True or False, got 0"),
])
def test_numeric_fields_of_another_type_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(DataError, match=f"^{message}$"):
        preset("practical", **overrides)



@pytest.mark.parametrize("name", [
    "rank", "depth", "init_scale", "samples", "steps", "lr", "lr_outer_ratio", "decay_ratio",
    "batch_size", "eval_batch_size", "max_length", "eval_every", "dev_samples",
    "snapshot_steps", "adam_eps", "subspace_rank", "heldout_samples", "singular_values"])
def test_every_numeric_field_checks_its_type(name: str) -> None:
    with pytest.raises(DataError, match=f"^{name} must be (an integer|a number|a tuple)"):
        FinetuneConfig(**{name: "1"})


def test_practical_eps_that_underflows_names_the_settings_it_came_from() -> None:
    """The derived eps 1e-6·ε^(L−1) rounded to 0.0 and the error named adam_eps, which the user
    never gave; init_scale=1e300 was an OverflowError, init_scale="1e-3" a TypeError of **."""
    with pytest.raises(DataError, match=r"^adam_eps derived from init_scale=1e-200 and depth=3 "
                                        r"\(the practical preset's 1e-6·init_scale\^\(depth−1\)\) "
                                        r"underflows to 0; give adam_eps, a larger init_scale"):
        preset("practical", init_scale=1e-200)
    with pytest.raises(DataError, match=r"init_scale=0.001 and depth=10000 .* underflows to 0"):
        preset("practical", depth=10_000)
    with pytest.raises(DataError, match=r"init_scale=1e\+300 and depth=3 .* overflows; give "
                                        r"adam_eps or a smaller init_scale"):
        preset("practical", init_scale=1e300)
    with pytest.raises(DataError, match=r"^init_scale must be a number, got '1e-3'$"):
        preset("practical", init_scale="1e-3")
    assert preset("practical", init_scale=1e-200, adam_eps=1e-9).adam_eps == 1e-9
    assert preset("paper", init_scale=1e-200).adam_eps == 1e-6  # paper's eps is not derived
