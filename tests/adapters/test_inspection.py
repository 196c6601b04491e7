import math

import numpy as np
import pytest
import torch
from peft import get_peft_model

from deeplora.adapters import (
    DeepLoraConfig,
    adapter_deltas,
    adapter_numerical_ranks,
    adapter_principal_angles,
    adapter_singular_values,
    adapter_subspace_cosines,
    build_adapter_config,
)
from deeplora.adapters.inspection import (
    adapter_subspaces,
    principal_angle_cosines,
    subspace_principal_angles,
)

from .helpers import tiny_bert, tiny_gpt2


def test_deltas_of_deep_lora_are_the_factor_products() -> None:
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=4, target_modules="query-value"))
    deltas = adapter_deltas(model)
    assert sorted(deltas) == [f"bert.encoder.layer.{i}.attention.self.{m}"
                              for i in range(2) for m in ("query", "value")]
    layer = model.get_base_model().get_submodule("bert.encoder.layer.0.attention.self.query")
    w1, w2, w3 = layer.deeplora_factors["default"].factors
    torch.testing.assert_close(deltas["bert.encoder.layer.0.attention.self.query"], w3 @ w2 @ w1)
    assert not any(d.requires_grad for d in deltas.values())


def test_deltas_of_peft_lora_include_its_scaling_and_are_d_out_by_d_in() -> None:
    base = tiny_gpt2()
    config = build_adapter_config("peft-lora", r=4, target_modules=["c_attn"],
                                  init_lora_weights=False)
    model = get_peft_model(base, config)
    layer = model.get_base_model().transformer.h[0].attn.c_attn
    delta = adapter_deltas(model)["transformer.h.0.attn.c_attn"]
    assert delta.shape == (48, 16) and layer.scaling["default"] == 1.0
    torch.testing.assert_close(delta, layer.get_delta_weight("default").T)


def test_no_adapter_layers_is_an_error() -> None:
    with pytest.raises(ValueError, match="no LoRA or Deep LoRA layer"):
        adapter_deltas(tiny_bert())


def test_spectrum_and_rank_of_a_fresh_deep_lora() -> None:
    eps, depth, r = 1e-2, 3, 4
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=r, depth=depth, init_scale=eps))
    deltas = adapter_deltas(model)
    for values in adapter_singular_values(deltas).values():
        assert values.dtype == torch.float64 and values.shape == (16,)
        torch.testing.assert_close(values[:r], torch.full((r,), eps**depth, dtype=torch.float64),
                                   rtol=1e-4, atol=0)
    assert set(adapter_numerical_ranks(deltas, rtol=1e-3).values()) == {r}
    assert set(adapter_numerical_ranks(deltas, atol=1e-3).values()) == {0}


def test_default_rank_tolerance_follows_the_dtype_of_delta_w_as_matrix_rank_does() -> None:
    """A float32 rank-2 ΔW = B A carries float32 rounding (~1e-7·σ₁) in its other singular
    values: NumPy's matrix_rank (the paper's LoRA count) says 2, a float64 eps said 16."""
    generator = torch.Generator().manual_seed(0)
    b = torch.linalg.qr(torch.randn(16, 2, generator=generator))[0]
    a = torch.linalg.qr(torch.randn(32, 2, generator=generator))[0].T
    deltas = {"q": b @ a, "q64": b.double() @ a.double()}
    assert adapter_numerical_ranks(deltas) == {"q": 2, "q64": 2}
    assert adapter_numerical_ranks(deltas) == {
        name: int(np.linalg.matrix_rank(delta.numpy())) for name, delta in deltas.items()}


def rotated(theta: float) -> torch.Tensor:
    """A rank-2 6×6 matrix whose top-2 left subspace is span(e₀, cos θ e₁ + sin θ e₂)."""
    left = torch.zeros(6, 2, dtype=torch.float64)
    left[0, 0] = 1.0
    left[1, 1], left[2, 1] = math.cos(theta), math.sin(theta)
    return left @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ torch.eye(2, 6,
                                                                                     dtype=left.dtype)


