"""The embedded SmolLM2-135M-Instruct: pinned checksums, and a smoke test on the real model
(fetched and converted into the cache on first use; load, Deep LoRA, two steps, generate)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from deeplora.embedded_lm import EmbeddedModelError, _check, is_embedded_lm, sha256


def test_names_and_checksums(tmp_path: Path) -> None:
    assert is_embedded_lm("SmolLM2-135M-Instruct") and not is_embedded_lm(None)
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(EmbeddedModelError, match="is not the pinned"):
        _check(path, "0" * 64)


@pytest.mark.slow
def test_embedded_lm_smoke() -> None:
    """Load the real embedded LM, wrap it with Deep LoRA, train two steps, generate."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging

    from deeplora.nlg.config import nlg_preset
    from deeplora.nlg.data import Example
    from deeplora.nlg.models import (
        Formatter,
        add_adapters,
        generate,
        load_generative,
        resolve_generative_model,
    )

    logging.set_verbosity_error()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        base, tokenizer = load_generative(resolve_generative_model("smollm2-135m-instruct"))
        assert type(base).__name__ == "LlamaForCausalLM"
        config = nlg_preset("cpu", method="deep-lora", max_output_length=6, lr=1e-2)
        formatter = Formatter(tokenizer, config, encoder_decoder=False)
        model = add_adapters(base, config)
        before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        assert len(before) == 30 * 7 * 3  # 30 layers × 7 projections × 3 factors
        batch = formatter.train_batch([Example("name[The Eagle], eatType[pub]",
                                               ("The Eagle is a pub.",))])
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                     lr=config.lr)
        losses = []
        for _ in range(2):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        after = [p for p in model.parameters() if p.requires_grad]
        assert all(torch.isfinite(torch.tensor(losses)))
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
        mrs = ["name[The Eagle], eatType[coffee shop], area[riverside]"]
        unmerged = generate(model, formatter, mrs, batch_size=1)
        model.merge_adapter()
        assert generate(model, formatter, mrs, batch_size=1) == unmerged
        assert unmerged[0].strip()
    finally:
        torch.set_num_threads(threads)
