import importlib
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

# Modules that build the compressed subspaces with deeplora.factorization.compress.compressed_bases
CONSTRUCTION_USERS = ("deeplora.factorization.compress", "deeplora.completion.sparse",
                      "deeplora.adapters.compress")


@pytest.fixture
def one_thread():
    """Small-matrix tests run faster on one thread (and do not thrash a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _input_side_bases(grad, rank, isometry, isometry_t, generator=None):
    """Wrong for m > n: the paper's input-side formula V = orth[V_E, Qᵀ U_E], U = Q V on
    every shape, so span(U) keeps only Q Qᵀ U_E."""
    core = importlib.import_module("deeplora.factorization.compress")
    left, right = core._top_singular_vectors(grad, rank, generator)
    right = core.orthonormal_union(right, isometry_t(left))
    return isometry(right), right


def _stacked_bases(grad, rank, isometry, isometry_t, generator=None, scale=1e-3):
    """Wrong when E has more than r̂ significant directions: the authors' compute_factor_v3,
    V = top-2r̂ right singular vectors of G₁ stacked over G₁ᵀ W₁(0). With G₁ = ε^{L-1} Pᵀ E and
    P Pᵀ = I these are those of [E; ε Eᵀ Q] (the common factor ε^{L-1} dropped); U = Q V."""
    e = grad.double() if isinstance(grad, Tensor) else torch.from_numpy(grad.toarray())
    stack = torch.cat([e, scale * isometry_t(e).T])
    right = torch.linalg.svd(stack, full_matrices=False).Vh[: 2 * rank].T.contiguous()
    return isometry(right), right


WRONG_CONSTRUCTIONS = {"input-side": _input_side_bases, "stacked": _stacked_bases}


@pytest.fixture
def wrong_construction(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``apply(name)`` replaces the compressed construction in every code path that uses it by
    one of :data:`WRONG_CONSTRUCTIONS` for the rest of the test (mutation checks)."""

    def apply(name: str) -> None:
        for module in CONSTRUCTION_USERS:
            target = importlib.import_module(module)
            assert hasattr(target, "compressed_bases"), module
            monkeypatch.setattr(target, "compressed_bases", WRONG_CONSTRUCTIONS[name])

    return apply
