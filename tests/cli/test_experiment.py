"""``deeplora experiment NAME``: every experiment's options parse and its help prints."""

from __future__ import annotations

import pytest

from deeplora.cli import main
from deeplora.experiments import load_all


@pytest.mark.parametrize("name", sorted(load_all()))
def test_every_experiment_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["experiment", name, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: deeplora experiment {name}") and "--out" in text