def test_principal_angles_between_two_checkpoints() -> None:
    before = {"q": rotated(0.0), "v": rotated(0.0)}
    after = {"q": rotated(0.3), "v": rotated(0.0), "only_after": rotated(1.0)}
    angles = adapter_principal_angles(before, after, rank=2)
    assert sorted(angles) == ["q", "v"]
    np.testing.assert_allclose(angles["q"], [0.3, 0.0], atol=1e-12)
    np.testing.assert_allclose(angles["v"], [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(adapter_principal_angles(before, after, 2, side="right")["q"],
                               [0.0, 0.0], atol=1e-7)
    strict = adapter_subspace_cosines(before, after, rank=2, angle="largest")
    assert strict["q"] == pytest.approx(math.cos(0.3)) and strict["v"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="side"):
        adapter_principal_angles(before, after, side="up")


def test_angles_from_kept_bases_equal_those_from_the_deltas() -> None:
    """A run keeps only the top-r bases of each snapshot (adapter_subspaces): the angles and
    cosines from them are those of the ΔWs, for the layers of both, in the first one's order."""
    before = {"v": rotated(0.0), "q": rotated(0.0)}
    after = {"q": rotated(0.3), "v": rotated(0.1), "only_after": rotated(1.0)}
    bases = adapter_subspaces(before, rank=2)
    assert [b.shape for b in bases.values()] == [(6, 2), (6, 2)]
    assert adapter_subspaces(before, rank=1, side="right")["q"].shape == (6, 1)
    angles = subspace_principal_angles(bases, adapter_subspaces(after, rank=2))
    assert list(angles) == ["v", "q"]
    np.testing.assert_allclose(angles["q"], adapter_principal_angles(before, after, 2)["q"])
    for kind in ("smallest", "largest"):
        assert principal_angle_cosines(angles, kind) == adapter_subspace_cosines(
            before, after, 2, kind)
    assert principal_angle_cosines(angles, "largest")["v"] == pytest.approx(math.cos(0.1))


def test_subspace_cosine_is_the_papers_figure_1_quantity() -> None:
    """PAPER.md (corrected 2026-11-30): the authors plot σ_max(U_tᵀ U_T), the cosine of the
    *smallest* principal angle; e₀ is shared by both checkpoints' subspaces, so it is 1."""
    cosines = adapter_subspace_cosines({"q": rotated(0.0)}, {"q": rotated(0.3)}, rank=2)
    assert cosines["q"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="angle"):
        adapter_subspace_cosines({"q": rotated(0.0)}, {"q": rotated(0.3)}, angle="mean")


def with_spectrum(values: list[float], shape: tuple[int, int], seed: int) -> np.ndarray:
    """A d_out×d_in matrix U diag(values) Vᵀ with random orthonormal U, V."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((shape[0], len(values))))[0]
    v = np.linalg.qr(rng.standard_normal((shape[1], len(values))))[0]
    return u @ np.diag(values) @ v.T


def test_spectrum_ranks_and_angles_agree_with_numpy() -> None:
    """Hand-built ΔWs of known spectrum: singular values, ranks at every tolerance kind
    (NumPy's matrix_rank with the same threshold) and principal angles / cosines
    (arccos of the singular values of U_aᵀ U_b, U from NumPy's SVD) from independent code."""
    spectrum = [2.0, 0.9, 3e-3, 5e-4, 1e-9]
    a = {"tall": with_spectrum(spectrum, (12, 7), 0), "wide": with_spectrum(spectrum, (6, 11), 1)}
    b = {"tall": with_spectrum(spectrum, (12, 7), 2), "wide": a["wide"] + 0.3 * with_spectrum(
        [1.0, 0.5], (6, 11), 3)}
    deltas_a = {k: torch.from_numpy(v) for k, v in a.items()}
    deltas_b = {k: torch.from_numpy(v) for k, v in b.items()}
    for values in adapter_singular_values(deltas_a).values():
        np.testing.assert_allclose(values[:5].numpy(), spectrum, rtol=1e-9, atol=1e-14)
    for atol, rtol in ((1e-3, 0.0), (0.0, 1e-3), (1e-3, 1e-6), (0.0, 1e-12)):
        expected = {k: int(np.linalg.matrix_rank(v, tol=max(atol, rtol * 2.0)))
                    for k, v in a.items()}
        assert adapter_numerical_ranks(deltas_a, atol=atol, rtol=rtol) == expected
    assert adapter_numerical_ranks(deltas_a, atol=1e-3) == {"tall": 3, "wide": 3}
    assert adapter_numerical_ranks(deltas_a) == {k: int(np.linalg.matrix_rank(v))
                                                 for k, v in a.items()} == {"tall": 5, "wide": 5}
    for rank in (1, 2, 3):
        for side, index in (("left", 0), ("right", 2)):
            got = adapter_principal_angles(deltas_a, deltas_b, rank, side)
            for name in a:
                ua, ub = (np.linalg.svd(m[name])[index] for m in (a, b))
                if side == "right":  # rows of Vᵀ
                    ua, ub = ua.T, ub.T
                cosines = np.linalg.svd(ua[:, :rank].T @ ub[:, :rank], compute_uv=False)
                np.testing.assert_allclose(np.sort(got[name])[::-1],
                                           np.arccos(np.clip(np.sort(cosines), -1, 1)),
                                           atol=1e-7)
                if side == "left":
                    for angle, pick in (("smallest", cosines.max()), ("largest", cosines.min())):
                        assert adapter_subspace_cosines(deltas_a, deltas_b, rank, angle)[
                            name] == pytest.approx(pick, abs=1e-10)
