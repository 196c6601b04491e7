"""``deeplora experiment topk``: same-run top-k table, settings chosen without the test file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deeplora.cli import main
from deeplora.completion.data import Ratings
from deeplora.experiments.topk import Split, most_rated, report


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny matrices: one torch thread."""


def _write(path: Path, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> Path:
    path.write_text("".join(f"{r}\t{c}\t{v:g}\t0\n"
                            for r, c, v in zip(rows, cols, values, strict=True)))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """train.tsv, test.tsv and poisoned.tsv (the same test pairs with the ratings reversed)."""
    rng = np.random.default_rng(0)
    full = np.clip(np.rint(3 + rng.standard_normal((30, 2)) @ rng.standard_normal((2, 25))),
                   1, 5)
    rows, cols = np.nonzero(rng.random((30, 25)) < 0.7)
    test = rng.random(rows.size) < 0.25
    values = full[rows, cols]
    return (_write(tmp_path / "train.tsv", rows[~test], cols[~test], values[~test]),
            _write(tmp_path / "test.tsv", rows[test], cols[test], values[test]),
            _write(tmp_path / "poisoned.tsv", rows[test], cols[test], 6 - values[test]))


def test_most_rated_skips_seen_items() -> None:
    train = Ratings(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 0, 0, 2]),
                    np.full(5, 5.0))
    test = Ratings(np.array([1, 1]), np.array([1, 2]), np.array([5.0, 1.0]))
    split = Split.of(train, test, 4.0)
    assert split.users.tolist() == [1] and [t.tolist() for t in split.truth] == [[1]]
    np.testing.assert_array_equal(most_rated(split, 2), [[1, 2]])  # item 0 is seen


