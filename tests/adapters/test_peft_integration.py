import copy
from pathlib import Path

import pytest
import torch
from peft import (
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from deeplora.adapters import (
    DeepLoraConfig,
    DeepLoraLayer,
    adapter_deltas,
    adapter_factorizations,
)
from deeplora.factorization.deep import DeepFactorization

from .helpers import TINY, inputs_for, logits, tiny_bert, tiny_gpt2


def wrap(model: PreTrainedModel, seed: int = 0, **kwargs: object) -> PeftModel:
    torch.manual_seed(seed)
    kwargs.setdefault("r", 4)
    kwargs.setdefault("target_modules", "all-linear")
    return get_peft_model(model, DeepLoraConfig(**kwargs))


def perturb(model: nn.Module, seed: int = 3, scale: float = 0.3) -> None:
    """Move every trainable parameter away from its (tiny) initialization, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert not any(isinstance(m, DeepLoraLayer) for m in model.modules())
    assert not hasattr(model, "peft_config")
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(("kind", "depth"), [("bert", 3), ("bert", 2), ("t5", 3), ("gpt2", 3)])
def test_fresh_adapter_moves_outputs_by_order_eps_to_the_depth(kind: str, depth: int) -> None:
    """A fresh wrap changes the outputs by O(ε^L): halving ε divides the change by 2^L."""
    base = TINY[kind](dtype=torch.float64)
    inputs = inputs_for(base)
    reference = logits(base, inputs)

    def deviation(eps: float) -> float:
        model = wrap(TINY[kind](dtype=torch.float64), depth=depth, init_scale=eps)
        return float((logits(model, inputs) - reference).abs().max())

    ratio = deviation(0.1) / deviation(0.05)
    assert abs(ratio - 2**depth) < 0.15 * 2**depth
    tiny = deviation(1e-3)
    assert 0 < tiny < 1e-3**depth * 100 * float(reference.abs().max())


def test_forward_and_backward_never_form_delta_w(monkeypatch: pytest.MonkeyPatch) -> None:
    model = wrap(tiny_bert())

    def refuse(self: DeepFactorization) -> torch.Tensor:
        raise AssertionError("ΔW formed")

    monkeypatch.setattr(DeepFactorization, "product", refuse)
    model(**inputs_for(model)).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_merge_unmerge_round_trip(kind: str) -> None:
    base = TINY[kind]()
    original = snapshot(base)
    model = wrap(base)
    perturb(model)
    inputs = inputs_for(model)
    unmerged = logits(model, inputs)
    layer_name, delta = next(iter(adapter_deltas(model).items()))
    layer = model.get_base_model().get_submodule(layer_name)
    weight_key = f"{layer_name}.weight"

    model.merge_adapter()
    merged_weight = layer.get_base_layer().weight
    expected = original[weight_key] + (delta.T if kind == "gpt2" else delta)
    torch.testing.assert_close(merged_weight, expected)
    torch.testing.assert_close(logits(model, inputs), unmerged, rtol=1e-5, atol=1e-5)

    model.unmerge_adapter()
    torch.testing.assert_close(layer.get_base_layer().weight, original[weight_key])
    torch.testing.assert_close(logits(model, inputs), unmerged, rtol=1e-5, atol=1e-5)

    plain = model.merge_and_unload()
    assert not any(isinstance(m, DeepLoraLayer) for m in plain.modules())
    torch.testing.assert_close(logits(plain, inputs), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "t5", "gpt2"])
def test_save_load_round_trip_gives_identical_outputs(kind: str, tmp_path: Path) -> None:
    save = ["classifier"] if kind == "bert" else None
    model = wrap(TINY[kind](), modules_to_save=save)
    perturb(model)
    inputs = inputs_for(model)
    expected = logits(model, inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()

    for name, low_memory in (("default", False), ("other", True)):
        loaded = PeftModel.from_pretrained(TINY[kind](), tmp_path, adapter_name=name,
                                           low_cpu_mem_usage=low_memory)
        assert isinstance(loaded.peft_config[name], DeepLoraConfig)
        torch.testing.assert_close(logits(loaded, inputs), expected)


def test_low_level_peft_api() -> None:
    model = inject_adapter_in_model(DeepLoraConfig(r=4), tiny_bert())
    perturb(model)
    state = get_peft_model_state_dict(model)
    assert all(".deeplora_factors.factors." in key for key in state)
    other = inject_adapter_in_model(DeepLoraConfig(r=4), tiny_bert())
    result = set_peft_model_state_dict(other, state)
    assert not result.unexpected_keys
    inputs = inputs_for(model)
    torch.testing.assert_close(logits(other, inputs), logits(model, inputs))


def test_only_adapters_and_modules_to_save_train() -> None:
    model = wrap(tiny_bert(), modules_to_save=["classifier"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    assert all(".deeplora_factors." in n or ".modules_to_save." in n for n in trainable)
    assert any(".modules_to_save." in n for n in trainable)
    assert len([n for n in trainable if ".deeplora_factors." in n]) == 13 * 3


def test_dropout_acts_on_the_adapter_input_in_training_only() -> None:
    model = wrap(tiny_bert(), dropout=0.5, target_modules="query-value")
    base = model.get_base_model()
    base.bert.embeddings.dropout.p = 0.0
    for layer in base.bert.encoder.layer:  # leave the adapters as the only source of randomness
        layer.attention.self.dropout.p = layer.attention.output.dropout.p = 0.0
        layer.output.dropout.p = 0.0
    base.dropout.p = 0.0
    perturb(model)
    inputs = {k: v for k, v in inputs_for(model).items() if k != "labels"}
    model.train()
    assert not torch.equal(model(**inputs).logits, model(**inputs).logits)
    model.eval()
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)


def test_second_adapter_and_switching() -> None:
    model = wrap(tiny_bert(), target_modules="query-value")
    perturb(model)
    inputs = inputs_for(model)
    first = logits(model, inputs)
    model.add_adapter("second", DeepLoraConfig(r=2, depth=4, target_modules="query-value"))
    model.set_adapter("second")
    assert not torch.allclose(logits(model, inputs), first)
    model.set_adapter("default")
    assert torch.equal(logits(model, inputs), first)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_base_keeps_fp32_adapters(dtype: torch.dtype) -> None:
    eps, depth = 1e-3, 3
    model = wrap(tiny_bert(dtype=dtype), init_scale=eps, depth=depth)
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in adapters} == {torch.float32}
    for delta in adapter_deltas(model).values():
        top = torch.linalg.svdvals(delta.double())[:4]
        torch.testing.assert_close(top, torch.full_like(top, eps**depth), rtol=1e-4, atol=0)
        assert torch.count_nonzero(delta.half()) == 0  # what an fp16 adapter would hold
    output = model(**inputs_for(model))
    assert output.logits.dtype == dtype
    output.loss.backward()
    for p in adapters:
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def bad_wrap_leaves_model_untouched(model: PreTrainedModel, config: DeepLoraConfig,
                                    message: str) -> None:
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        get_peft_model(model, config)
    assert_untouched(model, before)


def test_rank_too_large_is_refused_before_any_change() -> None:
    bad_wrap_leaves_model_untouched(tiny_bert(), DeepLoraConfig(r=17, target_modules="all-linear"),
                                    r"r=17 must be in \[1, min\(d_out, d_in\)\] = \[1, 16\]")


def test_unknown_target_names_are_refused_before_any_change() -> None:
    bad_wrap_leaves_model_untouched(tiny_bert(), DeepLoraConfig(target_modules=["query", "qq"]),
                                    r"\['qq'\] match no module")


def test_loading_into_a_model_of_other_shapes_is_refused(tmp_path: Path) -> None:
    wrap(tiny_bert()).save_pretrained(tmp_path)
    torch.manual_seed(0)
    other = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=2))
    before = snapshot(other)
    with pytest.raises(ValueError, match=r"\(d_out, d_in\) differ.*adapter \(16, 16\) vs model "
                                         r"\(24, 24\)"):
        PeftModel.from_pretrained(other, tmp_path)
    assert_untouched(other, before)


def test_conv1d_adapter_delta_is_d_out_by_d_in() -> None:
    model = wrap(tiny_gpt2(), target_modules="query-value")
    deltas = adapter_deltas(model)
    assert {tuple(d.shape) for d in deltas.values()} == {(48, 16)}


def test_embedded_minilm_wrap_save_load_merge(minilm: PreTrainedModel, tmp_path: Path) -> None:
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 16), generator=torch.Generator()
                                         .manual_seed(0))}
    with torch.no_grad():
        reference = minilm(**inputs).last_hidden_state
    model = wrap(minilm, r=8)
    with torch.no_grad():
        fresh = model(**inputs).last_hidden_state
    torch.testing.assert_close(fresh, reference, rtol=0, atol=1e-5)
    perturb(model, scale=0.05)
    with torch.no_grad():
        trained = model(**inputs).last_hidden_state
    assert (trained - reference).abs().max() > 1e-2
    model.save_pretrained(tmp_path)
    from transformers import AutoModel

    from deeplora.adapters import embedded_model_path

    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(embedded_model_path()), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).last_hidden_state, trained)
        merged = loaded.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).last_hidden_state, trained, rtol=1e-4,
                                   atol=1e-4)


class FixedBatches(torch.utils.data.Dataset):
    """The same 8 labelled sequences, as a Trainer dataset."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(5)
        self.ids = torch.randint(1, 64, (8, 10), generator=generator)
        self.labels = torch.arange(8) % 2

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def test_stock_trainer_trains_the_adapters(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    data = FixedBatches()
    base = tiny_bert()
    torch.nn.init.normal_(base.classifier.weight, std=1.0)  # a frozen head the output can move
    model = wrap(base)
    base_before = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters_before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(input_ids=data.ids, labels=data.labels).loss)

    initial = loss()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=8,
                             learning_rate=1e-2, use_cpu=True, report_to="none",
                             save_strategy="no", logging_strategy="no", seed=0)
    Trainer(model=model, args=args, train_dataset=data).train()
    assert loss() < 0.9 * initial
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[n], p) for n, p in adapters_before.items())
    assert all(torch.equal(params[n], p) for n, p in base_before.items())


