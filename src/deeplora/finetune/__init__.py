"""Few-shot fine-tuning on GLUE with Deep LoRA / LoRA adapters (the paper's Sec. 4 protocol).

- :mod:`~deeplora.finetune.data`: GLUE TSV folders or the hub, seeded few-shot subsets;
- :mod:`~deeplora.finetune.metrics`: GLUE metrics (scipy / scikit-learn);
- :mod:`~deeplora.finetune.config`: :class:`FinetuneConfig` and the ``paper`` / ``practical``
  presets;
- :mod:`~deeplora.finetune.models`: cross- and bi-encoder heads with adapters;
- :mod:`~deeplora.finetune.train`: one run; :mod:`~deeplora.finetune.runs`: resumable sweeps.
"""

from deeplora.finetune.config import FinetuneConfig, preset
from deeplora.finetune.data import DataError, few_shot, get_task, load_split
from deeplora.finetune.metrics import compute_metrics

__all__ = [
    "DataError",
    "FinetuneConfig",
    "compute_metrics",
    "few_shot",
    "get_task",
    "load_split",
    "preset",
]
