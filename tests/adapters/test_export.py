import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from deeplora.adapters import DeepLoraConfig, adapter_factorizations
from deeplora.adapters.export import export_lora, lora_factors

from .helpers import inputs_for, logits, tiny_bert, tiny_gpt2


def trained(model: torch.nn.Module, seed: int = 3) -> None:
    """Move every trainable parameter as training would; then make the first adapted layer's
    ΔW exactly rank 2 (its inner factor keeps two of four directions)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        first = next(iter(adapter_factorizations(model).values()))
        first.factors[1][2:] = 0.0


def saved_base(kind: str, folder: Path) -> torch.nn.Module:
    """A tiny model saved to ``folder`` and loaded back, so adapters record it as their base."""
    (tiny_bert if kind == "bert" else tiny_gpt2)().save_pretrained(folder)
    auto = AutoModelForSequenceClassification if kind == "bert" else AutoModelForCausalLM
    return auto.from_pretrained(folder).eval()


def test_lora_factors_keep_the_numerical_rank() -> None:
    u, _ = torch.linalg.qr(torch.randn(12, 5, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(9, 5, dtype=torch.float64))
    s = torch.tensor([3.0, 1.0, 0.5, 1e-6, 0.0], dtype=torch.float64)
    delta = u @ torch.diag(s) @ v.T
    b, a, cut = lora_factors(delta, rtol=1e-4)
    assert (b.shape, a.shape) == ((12, 3), (3, 9)) and cut == pytest.approx(1e-6 / 3)
    torch.testing.assert_close(b @ a, u[:, :3] @ torch.diag(s[:3]) @ v[:, :3].T)
    torch.testing.assert_close(b.T @ b, a @ a.T)  # balanced: both carry Σ^{1/2}
    assert lora_factors(delta, rtol=0.0, atol=0.7)[0].shape == (12, 2)
    assert lora_factors(torch.zeros(4, 3))[0].shape == (4, 0)


@pytest.mark.parametrize(("kind", "targets"), [("bert", "all-dense"), ("gpt2", "all-linear")])
def test_export_is_a_peft_lora_folder_that_reproduces_the_model(
    kind: str, targets: str, tmp_path: Path
) -> None:
    base = saved_base(kind, tmp_path / "base")
    config = DeepLoraConfig(r=4, target_modules=targets,
                            modules_to_save=["classifier"] if kind == "bert" else None)
    model = get_peft_model(base, config)
    trained(model)
    inputs = {k: v for k, v in inputs_for(model).items() if k != "labels"}
    report = export_lora(model, tmp_path / "lora", batch=inputs)

    first = next(iter(report.ranks))
    assert report.ranks[first] == 2 and set(report.ranks.values()) == {2, 4}
    assert report.dropped == [] and report.max_output_difference < 1e-5
    written = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert written["peft_type"] == "LORA" and written["r"] == written["lora_alpha"] == 4
    assert written["rank_pattern"] == written["alpha_pattern"] and len(written["rank_pattern"]) == 1
    assert written["fan_in_fan_out"] == (kind == "gpt2")
    assert written["base_model_name_or_path"] == str(tmp_path / "base")
    tensors = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert report.size_bytes == (tmp_path / "lora" / "adapter_model.safetensors").stat().st_size
    assert report.lora_parameters == sum(t.numel() for k, t in tensors.items() if "lora_" in k)
    if kind == "bert":
        word = "base_model.model.bert.embeddings.word_embeddings"  # the first, rank-2 layer
        assert tensors[f"{word}.lora_embedding_A"].shape == (2, 64)  # rank × vocabulary
        assert tensors[f"{word}.lora_embedding_B"].shape == (16, 2)
        assert "base_model.model.classifier.weight" in tensors  # the trained head, as saved

    expected = logits(model, inputs)
    loaded = PeftModel.from_pretrained(saved_base(kind, tmp_path / "base2"), tmp_path / "lora")
    assert isinstance(loaded.peft_config["default"], LoraConfig)
    torch.testing.assert_close(logits(loaded, inputs), expected, rtol=0, atol=1e-5)


def test_stock_peft_without_deeplora_loads_the_export(tmp_path: Path) -> None:
    """A fresh interpreter in which ``import deeplora`` fails loads the exported folder with
    transformers + PEFT only and reproduces the Deep LoRA model's outputs."""
    base = saved_base("bert", tmp_path / "base")
    model = get_peft_model(base, DeepLoraConfig(r=4, target_modules="all-dense",
                                                modules_to_save=["classifier"]))
    trained(model)
    inputs = {k: v for k, v in inputs_for(model, batch=5).items() if k != "labels"}
    export_lora(model, tmp_path / "lora")
    torch.save(inputs, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["deeplora"] = None  # any import of deeplora now fails
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification
        base = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'base')!r})
        model = PeftModel.from_pretrained(base, {str(tmp_path / 'lora')!r}).eval()
        with torch.no_grad():
            out = model(**torch.load({str(tmp_path / 'inputs.pt')!r})).logits
        torch.save(out, {str(tmp_path / 'out.pt')!r})
        try:
            import deeplora  # noqa: F401
        except ImportError:
            print("deeplora not importable")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                            "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deeplora not importable" in done.stdout
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), logits(model, inputs),
                               rtol=0, atol=1e-5)


