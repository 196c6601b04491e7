"""``deeplora experiment movielens`` and ``deeplora complete --ratings`` on a tiny ml-100k."""

import json
from pathlib import Path

import numpy as np
import pytest

from deeplora.cli import main


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny matrices: one torch thread."""


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    """A 30-user × 25-item low-rank ratings set in ml-100k's layout (split u1 only)."""
    rng = np.random.default_rng(0)
    full = np.clip(np.rint(3 + rng.standard_normal((30, 2)) @ rng.standard_normal((2, 25))),
                   1, 5)
    rows, cols = np.nonzero(rng.random((30, 25)) < 0.6)
    lines = [f"{r + 1}\t{c + 1}\t{int(full[r, c])}\t{i}" for i, (r, c) in
             enumerate(zip(rows, cols, strict=True))]
    test = rng.random(len(lines)) < 0.2
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u1.base").write_text("\n".join(np.array(lines)[~test]) + "\n")
    (folder / "u1.test").write_text("\n".join(np.array(lines)[test]) + "\n")
    return folder


def test_experiment_writes_table_plot_json(ml100k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["experiment", "movielens", "--fast", "--root", str(ml100k), "--out",
                 str(out)]) == 0
    summary = json.loads((out / "movielens.json").read_text())
    results = summary["results"]["official folds"]
    pytest.importorskip("surprise")  # an optional extra: its rows are there when installed
    assert set(results) == set(summary["sources"]) and len(results) == 7
    assert all(f["split"] == "u1" and 0 < f["rmse"] < 2 for r in results.values() for f in r)
    per_split = json.loads((out / "movielens-u1.json").read_text())
    assert set(per_split["results"]) == set(results)
    table = (out / "movielens.md").read_text()
    assert "| official folds | deep compressed (ours) |" in table and "Surprise SVD++" in table


def _two_methods(ml100k: Path, out: Path, *splits: str) -> int:
    """Ours (20 steps) and ALS-WR on the given splits only (no official folds)."""
    return main(["experiment", "movielens", "--root", str(ml100k), "--out", str(out),
                 "--splits", *splits, "--steps", "20", "--methods", "deep compressed (ours)",
                 "biased MF (ALS-WR)"])


def test_experiment_random_splits_same_for_every_method(ml100k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _two_methods(ml100k, out, "--random-seeds", "3") == 0
    summary = json.loads((out / "movielens.json").read_text())
    assert list(summary["results"]) == ["random 80/20"]
    split = json.loads((out / "movielens-random-3.json").read_text())
    lines = (ml100k / "u.data").read_text().splitlines()
    assert split["n_test"] == round(0.2 * len(lines)) and split["n_train"] + split["n_test"] \
        == len(lines)
    assert (out / "movielens.png").stat().st_size > 0


def test_experiment_missing_data_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["experiment", "movielens", "--fast", "--root", str(tmp_path / "none"),
                 "--out", str(out)]) == 2
    assert not any(out.glob("*"))


