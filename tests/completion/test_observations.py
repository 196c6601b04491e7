"""check_observations (sorting, duplicates) and check_clip (a clip that makes predictions
useless is refused, one that narrows is allowed)."""

import numpy as np
import pytest

from deeplora.completion.observations import check_clip, check_observations


def test_duplicates_raise_or_average() -> None:
    rows, cols, values = np.array([0, 1, 0, 2]), np.array([1, 0, 1, 2]), np.array([1., 2, 3, 4])
    with pytest.raises(ValueError, match="duplicate"):
        check_observations(rows, cols, values)
    r, c, v, shape = check_observations(rows, cols, values, duplicates="mean")
    assert shape == (3, 3) and list(zip(r, c, v, strict=True)) == [(0, 1, 2.0), (1, 0, 2.0),
                                                                   (2, 2, 4.0)]


@pytest.mark.parametrize(("clip", "ok"), [
    ((1, 5), True), ((2, 4), True), ((0, 10), True), ((4, 10), True), ((-3, 1.5), True),
    ((10, 20), False), ((0, 1), False), ((5, 6), False), ((-2, -1), False),
])
def test_clip_must_overlap_the_ratings_range(clip: tuple[float, float], ok: bool) -> None:
    values = np.array([1.0, 3.0, 5.0])
    if ok:
        check_clip(clip, values)
    else:
        with pytest.raises(ValueError, match=r"does not overlap the ratings' range \[1, 5\]"):
            check_clip(clip, values)


def test_clip_of_constant_ratings_must_contain_them_and_names_the_option() -> None:
    check_clip((1, 5), np.array([3.0, 3.0]))
    check_clip((3, 5), np.array([3.0, 3.0]))
    with pytest.raises(ValueError, match=r"^--clip 10 20 does not overlap the ratings' range "
                       r"\[3, 3\]"):
        check_clip((10, 20), np.array([3.0, 3.0]), "--clip")
