"""nlg-checkpoints: the lr and checkpoints are chosen on dev and training losses only, the test
split is generated for at the chosen checkpoints alone, and the report rebuilds from the run
files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from deeplora.experiments.nlg_checkpoints import needed, plan, run_experiment, select
from deeplora.finetune.sweep import Cell
from tests.experiments.refusals import assert_fast_refused
from tests.nlg.conftest import DEV, TEST, tiny_model, word_tokenizer, write_csv


def _run(method: str, lr: float, seed: int, dev: list[float], test: list[float],
         losses: list[float]) -> dict[str, Any]:
    """A run with checkpoints every 2 steps: dev losses ``dev``, test BLEU ``test`` (0: not
    scored), per-step training ``losses``."""
    return {"config": {"method": method, "lr": lr, "eval_every": 2}, "seed": seed,
            "left_init": True, "train_loss": losses,
            "history": [{"step": 2 * k, "heldout": {"loss": d, "neg_loss": -d},
                         "metrics": {"bleu": t} if t else {}}
                        for k, (d, t) in enumerate(zip(dev, test, strict=True))]}


def test_lr_and_checkpoints_follow_dev_and_train_loss_never_test() -> None:
    cells = [Cell(None, (0, 1), {"method": m, "lr": lr})  # type: ignore[arg-type]
             for m in ("deep-lora", "lora") for lr in (1e-3, 1e-2)]
    # deep-lora: lr 1e-2 has the lower dev loss although 1e-3 scores higher on test
    deep = {1e-3: [_run("deep-lora", 1e-3, s, [2, 1.5, 1.4], [9, 9, 9], [2, 2, 1, 1])
                   for s in (0, 1)],
            1e-2: [_run("deep-lora", 1e-2, s, [2, 1.0, 1.2], [0, 0, 0], [2, 1, .5, .4])
                   for s in (0, 1)]}
    lora = {1e-3: [_run("lora", 1e-3, s, [2, 1.1, 1.3], [0, 0, 0], [.5, .3, .1, .1])
                   for s in (0, 1)],
            1e-2: [_run("lora", 1e-2, s, [2, 1.6, 1.9], [0, 0, 0], [1, .1, .01, .01])
                   for s in (0, 1)]}
    runs = {("deep-lora", lr): r for lr, r in deep.items()} | {("lora", lr): r
                                                                for lr, r in lora.items()}
    results = [(c, runs[c.labels["method"], c.labels["lr"]]) for c in cells]
    selection = select(results)
    assert selection["lr"] == {"deep-lora": 1e-2, "lora": 1e-3}
    assert selection["best"] == {"deep-lora": {0: 1, 1: 1}, "lora": {0: 1, 1: 1}}
    # lowest window loss both reach: deep-lora's 0.45 at step 4; lora's 0.4 at step 2
    assert {s: m[:2] for s, m in selection["matched"].items()} == {0: (2, 1), 1: (2, 1)}
    assert selection["matched"][0][2] == pytest.approx(0.45)
    todo = sorted((r["config"]["method"], r["seed"], step) for r, step in needed(selection))
    assert todo == [("deep-lora", s, step) for s in (0, 1) for step in (2, 4)] + [
        ("lora", s, step) for s in (0, 1) for step in (2, 4)]


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A saved tiny Llama with the word tokenizer, and a tiny E2E folder."""
    model = tmp_path / "tiny-llama"
    tokenizer = word_tokenizer(chat_template=True)
    tiny_model("llama", len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = tmp_path / "e2e"
    data.mkdir()
    write_csv(data / "devset.csv", DEV)
    write_csv(data / "testset_w_refs.csv", TEST)
    return model, data


def test_tiny_sweep_scores_only_the_chosen_checkpoints_and_rebuilds(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    from deeplora.nlg.config import NLGConfig
    from deeplora.nlg.train import (
        PreparedNLG,
        _setup,
        checkpoint_folder,
        dev_loss,
        load_adapter,
    )

    torch.set_num_threads(1)
    model, data = tiny
    cells = plan("cpu", (1e-3, 3e-2), (0, 1), model=str(model), samples=4, batch_size=2,
                 steps=4, eval_every=2, dev_mrs=4, test_mrs=3, max_output_length=8)
    out = tmp_path / "out"
    summary = run_experiment(cells, out, data, progress=False, lr_seeds=(0,))
    runs = {(c.labels["method"], c.labels["lr"]): [json.loads(p.read_text()) for p in
                                                   sorted((out / "runs" / c.config.key())
                                                          .glob("seed-*.json"))]
            for c in cells}
    for (method, _), found in runs.items():
        for run in found:
            assert not set(run["dev_mrs"]) & set(run["train_mrs"] + run["mrs"])
            if method != "zero-shot":
                assert [e["step"] for e in run["history"]] == [0, 2, 4]
    # the lr with the lowest best dev loss of seed 0, from the files alone; seed 1 ran at it
    chosen = {c["method"]: c for c in summary["chosen"]}
    for method in ("deep-lora", "lora"):
        best = {lr: min(e["heldout"]["loss"] for e in rs[0]["history"])
                for (m, lr), rs in runs.items() if m == method}
        assert chosen[method]["lr"] == min(best, key=best.get)
        assert {lr: [r["seed"] for r in rs] for (m, lr), rs in runs.items() if m == method} == {
            lr: [0, 1] if lr == chosen[method]["lr"] else [0] for lr in best}
    # test outputs exist exactly at the best dev, the matched-loss and the last checkpoints
    for (method, lr), found in runs.items():
        for run in found:
            scored = {e["step"] for e in run["history"] if e["metrics"]}
            if method == "zero-shot":
                continue
            row = chosen[method]
            wanted = ({row[w]["steps"][run["seed"]] for w in ("best", "matched", "last")}
                      if lr == row["lr"] else set())
            assert scored == wanted
    # a checkpoint file restores the adapters whose dev loss the history holds
    config = NLGConfig(**runs["lora", 3e-2][0]["config"])
    prepared = PreparedNLG(config, 0, data)
    net, formatter = _setup(config, prepared, 0)
    load_adapter(net, checkpoint_folder(out / "runs", config, 0) / "step-4.pt")
    assert dev_loss(net, formatter, prepared.dev, 4) == pytest.approx(
        runs["lora", 3e-2][0]["history"][-1]["heldout"]["loss"], rel=1e-4)
    # --report-only: the same report from the run files, nothing generated
    text = (out / "nlg-checkpoints.md").read_text()
    rebuilt = tmp_path / "rebuilt"
    (rebuilt / "runs").parent.mkdir()
    (rebuilt / "runs").symlink_to(out / "runs")
    run_experiment(cells, rebuilt, data, progress=False, train=False, score=False,
                   lr_seeds=(0,))
    assert (rebuilt / "nlg-checkpoints.md").read_text() == text
    assert "Deep LoRA" in text and "matched train loss" in text


@pytest.mark.parametrize(("flags", "named"), [
    (["--eval-every", "5"], "--eval-every"),
    (["--dev-mrs", "24", "--eval-every", "10"], "--eval-every and --dev-mrs"),  # the defaults
])
def test_fast_refuses_the_flags_it_would_override(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str) -> None:
    """``--fast`` checkpoints every 2 steps on 4 dev MRs: it ignored ``--eval-every`` and
    ``--dev-mrs``."""
    assert_fast_refused(tmp_path, capsys, "nlg-checkpoints", flags, "checkpoints (4 steps, "
                        "one every 2 on 4 dev MRs; 4 test MRs)", named)
