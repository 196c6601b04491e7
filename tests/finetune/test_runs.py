"""Resumable sweeps: one atomic result per (config, seed), no seed lost or repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplora.finetune import runs
from deeplora.finetune.config import FinetuneConfig, preset
from deeplora.finetune.data import DataError


def test_interrupted_sweep_resumes(glue_dir: Path, tiny_model: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = preset("practical", model=tiny_model, steps=1, samples=4, max_length=16)
    calls: list[int] = []
    real = runs.run_finetune

    def killed_at_seed_2(config, seed, *args, **kwargs):
        calls.append(seed)
        if seed == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt  # as if the process were killed mid-run
        return real(config, seed, *args, **kwargs)

    monkeypatch.setattr(runs, "run_finetune", killed_at_seed_2)
    with pytest.raises(KeyboardInterrupt):
        runs.run_sweep(config, [0, 1, 2, 3], tmp_path, glue_dir, progress=False)
    folder = tmp_path / config.key()
    assert sorted(p.name for p in folder.glob("seed-*.json")) == ["seed-0.json", "seed-1.json"]
    assert not list(folder.glob(".*"))  # no temporary files left
    first = (folder / "seed-0.json").read_text()

    results = runs.run_sweep(config, [0, 1, 2, 3], tmp_path, glue_dir, progress=False)
    assert calls == [0, 1, 2, 2, 3]  # finished seeds skipped, the killed one redone once
    assert [r["seed"] for r in results] == [0, 1, 2, 3]
    assert (folder / "seed-0.json").read_text() == first
    assert FinetuneConfig.from_dict(json.loads((folder / "config.json").read_text())) == config
    assert len(runs.load_results(tmp_path, config, range(10))) == 4


def test_parallel_runs_match_sequential_and_resume(glue_dir: Path, tiny_model: str,
                                                   tmp_path: Path) -> None:
    configs = [preset("practical", model=tiny_model, steps=2, samples=4, max_length=16,
                      method=method) for method in ("deep-lora", "lora")]
    runs.run_sweep(configs[0], [1], tmp_path / "parallel", glue_dir, progress=False)
    done = tmp_path / "parallel" / configs[0].key() / "seed-1.json"
    before = done.read_text()
    runs.run_parallel([(c, [0, 1]) for c in configs], tmp_path / "parallel", glue_dir, jobs=2,
                      progress=False)
    assert done.read_text() == before  # a finished seed is not run again
    for config in configs:
        sequential = runs.run_sweep(config, [0, 1], tmp_path / "sequential", glue_dir,
                                    progress=False)
        parallel = runs.load_results(tmp_path / "parallel", config, [0, 1])
        assert [r["seed"] for r in parallel] == [0, 1]
        for a, b in zip(sequential, parallel, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-5)
    assert not list((tmp_path / "parallel").glob("*/.*"))  # no temporary files left
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        runs.run_parallel([(configs[0], [0])], tmp_path / "parallel", glue_dir, jobs=0)


def test_bad_input_writes_nothing(glue_dir: Path, tiny_model: str, tmp_path: Path) -> None:
    config = preset("practical", model=tiny_model, samples=41)  # distinct rows: 40 at most
    with pytest.raises(DataError, match="--samples 41"):
        runs.run_sweep(config, [0], tmp_path / "out", glue_dir, progress=False)
    assert not (tmp_path / "out").exists()
