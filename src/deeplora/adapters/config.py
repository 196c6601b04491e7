"""Configuration of Deep LoRA adapters, a PEFT method.

Deep LoRA (Yaras et al. 2024, Sec. 4) adds to a frozen weight W (d_out×d_in) the update

    ΔW = W_L ⋯ W_2 W_1,   W_1 (r×d_in),  W_2 … W_{L-1} (r×r),  W_L (d_out×r),

with every factor ε·(semi-)orthogonal at initialization and no α/r scaling. With ``depth=2``,
``init="lora"`` is the paper's vanilla LoRA baseline as the authors' code draws it
(ΔW = B A, B (d_out×r) ~ N(0, 1), A (r×d_in) = 0, no scaling) and ``init="lora-hu"`` Hu et
al.'s orientation (A ~ N(0, 1), B = 0). ``init="compressed"`` holds the narrow form of a
full-width depth-L Deep LoRA built by :func:`deeplora.adapters.compress_adapters` (L + 2
factors).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Real

from peft import PeftConfig

from deeplora.checks import check_integer
from deeplora.factorization.init import check_scale

PEFT_TYPE = "DEEPLORA"
INITS = ("orthogonal", "lora", "lora-hu", "compressed")
LORA_INITS = ("lora", "lora-hu")


def module_names(field_name: str, names: object) -> list[str]:
    """``names`` (an iterable of str) as a list, else a ``ValueError`` naming the field."""
    listed = list(names) if isinstance(names, Iterable) else None
    if listed is None or not all(isinstance(name, str) for name in listed):
        raise ValueError(f"{field_name} must be module names (str), got {names!r}")
    return listed


@dataclass
class DeepLoraConfig(PeftConfig):
    """Deep LoRA adapter settings; pass to ``peft.get_peft_model(model, config)``.

    Args:
        r: rank (width of the inner factors), ``1 <= r <= min(d_in, d_out)`` of every target.
        depth: L >= 2, the number of factors (for ``init="compressed"``: the depth of the
            full-width Deep LoRA that was compressed; the layer then holds L + 2 factors).
        init_scale: ε > 0, the singular value of every factor at initialization.
        init: ``"orthogonal"`` (paper), ``"lora"`` (vanilla LoRA as the authors draw it:
            B ~ N(0, 1), A = 0), ``"lora-hu"`` (Hu et al.: A ~ N(0, 1), B = 0); both need
            ``depth=2``; or ``"compressed"`` (needs an even ``r``).
        target_modules: module names (exact or dotted suffix), a regex (full match), or a
            preset: ``"query-value"``, ``"attention-mlp"``, ``"all-linear"``, ``"all-dense"``
            (see :mod:`deeplora.adapters.targets`). Resolved to explicit names on injection.
        dropout: dropout probability on the adapter input (not applied on Embedding layers,
            whose input is token ids, as in PEFT).
        modules_to_save: extra trainable modules saved with the adapter (e.g. a task head).
        target_shapes: ``{name: [d_out, d_in]}``, recorded on injection and checked when the
            adapter is loaded into a model.
    """

    r: int = field(default=8, metadata={"help": "Rank r of the adapter."})
    depth: int = field(default=3, metadata={"help": "Number of factors L >= 2."})
    init_scale: float = field(default=1e-3, metadata={"help": "Initial singular value ε."})
    init: str = field(default="orthogonal", metadata={"help": f"One of {INITS}."})
    target_modules: list[str] | str | None = field(
        default="query-value", metadata={"help": "Names, regex or preset of modules to adapt."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules trained and saved with the adapter."}
    )
    target_shapes: dict[str, list[int]] | None = field(
        default=None, metadata={"help": "(d_out, d_in) per adapted module, set on injection."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PEFT_TYPE
        self.r, self.depth = check_integer("r", self.r, 1), check_integer("depth", self.depth, 2)
        self.init_scale = check_scale(self.init_scale)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init in LORA_INITS and self.depth != 2:
            raise ValueError(f"init={self.init!r} is the depth-2 LoRA baseline, "
                             f"got depth={self.depth}")
        if self.init == "compressed" and self.r % 2:
            raise ValueError(f'init="compressed" needs an even r (half from the gradient), '
                             f"got r={self.r}")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, Real)
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if self.target_modules is None:
            raise ValueError("target_modules is required: names, a regex or a preset")
        if not isinstance(self.target_modules, str):
            self.target_modules = module_names("target_modules", self.target_modules)
        if isinstance(self.modules_to_save, str):
            raise ValueError(f"modules_to_save must be a list of module names, got "
                             f"{self.modules_to_save!r} (write [{self.modules_to_save!r}])")
        if self.modules_to_save is not None:
            self.modules_to_save = module_names("modules_to_save", self.modules_to_save)

    @property
    def num_factors(self) -> int:
        """Factors per adapted layer: ``depth``, or ``depth + 2`` when compressed."""
        return self.depth + 2 if self.init == "compressed" else self.depth
