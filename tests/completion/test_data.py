"""Ratings files, id re-indexing, MovieLens 100K layout."""

from pathlib import Path

import numpy as np
import pytest

from deeplora.completion.data import (
    IdIndex,
    find_movielens_100k,
    movielens_100k,
    ratings_from_frame,
    read_ratings,
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
