import json
import math
from pathlib import Path

import numpy as np
import pytest

import deeplora
from deeplora.adapters import DeepLoraConfig


def test_defaults_follow_the_paper() -> None:
    config = DeepLoraConfig()
    assert (config.r, config.depth, config.init_scale, config.init) == (8, 3, 1e-3, "orthogonal")
    assert config.peft_type == "DEEPLORA"
    assert config.num_factors == 3
    assert deeplora.DeepLoraConfig is DeepLoraConfig


def test_compressed_holds_depth_plus_two_factors() -> None:
    assert DeepLoraConfig(init="compressed", depth=3).num_factors == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be"),
        ({"r": -3}, "r must be"),
        ({"r": 2.0}, "r must be"),
        ({"depth": 1}, "depth must be"),
        ({"init_scale": 0.0}, "init scale"),
        ({"init_scale": -1e-3}, "init scale"),
        ({"init_scale": math.nan}, "init scale"),
        ({"init": "kaiming"}, "init must be"),
        ({"init": "lora", "depth": 3}, "depth-2"),
        ({"init": "lora-hu", "depth": 3}, "depth-2"),
        ({"init": "compressed", "r": 5}, "even r"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": None}, "target_modules"),
        # wrong types name the field (they were TypeErrors from a comparison or from PEFT)
        ({"dropout": "0.1"}, "dropout"),
        ({"dropout": None}, "dropout"),
        ({"target_modules": 5}, "target_modules"),
        ({"target_modules": ["query", 5]}, "target_modules"),
        ({"modules_to_save": "classifier"}, r"modules_to_save.*\['classifier'\]"),
    ],
)
def test_bad_settings_raise_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeepLoraConfig(**kwargs)


def test_numpy_numbers_are_accepted_and_saved_as_python_numbers(tmp_path: Path) -> None:
    """r=np.int64(4) (a grid over np.arange) was refused as 'not an integer'; dropout of
    np.float32 was accepted, then save_pretrained failed: 'float32 is not JSON serializable'."""
    config = DeepLoraConfig(r=np.int64(4), depth=np.int64(3), init_scale=np.float32(0.5),
                            dropout=np.float32(0.25))
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert [saved[k] for k in ("r", "depth", "init_scale", "dropout")] == [4, 3, 0.5, 0.25]
    assert type(config.r) is int and type(config.dropout) is float
    with pytest.raises(ValueError, match="r must be an integer >= 1, got True"):
        DeepLoraConfig(r=True)
