from __future__ import annotations

import pytest

from deeplora.finetune.data import DataError
from deeplora.nlg.config import NLGConfig, nlg_preset


def test_fields_added_later_keep_the_keys_of_published_runs() -> None:
    """docs/results/nlg-fewshot-cpu/runs/ holds these folders."""
    assert nlg_preset("cpu", method="lora").key() == "e2e-lora-cpu-r8-n16-t60-80b20bd807"
    assert nlg_preset("cpu", method="deep-lora").key() == "e2e-deep-lora-cpu-r8-n16-t60-e72f793b1a"
    assert nlg_preset("cpu", method="lora", eval_every=10, dev_mrs=24).key() != (
        nlg_preset("cpu", method="lora").key())


def test_checkpoints_need_dev_mrs() -> None:
    with pytest.raises(DataError, match="eval_every=10 needs dev_mrs > 0"):
        nlg_preset("cpu", eval_every=10)
    with pytest.raises(DataError, match=">= 0"):
        nlg_preset("cpu", dev_mrs=-1)


def test_numpy_numbers_keep_the_key() -> None:
    """rank=np.int64(4) (a numpy grid) was accepted, then key() failed: 'Object of type int64
    is not JSON serializable'."""
    import numpy as np

    given = nlg_preset("cpu", rank=np.int64(4), lr=np.float32(0.5))
    assert given.key() == nlg_preset("cpu", rank=4, lr=0.5).key()
    assert type(given.rank) is int and type(given.lr) is float


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rank": 2.5}, "rank must be an integer, got 2.5"),  # was accepted (key …-r2.5-…)
    ({"rank": "8"}, "rank must be an integer, got '8'"),  # was a TypeError of '<'
    ({"test_mrs": 24.0}, r"test_mrs must be an integer \(or None\), got 24.0"),
    ({"num_beams": True}, "num_beams must be an integer, got True"),
    ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
])
def test_numeric_fields_of_another_type_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(DataError, match=f"^{message}$"):
        nlg_preset("cpu", **overrides)


@pytest.mark.parametrize("name", [
    "rank", "depth", "init_scale", "samples", "steps", "lr", "batch_size", "eval_batch_size",
    "max_input_length", "max_output_length", "num_beams", "test_mrs", "adam_eps", "eval_every",
    "dev_mrs"])
def test_every_numeric_field_checks_its_type(name: str) -> None:
    with pytest.raises(DataError, match=f"^{name} must be (an integer|a number)"):
        NLGConfig(**{name: "1"})


def test_cpu_eps_that_underflows_names_the_settings_it_came_from() -> None:
    """The derived eps 1e-6·ε^(L−1) rounded to 0.0 and the error named adam_eps, which the user
    never gave; init_scale="1e-3" was a TypeError of **."""
    with pytest.raises(DataError, match=r"^adam_eps derived from init_scale=1e-200 and depth=3 "
                                        r"\(the cpu preset's .* underflows to 0"):
        nlg_preset("cpu", init_scale=1e-200)
    with pytest.raises(DataError, match=r"^init_scale must be a number, got '1e-3'$"):
        nlg_preset("cpu", init_scale="1e-3")
    assert nlg_preset("cpu", init_scale=1e-200, adam_eps=1e-9).adam_eps == 1e-9


@pytest.mark.parametrize(("field", "value"), [
    ("samples", 16), ("batch_size", 16), ("steps", 400), ("lr", 1e-4), ("adam_eps", 1e-6),
    ("max_input_length", 64), ("max_output_length", 64), ("num_beams", 4),
    ("targets", "all-dense"), ("init_scale", 1e-3), ("rank", 8), ("depth", 3),
    ("test_mrs", None),
])
def test_paper_preset_is_paper_md(field: str, value: object) -> None:
    """PAPER.md, the authors' ``nlg_fewshot.py``: 16 examples, batch 16, 400 steps at a
    constant lr 1e-4, lengths (64, 64), 4 beams, all-dense adapters, ε = 1e-3, rank 8, Deep
    LoRA depth 3; every test MR."""
    assert getattr(nlg_preset("paper"), field) == value
