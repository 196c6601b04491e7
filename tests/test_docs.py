"""Every ```python block of README.md and docs/*.md runs, and every ``deeplora`` command line
of those files and BENCHMARKS.md parses, so the docs cannot drift from the code.

The blocks of one file run in order in one namespace (a later block may use what an earlier one
defined), in a fresh temporary working folder whose ``../shared`` is the repository's
``../shared`` (so paths written as in the docs, e.g. ``../shared/data/glue``, resolve), with
matplotlib's non-interactive backend and one torch thread.

Size override: a line ``<!-- docs-test: OLD => NEW -->`` among the lines right above a block's
opening fence replaces the text OLD by NEW in that block before it runs (several such lines
may stand there). It is how a block that shows the real sizes (``steps=2000``, 5 seeds of 500
steps) runs small in the suite; OLD must occur in the block, so an override cannot go stale.
Markdown renderers do not show the comments. Nothing else is skipped or rewritten.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OVERRIDE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*=>\s*(.*?)\s*-->")
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*deeplora((?:\s.*)?)$")
"""A ``deeplora`` command line, after an optional prompt and environment assignments."""
SHELL_FENCES = {"```", "```bash", "```sh", "```console"}


@dataclass
class Block:
    """One ```python block: its first code line (1-based) and the text to run."""

    line: int
    code: str
    replacements: list[tuple[str, str]]


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with the overrides written above each."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        replacements, k = [], i - 1
        while k >= 0 and (match := OVERRIDE.fullmatch(lines[k].strip())):
            replacements.insert(0, (match.group(1), match.group(2)))
            k -= 1
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        blocks.append(Block(i + 2, "\n".join(lines[i + 1:end]) + "\n", replacements))
        i = end + 1
    return blocks


def shell_commands(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` of each ``deeplora`` command in a file's shell blocks (fenced as bash,
    sh, console or plain, or indented by 4 spaces), backslash continuations joined, cut at the
    first pipe, redirection, ``;``, ``&&`` or comment."""
    commands: list[tuple[int, list[str]]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text.startswith("```"):
            fence = text if fence is None else None
            continue
        if not ((fence in SHELL_FENCES) or (fence is None and line.startswith("    "))):
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + text)
        elif match := COMMAND.match(text):
            pending = (number, match.group(1))
        if pending is not None and not text.endswith("\\"):
            start, command = pending
            pending = None
            command = re.split(r"\s(?:#|\||>|2>|&&|;)", command.replace("\\", " ") + " ")[0]
            commands.append((start, shlex.split(command)))
    return commands


def test_shell_commands_finds_continued_and_prefixed_lines(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("```bash\ndeeplora complete --size 10 \\\n    --rank 2  # note\n```\n"
                   "```python\ndeeplora = 1\n```\n\n    OMP_NUM_THREADS=1 deeplora recommend "
                   "--k 5 > x.csv\n")
    assert shell_commands(doc) == [(2, ["complete", "--size", "10", "--rank", "2"]),
                                   (9, ["recommend", "--k", "5"])]


@pytest.mark.parametrize("path", [p for p in [*DOCS, ROOT / "BENCHMARKS.md"]
                                  if shell_commands(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_commands_parse(path: Path) -> None:
    """Every documented ``deeplora`` command is accepted by the command's parser (flags,
    choices, value types; nothing runs)."""
    from deeplora.cli import build_parser

    for line, argv in shell_commands(path):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                build_parser(argv).parse_args(argv)
            except SystemExit as exc:
                assert not exc.code, f"{path.name}:{line}: {stderr.getvalue().strip()}"


def test_parser_finds_overrides(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("text\n<!-- docs-test: steps=500 => steps=2 -->\n```python\nsteps=500\n```\n"
                   "```bash\nnot python\n```\n```python\nx = 1\n```\n")
    first, second = python_blocks(doc)
    assert (first.line, first.code, first.replacements) == (4, "steps=500\n",
                                                            [("steps=500", "steps=2")])
    assert (second.line, second.code, second.replacements) == (10, "x = 1\n", [])


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           one_thread: None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in python_blocks(path):
        code = block.code
        for old, new in block.replacements:
            assert old in code, f"{path.name}:{block.line}: override {old!r} not in the block"
            code = code.replace(old, new)
        where = f"{path.relative_to(ROOT)}:{block.line}"
        torch.manual_seed(0)
        exec(compile(code, where, "exec"), namespace)
    assert os.getcwd() == str(work)
