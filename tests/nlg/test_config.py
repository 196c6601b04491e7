from __future__ import annotations

import pytest

from deeplora.finetune.data import DataError
from deeplora.nlg.config import nlg_preset


def test_fields_added_later_keep_the_keys_of_published_runs() -> None:
    """docs/results/nlg-fewshot-cpu/runs/ holds these folders."""
    assert nlg_preset("cpu", method="lora").key() == "e2e-lora-cpu-r8-n16-t60-80b20bd807"
    assert nlg_preset("cpu", method="deep-lora").key() == "e2e-deep-lora-cpu-r8-n16-t60-e72f793b1a"
    assert nlg_preset("cpu", method="lora", eval_every=10, dev_mrs=24).key() != (
        nlg_preset("cpu", method="lora").key())


def test_checkpoints_need_dev_mrs() -> None:
    with pytest.raises(DataError, match="eval_every needs dev_mrs"):
        nlg_preset("cpu", eval_every=10)
    with pytest.raises(DataError, match=">= 0"):
        nlg_preset("cpu", dev_mrs=-1)