@pytest.mark.parametrize("init", ["orthogonal", "lora", "lora-hu"])
def test_embedding_adapters_merge_unmerge_save_load(init: str, tmp_path: Path) -> None:
    """Word and position embeddings (the paper's all-dense): ΔW is (dim × num_embeddings), the
    merge adds ΔWᵀ to the stored weight, and outputs survive merge, unmerge, save and load."""
    base = tiny_bert()
    original = snapshot(base)
    depth = 3 if init == "orthogonal" else 2
    model = wrap(base, target_modules="all-dense", init=init, depth=depth, dropout=0.5)
    perturb(model)
    model.eval()
    inputs = inputs_for(model)
    unmerged = logits(model, inputs)
    deltas = adapter_deltas(model)
    key = "bert.embeddings.word_embeddings"
    assert deltas[key].shape == (16, 64)
    assert deltas["bert.embeddings.position_embeddings"].shape == (16, 32)
    model.train()  # adapter dropout never touches token ids
    model.get_base_model().bert.embeddings.dropout.p = 0.0
    embeddings = model.get_base_model().bert.embeddings.word_embeddings
    ids = inputs["input_ids"]
    assert torch.equal(embeddings(ids), embeddings(ids))
    torch.testing.assert_close(embeddings(ids), original[f"{key}.weight"][ids]
                               + deltas[key].T[ids])
    model.eval()

    model.merge_adapter()
    torch.testing.assert_close(embeddings.get_base_layer().weight,
                               original[f"{key}.weight"] + deltas[key].T)
    torch.testing.assert_close(logits(model, inputs), unmerged, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(embeddings.get_base_layer().weight, original[f"{key}.weight"])

    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path)
    torch.testing.assert_close(logits(loaded, inputs), unmerged)
    plain = loaded.merge_and_unload()
    assert isinstance(plain.bert.embeddings.word_embeddings, nn.Embedding)
    torch.testing.assert_close(logits(plain, inputs), unmerged, rtol=1e-5, atol=1e-5)


