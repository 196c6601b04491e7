"""load_adapter: a saved folder loads; a broken one is an error naming the folder."""

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from deeplora.adapters import DeepLoraConfig, check_adapter_folder, load_adapter

from .helpers import inputs_for, logits, tiny_bert


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=2, target_modules="query-value"))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_load_adapter_round_trip(saved: Path) -> None:
    assert check_adapter_folder(saved)["peft_type"] == "DEEPLORA"
    loaded = load_adapter(tiny_bert(), saved)
    x = inputs_for(loaded)
    assert torch.isfinite(logits(loaded, x)).all()


def test_broken_folders_name_the_folder_and_the_problem(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"adapter folder '.*nowhere' does not exist"):
        load_adapter(tiny_bert(), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'.*empty' has no adapter_config\.json"):
        load_adapter(tiny_bert(), tmp_path / "empty")
    config = saved / "adapter_config.json"
    text = config.read_text()
    config.write_text(json.dumps({**json.loads(text), "peft_type": "NOPE"}))
    with pytest.raises(ValueError, match=r"'.*adapter': peft_type 'NOPE' is not known to PEFT"):
        load_adapter(tiny_bert(), saved)
    config.write_text(text[:20])
    with pytest.raises(ValueError, match=r"adapter_config\.json' is not valid JSON"):
        load_adapter(tiny_bert(), saved)
    config.write_text(text)
    (saved / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*adapter' has no weights file "
                       r"\(adapter_model\.safetensors or adapter_model\.bin\)"):
        load_adapter(tiny_bert(), saved)