def test_export_refuses_a_used_folder_and_an_all_zero_adapter(tmp_path: Path) -> None:
    model = get_peft_model(tiny_bert(), DeepLoraConfig(r=2, depth=2, init="lora"))  # ΔW = 0
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        export_lora(model, tmp_path / "used")
    with pytest.raises(ValueError, match="numerically zero"):
        export_lora(model, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["used"]  # no temporary folder left


def test_cli_export_lora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deeplora.cli import main

    base = saved_base("bert", tmp_path / "base")
    model = get_peft_model(base, DeepLoraConfig(r=4, target_modules="all-dense",
                                                task_type="SEQ_CLS"))
    trained(model)
    model.save_pretrained(tmp_path / "deep")
    argv = ["export-lora", str(tmp_path / "deep"), str(tmp_path / "lora"), "--tol", "1e-4",
            "--report", str(tmp_path / "report.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "exported 15 layers" in out and "1 layers at rank 2, 14 layers at rank 4" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["max_output_difference"] < 1e-5
    assert main(argv) == 2  # OUT is not empty now
    assert "not an empty folder" in capsys.readouterr().err


def linear_mlp(seed: int = 0) -> torch.nn.Sequential:
    """Linear(6, 5) → tanh → Linear(5, 7) → tanh → Linear(7, 4), float64."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 7),
                               torch.nn.Tanh(), torch.nn.Linear(7, 4)).double().eval()


@pytest.mark.parametrize("rtol", [1e-9, 1e-4])
def test_exported_lora_delta_is_the_factor_product_or_its_best_truncation(
    rtol: float, tmp_path: Path
) -> None:
    """float64: stock PEFT's LoRA ΔW of each exported layer (``get_delta_weight``, scaling
    included) equals W₃W₂W₁ formed from the factors; layer "2" has σ₃/σ₁ ≈ 1e-6, kept at
    rtol = 1e-9 (exact export: only rounding is cut), cut at 1e-4 with ‖ΔW − ΔW_k‖₂ = σ₃
    (NumPy's SVD)."""
    model = get_peft_model(linear_mlp(), DeepLoraConfig(r=3, target_modules=["0", "2", "4"]))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        adapter_factorizations(model)["2"].factors[1].copy_(
            torch.diag(torch.tensor([1.0, 0.5, 1e-6], dtype=torch.float64)))
    products = {name: torch.linalg.multi_dot([f.detach() for f in reversed(fac.factors)])
                for name, fac in adapter_factorizations(model).items()}
    report = export_lora(model, tmp_path / "lora", rtol=rtol, dtype=torch.float64)
    exported = PeftModel.from_pretrained(linear_mlp(), tmp_path / "lora").eval()
    assert isinstance(exported.peft_config["default"], LoraConfig)
    for name, product in products.items():
        s = np.linalg.svd(product.numpy(), compute_uv=False)
        layer = exported.get_base_model().get_submodule(name)
        assert layer.scaling["default"] == 1.0
        delta = layer.get_delta_weight("default")
        kept = 2 if (name == "2" and rtol > 1e-6) else 3
        assert report.ranks[name] == kept and layer.r["default"] == kept
        assert report.truncation[name] == pytest.approx(s[kept] / s[0] if kept < 3 else 0.0)
        gap = np.linalg.norm((delta - product).numpy(), ord=2)
        assert gap == pytest.approx(s[kept] if kept < 3 else 0.0, rel=1e-6, abs=1e-12)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        difference = float((exported(x) - model(x)).abs().max())
    assert difference < (1e-5 if rtol > 1e-6 else 1e-12)


@pytest.mark.parametrize("targets", [r"0|inner\.\d", r"0|inner\.1"])
def test_exported_lora_adapts_exactly_the_exported_layers(targets: str, tmp_path: Path) -> None:
    """Layer ``0`` exported at rank 1, the others at 3. The LoraConfig listed the names and
    keyed rank_pattern by ``0``, which PEFT matches as suffixes: ``inner.0`` took rank 1 (the
    export failed to load: size mismatch) or, not exported, got a LoRA layer of its own."""
    def build() -> torch.nn.Sequential:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 5))
        model.add_module("inner", torch.nn.Sequential(torch.nn.Linear(5, 5),
                                                      torch.nn.Linear(5, 5)))
        return model.double().eval()

    model = get_peft_model(build(), DeepLoraConfig(r=3, target_modules=targets,
                                                   init_scale=0.5))
    with torch.no_grad():
        adapter_factorizations(model)["0"].factors[1][1:] = 0.0
    report = export_lora(model, tmp_path / "lora")
    exported = PeftModel.from_pretrained(build(), tmp_path / "lora").eval()
    lora_ranks = {name: module.r["default"] for name, module in
                  exported.get_base_model().named_modules() if hasattr(module, "lora_A")}
    assert lora_ranks == report.ranks == {name: 1 if name == "0" else 3
                                          for name in adapter_factorizations(model)}
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        assert float((exported(x) - model(x)).abs().max()) < 1e-6