def test_merging_an_embedding_tied_to_the_lm_head_is_refused() -> None:
    model = wrap(tiny_gpt2(), target_modules="all-dense")
    perturb(model)
    before = snapshot(model)
    inputs = inputs_for(model)
    assert torch.isfinite(logits(model, inputs)).all()
    with pytest.raises(ValueError, match=r"transformer\.wte.*tied to the output embeddings"):
        model.merge_adapter()
    with pytest.raises(ValueError, match="tied to the output embeddings"):
        model.merge_and_unload()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("target", ["bert.embeddings.word_embeddings",
                                    "bert.encoder.layer.0.intermediate.dense"])
def test_delta_weight_gradient_is_the_gradient_of_delta_w(target: str) -> None:
    """The layer's ∂ℒ/∂ΔW from its input and output gradient (used by compression) equals
    autograd's gradient with respect to a materialized ΔW."""
    model = wrap(tiny_bert(dtype=torch.float64), target_modules=[target])
    layer = model.get_base_model().get_submodule(target)
    captured: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["x"] = args[0]
        output.register_hook(lambda g: captured.__setitem__("g", g))

    handle = layer.register_forward_hook(hook)
    model(**inputs_for(model)).loss.backward()
    handle.remove()
    got = layer.delta_weight_gradient(captured["x"], captured["g"])

    delta = layer.get_delta_weight("default").detach().requires_grad_(True)
    plain = tiny_bert(dtype=torch.float64)
    weight = plain.get_submodule(target).weight.detach()
    merged = weight + (delta.T if layer.is_embedding else delta)
    torch.func.functional_call(plain, {f"{target}.weight": merged},
                               kwargs=inputs_for(plain)).loss.backward()
    torch.testing.assert_close(got, delta.grad)


