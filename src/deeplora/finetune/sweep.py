"""What a sweep runs: :class:`Cell` s (a config, its seeds, its report labels), the user's
:class:`Options` shared by every experiment, and the seed/jobs parsing of both commands.

Light on imports (no torch/transformers), so command-line parsers can use it; the runs
themselves are in :mod:`deeplora.finetune.runs`, the tables in :mod:`deeplora.finetune.report`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from deeplora.checks import SEED_LIMIT, is_seed
from deeplora.finetune.config import FinetuneConfig, padding_override, preset
from deeplora.finetune.data import DataError

Config = TypeVar("Config")


def seed_major(sweeps: Iterable[tuple[Config, Sequence[int]]]) -> list[tuple[Config, int]]:
    """The (config, seed) runs of ``sweeps`` in seed-major order: the first seed of every
    config, then the second, …, so that a sweep stopped early holds complete pairs."""
    sweeps = list(sweeps)
    longest = max((len(seeds) for _, seeds in sweeps), default=0)
    return [(config, seeds[i]) for i in range(longest) for config, seeds in sweeps
            if i < len(seeds)]


@dataclass(frozen=True)
class Cell:
    """One config of an experiment, its seeds and its labels (e.g. ``{"samples": 16}``)."""

    config: FinetuneConfig
    seeds: tuple[int, ...]
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """User choices shared by all experiments; ``seeds=None`` means the experiment's default."""

    fast: bool = False
    seeds: tuple[int, ...] | None = None
    heads: tuple[str, ...] = ("cross", "bi")
    preset: str = "paper"
    model: str | None = None
    padding: str | None = None

    def seed_list(self, paper_count: int) -> tuple[int, ...]:
        if self.seeds is not None:
            return self.seeds
        return tuple(range(2 if self.fast else paper_count))

    def config(self, steps: int, **overrides: Any) -> FinetuneConfig:
        """The preset with ``overrides``; ``--fast`` cuts steps to 2, dev to 32 rows, inputs
        to 32 tokens with dynamic padding (a smoke test: the numbers mean nothing)."""
        fast = {"steps": min(steps, 2), "dev_samples": 32, "max_length": 32,
                "pad_to_max_length": False, "eval_every": 0}
        values = {"model": self.model, "steps": steps, **padding_override(self.padding),
                  **overrides}
        if self.fast:
            values.update(fast, eval_every=1 if overrides.get("eval_every") else 0)
        return preset(self.preset, **values)


def zero_shot_cell(options: Options, task: str = "stsb", head: str = "bi", **overrides: Any
                   ) -> Cell:
    """The untouched model (what a user gets without fine-tuning): the ``bi`` head, or for a
    causal LM's ``prompt`` head the prompt itself; ``overrides``: further config fields."""
    config = options.config(0, task=task, method="zero-shot", head=head, samples=1, **overrides)
    return Cell(config, (0,), {"method": "zero-shot", "head": head})


MAX_SEEDS = 10_000
"""The most seeds one sweep accepts (a typo such as ``0-99999`` is refused, not run)."""
SEED_PART = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-4"`` → (0, 1, 2, 3, 4); ``"0,3,7-8"`` → (0, 3, 7, 8); duplicates removed.

    ``ValueError`` naming ``--seeds`` for anything else: an empty part (``1,,2``), an open or
    reversed range (``0-``, ``3-1``), a negative seed, a seed >= :data:`SEED_LIMIT`, or more
    than :data:`MAX_SEEDS` seeds.
    """
    seeds: list[int] = []
    for part in text.split(","):
        match = SEED_PART.fullmatch(part)
        if match is None:
            raise ValueError(f"--seeds {text!r}: expected e.g. 0-4 or 0,3,7")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"--seeds {text!r}: the range {first}-{last} is empty (write "
                             f"{last}-{first})")
        if last >= SEED_LIMIT:
            raise ValueError(f"--seeds {text!r}: seeds must be < 2**32 = {SEED_LIMIT}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise ValueError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds")
        seeds += range(first, last + 1)
    return tuple(dict.fromkeys(seeds))


def check_seed(seed: int) -> int:
    """``seed`` as an ``int`` (numpy's integers are no seed for ``random.seed`` or
    ``torch.Generator``); :class:`~deeplora.finetune.data.DataError` unless it is an integer in
    [0, :data:`SEED_LIMIT`) (:func:`deeplora.checks.is_seed`)."""
    if not is_seed(seed):
        raise DataError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def check_jobs(jobs: int) -> None:
    """``ValueError`` naming the flag unless ``--jobs`` is at least 1."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
