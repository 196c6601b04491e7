import pytest

from deeplora.completion import METHODS, default_settings


@pytest.mark.parametrize("method", METHODS)
def test_adamw_gets_adams_defaults(method: str) -> None:
    # adamw fell through to the GD branch: the paper's GD step (5e3 · observed fraction, here
    # 1000) as AdamW's learning rate; the estimator with optimizer="adamw" fit nothing
    assert default_settings(method, "adamw", observed_fraction=0.2)[1:] == \
        default_settings(method, "adam", observed_fraction=0.2)[1:]
    assert default_settings(method, "sgd", observed_fraction=0.2)[1:] == \
        default_settings(method, "gd", observed_fraction=0.2)[1:]


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'Adam'; choose one of \['gd', "):
        default_settings("compressed", "Adam")