def adapter_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(**inputs_for(model)).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("targets", "reentrant"), [("query-value", True),
                                                    ("query-value", False),
                                                    ("all-dense", True)])
def test_gradient_checkpointing_gives_the_same_gradients(targets: str, reentrant: bool) -> None:
    """Checkpointing enabled on the base before wrapping: PEFT calls
    ``enable_input_require_grads`` (needed by reentrant checkpointing when the embeddings are
    frozen), and every adapter gradient equals the one without checkpointing."""
    def build(checkpointing: bool) -> PeftModel:
        base = tiny_bert(dtype=torch.float64)
        if checkpointing:
            base.gradient_checkpointing_enable({"use_reentrant": reentrant})
        model = wrap(base, target_modules=targets)
        perturb(model)
        return model.train()  # checkpointing is active in training mode only (no dropout here)

    for module in (plain := build(False)).modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    expected = adapter_grads(plain)
    model = build(True)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    assert model.get_base_model().is_gradient_checkpointing
    got = adapter_grads(model)
    assert got.keys() == expected.keys() and len(got) > 0
    for name, grad in got.items():
        assert torch.count_nonzero(grad) > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=1e-9, atol=1e-12)


def test_torch_compile_matches_eager() -> None:
    """Dynamo traces the Deep LoRA layers (Linear and Embedding) and AOT autograd builds their
    backward; the ``aot_eager`` backend skips inductor's C++ code generation (minutes on this
    CPU); inductor itself runs in ``benchmarks/bench_training_memory.py``."""
    model = wrap(tiny_bert(), target_modules="all-dense")
    perturb(model)
    inputs = inputs_for(model)
    runs = {}
    for name, run in (("eager", model), ("compiled", torch.compile(model, backend="aot_eager"))):
        model.zero_grad(set_to_none=True)
        output = run(**inputs)
        output.loss.backward()
        runs[name] = (output.logits.detach(), {n: p.grad.clone() for n, p in
                                               model.named_parameters() if p.requires_grad})
    (expected_logits, expected), (got_logits, got) = runs["eager"], runs["compiled"]
    torch.testing.assert_close(got_logits, expected_logits, rtol=1e-5, atol=1e-6)
    assert got.keys() == expected.keys() and len(got) == 3 * 15
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)