def test_topk_table_and_selection_never_reads_the_test_file(
        files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    train, test, poisoned = files
    runs = {}
    for name, held_out in (("clean", test), ("poisoned", poisoned)):
        out = tmp_path / name
        assert main(["experiment", "topk", "--fast", "--train", str(train), "--test",
                     str(held_out), "--name", "tiny", "--out", str(out)]) == 0
        runs[name] = json.loads((out / "topk-tiny.json").read_text())
    clean, dirty = runs["clean"], runs["poisoned"]
    assert clean["grids"] == dirty["grids"] and clean["chosen"] == dirty["chosen"]
    assert {"ours explicit (ratings preset, shrunk ranking)", "ours implicit (tuned on validation)",
            "ours implicit (preset, not tuned)", "most-rated unseen items"} <= set(clean["results"])
    assert all(0 <= r["ndcg@10"] <= 1 for r in clean["results"].values())
    assert report(tmp_path / "clean") == (tmp_path / "clean" / "topk.md").read_text()
    assert "| ours implicit (tuned on validation) |" in report(tmp_path / "clean")


def test_a_fit_of_ours_that_never_left_its_initialization_is_marked(
        files: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuned implicit fit held at its start (0 steps) recommends from its biases alone:
    its result says ``"left_init": false``, its row is marked and named under the table;
    the other fits of ours left theirs, the baselines have no such key."""
    from deeplora.experiments import topk

    final = topk.final_implicit_params
    monkeypatch.setattr(topk, "final_implicit_params",
                        lambda seed, chosen: {**final(seed, chosen), "max_steps": 0})
    train, test, _ = files
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="never left its initialization"):
        assert main(["experiment", "topk", "--fast", "--train", str(train), "--test",
                     str(test), "--name", "tiny", "--out", str(out)]) == 0
    results = json.loads((out / "topk-tiny.json").read_text())["results"]
    assert results[topk.IMPLICIT]["left_init"] is False
    assert results[topk.IMPLICIT]["interaction_rms"] == 0.0
    assert all(results[name]["left_init"] is True
               for name in (topk.EXPLICIT, topk.UNSHRUNK, topk.IMPLICIT_UNTUNED))
    assert "left_init" not in results[topk.MOST_RATED]
    text = (out / "topk.md").read_text()
    assert f"| {topk.IMPLICIT} (never left init) | " in text
    assert f"| {topk.IMPLICIT_UNTUNED} | " in text
    assert text.endswith("\n\nNever left its initialization (X = A Bᵀ did not grow: a model of "
                         f"its biases alone, no evidence for ours): {topk.IMPLICIT}.\n")


@pytest.mark.parametrize(("stuck", "chosen"), [({0.2}, 0.1), ({0.1, 0.2}, 0.2)])
def test_selection_passes_over_grid_points_that_never_left_their_initialization(
        files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, stuck: set[float],
        chosen: float) -> None:
    """A grid point whose fit never left its initialization is no evidence: the best NDCG
    among the others is chosen (reg 0.2 scores best but is stuck), unless every point is
    stuck; rows record ``left_init``, the chosen settings do not."""
    from deeplora.completion.data import read_ratings
    from deeplora.experiments import topk

    class Fit:
        best_step_ = 7

        def __init__(self, reg: float | None) -> None:
            self.left_init_ = reg not in stuck
            self.ndcg = {0.1: 0.2, 0.2: 0.9}.get(reg, 0.5)

        def set_params(self, **params: Any) -> Fit:
            return self

        def recommend(self, users: np.ndarray, k: int) -> tuple[np.ndarray]:
            return (np.full((len(users), k), self.ndcg),)

    def ours(split: Split, k: int, **params: Any) -> tuple[Fit, np.ndarray]:
        fit = Fit(params.get("reg"))
        return fit, fit.recommend(split.users, k)[0]

    monkeypatch.setattr(topk, "ours", ours)
    monkeypatch.setattr(Split, "score", lambda self, recommended, k: {
        f"ndcg@{k}": float(recommended[0, 0])})
    monkeypatch.setattr(topk.importlib.util, "find_spec", lambda name: None)  # no ALS grid
    args = argparse.Namespace(seed=0, threshold=4.0, k=10)
    result = topk.select(read_ratings(files[0]), args, {"implicit": {"reg": [0.1, 0.2]}},
                         lambda line: None)
    assert {(row["reg"], row["left_init"]) for row in result["grids"]["implicit"]} == {
        (reg, reg not in stuck) for reg in (0.1, 0.2)}
    assert result["chosen"]["implicit"]["reg"] == chosen
    assert "left_init" not in result["chosen"]["implicit"]


def test_report_only_rebuilds_the_table_from_the_committed_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--report-only`` writes topk.md from the ``topk-*.json`` in --out, reading no data (the
    committed ML-100K, FilmTrust and Book-Crossing runs give docs/results/topk/topk.md)."""
    import shutil

    committed = Path(__file__).parents[2] / "docs" / "results" / "topk"
    out = tmp_path / "out"
    out.mkdir()
    for path in committed.glob("topk-*.json"):
        shutil.copy(path, out)
    assert main(["experiment", "topk", "--report-only", "--root", str(tmp_path / "none"),
                 "--out", str(out)]) == 0
    assert (out / "topk.md").read_text() == (committed / "topk.md").read_text()
    assert capsys.readouterr().out == f"wrote results to {out}/\n"


def test_report_only_refuses_a_folder_without_runs_and_names_a_file_that_is_no_result(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["experiment", "topk", "--report-only", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"deeplora: error: {out}: no topk-*.json (run topk "
                                       "without --report-only first)\n")
    assert not out.exists()
    out.mkdir()
    (out / "topk-tiny.json").write_text('{"split": "u1", "results": {}}')  # movielens'
    assert main(["experiment", "topk", "--report-only", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(
        f"deeplora: error: {out / 'topk-tiny.json'}: not a result of `deeplora experiment "
        "topk` (no key(s) ['dataset', 'k', ")
    assert [p.name for p in out.iterdir()] == ["topk-tiny.json"]
