"""Generation metrics as the paper reports them (there via ``evaluate``): corpus BLEU with every
reference of each MR (``sacrebleu``, 0–100) and ROUGE-1/2/L/Lsum F-measures (``rouge-score``
with the Porter stemmer, best reference per prediction, mean over predictions, 0–1).

METEOR is not computed: nltk's METEOR needs the WordNet corpus, which no package here ships
and which cannot be downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "rougeLsum")


def generation_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]
                       ) -> dict[str, float]:
    """BLEU and ROUGE of ``predictions`` (one per MR) against ``references`` (all per MR)."""
    import sacrebleu
    from rouge_score import rouge_scorer, scoring

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    if not predictions or any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference")
    streams = max(len(refs) for refs in references)
    ref_streams = [[refs[i] if i < len(refs) else None for refs in references]
                   for i in range(streams)]
    values = {"bleu": float(sacrebleu.corpus_bleu(list(predictions), ref_streams).score)}
    scorer = rouge_scorer.RougeScorer(list(METRICS[1:]), use_stemmer=True)
    scores: list[dict[str, scoring.Score]] = [
        scorer.score_multi(list(refs), pred) for pred, refs in zip(predictions, references,
                                                                    strict=True)
    ]
    for name in METRICS[1:]:
        values[name] = float(np.mean([s[name].fmeasure for s in scores]))
    return values
