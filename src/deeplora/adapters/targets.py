"""Which layers to adapt: module names, regexes and the paper's presets.

Adaptable layers are ``torch.nn.Linear``, transformers' ``Conv1D`` (GPT-2 style, weight stored
d_in×d_out) and ``torch.nn.Embedding`` (weight num_embeddings×dim, seen as the map
ΔW (dim×num_embeddings) applied to one-hot token vectors, as PEFT's LoRA does) when its forward
looks up its input ids (:func:`looks_up_its_input`; not BART's/OPT's/Whisper's learned
position embeddings). The presets
select by module type, never by width (the paper's "both dimensions ≥ 512" rule would adapt
nothing in a 384-wide model):

- ``"all-dense"`` (the paper's): every Linear/Conv1D of the backbone (``all-linear``) plus the
  input word embeddings and the absolute position embeddings (``position_embeddings``,
  ``wpe``, ``embed_positions``); not the token-type embeddings nor the task head. On BERT-base
  this is exactly the authors' set (every 2-D weight with both dimensions ≥ 512);
- ``"all-linear"``: every Linear/Conv1D of the backbone (``model.base_model`` of a transformers
  model: encoder, decoder, pooler), never the task head nor the output embedding (LM head);
- ``"attention-mlp"``: those of them inside the repeated transformer blocks (a numbered path
  component such as ``layer.3``/``block.3``/``h.3``): attention projections, attention output,
  MLP in/out; i.e. ``all-linear`` without the pooler;
- ``"query-value"``: the query and value projections among them (``query``/``value``,
  ``q``/``v``, ``q_proj``/``v_proj``); models with a fused QKV projection (GPT-2's ``c_attn``,
  ``query_key_value``, ``qkv_proj``, ``Wqkv``) adapt the fused layer.

A preset is a function ``(model, candidates) -> names`` in :data:`PRESETS`;
:func:`register_preset` adds one (e.g. an architecture-specific set).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn
from transformers.pytorch_utils import Conv1D

QUERY_VALUE_NAMES = frozenset(
    {"query", "value", "q", "v", "q_proj", "v_proj", "c_attn", "query_key_value", "qkv_proj",
     "Wqkv"}
)
POSITION_EMBEDDING_NAMES = frozenset({"position_embeddings", "wpe", "embed_positions"})

Preset = Callable[[nn.Module, dict[str, nn.Module]], list[str]]
"""``(model, candidates) -> names``: candidates are ``{name: module}`` of every module that can
be targeted, adapter wrappers standing for their (unwrapped) base layer."""


def looks_up_its_input(module: nn.Embedding) -> bool:
    """The Embedding's output is the lookup of its input ids: ``nn.Embedding.forward``, or a
    scaled word embedding (``embed_scale`` times that lookup, as PEFT assumes). Learned position
    embeddings that compute their positions in their own forward (BART's and OPT's, offset by
    2, from the ids' shape or the attention mask; Whisper's) are not: the adapter, which looks
    up ``W_1[:, x]`` of the layer input x, would index the wrong rows or fail."""
    return type(module).forward is nn.Embedding.forward or hasattr(module, "embed_scale")


def layer_shape(module: nn.Module) -> tuple[int, int] | None:
    """``(d_out, d_in)`` of an adaptable layer (Linear, Conv1D, an Embedding that
    :func:`looks_up_its_input`), else ``None``.

    An Embedding's weight (num_embeddings×dim) is ΔWᵀ's layout: d_out = dim,
    d_in = num_embeddings.
    """
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, Conv1D) or (isinstance(module, nn.Embedding)
                                      and looks_up_its_input(module)):
        d_in, d_out = module.weight.shape
        return d_out, d_in
    return None


def is_linear(module: nn.Module) -> bool:
    """Linear or Conv1D (a dense layer on activations)."""
    return isinstance(module, nn.Linear | Conv1D)


def unwrap(module: nn.Module) -> nn.Module:
    """The innermost ``base_layer`` of an adapter wrapper (the module itself otherwise)."""
    while isinstance(getattr(module, "base_layer", None), nn.Module):
        module = module.base_layer
    return module


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _named(model: nn.Module, remove_duplicate: bool = True) -> list[tuple[str, nn.Module]]:
    """Named modules, unwrapped: adapter wrappers stand for their base layer and their insides
    (base layer, factors) are skipped. With ``remove_duplicate=False`` a module reachable
    under several names (shared) is listed under each."""
    wrappers: set[str] = set()
    found = []
    for name, module in model.named_modules(remove_duplicate=remove_duplicate):
        if not name or _under(name, wrappers):
            continue
        if unwrap(module) is not module:
            wrappers.add(name)
        found.append((name, unwrap(module)))
    return found


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    return dict(_named(model))


def _saved(name: str, modules_to_save: Iterable[str]) -> bool:
    """PEFT's rule: a module under a ``modules_to_save`` entry is never adapted."""
    return any(re.match(rf"(^|.*\.){m}($|\..*)", name) for m in modules_to_save)


