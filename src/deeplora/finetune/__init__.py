"""Few-shot fine-tuning on GLUE with Deep LoRA / LoRA adapters (the paper's Sec. 4 protocol).

- :mod:`~deeplora.finetune.data`: GLUE TSV folders or the hub, seeded few-shot subsets;
- :mod:`~deeplora.finetune.metrics`: GLUE metrics (scipy / scikit-learn);
- :mod:`~deeplora.finetune.config`: :class:`FinetuneConfig` and the ``paper`` / ``practical``
  presets;
- :mod:`~deeplora.finetune.models`: cross- and bi-encoder heads with adapters;
- :mod:`~deeplora.finetune.train`: one run; :mod:`~deeplora.finetune.runs`: resumable sweeps;
- :mod:`~deeplora.finetune.sweep`: what a sweep runs (cells, options, seeds);
  :mod:`~deeplora.finetune.report`: its tables (means, paired differences, bootstrap intervals).

The names below are imported on first use, so ``import deeplora.finetune.config`` stays light.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "DataError": "deeplora.finetune.data",
    "FinetuneConfig": "deeplora.finetune.config",
    "compute_metrics": "deeplora.finetune.metrics",
    "few_shot": "deeplora.finetune.data",
    "get_task": "deeplora.finetune.data",
    "load_split": "deeplora.finetune.data",
    "preset": "deeplora.finetune.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deeplora.finetune' has no attribute {name!r}")


__all__ = list(_LAZY)
