"""``deeplora recommend`` and ``deeplora complete --ratings`` on MovieLens-style CSV files."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from deeplora.cli import main


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny matrices: one torch thread."""


def _ratings_csv(path: Path, seed: int = 0, keep: float = 0.6) -> tuple[Path, Path]:
    """ratings.csv / test.csv in the MovieLens (ml-latest) layout, 30 users × 25 movies."""
    rng = np.random.default_rng(seed)
    full = np.clip(np.rint(3 + rng.standard_normal((30, 2)) @ rng.standard_normal((2, 25))),
                   1, 5)
    rows, cols = np.nonzero(rng.random((30, 25)) < keep)
    test = rng.random(rows.size) < 0.2
    header = "userId,movieId,rating,timestamp\n"
    lines = [f"{r + 1},{10 * c + 7},{full[r, c]:.1f},{1260759144 + i}\n"
             for i, (r, c) in enumerate(zip(rows, cols, strict=True))]
    train_path, test_path = path / "ratings.csv", path / "test.csv"
    train_path.write_text(header + "".join(np.array(lines)[~test]))
    test_path.write_text(header + "".join(np.array(lines)[test]))
    return train_path, test_path


def test_recommend_movielens_csv_end_to_end(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    train, test = _ratings_csv(tmp_path)
    out, model = tmp_path / "recs.csv", tmp_path / "model.pt"
    assert main(["recommend", "--ratings", str(train), "--test", str(test), "--k", "5",
                 "--output", str(out), "--save-model", str(model), "--quiet", "--json",
                 "-"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == 30 and summary["k"] == 5
    assert 0 < summary["test"]["rmse"] < 2 and 0 <= summary["test"]["ndcg@5"] <= 1
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["user", "item", "rank", "score", "predicted_rating"]
    assert len(rows) == summary["rows_written"] == 150
    seen = {(line.split(",")[0], line.split(",")[1])
            for line in train.read_text().splitlines()[1:]}
    assert not any((r["user"], r["item"]) in seen for r in rows)  # rated items excluded
    assert {r["item"] for r in rows} <= {str(10 * c + 7) for c in range(25)}  # raw movie ids
    first = [float(r["score"]) for r in rows if r["user"] == "1"]
    assert first == sorted(first, reverse=True) and len(first) == 5
    assert all(1 <= float(r["predicted_rating"]) <= 5 for r in rows)  # clipped ratings
    # the saved model gives the same list for chosen users, without refitting
    again = tmp_path / "again.csv"
    assert main(["recommend", "--ratings", str(train), "--model", str(model), "--users", "1",
                 "2", "--k", "5", "--output", str(again), "--quiet"]) == 0
    with again.open() as handle:
        chosen = list(csv.DictReader(handle))
    assert [r for r in rows if r["user"] in ("1", "2")] == chosen


def test_recommend_with_a_model_excludes_what_the_users_rated_in_ratings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--model m.pt --ratings newer.csv``: each user's items in newer.csv are excluded too
    (they were recommended: only the model's training items were); a user of newer.csv the
    model does not know is refused (it got a cold-start list without a word)."""
    train, _test = _ratings_csv(tmp_path)
    model = tmp_path / "model.pt"
    assert main(["recommend", "--ratings", str(train), "--save-model", str(model), "--k", "5",
                 "--output", str(tmp_path / "recs.csv"), "--quiet"]) == 0
    rated = {line.split(",")[1] for line in train.read_text().splitlines()[1:]
             if line.startswith("1,")}
    unrated = sorted({str(10 * c + 7) for c in range(25)} - rated)
    newer = tmp_path / "newer.csv"
    newer.write_text("userId,movieId,rating\n" + "".join(f"1,{item},3\n"
                                                         for item in unrated[:-2]))
    capsys.readouterr()
    assert main(["recommend", "--ratings", str(newer), "--model", str(model), "--k", "5",
                 "--output", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "user,item,rank,score,predicted_rating"
    assert sorted(line.split(",")[1] for line in lines[1:]) == unrated[-2:]
    newer.write_text(newer.read_text() + "999,7,4\n")
    assert main(["recommend", "--ratings", str(newer), "--model", str(model), "--output",
                 str(tmp_path / "new.csv")]) == 2
    assert capsys.readouterr().err == ("deeplora: error: --ratings: 1 id(s) not among the 30 "
                                       "users of --model: 999 (give --users)\n")
    assert not (tmp_path / "new.csv").exists()


def test_complete_ratings_uses_preset_on_csv(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    train, test = _ratings_csv(tmp_path, seed=1)
    assert main(["complete", "--ratings", str(train), "--test", str(test), "--quiet",
                 "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    from deeplora.completion.estimator import RATINGS_PRESET

    assert result["rank"] == RATINGS_PRESET["rank"] and result["evaluated_on"] == "test"
    assert result["clip"] == [1.0, 5.0] and result["rmse"] < 1.5


@pytest.mark.parametrize(("text", "flags", "match"), [
    ("userId,movieId\n1,2\n", [], "no rating column"),
    ("userId,movieId,rating\n1,2,good\n", [], "line 2: rating 'good' is not a number"),
    ("userId,movieId,rating\n1,2,nan\n", [], "line 2: rating 'nan' is not finite"),
    ("userId,movieId,rating\n1,2,3\n1,2,4\n", [], "repeated"),
    ("", [], "no ratings"),
    ("userId,movieId,rating\n", [], "no ratings"),
    ("who,what,stars\n1,2,3\n", ["--user-col", "whom"], "no column 'whom'"),
    ("userId,movieId,rating\n1,2,3\n1,3,4\n", ["--user-col", "userId", "--item-col", "userId"],
     "--user-col and --item-col are the same column 'userId'"),
])
@pytest.mark.parametrize("command", ["recommend", "complete"])
def test_bad_ratings_files_one_error_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, flags: list[str],
        match: str, command: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    out, summary = tmp_path / "recs.csv", tmp_path / "summary.json"
    args = (["recommend", "--output", str(out)] if command == "recommend"
            else ["complete"]) + ["--ratings", str(bad), "--json", str(summary), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "bad.csv" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_explicit_columns_tsv_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.tsv"
    rng = np.random.default_rng(2)
    lines = [f"{r}\tx{r}\tmovie-{c}\t{rng.integers(1, 6)}" for r in range(12) for c in range(10)
             if rng.random() < 0.7]
    path.write_text("when\twho\twhat\tstars\n" + "\n".join(lines) + "\n")
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--ratings", str(path), "--user-col", "who", "--item-col",
                 "what", "--rating-col", "stars", "--k", "3", "--rank", "2", "--output",
                 str(out), "--quiet"]) == 0
    text = out.read_text().splitlines()
    assert text[0] == "user,item,rank,score,predicted_rating" and text[1].startswith("x")
    assert all(line.split(",")[1].startswith("movie-") for line in text[1:])


def test_recommend_implicit_feedback_with_threshold(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    train, test = _ratings_csv(tmp_path, seed=3)
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--ratings", str(train), "--test", str(test), "--k", "4",
                 "--feedback", "implicit", "--positive-threshold", "4", "--rank", "2",
                 "--output", str(out), "--quiet", "--json", "-"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["feedback"] == "implicit" and "rmse" not in summary["test"]
    assert 0 <= summary["test"]["precision@4"] <= 1
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["user", "item", "rank", "score"] and len(rows) == 120


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
def test_a_fit_or_model_that_never_left_its_initialization_says_so(
        feedback: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its recommendations come from the biases alone: the JSON says ``"left_init": false``
    and stderr says it once, after fitting and again when the saved model is loaded."""
    train, _ = _ratings_csv(tmp_path)
    args = ["recommend", "--ratings", str(train), "--output", str(tmp_path / "recs.csv"),
            "--quiet", "--json", "-"]
    assert main([*args, "--feedback", feedback]) == 0
    assert json.loads(capsys.readouterr().out)["left_init"] is True
    model = tmp_path / "model.pt"
    assert main([*args, "--feedback", feedback, "--steps", "0", "--save-model",
                 str(model)]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["left_init"] is False and summary["interaction_rms"] == 0.0
    assert err.startswith("deeplora: the fit never left its initialization (X = A Bᵀ moved by "
                          "RMS 0.0e+00 over the training ratings): its results are those of "
                          "its biases alone") and err.count("\n") == 1
    assert main([*args, "--model", str(model)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["left_init"] is False
    assert err.startswith("deeplora: the fit never left its initialization")


@pytest.mark.parametrize(("flags", "match"), [
    (["--k", "0"], "--k must be >= 1, got 0"),
    (["--k", "26"], "--k 26 is more than the 25 items of --ratings"),
    (["--users", "1", "999", "abc"], "--users: 2 id(s) not among the 30 users of --ratings: "
                                     "999 abc"),
    (["--positive-threshold", "4"], "--positive-threshold applies to --feedback implicit"),
    (["--feedback", "implicit", "--shrinkage", "5"], "--shrinkage applies to --feedback "
                                                     "explicit"),
    # the estimator's checks, naming the flags (they said feedback='implicit', max_steps, …)
    (["--feedback", "implicit", "--positive-threshold", "9"],
     "error: --feedback implicit needs at least one positive, but none of the"),
    (["--feedback", "implicit", "--positive-threshold", "9"],
     "observations is >= --positive-threshold 9.0\n"),
    (["--steps", "-1"], "error: --steps must be an integer >= 0, got -1"),
    (["--rank", "0"], "error: --rank must be an integer >= 1, got 0"),
    (["--feedback", "implicit", "--alpha", "-1"], "error: --alpha must be a finite number >= 0"),
])
def test_bad_requests_one_error_nothing_written(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                flags: list[str], match: str) -> None:
    train, _ = _ratings_csv(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["recommend", "--ratings", str(train), "--output",
                 str(tmp_path / "new" / "recs.csv"), "--json", str(tmp_path / "s.json"),
                 "--quiet", "--steps", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_into_missing_folders_creates_them(tmp_path: Path) -> None:
    train, _ = _ratings_csv(tmp_path)
    out = tmp_path / "a" / "b" / "recs.csv"
    assert main(["recommend", "--ratings", str(train), "--output", str(out), "--k", "2",
                 "--steps", "2", "--quiet"]) == 0
    assert out.read_text().startswith("user,item,rank,score,predicted_rating\n")


def test_model_refuses_the_options_of_fitting(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--model`` they were silently ignored (``--save-model`` wrote nothing,
    ``--feedback implicit`` gave an explicit model's list)."""
    train, _ = _ratings_csv(tmp_path)
    model = tmp_path / "m.pt"
    assert main(["recommend", "--ratings", str(train), "--output", str(tmp_path / "a.csv"),
                 "--save-model", str(model), "--rank", "2", "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()  # 2 steps: the fit never left its initialization, says so
    before = sorted(p.name for p in tmp_path.iterdir())
    for flags in (["--save-model", str(tmp_path / "m2.pt")], ["--feedback", "implicit"],
                  ["--rank", "3"], ["--steps", "5"], ["--seed", "1"], ["--shrinkage", "5"],
                  ["--feedback", "implicit", "--alpha", "2"], ["--distributed"]):
        assert main(["recommend", "--ratings", str(train), "--model", str(model), "--output",
                     str(tmp_path / "b.csv"), "--quiet", *flags]) == 2
        given = " ".join(flag for flag in flags if flag.startswith("--"))
        assert capsys.readouterr().err == (f"deeplora: error: {given}: options of fitting a "
                                           f"model; --model {model} is already fitted\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert main(["recommend", "--ratings", str(train), "--model", str(model), "--output",
                 str(tmp_path / "b.csv"), "--quiet"]) == 0


def test_model_refuses_the_options_of_fitting_typed_at_their_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """They were refused only at another value than their default: ``--model implicit.pt
    --feedback explicit`` ran the implicit model, the flag silently ignored."""
    train, _ = _ratings_csv(tmp_path)
    model = tmp_path / "implicit.pt"
    assert main(["recommend", "--ratings", str(train), "--output", str(tmp_path / "a.csv"),
                 "--feedback", "implicit", "--save-model", str(model), "--rank", "2",
                 "--steps", "2", "--quiet"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    for flags, given in ((["--feedback", "explicit"], "--feedback"), (["--seed", "0"], "--seed"),
                         (["--seed", "0", "--feedback", "explicit"], "--feedback --seed")):
        assert main(["recommend", "--ratings", str(train), "--model", str(model), "--output",
                     str(tmp_path / "b.csv"), "--quiet", *flags]) == 2
        assert capsys.readouterr().err == (f"deeplora: error: {given}: options of fitting a "
                                           f"model; --model {model} is already fitted\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_model_help_names_the_options_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model``'s help said the options of fitting were "--feedback to --seed and
    --distributed", a range of the help that holds --include-seen, --test, --threshold and
    --device, which a loaded model takes; it names the refused options now."""
    from deeplora.cli import build_parser
    from deeplora.cli.recommend import FIT_ONLY

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    parser = build_parser(["recommend"])
    help = next(line for line in parser._subparsers._group_actions[0].choices["recommend"]
                .format_help().splitlines() if line.strip().startswith("--model"))
    named = set(re.findall(r"--[a-z-]+", help.split("options of fitting", 1)[1]))
    assert named == {"--" + dest.replace("_", "-") for dest in FIT_ONLY}


def test_options_of_fitting_keep_their_defaults_and_are_recorded_when_given() -> None:
    from deeplora.cli import build_parser

    parser = build_parser(["recommend"])
    args = parser.parse_args(["recommend", "--ratings", "r.csv", "--output", "o.csv"])
    assert vars(args) | {"func": None} == {
        "command": "recommend", "ratings": "r.csv", "output": "o.csv", "k": 10, "users": None,
        "feedback": "explicit", "positive_threshold": None, "alpha": None, "shrinkage": None,
        "include_seen": False, "test": None, "threshold": 4.0, "model": None,
        "save_model": None, "rank": None, "steps": None, "device": "auto", "seed": 0,
        "distributed": False, "json": None, "quiet": False, "format": "auto", "sep": None,
        "user_col": None, "item_col": None, "rating_col": None, "func": None}
    args = parser.parse_args(["recommend", "--ratings", "r.csv", "--output", "o.csv",
                              "--distributed", "--seed", "0", "--sep", ","])
    assert (args.distributed, args.seed, args.sep) == (True, 0, ",")
    assert args.given_flags == ["--distributed", "--seed", "--sep"]


def test_output_dash_is_stdout_and_binary_outputs_refuse_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--output -`` and ``--save-model -`` wrote files named ``-``."""
    train, _ = _ratings_csv(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["recommend", "--ratings", str(train), "--k", "2", "--steps", "2", "--quiet"]
    assert main([*args, "--output", "recs.csv"]) == 0
    capsys.readouterr()
    assert main([*args, "--output", "-", "--json", "s.json"]) == 0
    assert capsys.readouterr().out == Path("recs.csv").read_text()  # the CSV alone
    assert json.loads(Path("s.json").read_text())["output"] == "-"
    before = sorted(p.name for p in tmp_path.iterdir())
    for flags, error in (
            (["--output", "-", "--json", "-"], "--output - and --json -: only one of them can "
                                               "go to stdout"),
            (["--output", "r.csv", "--save-model", "-"], "--save-model -: a model is written "
                                                          "to a file, not to stdout; give a "
                                                          "file name")):
        assert main([*args, *flags]) == 2
        assert capsys.readouterr().err == f"deeplora: error: {error}\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == before