def test_auto_peft_classes_load_a_saved_deep_lora_folder(tmp_path: Path) -> None:
    """``AutoPeftModelForSequenceClassification`` / ``…ForCausalLM`` rebuild base + adapter from
    the folder alone (base_model_name_or_path, task_type) once deeplora is imported."""
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cases = [("bert", AutoModelForSequenceClassification, AutoPeftModelForSequenceClassification,
              "SEQ_CLS"),
             ("gpt2", AutoModelForCausalLM, AutoPeftModelForCausalLM, "CAUSAL_LM")]
    for kind, auto, auto_peft, task in cases:
        TINY[kind]().save_pretrained(tmp_path / kind)
        model = wrap(auto.from_pretrained(tmp_path / kind), task_type=task,
                     target_modules="all-dense" if kind == "bert" else "all-linear")
        perturb(model)
        model.eval()
        inputs = inputs_for(model)
        model.save_pretrained(tmp_path / f"{kind}-adapter")
        loaded = auto_peft.from_pretrained(tmp_path / f"{kind}-adapter")
        assert isinstance(loaded.peft_config["default"], DeepLoraConfig)
        torch.testing.assert_close(logits(loaded, inputs), logits(model, inputs))


def test_add_weighted_adapter_sums_delta_w_and_refactors_it() -> None:
    model = wrap(tiny_bert(dtype=torch.float64), r=2, target_modules="all-dense")
    model.add_adapter("other", DeepLoraConfig(r=3, depth=2, target_modules="query-value"))
    perturb(model)
    for module in model.modules():  # perturb trains only the active adapter: move "other" too
        if isinstance(module, DeepLoraLayer) and "other" in module.deeplora_factors:
            for factor in module.deeplora_factors["other"].factors:
                torch.nn.init.normal_(factor, std=0.3)
    first, second = adapter_deltas(model, "default"), adapter_deltas(model, "other")
    cuts = model.add_weighted_adapter(["default", "other"], [0.5, -2.0], "sum")
    config = model.peft_config["sum"]
    assert (config.r, config.depth, config.init) == (5, 3, "orthogonal")
    combined = adapter_deltas(model, "sum")
    assert combined.keys() == first.keys() and len(combined) == 15
    assert max(cuts.values()) < 1e-12  # rank 2 + 3 = 5: the refactoring is exact
    for name, delta in combined.items():
        torch.testing.assert_close(delta, 0.5 * first[name] - 2.0 * second.get(name, 0.0))
    layer = model.get_base_model().bert.encoder.layer[0].attention.self.query
    factors = [f.detach() for f in layer.deeplora_factors["sum"].factors]
    svals = [torch.linalg.svdvals(f)[:5] for f in factors]
    for values in svals[1:]:  # balanced: every factor has the same singular values
        torch.testing.assert_close(values, svals[0])

    truncated = model.add_weighted_adapter(["default", "other"], [0.5, -2.0], "low", r=1)
    assert max(truncated.values()) > 1e-3
    with pytest.raises(ValueError, match="already exists"):
        model.add_weighted_adapter(["default"], [1.0], "sum")
    with pytest.raises(ValueError, match="one weight per adapter"):
        model.add_weighted_adapter(["default", "other"], [1.0], "third")


