"""Output files: atomic, valid JSON, and created with the user's umask."""

import json
import os

import pytest

from deeplora.output import write_atomic, write_json


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_keep_the_users_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        write_json(tmp_path / "r.json", {"x": 1})
        write_atomic(tmp_path / "t.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(before)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == mode


def test_json_never_holds_bare_nan(tmp_path):
    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"a": None, "b": [None, 1.5]} and "NaN" not in text


@pytest.mark.parametrize("below", ["m.pt", "sub/m.pt"])
def test_a_file_in_the_path_is_named_and_nothing_is_written(tmp_path, below):
    """It was "FileExistsError: File exists: '…/file'" (or "Not a directory: '…/file/sub'")."""
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / below
    with pytest.raises(NotADirectoryError) as error:
        write_atomic(target, lambda tmp: tmp.write_text("y"))
    assert str(error.value) == (f"cannot write {str(target)!r}: {str(tmp_path / 'file')!r} is "
                                "a file, not a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(("command", "module", "names"), [
    ("recommend", "deeplora.cli.recommend", ("FIT_ONLY",)),
    ("complete", "deeplora.cli.complete", ("SYNTHETIC_ONLY", "RATINGS_ONLY")),
    ("finetune", "deeplora.cli.finetune", ("GLUE_ONLY",)),
])
def test_every_option_refused_in_some_runs_records_that_it_was_given(
        command: str, module: str, names: tuple[str, ...]) -> None:
    """``given_options`` sees only options whose action is ``Given``: one listed without it
    would never be refused, whatever the user typed."""
    import importlib

    from deeplora.cli import Given, build_parser

    subparser = build_parser([command])._subparsers._group_actions[0].choices[command]
    actions = {action.dest: action for action in subparser._actions}
    dests = [dest for name in names for dest in getattr(importlib.import_module(module), name)]
    assert [dest for dest in dests if not isinstance(actions[dest], Given)] == []
