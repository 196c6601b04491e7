"""Ratings files: (user, item, rating[, time]) triples, id re-indexing, MovieLens 100K.

- :func:`read_ratings` reads MovieLens' tab-separated ``user item rating timestamp`` layout
  (``format="movielens"``) or a CSV/TSV file with a header naming the columns (``"csv"``;
  the separator is a tab for ``.tsv``/``.tab``/``.data`` files, else a comma, or ``sep``).
- :class:`IdIndex` maps raw ids to 0-based indices, fitted on the training file. An id it has
  not seen maps to index ``len(ids)`` (one past the end), which
  :class:`~deeplora.completion.estimator.DeepMatrixCompletion` and the baselines treat as
  unknown (fallback: global mean plus the known side's bias).
- :func:`movielens_100k` loads an official split (``u1``…``u5``, ``ua``, ``ub``) of
  GroupLens' ml-100k folder, found at ``root``, ``$DEEPLORA_MOVIELENS_100K``, or
  ``../shared/data/movielens/ml-100k`` relative to the repository or the working directory.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = ("movielens", "csv")
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


def _parse_ids(column: list[str]) -> np.ndarray:
    """Integers if every id is one, else strings."""
    try:
        return np.array([int(x) for x in column], dtype=np.int64)
    except ValueError:
        return np.array(column, dtype=str)


def read_ratings(
    path: str | os.PathLike[str],
    format: str = "movielens",
    sep: str | None = None,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    time_col: str | None = None,
) -> Ratings:
    """Read a ratings file (see the module docstring). Raises ``ValueError`` on an empty file,
    missing columns, ragged lines or ratings that are not finite numbers."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = Path(path)
    with path.open(newline="") as handle:
        if format == "movielens":
            reader = csv.reader(handle, delimiter=sep or "\t")
            names, want = None, (0, 1, 2, 3)
        else:
            delimiter = sep or ("\t" if path.suffix in (".tsv", ".tab", ".data") else ",")
            reader = csv.reader(handle, delimiter=delimiter)
            names = [name.strip() for name in next(reader, [])]
            columns = [user_col, item_col, rating_col] + ([time_col] if time_col else [])
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{str(path)!r}: no column(s) {missing} in header {names}")
            want = tuple(names.index(c) for c in columns)
        rows = [line for line in reader if line and any(cell.strip() for cell in line)]
    if not rows:
        raise ValueError(f"{str(path)!r} has no ratings")
    needed = max(want if time_col else want[:3]) + 1
    for number, line in enumerate(rows, start=2 if names else 1):
        if len(line) < needed:
            raise ValueError(f"{str(path)!r} line {number}: expected at least {needed} fields, "
                             f"got {len(line)}")
    try:
        values = np.array([float(line[want[2]]) for line in rows])
    except ValueError as exc:
        raise ValueError(f"{str(path)!r}: rating is not a number ({exc})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{str(path)!r}: ratings must be finite (found NaN or inf)")
    times = None
    if time_col or (format == "movielens" and all(len(line) > 3 for line in rows)):
        times = np.array([float(line[want[3]]) for line in rows])
    return Ratings(_parse_ids([line[want[0]].strip() for line in rows]),
                   _parse_ids([line[want[1]].strip() for line in rows]), values, times)


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
    return (read_ratings(folder / f"{split}.base"), read_ratings(folder / f"{split}.test"))
