"""Heads, adapters and which parameters train."""

from __future__ import annotations

import pytest
import torch

from deeplora.finetune.config import preset
from deeplora.finetune.data import DataError
from deeplora.finetune.models import (
    BiEncoder,
    Collator,
    CrossEncoder,
    build_task_model,
    load_tokenizer,
    mean_pool,
    resolve_model,
)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


@pytest.mark.parametrize("head", ["cross", "bi"])
@pytest.mark.parametrize("task", ["stsb", "mrpc"])
def test_paper_trains_adapters_only_practical_trains_head(tiny_model: str, head: str,
                                                          task: str) -> None:
    torch.manual_seed(0)
    paper = build_task_model(preset("paper", task=task, head=head, model=tiny_model), tiny_model)
    names = _trainable(paper)
    assert names and all("deeplora" in n for n in names), names
    practical = build_task_model(preset("practical", task=task, head=head), tiny_model)
    extra = _trainable(practical) - {n for n in _trainable(practical) if "deeplora" in n}
    if head == "bi" and task == "stsb":
        assert extra == set()  # cosine similarity has no head
    else:
        assert extra and all("classifier" in n or n.startswith("head.") for n in extra), extra


def test_pooler_adapted_for_cross_only(tiny_model: str) -> None:
    cross = build_task_model(preset("paper", head="cross"), tiny_model)
    bi = build_task_model(preset("paper", head="bi"), tiny_model)
    assert any("pooler" in n for n in _trainable(cross))
    assert not any("pooler" in n for n in _trainable(bi))


@pytest.mark.parametrize("head", ["cross", "bi"])
def test_same_seed_same_head_for_every_method(tiny_model: str, head: str) -> None:
    heads = []
    for method in ("deep-lora", "lora", "zero-shot"):
        torch.manual_seed(7)
        model = build_task_model(preset("paper", task="mrpc", head=head, method=method),
                                 tiny_model)
        heads.append({n.split("classifier.")[-1]: p for n, p in model.named_parameters()
                      if "classifier" in n or n.startswith("head.")})
    assert heads[0] and all(torch.equal(heads[0][k], h[k]) for h in heads[1:] for k in h)


def test_zero_shot_trains_nothing(tiny_model: str) -> None:
    model = build_task_model(preset("paper", method="zero-shot", head="bi"), tiny_model)
    assert _trainable(model) == set()


@pytest.mark.parametrize(("head", "cls", "n_inputs"), [("cross", CrossEncoder, 1),
                                                      ("bi", BiEncoder, 2)])
def test_batches_give_loss_and_predictions(tiny_model: str, head: str, cls: type,
                                           n_inputs: int) -> None:
    config = preset("paper", head=head, max_length=16)
    model = build_task_model(config, tiny_model)
    assert isinstance(model, cls)
    collate = Collator(load_tokenizer(tiny_model), model.task, head, 16, True)
    rows = [{"sentence1": "a man", "sentence2": "a dog", "label": 4.0},
            {"sentence1": "cat", "sentence2": "the plane is taking off", "label": 1.0}]
    batch = collate(rows)
    inputs = [batch["inputs"]] if head == "cross" else batch["inputs"]
    assert len(inputs) == n_inputs and all(x["input_ids"].shape == (2, 16) for x in inputs)
    loss = model(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.predict(batch).shape == (2,)


def test_not_a_transformers_model(tmp_path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: not a transformers model"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("head", ["cross", "bi"])
def test_padding_to_max_length_changes_nothing_but_cost(tiny_model: str, head: str) -> None:
    """``--padding longest`` is the same computation as max-length padding (dropout off)."""
    torch.manual_seed(0)
    model = build_task_model(preset("paper", head=head, max_length=24), tiny_model).eval()
    rows = [{"sentence1": "a man", "sentence2": "a dog is eating food", "label": 4.0},
            {"sentence1": "cat", "sentence2": "the plane is taking off", "label": 1.0}]
    grads = []
    for pad in (True, False):
        batch = Collator(load_tokenizer(tiny_model), model.task, head, 24, pad)(rows)
        model.zero_grad()
        loss = model(batch)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()
                                      if p.requires_grad]))
    (padded, padded_grads), (longest, longest_grads) = grads
    # other shapes, other BLAS kernels and summation orders: float32 rounding, not 1e-7
    torch.testing.assert_close(padded, longest, rtol=1e-4, atol=1e-6)
    assert padded_grads
    for a, b in zip(padded_grads, longest_grads, strict=True):
        assert a.abs().max() > 0
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_decoder_lm_pairs_are_joined_by_a_newline() -> None:
    """A tokenizer without a separator token (Llama) gets one text per STS-B pair."""
    from deeplora.finetune.data import get_task
    from deeplora.finetune.models import Collator
    from tests.nlg.conftest import word_tokenizer

    tokenizer = word_tokenizer()
    collate = Collator(tokenizer, get_task("stsb"), "cross", 16, False)
    batch = collate([{"sentence1": "The Eagle", "sentence2": "a pub", "label": 3.0}])
    assert batch["inputs"]["input_ids"][0].tolist() == tokenizer("The Eagle\na pub")["input_ids"]


def test_embedded_lm_name_resolves_to_its_folder() -> None:
    from deeplora.embedded_lm import embedded_lm_path
    from deeplora.finetune.models import resolve_model

    assert resolve_model("SmolLM2-135M-Instruct") == embedded_lm_path()