def test_complete_ratings_json(ml100k: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["complete", "--ratings", str(ml100k / "u1.base"), "--test", str(ml100k / "u1.test"),
            "--rank", "2", "--steps", "100", "--quiet", "--json", "-"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"rmse", "mae", "seconds", "method", "rank", "depth"} <= set(result)
    assert result["rank"] == 2 and result["evaluated_on"] == "test" and result["rmse"] < 2


@pytest.mark.parametrize(("extra", "content", "match"), [
    (["--method", "original"], None, "compressed or narrow"),
    ([], "", "no ratings"),
    (["--rank", "50"], None, "2 × rank"),
])
def test_complete_ratings_bad_input(ml100k: Path, tmp_path: Path, extra: list[str],
                                    content: str | None, match: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    test = ml100k / "u1.test"
    if content is not None:
        test = tmp_path / "empty.test"
        test.write_text(content)
    out = tmp_path / "r.json"
    args = ["complete", "--ratings", str(ml100k / "u1.base"), "--test", str(test), "--steps",
            "5", "--quiet", "--json", str(out), *extra]
    assert main(args) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_experiment_temporal_split_and_report_only(ml100k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _two_methods(ml100k, out, "--random-seeds", "--temporal") == 0
    split = json.loads((out / "movielens-temporal.json").read_text())
    ours = split["results"]["deep compressed (ours)"]
    assert ours["selected"]["reg"] in [p["reg"] for p in ours["path"]]
    table = (out / "movielens.md").read_text()
    assert "| temporal (each user's last 20 %) | deep compressed (ours) |" in table
    assert "temporal " in table.split("λ of ours")[1]  # the chosen λ per split
    (out / "movielens.md").unlink()
    assert main(["experiment", "movielens", "--report-only", "--out", str(out)]) == 0
    assert (out / "movielens.md").read_text() == table
    assert main(["experiment", "movielens", "--dataset", "filmtrust", "--temporal", "--out",
                 str(tmp_path / "ft")]) == 2  # no timestamps: one line, exit 2
    assert main(["experiment", "movielens", "--dataset", "book-crossing", "--temporal",
                 "--out", str(tmp_path / "bx")]) == 2


def test_experiment_book_crossing_from_data_dir(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A 25-user × 22-book file in BX-Book-Ratings.csv's layout (its 10-core is all of it,
    less the implicit 0s), found in $DEEPLORA_DATA_DIR; ratings 1–10 stay unclipped to 5."""
    from deeplora.completion import data
    from deeplora.embedded_lm import sha256

    rng = np.random.default_rng(0)
    ratings = rng.integers(0, 11, (25, 22))
    ratings[:, :20] = np.maximum(ratings[:, :20], 1)  # ≥ 20 explicit ratings per user
    lines = ['"User-ID";"ISBN";"Book-Rating"'] + [
        f'"{u}";"B{i:03d}";"{ratings[u, i]}"' for u in range(25) for i in range(22)]
    path = tmp_path / "data" / data.BOOKCROSSING_FILE
    path.parent.mkdir(parents=True)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="latin-1")
    monkeypatch.setenv("DEEPLORA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(data, "BOOKCROSSING_SHA256", sha256(path))
    out = tmp_path / "out"
    other = _split_file(out, "book-crossing-5", "random-0", 1.5)  # the 5-core's, kept
    assert main(["experiment", "movielens", "--dataset", "book-crossing", "--random-seeds", "0",
                 "--steps", "20", "--methods", "deep compressed (ours)", "SoftImpute",
                 "--out", str(out)]) == 0
    split = json.loads((out / "book-crossing-random-0.json").read_text())
    assert split["n_train"] + split["n_test"] == int((ratings > 0).sum())
    assert json.loads((out / "book-crossing.json").read_text())["clip"] == [1.0, 10.0]
    assert "| random 80/20 | SoftImpute |" in (out / "book-crossing.md").read_text()
    assert json.loads(other.read_text())["results"]["SoftImpute"]["rmse"] == 1.5


def _split_file(out: Path, name: str, split: str, value: float | None) -> Path:
    """A per-split file of dataset ``name`` with one method scoring ``value``."""
    out.mkdir(exist_ok=True)
    record = {"split": split, "rmse": value, "mae": value, "fit_seconds": 1.0}
    path = out / f"{name}-{split}.json"
    path.write_text(json.dumps({"split": split, "results": {"SoftImpute": record}}))
    return path


def test_report_only_reads_only_its_own_dataset_s_splits(tmp_path: Path) -> None:
    """``book-crossing-5-random-0.json`` and the ``book-crossing-5.json`` summary match
    ``book-crossing-*.json`` but are no split of ``book-crossing``: not averaged in."""
    out = tmp_path / "out"
    _split_file(out, "book-crossing", "random-0", 2.0)
    for split in ("random-0", "random-1"):
        _split_file(out, "book-crossing-5", split, 3.0)
    assert main(["experiment", "movielens", "--dataset", "book-crossing-5", "--report-only",
                 "--out", str(out)]) == 0
    assert main(["experiment", "movielens", "--dataset", "book-crossing", "--report-only",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "book-crossing.json").read_text())
    assert summary["splits"] == ["random-0"]
    assert [r["rmse"] for r in summary["results"]["random 80/20"]["SoftImpute"]] == [2.0]


@pytest.mark.parametrize(("text", "reason"), [
    ('{"split": "u2", "res', "not valid JSON"),  # cut short
    ("null", "a JSON NoneType, not an object"),
    ('{"dataset": "filmtrust", "k": 10, "results": {}}', "no key(s) ['split']"),  # topk's
    ('{"split": "u3", "results": {}}', "holds split 'u3', not 'u2'"),
])
def test_report_only_names_a_per_split_file_that_is_no_result(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str) -> None:
    """One line naming the file and what is wrong with it; no report half-written."""
    out = tmp_path / "out"
    _split_file(out, "movielens", "u1", 0.9)
    (out / "movielens-u2.json").write_text(text)
    assert main(["experiment", "movielens", "--report-only", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"deeplora: error: {out / 'movielens-u2.json'}: not a per-split "
                          "result of `deeplora experiment movielens` (") and reason in err, err
    assert sorted(p.name for p in out.iterdir()) == ["movielens-u1.json", "movielens-u2.json"]


def test_report_only_with_a_diverged_run_warns_instead_of_crashing(tmp_path: Path) -> None:
    """A NaN RMSE (stored as JSON null) shows as nan in the table; the plot leaves that bar
    out with a warning instead of failing on NaN axis limits."""
    out = tmp_path / "out"
    _split_file(out, "movielens", "u1", 0.9)
    _split_file(out, "movielens", "u2", None)
    _split_file(out, "movielens", "temporal", 1.0)
    with pytest.warns(UserWarning, match="official folds: no finite mean RMSE of SoftImpute"):
        assert main(["experiment", "movielens", "--report-only", "--out", str(out)]) == 0
    table = (out / "movielens.md").read_text()
    assert "| official folds | SoftImpute | nan ± nan | nan ± nan | 1.00 ± 0.00 | 2 |" in table
    assert "| temporal (each user's last 20 %) | SoftImpute | 1.0000 ± 0.0000 |" in table
    assert (out / "movielens.png").stat().st_size > 0


def test_a_run_of_ours_that_never_left_its_initialization_is_left_out_and_named(
        ml100k: Path, tmp_path: Path) -> None:
    """Ours with ``--steps 0`` is a model of its biases alone: its per-split record says
    ``"left_init": false`` and the report leaves it out of ours' means, counts and names it;
    a record without the key (written before it was measured) counts."""
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="never left its initialization"):
        assert main(["experiment", "movielens", "--root", str(ml100k), "--out", str(out),
                     "--splits", "u1", "--random-seeds", "--steps", "0", "--methods",
                     "deep compressed (ours)"]) == 0
    record = json.loads((out / "movielens-u1.json").read_text())["results"][
        "deep compressed (ours)"]
    assert record["left_init"] is False and record["interaction_rms"] == 0.0
    table = (out / "movielens.md").read_text()
    assert ("| official folds | deep compressed (ours) | n/a | n/a | n/a | 0 (+1 never left "
            "init) |") in table
    assert ("\n\nNever left its initialization (X = A Bᵀ did not grow: a model of its "
            "biases alone, no evidence for the method), left out of the means above: u1 deep "
            "compressed (ours).\n") in table
    for split, value, flag in (("u2", 0.9, {"left_init": True}), ("u3", 1.0, {})):
        (out / f"movielens-{split}.json").write_text(json.dumps({"split": split, "results": {
            "deep compressed (ours)": {"split": split, "rmse": value, "mae": value,
                                       "fit_seconds": 1.0, **flag}}}))
    assert main(["experiment", "movielens", "--report-only", "--out", str(out)]) == 0
    table = (out / "movielens.md").read_text()
    assert ("| official folds | deep compressed (ours) | 0.9500 ± 0.0707 | 0.9500 ± 0.0707 | "
            "1.00 ± 0.00 | 2 (+1 never left init) |") in table
    assert "left out of the means above: u1 deep compressed (ours)." in table


def test_methods_rerun_updates_them_in_the_per_split_files(ml100k: Path, tmp_path: Path) -> None:
    """``--methods "deep compressed (ours)"`` into a folder of a full run (how docs/results.md
    reran ours) replaces ours' records and keeps the other methods' of the same split."""
    out = tmp_path / "out"
    assert _two_methods(ml100k, out, "--random-seeds", "3") == 0
    before = json.loads((out / "movielens-random-3.json").read_text())["results"]
    assert main(["experiment", "movielens", "--root", str(ml100k), "--out", str(out),
                 "--splits", "--random-seeds", "3", "--steps", "10", "--methods",
                 "deep compressed (ours)"]) == 0
    after = json.loads((out / "movielens-random-3.json").read_text())["results"]
    assert list(after) == list(before) and after["biased MF (ALS-WR)"] == \
        before["biased MF (ALS-WR)"]
    assert after["deep compressed (ours)"] != before["deep compressed (ours)"]  # rerun
    assert "| random 80/20 | biased MF (ALS-WR) |" in (out / "movielens.md").read_text()
    path = out / "movielens-random-3.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "n_train": 1}))  # other data
    assert main(["experiment", "movielens", "--root", str(ml100k), "--out", str(out),
                 "--splits", "--random-seeds", "3", "--methods", "SoftImpute"]) == 2
    assert json.loads(path.read_text())["results"] == after


def test_negative_steps_is_refused_by_its_flag_before_anything_is_written(
        ml100k: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--steps -3`` is one error naming ``--steps`` (not the estimator's ``max_steps``),
    before the per-split files of an earlier run are deleted; also with ``--report-only``."""
    out = tmp_path / "out"
    kept = _split_file(out, "movielens", "u1", 0.9).read_text()
    for extra in ([], ["--report-only"]):
        assert main(["experiment", "movielens", "--root", str(ml100k), "--out", str(out),
                     "--splits", "u1", "--random-seeds", "--steps", "-3", *extra]) == 2
        assert capsys.readouterr().err == \
            "deeplora: error: --steps must be an integer >= 0, got -3\n"
        assert [p.name for p in out.iterdir()] == ["movielens-u1.json"]
        assert (out / "movielens-u1.json").read_text() == kept


@pytest.mark.parametrize(("flags", "named"), [
    (["--steps", "50"], "--steps"),
    (["--splits", "u2"], "--splits"),
    (["--random-seeds", "0", "1", "2"], "--random-seeds"),  # even at the default seeds
    (["--random-seeds", "4", "--steps", "10"], "--random-seeds and --steps"),
])
def test_fast_refuses_the_flags_it_would_override(
        ml100k: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
        named: str) -> None:
    """``--fast`` runs u1 at 100 steps; it ignored ``--splits``, ``--random-seeds`` and
    ``--steps`` (and deleted the per-split files of other splits in ``--out``)."""
    out = tmp_path / "out"
    kept = _split_file(out, "movielens", "u3", 0.9).read_text()
    assert main(["experiment", "movielens", "--fast", "--root", str(ml100k), "--out", str(out),
                 *flags]) == 2
    assert capsys.readouterr().err == (
        "deeplora: error: --fast runs a smoke test of its own splits and steps (u1, or random-0 "
        f"without official folds; 100 steps): drop {named} or --fast\n")
    assert [p.name for p in out.iterdir()] == ["movielens-u3.json"]
    assert (out / "movielens-u3.json").read_text() == kept