def test_add_weighted_adapter_refused_for_its_rank_leaves_no_adapter_behind() -> None:
    """A rank above a layer's smallest dimension is refused; the name stays free, so a retry
    with a fitting rank works and saving does not meet an adapter without layers."""
    model = wrap(tiny_bert(), r=2, target_modules="all-dense")
    with pytest.raises(ValueError, match="rank r=100"):
        model.add_weighted_adapter(["default"], [1.0], "mix", r=100)
    assert list(model.peft_config) == ["default"]
    assert max(model.add_weighted_adapter(["default"], [1.0], "mix", r=2).values()) < 1e-6


def test_mixed_adapter_batches_are_refused_not_ignored() -> None:
    """PEFT's LoRA routes ``model(..., adapter_names=[...])`` per sample; Deep LoRA does not,
    and used to drop the argument silently (every row got the active adapter)."""
    model = wrap(tiny_bert(), init_scale=0.5)
    inputs = inputs_for(model)
    with pytest.raises(ValueError, match=r"adapter_names.*set_adapter"):
        logits(model, {**inputs, "adapter_names": ["__base__"] * 3})
    with model.disable_adapter():  # nothing active: the argument is moot, as in PEFT
        torch.testing.assert_close(logits(model, {**inputs, "adapter_names": ["__base__"] * 3}),
                                   logits(tiny_bert(), inputs))


F64 = torch.float64


def mlp(seed: int = 0) -> nn.Sequential:
    """Linear(6, 5) → tanh → Conv1D(5 → 7) → tanh → Linear(7, 4, bias=False), float64."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), Conv1D(7, 5), nn.Tanh(),
                         nn.Linear(7, 4, bias=False)).to(F64).eval()


def by_hand(base: nn.Sequential, factors: dict[str, list[torch.Tensor]], x: torch.Tensor
            ) -> torch.Tensor:
    """The oracle: each adapted layer gives base(h) + h (W_L ⋯ W_1)ᵀ, the product formed here
    from the factor tensors, no scaling (DeepLoraConfig: 'no α/r scaling')."""
    for name, module in base.named_children():
        y = module(x)
        if name in factors:
            delta = factors[name][0]
            for factor in factors[name][1:]:
                delta = factor @ delta
            y = y + x @ delta.T
        x = y
    return x


def factor_tensors(model: PeftModel) -> dict[str, list[torch.Tensor]]:
    return {name.rpartition(".")[2]: [f.detach().clone() for f in layer.factors]
            for name, layer in adapter_factorizations(model).items()}


@pytest.mark.parametrize(("depth", "init"), [(3, "orthogonal"), (4, "orthogonal"), (2, "lora"),
                                             (2, "lora-hu")])
def test_forward_is_base_plus_the_factor_product_by_hand(depth: int, init: str) -> None:
    """Linear and Conv1D layers of a float64 MLP: output = base(x) + x (W_L ⋯ W_1)ᵀ computed
    from the factor tensors; also with adapter dropout in eval mode; disabled = base."""
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        reference = mlp()(x)
    for dropout in (0.0, 0.4):
        model = get_peft_model(mlp(), DeepLoraConfig(r=3, depth=depth, init=init,
                                                     init_scale=0.5, dropout=dropout,
                                                     target_modules=["0", "2", "4"]))
        perturb(model, scale=0.5)
        model.eval()
        factors = factor_tensors(model)
        assert [tuple(f.shape) for f in factors["2"]] == (
            [(3, 5)] + [(3, 3)] * (depth - 2) + [(7, 3)])
        with torch.no_grad():
            got = model(x)
            torch.testing.assert_close(got, by_hand(mlp(), factors, x), rtol=1e-12, atol=1e-12)
            assert (got - reference).abs().max() > 1e-2
            with model.disable_adapter():
                torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
            torch.testing.assert_close(model(x), got, rtol=0, atol=0)


def test_adapter_dropout_in_training_drops_the_adapter_input_only() -> None:
    """Train mode, one Linear: output = base(x) + dropout(x) ΔWᵀ with the mask and 1/(1 − p)
    rescaling torch's dropout draws from the same seed."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 6)).to(F64)
    model = get_peft_model(copy.deepcopy(base), DeepLoraConfig(r=2, dropout=0.5,
                                                                target_modules=["0"]))
    perturb(model)
    model.train()
    (w1, w2, w3), = factor_tensors(model).values()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.manual_seed(5)
    got = model(x)
    torch.manual_seed(5)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    assert 0 < torch.count_nonzero(dropped) < x.numel()
    torch.testing.assert_close(got, base(x) + dropped @ (w3 @ w2 @ w1).T, rtol=1e-12, atol=1e-12)


