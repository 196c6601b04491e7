"""Few-shot natural-language generation (E2E NLG) with Deep LoRA / LoRA adapters on causal-LM
and seq2seq models: the paper's NLG experiment.

- :mod:`~deeplora.nlg.data`: E2E CSVs or the hub's ``GEM/e2e_nlg``, seeded few-shot MRs;
- :mod:`~deeplora.nlg.metrics`: BLEU (sacrebleu, multi-reference) and ROUGE (rouge-score);
- :mod:`~deeplora.nlg.config`: :class:`NLGConfig` and the ``paper`` / ``cpu`` presets;
- :mod:`~deeplora.nlg.models`: loading, adapters, prompt/target formats, generation;
- :mod:`~deeplora.nlg.train`: one run and resumable sweeps.
"""

from deeplora.nlg.config import NLGConfig, nlg_preset
from deeplora.nlg.data import Example, eval_subset, few_shot, load_e2e
from deeplora.nlg.metrics import generation_metrics

__all__ = [
           "Example",
           "NLGConfig",
           "eval_subset",
           "few_shot",
           "generation_metrics",
           "load_e2e",
           "nlg_preset",
]
