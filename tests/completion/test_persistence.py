"""DeepMatrixCompletion.save/load: bad files are named in one error."""

from pathlib import Path

import numpy as np
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


def test_numpy_scalar_parameters_save_and_load(tmp_path: Path) -> None:
    """lr = np.float64(0.1) (from np.logspace, say) fitted fine, but save wrote a numpy scalar
    into the file and load refused it as 'empty, truncated or another kind of file'."""
    rows, cols, values, _, _ = low_rank_ratings()
    params = {"lr": np.float64(0.1), "reg": np.float64(0.05), "clip": (np.float64(1), 5)}
    est = DeepMatrixCompletion(rank=2, max_steps=2, **params).fit(rows, cols, values)
    est.save(tmp_path / "m.pt")
    loaded = DeepMatrixCompletion.load(tmp_path / "m.pt")
    assert loaded.get_params() == est.get_params()
    assert all(type(loaded.get_params()[key]) is float for key in ("lr", "reg"))
    np.testing.assert_array_equal(loaded.predict(rows, cols), est.predict(rows, cols))


def test_format_1_model_ranks_and_saves_again(tmp_path: Path) -> None:
    """A model loaded from a format-1 file (no training entries) failed with TypeErrors in
    ranking_metrics (exclude_seen=True, the default) and in save."""
    import torch

    rows, cols, values, _, _ = low_rank_ratings()
    est = DeepMatrixCompletion(rank=2, max_steps=2).fit(rows, cols, values)
    est.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("clip", "ids", "seen"):
        del state[key]
    torch.save({**state, "format": 1}, tmp_path / "old.pt")
    old = DeepMatrixCompletion.load(tmp_path / "old.pt")
    with pytest.raises(ValueError, match="pass exclude_seen=False"):
        old.ranking_metrics(rows, cols, values + 5)
    metrics = old.ranking_metrics(rows, cols, values + 5, exclude_seen=False)
    old.save(tmp_path / "again.pt")
    again = DeepMatrixCompletion.load(tmp_path / "again.pt")
    assert again.ranking_metrics(rows, cols, values + 5, exclude_seen=False) == metrics


def test_a_model_saved_before_left_init_was_measured_loads_it_as_unknown(tmp_path: Path
                                                                         ) -> None:
    import torch

    rows, cols, values, _, _ = low_rank_ratings()
    DeepMatrixCompletion(rank=2, max_steps=30).fit(rows, cols, values).save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("interaction_rms_", "left_init_"):
        del state["fitted"][key]
    torch.save(state, tmp_path / "old.pt")
    old = DeepMatrixCompletion.load(tmp_path / "old.pt")
    assert old.left_init_ is None and old.interaction_rms_ is None
    old.save(tmp_path / "again.pt")
    assert DeepMatrixCompletion.load(tmp_path / "again.pt").left_init_ is None


@pytest.mark.parametrize(("change", "problem"), [
    (lambda s: {"shape": [s["shape"][0] + 1, s["shape"][1]]},
     r"factors W_1 … W_L of shapes \[.*\] do not multiply to 21×15"),
    (lambda s: {"factors": s["factors"][:1]}, r"1 factors, at least 2 matrices needed"),
    (lambda s: {"factors": [*s["factors"][:-1], s["factors"][-1].T]},
     r"factors W_1 … W_L of shapes .* do not multiply"),
    (lambda s: {"row_bias": s["row_bias"][:5]}, r"row_bias has shape \(5,\), not \(20,\)"),
    (lambda s: {"shape": [20]}, r"shape \[20\] is not two positive integers"),
])
def test_load_refuses_parts_that_do_not_fit_the_shape(tmp_path: Path, change, problem) -> None:
    """A shape the factors contradict loaded and failed at predict; one factor gave 'need at
    least 2 factors, got 1' without the path; a short bias gave an IndexError at predict."""
    import torch

    rows, cols, values, _, _ = low_rank_ratings(m=20, n=15)
    DeepMatrixCompletion(rank=2, max_steps=2).fit(rows, cols, values).save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["shape"] == [20, 15]
    bad = tmp_path / "bad.pt"
    torch.save({**state, **change(state)}, bad)
    with pytest.raises(ValueError, match=rf"^'{bad}' is an inconsistent saved "
                       rf"DeepMatrixCompletion: {problem}"):
        DeepMatrixCompletion.load(bad)
