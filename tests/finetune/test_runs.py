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


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpys_range_writes_nothing(glue_dir: Path, tiny_model: str,
                                                  tmp_path: Path, seed: int) -> None:
    for sampling in ("authors", "without-replacement"):
        config = preset("paper", model=tiny_model, samples=4, sampling=sampling)
        with pytest.raises(DataError, match=rf"seed must be an integer in \[0, 2\*\*32\), "
                                            rf"got {seed}"):
            runs.run_sweep(config, [seed], tmp_path / "out", glue_dir, progress=False)
    assert not (tmp_path / "out").exists()


def _strict_json(text: str):
    def bare(token: str):
        raise ValueError(f"bare {token} in JSON")

    return json.loads(text, parse_constant=bare)


def test_invalid_result_file_counts_as_unfinished(glue_dir: Path, tiny_model: str,
                                                  tmp_path: Path, capsys) -> None:
    config = preset("practical", model=tiny_model, steps=1, samples=4, max_length=16)
    runs.run_sweep(config, [0], tmp_path, glue_dir, progress=False)
    path = runs.result_path(tmp_path, config, 0)
    path.write_text(path.read_text()[:100])  # cut short (a full disk, a crash outside us)
    capsys.readouterr()
    results = runs.run_sweep(config, [0], tmp_path, glue_dir, progress=False)
    assert results[0]["seed"] == 0 and _strict_json(path.read_text())["seed"] == 0
    err = capsys.readouterr().err
    assert f"{path} is not a valid result" in err and "the seed runs again" in err
    assert path.with_name("seed-0.json.invalid").read_text() != path.read_text()


@pytest.mark.parametrize("text", ["null", "[]", "{}", '{"seed": 0, "config": {}}'])
def test_json_that_is_not_a_result_counts_as_unfinished(tmp_path: Path, capsys,
                                                        text: str) -> None:
    config = FinetuneConfig()
    path = runs.result_path(tmp_path, config, 0)
    path.parent.mkdir(parents=True)
    path.write_text(text)  # valid JSON, edited by hand: no result a report could read
    assert runs.load_results(tmp_path, config, [0]) == []
    assert f"{path} is not a valid result" in capsys.readouterr().err
    assert path.with_name("seed-0.json.invalid").read_text() == text and not path.exists()


def test_non_finite_loss_stops_the_run_with_a_status(tiny_model: str, tmp_path: Path,
                                                     make_glue,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplora.finetune import train

    data = make_glue(tmp_path / "glue", n=8)
    load = train.load_split

    def huge_scores(*args: object):  # 1e30, which no file may hold: finite, (1e30)² not
        rows = load(*args)
        return rows.remove_columns("label").add_column("label", [1e30] * len(rows))

    monkeypatch.setattr(train, "load_split", huge_scores)
    config = preset("practical", model=tiny_model, steps=5, samples=4, max_length=16)
    result = runs.run_sweep(config, [0], tmp_path / "out", data, progress=False)[0]
    assert result["status"] == "diverged" and result["diverged_at_step"] == 1
    assert result["metrics"] == {} and result["layers"] == {}
    path = runs.result_path(tmp_path / "out", config, 0)
    assert _strict_json(path.read_text())["train_loss"] == [None]  # inf written as null
    log = [_strict_json(line) for line in path.with_suffix(".log.jsonl").read_text().splitlines()]
    assert log[-1] == {"step": 1, "status": "diverged"} and log[-2]["loss"] is None


def test_settings_rejected_by_the_model_write_nothing(glue_dir: Path, tiny_model: str,
                                                      tmp_path: Path) -> None:
    config = preset("paper", model=tiny_model, rank=1000, steps=1, samples=4)
    with pytest.raises(ValueError, match="1000"):
        runs.run_sweep(config, [0], tmp_path / "out", glue_dir, progress=False)
    assert not (tmp_path / "out").exists()


_WORKER = """
import sys, time
from pathlib import Path
from deeplora.finetune import runs
from deeplora.finetune.config import preset

out, glue, model, me, other = sys.argv[1:]
real = runs.run_finetune
def slow(config, seed, *args, **kwargs):
    with open(Path(out) / f"ran-{me}", "a") as f:
        f.write(f"{seed}\\n")
    time.sleep(1.5)
    return real(config, seed, *args, **kwargs)
runs.run_finetune = slow
(Path(out) / f"ready-{me}").touch()
while not (Path(out) / f"ready-{other}").exists():
    time.sleep(0.05)
config = preset("practical", model=model, steps=1, samples=4, max_length=16)
results = runs.run_sweep(config, [0, 1, 2, 3], Path(out) / "runs", glue, progress=False)
assert [r["seed"] for r in results] == [0, 1, 2, 3]
"""


def test_two_identical_sweeps_into_one_out_share_the_seeds(glue_dir: Path, tiny_model: str,
                                                           tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(glue_dir),
                               tiny_model, me, other], env=env, stderr=subprocess.PIPE,
                              text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    ran = [(tmp_path / f"ran-{me}").read_text().split() if (tmp_path / f"ran-{me}").exists()
           else [] for me in "ab"]
    assert sorted(ran[0] + ran[1]) == ["0", "1", "2", "3"]  # every seed trained exactly once
    assert ran[0] and ran[1]  # both did some of the work
    assert "is being run by another process" in errors[0] + errors[1]
    folder = tmp_path / "runs" / preset("practical", model=tiny_model, steps=1, samples=4,
                                        max_length=16).key()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json"] + [f"seed-{k}.{ext}" for k in range(4) for ext in ("json", "log.jsonl")])


def test_pairs_another_process_runs_are_awaited_after_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed-major sweeps share work: a run locked by another process is skipped, the next one
    runs, and the locked one is awaited last (not waited for in place)."""
    import fcntl
    import os

    config = preset("practical", steps=1)
    lock = runs.result_path(tmp_path, config, 0).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    held = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # "another process" is running seed 0
    order = []

    def run_one(config, seed, path, data_dir, progress):
        order.append(seed)
        if seed == 1:
            os.close(held)  # the other process lets go of seed 0
        return {"seed": seed}

    monkeypatch.setattr(runs, "_run_one", run_one)
    seen = []
    results = runs.run_pairs([(config, 0), (config, 1)], tmp_path, progress=False,
                             on_result=lambda config, result: seen.append(result["seed"]))
    assert order == [1, 0] and seen == [1, 0]
    assert [r["seed"] for r in results] == [0, 1]