def test_merge_is_idempotent_and_unmerge_restores_the_base_weights() -> None:
    """float64: merge adds W_L ⋯ W_1 (ᵀ for Conv1D) once, a second merge warns and changes
    nothing, unmerge restores the base weights to round-off, merge_and_unload is a plain model
    with the adapted outputs; safe_merge gives the same weights."""
    from transformers.pytorch_utils import Conv1D

    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    original = snapshot(mlp())
    model = get_peft_model(mlp(), DeepLoraConfig(r=3, target_modules=["0", "2", "4"]))
    perturb(model, scale=0.5)
    factors = factor_tensors(model)
    with torch.no_grad():
        adapted = model(x)
    layers = {n: model.get_base_model().get_submodule(n) for n in factors}

    def expected_weight(name: str) -> torch.Tensor:
        w1, w2, w3 = factors[name]
        delta = w3 @ w2 @ w1
        transposed = isinstance(layers[name].get_base_layer(), Conv1D)
        return original[f"{name}.weight"] + (delta.T if transposed else delta)

    for safe in (False, True):
        model.merge_adapter(safe_merge=safe)
        with pytest.warns(UserWarning, match="already merged"):
            model.merge_adapter()
        for name, layer in layers.items():
            assert layer.merged_adapters == ["default"]
            torch.testing.assert_close(layer.get_base_layer().weight, expected_weight(name),
                                       rtol=1e-14, atol=1e-14)
        with torch.no_grad():
            torch.testing.assert_close(model(x), adapted, rtol=1e-12, atol=1e-12)
        model.unmerge_adapter()
        for name, layer in layers.items():
            assert not layer.merged
            torch.testing.assert_close(layer.get_base_layer().weight, original[f"{name}.weight"],
                                       rtol=0, atol=1e-15)
    model.merge_adapter()
    with torch.no_grad(), model.disable_adapter():  # disabling unmerges, as PEFT's LoRA does
        torch.testing.assert_close(model(x), mlp()(x), rtol=0, atol=1e-15)
    plain = model.merge_and_unload()
    assert not any(isinstance(m, DeepLoraLayer) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), adapted, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("init", "depth"), [("orthogonal", 4), ("lora-hu", 2)])