def embeddings_of(model: nn.Module, which: str) -> nn.Module | None:
    """``model.get_input_embeddings()`` (``which="input"``) or ``get_output_embeddings()``
    (``"output"``) without adapter wrappers; ``None`` where the model has none."""
    get = getattr(model, f"get_{which}_embeddings", None)
    try:
        module = get() if callable(get) else None
    except NotImplementedError:
        return None
    return unwrap(module) if isinstance(module, nn.Module) else None


def backbone_layers(model: nn.Module, candidates: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Adaptable candidates inside the backbone (``model.base_model``), without the output
    embedding (LM head)."""
    output_embeddings = embeddings_of(model, "output")
    backbone = getattr(model, "base_model", model)
    backbone_name = next((n for n, m in model.named_modules() if m is backbone), "")
    return {
        name: module
        for name, module in candidates.items()
        if layer_shape(module) is not None
        and (not backbone_name or _under(name, [backbone_name]))
        and module is not output_embeddings
    }


def _all_linear(model: nn.Module, candidates: dict[str, nn.Module]) -> list[str]:
    return [n for n, m in backbone_layers(model, candidates).items() if is_linear(m)]


def _attention_mlp(model: nn.Module, candidates: dict[str, nn.Module]) -> list[str]:
    return [n for n in _all_linear(model, candidates)
            if any(part.isdigit() for part in n.split("."))]


def _query_value(model: nn.Module, candidates: dict[str, nn.Module]) -> list[str]:
    return [n for n in _attention_mlp(model, candidates)
            if n.rsplit(".", 1)[-1] in QUERY_VALUE_NAMES]


def _all_dense(model: nn.Module, candidates: dict[str, nn.Module]) -> list[str]:
    """all-linear plus the word and absolute position embeddings, in module order.

    An embedding weight tied to the LM head is adapted in the lookup only (the LM head keeps
    the base weight, and merging is refused).

    Raises:
        ValueError: one of these embedding weights is shared with other modules besides the LM
            head (e.g. T5's ``shared`` = ``encoder.embed_tokens`` = ``decoder.embed_tokens``):
            wrapping one module would leave the others unadapted.
    """
    word = embeddings_of(model, "input")
    output = embeddings_of(model, "output")
    chosen = [
        name for name, module in backbone_layers(model, candidates).items()
        if is_linear(module)
        or (isinstance(module, nn.Embedding)
            and (module is word or name.rsplit(".", 1)[-1] in POSITION_EMBEDDING_NAMES))
    ]
    holders: dict[int, list[str]] = {}
    for name, module in _named(model, remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and module is not output:
            holders.setdefault(id(weight), []).append(name)
    shared = {n: holders[id(candidates[n].weight)] for n in chosen
              if isinstance(candidates[n], nn.Embedding)
              and len(holders[id(candidates[n].weight)]) > 1}
    if shared:
        raise ValueError(
            f"preset 'all-dense': embedding weights shared by several modules {shared}; "
            f"adapting one module would leave the others unadapted: list the targets by name"
        )
    return chosen


PRESETS: dict[str, Preset] = {
    "all-dense": _all_dense,
    "all-linear": _all_linear,
    "attention-mlp": _attention_mlp,
    "query-value": _query_value,
}


def register_preset(name: str, select: Preset) -> None:
    """Add (or replace) preset ``name``: ``select(model, candidates)`` returns module names."""
    if not name or not callable(select):
        raise ValueError("register_preset needs a name and a callable (model, candidates) -> names")
    PRESETS[name] = select


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
            a matched module that is not a Linear/Conv1D/Embedding layer.
    """
    candidates = _candidates(model)
    what = type(model).__name__
    if isinstance(target_modules, str) and target_modules in PRESETS:
        names = PRESETS[target_modules](model, candidates)
        if not names:
            raise ValueError(f"preset {target_modules!r} matches no adaptable layer of {what}")
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
    unsupported = {n: type(candidates[n]).__name__ for n in names
                   if layer_shape(candidates[n]) is None}
    if unsupported:
        raise ValueError(
            f"only torch.nn.Linear, transformers Conv1D and torch.nn.Embedding layers can be "
            f"adapted (embeddings whose forward looks up its input ids, not learned position "
            f"embeddings that compute positions themselves); target_modules also matched "
            f"{unsupported}"
        )
    return names
