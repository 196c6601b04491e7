"""DeepMatrixCompletion.save/load: bad files are named in one error."""

from pathlib import Path

import pytest

from deeplora.completion.estimator import DeepMatrixCompletion

from .helpers import low_rank_ratings


def test_load_names_the_path_of_missing_empty_truncated_or_foreign_files(tmp_path: Path) -> None:
    rows, cols, values, _, _ = low_rank_ratings()
    good = tmp_path / "m.pt"
    DeepMatrixCompletion(rank=2, max_steps=2).fit(rows, cols, values).save(good)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match=r"no saved DeepMatrixCompletion at .*nope\.pt"):
        DeepMatrixCompletion.load(tmp_path / "nope.pt")
    for name in ("empty.pt", "cut.pt", "text.pt"):
        with pytest.raises(ValueError, match=rf"{name}' is not a readable saved "
                           r"DeepMatrixCompletion \(empty, truncated"):
            DeepMatrixCompletion.load(tmp_path / name)