def test_saved_adapter_reloads_its_settings_and_exact_outputs(init: str, depth: int,
                                                              tmp_path: Path) -> None:
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    config = DeepLoraConfig(r=3, depth=depth, init=init, init_scale=2e-2, dropout=0.25,
                            target_modules=["0", "2", "4"])
    model = get_peft_model(mlp(), config)
    perturb(model)
    model.eval()
    model.save_pretrained(tmp_path)
    for seed in (0, 9):  # fresh factors drawn on load are overwritten whatever the seed
        torch.manual_seed(seed)
        loaded = PeftModel.from_pretrained(mlp(), tmp_path).eval()
        got = loaded.peft_config["default"]
        assert isinstance(got, DeepLoraConfig)
        assert (got.r, got.depth, got.init, got.init_scale, got.dropout) == (
            3, depth, init, 2e-2, 0.25)
        assert sorted(got.target_modules) == ["0", "2", "4"]
        assert got.target_shapes == {"0": [5, 6], "2": [7, 5], "4": [4, 7]}
        for name, factors in factor_tensors(loaded).items():
            assert all(f.dtype == F64 for f in factors)
            for f, want in zip(factors, factor_tensors(model)[name], strict=True):
                assert torch.equal(f, want)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_injected_factors_have_the_stated_shapes_and_every_singular_value_eps() -> None:
    """Through get_peft_model on Linear (d_out×d_in = 5×6), Conv1D (7×5, weight stored 5×7)
    and Embedding (dim×num_embeddings = 6×11): W₁ (r×d_in), W₂ (r×r), W₃ (d_out×r), each with
    all r singular values ε (float32 adapters on a float32 base), ΔW(0) with r values ε³."""
    eps, r = 1e-3, 2
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 6), nn.Linear(6, 5), Conv1D(7, 5))
    model = get_peft_model(model, DeepLoraConfig(r=r, init_scale=eps,
                                                 target_modules=["0", "1", "2"]))
    shapes = {"0": (6, 11), "1": (5, 6), "2": (7, 5)}
    factorizations = adapter_factorizations(model)
    assert factorizations.keys() == shapes.keys()
    for name, (d_out, d_in) in shapes.items():
        factors = [f.detach() for f in factorizations[name].factors]
        assert [tuple(f.shape) for f in factors] == [(r, d_in), (r, r), (d_out, r)]
        for factor in factors:
            assert factor.dtype == torch.float32
            torch.testing.assert_close(torch.linalg.svdvals(factor.double()),
                                       torch.full((r,), eps, dtype=F64), rtol=1e-6, atol=0)
        values = torch.linalg.svdvals(adapter_deltas(model)[name].double())
        torch.testing.assert_close(values[:r], torch.full((r,), eps**3, dtype=F64), rtol=1e-6,
                                   atol=0)


@pytest.mark.parametrize("width", [1, 20])
def test_resolved_names_are_adapted_exactly_not_as_suffixes(width: int, tmp_path: Path) -> None:
    """A regex selecting top-level ``0`` … ``width-1`` resolves to those names; PEFT matched
    them as dotted suffixes and also adapted the nested ``inner.0`` (and the saved adapter,
    whose recorded shapes lack it, then failed to load: 'adapter does not fit this model').
    With 20 names PEFT also condenses the list to suffixes before matching."""
    def build() -> nn.Sequential:
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(width)])
        model.add_module("inner", nn.Sequential(nn.Linear(4, 4)))
        return model.to(F64).eval()

    wanted = [str(i) for i in range(width)]
    model = get_peft_model(build(), DeepLoraConfig(r=2, target_modules=r"1?\d"))
    assert sorted(adapter_deltas(model)) == sorted(wanted)
    assert sorted(model.peft_config["default"].target_shapes) == sorted(wanted)
    assert isinstance(model.get_base_model().inner[0], nn.Linear)
    perturb(model)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(build(), tmp_path).eval()
    assert sorted(adapter_deltas(loaded)) == sorted(wanted)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_add_weighted_adapter_covers_exactly_the_layers_of_its_adapters() -> None:
    """The combined adapter's layers were re-resolved from their names as dotted suffixes:
    ``0`` also gave the nested ``inner.0`` (adapted by none of the adapters) fresh factors,
    ΔW = ε³ instead of 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    model.add_module("inner", nn.Sequential(nn.Linear(4, 4)))
    model = get_peft_model(model, DeepLoraConfig(r=2, target_modules="0"))
    model.add_weighted_adapter(["default"], [1.0], "sum")
    assert sorted(adapter_deltas(model, "sum")) == ["0"]
    assert model.peft_config["sum"].target_modules == ["0"]
