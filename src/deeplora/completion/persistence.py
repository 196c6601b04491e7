"""Saving and loading a fitted :class:`~deeplora.completion.estimator.DeepMatrixCompletion`.

The file is one ``torch.save`` of a dict holding only tensors, lists, numbers and strings (read
back with ``weights_only`` loading), written atomically. Format 2: ``format``, ``params``
(``get_params()``), ``shape``, ``factors`` (W_1 … W_L), ``model_init``, ``model_scale``,
``mean``, ``row_bias``, ``col_bias``, ``history``, ``clip`` (the fitted ``clip_``), ``ids``
(raw user and item ids, or ``None``), ``seen`` (CSR ``crow``, ``col`` of the training entries;
``None`` when re-saving a model loaded from format 1) and ``fitted`` (the scalar attributes
ending in ``_``, plus ``selected_`` and ``path_``, the chosen penalty: dicts and lists of
numbers). Format 1 lacks ``clip``, ``ids`` and ``seen``; a file saved before
``interaction_rms_`` and ``left_init_`` were measured loads with both ``None`` (unknown).
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from deeplora.completion.data import IdIndex
from deeplora.factorization import DeepFactorization

FORMAT = 2
FITTED_SCALARS = ("best_step_", "n_steps_", "build_seconds_", "eval_seconds_", "fit_seconds_",
                  "diverged_", "interaction_rms_", "left_init_", "selected_", "path_")


class PersistenceMixin:
    """``save``/``load`` for the estimator (which provides ``model_``, ``_set_model()`` and
    ``_device()``)."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write parameters and fitted state to ``path`` (``torch.save`` of tensors, lists and
        strings only, numpy scalars as Python numbers, atomically; read back with
        ``weights_only`` loading)."""
        from deeplora.output import write_atomic

        check_is_fitted(self, "model_")
        params = _plain(self.get_params())
        ids = None if self.ids_ is None else [_id_list(self.ids_.users),
                                              _id_list(self.ids_.items)]
        state = {"format": FORMAT, "params": params, "shape": list(self.shape_),
                 "factors": [f.detach().cpu() for f in self.model_.factors],
                 "model_init": self.model_.init, "model_scale": self.model_.scale,
                 "mean": self._mean.detach().cpu(), "row_bias": self._row_bias.detach().cpu(),
                 "col_bias": self._col_bias.detach().cpu(), "history": _plain(self.history_),
                 "clip": None if self.clip_ is None else list(self.clip_), "ids": ids,
                 "seen": None if self._seen is None else list(self._seen),
                 "fitted": _plain({k: getattr(self, k) for k in FITTED_SCALARS})}
        write_atomic(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read an estimator written by :meth:`save` (onto its ``device``).

        ``FileNotFoundError`` if ``path`` does not exist; ``ValueError`` naming ``path`` if it
        is empty, truncated, not written by :meth:`save`, or its factors, biases, ids or
        training entries do not fit its ``shape`` (m, n)."""
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise FileNotFoundError(f"no saved DeepMatrixCompletion at {name!r}")
        try:
            state = torch.load(name, weights_only=True, map_location="cpu")
        except Exception as exc:  # torch raises EOFError, RuntimeError, UnpicklingError, …
            raise ValueError(f"{name!r} is not a readable saved DeepMatrixCompletion (empty, "
                             f"truncated or another kind of file: {type(exc).__name__})"
                             ) from None
        if not (isinstance(state, dict) and state.get("format") in (1, 2)):
            raise ValueError(f"{name!r} is not a saved DeepMatrixCompletion")
        try:
            mismatch = _shape_mismatch(state)
            if mismatch is None:
                return cls._from_state(state)
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
            raise ValueError(f"{name!r} is an incomplete saved DeepMatrixCompletion "
                             f"({type(exc).__name__}: {exc})") from None
        raise ValueError(f"{name!r} is an inconsistent saved DeepMatrixCompletion: {mismatch}")

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Any:
        params = copy.deepcopy(state["params"])
        if params["clip"] is not None and params["clip"] != "auto":
            params["clip"] = tuple(params["clip"])
        est = cls(**params)
        est.shape_ = tuple(state["shape"])
        model = DeepFactorization.from_factors(state["factors"], init=state["model_init"],
                                               scale=state["model_scale"])
        est._set_model(model.to(est._device()), float(state["mean"]),
                       state["row_bias"].to(est._device()), state["col_bias"].to(est._device()))
        est.history_ = state["history"]
        est.clip_ = params["clip"] if state["format"] == 1 else (
            None if state["clip"] is None else tuple(state["clip"]))
        ids = state.get("ids")
        est.ids_ = None if ids is None else IdIndex(_id_array(ids[0]), _id_array(ids[1]))
        est._seen = tuple(state["seen"]) if state.get("seen") is not None else None
        est.diverged_ = False
        est.interaction_rms_ = est.left_init_ = None  # saved before they were measured
        for key, value in state["fitted"].items():
            setattr(est, key, value)
        return est


def _shape_mismatch(state: dict[str, Any]) -> str | None:
    """What of ``state``'s factors ``W_1 … W_L`` (their product ``W_L⋯W_1`` is m × n), biases
    (m,) and (n,), ids (m and n) and training entries (CSR row pointer (m + 1,)) disagrees
    with its ``shape`` (m, n); ``None`` if nothing does."""
    shape = tuple(state["shape"])
    if not (len(shape) == 2 and all(isinstance(d, int) and d >= 1 for d in shape)):
        return f"shape {list(shape)} is not two positive integers"
    m, n = shape
    factors = state["factors"]
    if len(factors) < 2 or not all(isinstance(f, Tensor) and f.dim() == 2 for f in factors):
        return f"{len(factors)} factors, at least 2 matrices needed"
    shapes = [tuple(f.shape) for f in factors]
    chained = all(high[1] == low[0] for low, high in itertools.pairwise(shapes))
    if not (chained and (shapes[-1][0], shapes[0][1]) == shape):
        return f"factors W_1 … W_L of shapes {shapes} do not multiply to {m}×{n}"
    for key, size in (("row_bias", m), ("col_bias", n)):
        if tuple(state[key].shape) != (size,):
            return f"{key} has shape {tuple(state[key].shape)}, not ({size},)"
    ids = state.get("ids")
    if ids is not None and (len(ids[0]), len(ids[1])) != shape:
        return f"{len(ids[0])} user ids and {len(ids[1])} item ids for {m}×{n}"
    seen = state.get("seen")
    if seen is not None and len(seen[0]) != m + 1:
        return f"the training entries' row pointer has {len(seen[0])} entries, not {m + 1}"
    return None


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and tuples as lists, in dicts and lists:
    what ``weights_only`` loading reads back (it refuses numpy scalars)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _id_list(ids: np.ndarray) -> Tensor | list[str]:
    return torch.from_numpy(ids) if ids.dtype.kind in "iu" else [str(x) for x in ids]


def _id_array(ids: Tensor | list[str]) -> np.ndarray:
    return ids.numpy() if isinstance(ids, Tensor) else np.array(ids, dtype=str)
