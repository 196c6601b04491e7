"""Which layers to adapt: module names, regexes and the paper's presets.

Only ``torch.nn.Linear`` and transformers' ``Conv1D`` (GPT-2 style, weight stored d_in×d_out)
can be adapted. The presets select by module type, never by width (the paper's "≥ 512" rule
would adapt nothing in a 384-wide model):

- ``"all-linear"``: every Linear/Conv1D of the backbone (``model.base_model`` of a transformers
  model: encoder, decoder, pooler), never the task head nor the output embedding (LM head);
- ``"attention-mlp"``: those of them inside the repeated transformer blocks (a numbered path
  component such as ``layer.3``/``block.3``/``h.3``): attention projections, attention output,
  MLP in/out; i.e. ``all-linear`` without the pooler;
- ``"query-value"``: the query and value projections among them (``query``/``value``,
  ``q``/``v``, ``q_proj``/``v_proj``); models with a fused QKV projection (GPT-2's ``c_attn``,
  ``query_key_value``, ``qkv_proj``, ``Wqkv``) adapt the fused layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

PRESETS = ("query-value", "attention-mlp", "all-linear")
QUERY_VALUE_NAMES = frozenset(
    {"query", "value", "q", "v", "q_proj", "v_proj", "c_attn", "query_key_value", "qkv_proj",
     "Wqkv"}
)


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """``(d_out, d_in)`` of a Linear or Conv1D layer, ``None`` for any other module."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return d_out, d_in
    return None


def unwrap(module: nn.Module) -> nn.Module:
    """The innermost ``base_layer`` of an adapter wrapper (the module itself otherwise)."""
    while isinstance(getattr(module, "base_layer", None), nn.Module):
        module = module.base_layer
    return module


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Named modules, with adapter wrappers standing for their base layer and their insides
    (base layer, factors) skipped."""
    wrappers: set[str] = set()
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or _under(name, wrappers):
            continue
        if unwrap(module) is not module:
            wrappers.add(name)
        found[name] = module
    return found


def _saved(name: str, modules_to_save: Iterable[str]) -> bool:
    """PEFT's rule: a module under a ``modules_to_save`` entry is never adapted."""
    return any(re.match(rf"(^|.*\.){m}($|\..*)", name) for m in modules_to_save)


def _preset(model: nn.Module, candidates: dict[str, nn.Module], preset: str) -> list[str]:
    output_embeddings = getattr(model, "get_output_embeddings", lambda: None)()
    backbone = getattr(model, "base_model", model)
    backbone_name = next((n for n, m in model.named_modules() if m is backbone), "")
    names = [
        name
        for name, module in candidates.items()
        if linear_shape(unwrap(module)) is not None
        and (not backbone_name or _under(name, [backbone_name]))
        and unwrap(module) is not output_embeddings
    ]
    if preset == "all-linear":
        return names
    names = [n for n in names if any(part.isdigit() for part in n.split("."))]
    if preset == "attention-mlp":
        return names
    return [n for n in names if n.rsplit(".", 1)[-1] in QUERY_VALUE_NAMES]


def resolve_target_modules(
    model: nn.Module,
    target_modules: str | Iterable[str],
    modules_to_save: Iterable[str] | None = None,
) -> list[str]:
    """Full names of the modules of ``model`` to adapt.

    ``target_modules`` is a preset (see module docstring), a regex (a ``str`` matched in full
    against each module name) or names (each matches a module with that full name or dotted
    suffix). Modules under ``modules_to_save`` are left out, as PEFT does.

    Raises:
        ValueError: a preset or regex matching nothing, any listed name matching no module, or
            a matched module that is not a Linear/Conv1D layer.
    """
    candidates = _candidates(model)
    what = type(model).__name__
    if isinstance(target_modules, str) and target_modules in PRESETS:
        names = _preset(model, candidates, target_modules)
        if not names:
            raise ValueError(f"preset {target_modules!r} matches no Linear/Conv1D layer of {what}")
    elif isinstance(target_modules, str):
        names = [n for n in candidates if re.fullmatch(target_modules, n)]
        if not names:
            raise ValueError(f"target_modules regex {target_modules!r} matches no module of {what}")
    else:
        wanted = list(target_modules)
        if not wanted:
            raise ValueError("target_modules is empty")

        def hits(target: str, name: str) -> bool:
            return name == target or name.endswith("." + target)

        unmatched = [t for t in wanted if not any(hits(t, n) for n in candidates)]
        if unmatched:
            raise ValueError(f"target_modules {unmatched} match no module of {what}")
        names = [n for n in candidates if any(hits(t, n) for t in wanted)]
    names = [n for n in names if not _saved(n, modules_to_save or ())]
    unsupported = {
        n: type(unwrap(candidates[n])).__name__
        for n in names
        if linear_shape(unwrap(candidates[n])) is None
    }
    if unsupported:
        raise ValueError(
            f"only torch.nn.Linear and transformers Conv1D layers can be adapted; "
            f"target_modules also matched {unsupported}"
        )
    return names
