"""Loading a saved adapter folder with errors that name the folder and what is wrong.

``PeftModel.from_pretrained`` treats anything it cannot find locally as a hub repository id:
a folder without its weights file gives a hub look-up error, an unknown ``peft_type`` a bare
``KeyError``. :func:`load_adapter` checks the folder first and then calls it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from peft import PeftModel
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
from safetensors import SafetensorError, safe_open
from torch import nn


def check_adapter_folder(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The adapter config of a saved folder, or an error naming the folder and the problem.

    ``FileNotFoundError``: no such folder, no ``adapter_config.json``, or no weights
    (``adapter_model.safetensors`` / ``adapter_model.bin``). ``ValueError``: the config is not
    a JSON object or names a ``peft_type`` PEFT does not know (import the package that
    registers it first: ``import deeplora`` registers ``DEEPLORA``), or the safetensors file
    is empty, truncated or not safetensors.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter folder {str(path)!r} does not exist")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"adapter folder {str(path)!r} has no {CONFIG_NAME} (not a "
                                "folder written by save_pretrained?)")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(config_file)!r} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{str(config_file)!r} does not hold a JSON object")
    kind = config.get("peft_type")
    if kind not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise ValueError(f"adapter folder {str(path)!r}: peft_type {kind!r} is not known to "
                         "PEFT (it knows its own methods and DEEPLORA); import the package "
                         "that registers it before loading")
    if not any((path / name).is_file() for name in (SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME)):
        raise FileNotFoundError(f"adapter folder {str(path)!r} has no weights file "
                                f"({SAFETENSORS_WEIGHTS_NAME} or {WEIGHTS_NAME}); was the save "
                                "interrupted?")
    if (path / SAFETENSORS_WEIGHTS_NAME).is_file():
        try:  # reads the header only; it names every tensor's byte range, so a cut file fails
            with safe_open(str(path / SAFETENSORS_WEIGHTS_NAME), framework="pt"):
                pass
        except SafetensorError as exc:
            raise ValueError(f"adapter folder {str(path)!r}: {SAFETENSORS_WEIGHTS_NAME} is not "
                             f"a readable safetensors file (empty, truncated or another kind "
                             f"of file: {exc})") from None
    return config


def load_adapter(model: nn.Module, folder: str | os.PathLike[str], **kwargs: Any) -> PeftModel:
    """``PeftModel.from_pretrained(model, folder, **kwargs)`` after
    :func:`check_adapter_folder` (a local folder only, never the hub)."""
    check_adapter_folder(folder)
    return PeftModel.from_pretrained(model, str(folder), **kwargs)
