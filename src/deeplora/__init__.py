"""deeplora: compressible dynamics of deep overparameterized low-rank learning.

Implements Yaras, Wang, Balzano & Qu, *Compressible Dynamics in Deep Overparameterized
Low-Rank Learning & Adaptation* (ICML 2024):

- :mod:`deeplora.factorization` — deep and compressed factorizations, orthogonal init,
  discrepant learning rates, subspace analysis (the shared core);
- :mod:`deeplora.completion` — low-rank matrix recovery (factorization, completion, sensing);
- :mod:`deeplora.adapters` — Deep LoRA for PyTorch / Hugging Face transformers (PEFT method);
- :mod:`deeplora.finetune`, :mod:`deeplora.experiments`, :mod:`deeplora.cli`.
"""

import logging
from importlib import import_module
from typing import Any

__version__ = "0.1.0"


class _KernelsNotice(logging.Filter):
    """bitsandbytes >= 0.50 (imported by PEFT when installed) logs on every import, on CPUs with
    AVX512-BF16, that the optional ``kernels`` package (a hub download) is missing; it then
    uses its own CPU kernels. Drop that one record so every command's output is not prefixed
    by it; other bitsandbytes messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_KernelsNotice())

_LAZY = {
    "DeepLoraConfig": "deeplora.adapters",
    "DeepFactorization": "deeplora.factorization",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import deeplora` does not pull in transformers/peft.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deeplora' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
