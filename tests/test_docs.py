"""Every ```python block of README.md and docs/*.md runs, every ``deeplora`` command line
of those files and BENCHMARKS.md parses, and the calls the docs write in code spans
(``recommend(users, k, exclude_seen=True)``, API tables) name the library's parameters and
defaults, so the docs cannot drift from the code.

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

import ast
import contextlib
import inspect
import io
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    for line, argv in shell_commands(path):
        _assert_parses(path, line, argv)


def _assert_parses(path: Path, line: int, argv: list[str]) -> None:
    """``AssertionError`` naming ``path:line`` unless ``deeplora argv`` parses (``--help``,
    which exits 0, counts as parsing)."""
    from deeplora.cli import build_parser

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                raise AssertionError(f"{path.name}:{line}: {' '.join(argv)}: "
                                     f"{stderr.getvalue().strip()}") from exc


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


SIGNATURE = re.compile(r"`((?:\w+\.)*(\w+))\(([^`]*)\)`")
"""A code span that writes a call, ``name(params)``: its dotted name, last name and params."""


def signature_namespaces() -> dict[str, list[Any]]:
    """Per doc, where the names of its call spans are looked up, first match wins."""
    import deeplora
    import deeplora.adapters
    import deeplora.completion
    import deeplora.completion.data
    import deeplora.embedded_lm
    import deeplora.nlg.config
    from deeplora.adapters.peft_integration import DeepLoraModel
    from deeplora.completion.estimator import DeepMatrixCompletion

    return {"README.md": [deeplora.completion, DeepMatrixCompletion, deeplora.adapters],
            "adapters.md": [deeplora.adapters, deeplora, DeepLoraModel],
            "recommender.md": [DeepMatrixCompletion, deeplora.completion.data,
                               deeplora.completion],
            "nlg.md": [deeplora.nlg.config, deeplora.embedded_lm]}


def resolve(name: str, namespaces: list[Any]) -> Callable[..., Any] | None:
    """The first callable (not a module) called ``name`` in ``namespaces``."""
    for namespace in namespaces:
        found = getattr(namespace, name, None)
        if callable(found) and not inspect.ismodule(found):
            return found
    return None


def signature_problems(function: Callable[..., Any], params: str, table: bool = False
                       ) -> list[str]:
    """What the documented ``params`` of a call say that ``function``'s signature does not: a
    keyword it has no parameter for (unless it takes ``**kwargs``), in an API table a
    positional name it has no parameter for, and, where the span writes
    the signature (in an API table, or naming the leading parameters in order, as
    ``recommend(users, k, exclude_seen=True)``; not a call such as ``DeepLoraConfig(depth=2)``),
    a value (``rtol=1e-4``, ``dtype=torch.float32``) other than the default. ``...`` stands for
    any value."""
    call = ast.parse(f"f({params})", mode="eval").body
    assert isinstance(call, ast.Call)
    parameters = inspect.signature(function).parameters
    named = [name for name, p in parameters.items() if name not in ("self", "cls")
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    written = [arg.id if isinstance(arg, ast.Name) else None for arg in call.args] + [
        keyword.arg for keyword in call.keywords if keyword.arg is not None]
    signature = table or written == named[:len(written)]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    problems = [f"no parameter {name!r}" for name in written[:len(call.args)]
                if table and name is not None and name not in parameters]
    for keyword in call.keywords:
        if keyword.arg is None:
            if not takes_any:
                problems.append("no **kwargs")
            continue
        if keyword.arg not in parameters:
            if not takes_any:
                problems.append(f"no parameter {keyword.arg!r}")
            continue
        if not signature:
            continue
        value = eval(compile(ast.Expression(keyword.value), "<doc>", "eval"), {"torch": torch})
        default = parameters[keyword.arg].default
        if value is not Ellipsis and value != default:
            problems.append(f"{keyword.arg}={value!r}, but the default is {default!r}")
    return problems


def test_signature_problems_finds_wrong_names_and_defaults() -> None:
    def f(model: object, rtol: float = 1e-4, dtype: torch.dtype = torch.float32) -> None:
        """A documented function."""

    assert signature_problems(f, "model, rtol=1e-4, dtype=torch.float32") == []
    assert signature_problems(f, "model, rtol=1e-3, **kw") == [
        "rtol=0.001, but the default is 0.0001", "no **kwargs"]
    assert signature_problems(f, "dtype=torch.float64, tol=(a, b)") == ["no parameter 'tol'"]
    assert signature_problems(f, "module, dtype=torch.float64", table=True) == [
        "no parameter 'module'", "dtype=torch.float64, but the default is torch.float32"]


@pytest.mark.parametrize("name", ["README.md", "adapters.md", "recommender.md", "nlg.md"])
def test_documented_signatures_match_the_code(name: str) -> None:
    """Every call a doc writes in a code span with keywords (``recommend(users, k,
    exclude_seen=True)``) names real parameters and, where it shows a value, the default; in an
    API table (a line starting with ``|``) every call must name a function of the library."""
    path = next(p for p in DOCS if p.name == name)
    namespaces = signature_namespaces()[name]
    checked = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for match in SIGNATURE.finditer(line):
            function = resolve(match.group(2), namespaces)
            if function is None:
                assert not line.startswith("|"), f"{name}:{number}: no {match.group(1)}"
                continue
            try:
                problems = signature_problems(function, match.group(3), line.startswith("|"))
            except SyntaxError:  # `ranking_metrics(…, k, threshold)`: prose, not a call
                continue
            assert not problems, f"{name}:{number}: {match.group(1)}: {'; '.join(problems)}"
            checked += 1
    assert checked


def cli_defaults(*argv: str) -> dict[str, Any]:
    """The option values of ``deeplora ARGV`` as parsed (the defaults of the options not given)."""
    from deeplora.cli import build_parser

    return vars(build_parser(list(argv)).parse_args(list(argv)))


def test_readme_names_the_e2e_commands_that_choose_their_preset_by_gpu() -> None:
    """Without ``--preset`` (parsed as ``None``) the preset follows the GPU; README says which
    commands do that and which one defaults to a fixed preset."""
    text = " ".join((ROOT / "README.md").read_text().split())
    assert cli_defaults("finetune")["preset"] is None
    assert cli_defaults("experiment", "nlg-fewshot")["preset"] is None
    assert ("`deeplora finetune --task e2e` and `deeplora experiment nlg-fewshot` use the paper's "
            "settings where torch sees a GPU") in text
    fixed = cli_defaults("experiment", "nlg-checkpoints")["preset"]
    assert f"(`nlg-checkpoints` uses `{fixed}`;" in text


USAGE = re.compile(r"`deeplora ([^`\[]*?) ?(\[--[^`]*)`")
"""An inline usage line, ``deeplora experiment NAME [--flag VALUE] [--switch] …``."""
OPTION = re.compile(r"\[(--[\w-]+)(?: ([^\]]+))?\]")


def usage_commands(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, argv)`` for each inline usage line of a file: its options with the first of
    alternatives ``a|b`` (and one more argv per other alternative), a placeholder ``N`` as 2 and
    other upper-case ones (``DIR``) as a word; ``NAME`` stands for each name in the first
    column of the file's tables (``| `stsb-fewshot` | …``)."""
    text = path.read_text()
    names = re.findall(r"^\| `([\w-]+)` \|", text, flags=re.MULTILINE)
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in USAGE.finditer(line):
            options = [(flag, value.split("|") if value else [])
                       for flag, value in OPTION.findall(match.group(2))]
            variants = [[0] * len(options)] + [
                [k if i == j else 0 for j in range(len(options))]
                for i, (_, values) in enumerate(options) for k in range(1, len(values))]
            words = match.group(1).split()
            for command in ([[*words[:-1], name] for name in names] if words[-1] == "NAME"
                            else [words]):
                for choice in variants:
                    argv = list(command)
                    for (flag, values), k in zip(options, choice, strict=True):
                        value = values[k] if values else None
                        if value is not None and value.isupper():
                            value = "2" if value == "N" else value.lower()
                        argv += [flag] if value is None else [flag, value]
                    commands.append((number, argv))
    return commands


def test_usage_commands_expands_names_and_alternatives(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("`deeplora experiment NAME [--head a|b] [--jobs N] [--fast]`\n\n"
                   "| `one` | x |\n| `two` | y |\n")
    assert usage_commands(doc) == [
        (1, ["experiment", "one", "--head", "a", "--jobs", "2", "--fast"]),
        (1, ["experiment", "one", "--head", "b", "--jobs", "2", "--fast"]),
        (1, ["experiment", "two", "--head", "a", "--jobs", "2", "--fast"]),
        (1, ["experiment", "two", "--head", "b", "--jobs", "2", "--fast"])]


@pytest.mark.parametrize("path", [p for p in DOCS if usage_commands(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_usage_lines_parse(path: Path) -> None:
    """Every option of an inline usage line (``deeplora experiment prompt-select [--task
    mrpc,cola] …``) is one the command has, with a value it accepts."""
    for line, argv in usage_commands(path):
        _assert_parses(path, line, argv)


def test_recommender_doc_lists_the_keys_of_selected() -> None:
    """docs/recommender.md writes out the keys of ``selected_`` after a λ search."""
    import numpy as np

    from deeplora.completion.estimator import DeepMatrixCompletion

    text = " ".join((ROOT / "docs" / "recommender.md").read_text().split())
    documented = re.search(r"`est\.selected_` holds the chosen `\{([^}]*)\}`", text)
    assert documented, "recommender.md no longer lists selected_'s keys"
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(rng.random((20, 15)) < 0.5)
    est = DeepMatrixCompletion.ratings(rank=2, max_steps=20, refit=False).fit(
        rows, cols, rng.integers(1, 6, rows.size).astype(float))
    assert set(re.findall(r'"(\w+)"', documented.group(1))) == set(est.selected_)


def forms(value: float) -> set[str]:
    """The ways the docs write a number: ``0.001``, ``1e-3``, ``10⁴``, ``5`` for 5.0."""
    written = {f"{value:g}"}
    mantissa, exponent = f"{value:e}".split("e")
    if float(mantissa).is_integer():
        written.add(f"{int(float(mantissa))}e{int(exponent)}")
        if float(mantissa) == 1:
            written.add("10" + str(int(exponent)).translate(str.maketrans("-0123456789",
                                                                          "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")))
    return written


def says(text: str, template: str, value: float) -> bool:
    """Whether ``text`` holds ``template`` with ``{}`` replaced by one of ``value``'s forms."""
    return any(template.format(form) in text for form in forms(value))


def test_forms() -> None:
    assert forms(1e-3) == {"0.001", "1e-3", "10⁻³"}
    assert forms(3e-2) == {"0.03", "3e-2"}
    assert forms(1e4) == {"10000", "1e4", "10⁴"}
    assert forms(5.0) == {"5", "5e0"}


def doc_text(name: str) -> str:
    """A doc's text with every whitespace run one space (sentences wrap anywhere)."""
    return " ".join(next(p for p in DOCS if p.name == name).read_text().split())


def test_readme_states_the_synthetic_defaults() -> None:
    """README's "Defaults: Adam, η = 3e-2 and γ = 0.01 for `compressed` …, ε = 1e-3, depth 3,
    float32" are ``deeplora complete``'s."""
    from deeplora.cli.complete import SYNTHETIC_DEFAULTS
    from deeplora.completion.methods import ADAM_DEFAULTS, DEFAULT_OPTIMIZER

    text = doc_text("README.md")
    defaults = text[text.index("Defaults: "):]
    defaults = defaults[:defaults.index(". ")]
    lr, gamma = ADAM_DEFAULTS["compressed"]
    assert defaults.startswith(f"Defaults: {DEFAULT_OPTIMIZER.capitalize()},"), defaults
    assert says(defaults, "η = {}", lr) and says(defaults, "γ = {}", gamma), defaults
    assert says(defaults, "ε = {}", SYNTHETIC_DEFAULTS["init_scale"]), defaults
    assert f"depth {SYNTHETIC_DEFAULTS['depth']}" in defaults, defaults
    assert cli_defaults("complete")["dtype"] in defaults, defaults


def test_recommender_doc_states_the_ratings_preset() -> None:
    """docs/recommender.md's account of ``RATINGS_PRESET`` (rank, depth, η, γ, penalties,
    validation split, patience, shrinkage) is the preset's."""
    from deeplora.completion.estimator import RATINGS_PRESET, DeepMatrixCompletion
    from deeplora.completion.methods import default_settings

    text = doc_text("recommender.md")
    preset = DeepMatrixCompletion.ratings().get_params()
    _, _, gamma = default_settings(preset["method"], preset["optimizer"], preset["lr"],
                                   preset["gamma"])
    for template, value in [("r̂ = {}, depth", preset["rank"]), ("depth {}, Adam", preset["depth"]),
                            ("Adam at η = {} ", preset["lr"]), ("(γ = {} for the outer", gamma),
                            ("`reg_uniform={}`", preset["reg_uniform"]),
                            ("`bias_prior={}`", preset["bias_prior"]),
                            ("worth κ = {} pseudo-ratings", preset["bias_prior"]),
                            ("on a {} % validation split", 100 * preset["validation_fraction"]),
                            ("(patience {} evaluations", preset["patience"]),
                            ("evaluations of {} steps", preset["eval_every"]),
                            ("`RATINGS_PRESET` has λ_s = {}", preset["shrinkage"])]:
        assert says(text, template, value), template.format(value)
    assert f'(`reg="{RATINGS_PRESET["reg"]}"`)' in text


def table(name: str, header: str) -> dict[str, list[str]]:
    """The rows of the table in doc ``name`` whose header line starts with ``header``: first
    cell -> the other cells, bold marks removed."""
    lines = next(p for p in DOCS if p.name == name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("**", "") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_nlg_doc_presets_table_is_the_presets() -> None:
    from deeplora.experiments.nlg_fewshot import PAPER_SEEDS
    from deeplora.nlg.config import PRESETS, nlg_preset

    rows = table("nlg.md", "| | `paper` | `cpu` |")
    for column, name in enumerate(PRESETS):
        config = nlg_preset(name)
        assert rows["batch / steps / lr"][column].startswith(
            tuple(f"{config.batch_size} / {config.steps} / {lr}" for lr in forms(config.lr)))
        optimizer = rows["optimizer"][column]  # "eps 1e-6" or "eps 1e-6·ε^{L−1} = 1e-12"
        assert says(optimizer, "eps {}", config.adam_eps) or says(optimizer, "= {}",
                                                                   config.adam_eps)
        decoding = rows["decoding"][column]
        assert decoding == "greedy" if config.num_beams == 1 else (
            decoding == f"beam search, {config.num_beams} beams")
        test_mrs = rows["test MRs"][column]
        assert test_mrs.startswith("all ") if config.test_mrs is None else (
            test_mrs.startswith(f"{config.test_mrs},"))
        assert rows["adapters"][column] == f"r = {config.rank}, {config.targets}"
    assert rows["lengths"][0].startswith(f"MR ≤ {config.max_input_length} tokens, output ≤ "
                                         f"{config.max_output_length},")
    assert rows["seeds (`nlg-fewshot`)"] == [str(PAPER_SEEDS[name]) for name in PRESETS]


def test_finetune_doc_presets_table_is_the_presets() -> None:
    from deeplora.finetune.config import PRESETS, preset

    rows = table("finetune.md", "| | `paper` (default) | `practical` |")
    paper, practical = (preset(name) for name in PRESETS)
    assert cli_defaults("finetune")["preset"] is None  # finetune's run() takes "paper" then
    assert says(rows["optimizer"][0], "eps {}, weight decay 0", paper.adam_eps)
    assert says(rows["optimizer"][1], "({})", practical.adam_eps)
    assert says(rows["learning rate"][0], "{}, linear", paper.lr)
    for column, config in enumerate((paper, practical)):
        assert rows["batch / max length"][column].startswith(
            f"{config.batch_size} / {config.max_length}, padded to "
            + (f"{config.max_length}" if config.pad_to_max_length else "the longest"))
    assert rows["Deep LoRA"][0] == (f"depth {paper.depth}, r = {paper.rank}, ε = "
                                    f"{'1e-3' if paper.init_scale == 1e-3 else paper.init_scale}")
    assert rows["head"][0].startswith("frozen") != paper.train_head
    assert rows["head"][1].startswith("trains") == practical.train_head
    text = doc_text("finetune.md")
    assert f"evaluation batches ({paper.eval_batch_size})" in text
    assert f"(default {paper.max_length}, the paper's)" in text


def test_finetune_doc_experiments_table_is_the_plans() -> None:
    """Steps and seeds of each experiment in docs/finetune.md's table, and what ``--fast``
    cuts them to, are the plans'."""
    from deeplora.experiments.finetune_paper import plan
    from deeplora.finetune.sweep import Options

    rows = table("finetune.md", "| NAME | what |")
    for name, (_, settings) in ((n.strip("`"), cells) for n, cells in rows.items()):
        cells = [c for c in plan(name, Options(), ROOT.parent / "shared/data/glue")
                 if c.config.method != "zero-shot"]
        steps, = {c.config.steps for c in cells}
        seeds, = {len(c.seeds) for c in cells}
        assert settings.startswith(f"{steps} steps,"), (name, settings)
        assert settings.endswith(f"{seeds} seeds" if seeds > 1 else f"{seeds} seed"), name
    fast = Options(fast=True).config(500)
    assert (f"`--fast` is a smoke test: {fast.steps} steps, {len(Options(fast=True).seed_list(5))}"
            f" seeds, {fast.dev_samples} dev rows, {fast.max_length} tokens") in doc_text(
                "finetune.md")


def flags_between(text: str, start: str, end: str) -> set[str]:
    """The ``--flags`` in ``text`` between the first ``start`` and the next ``end``."""
    after = text[text.index(start) + len(start):]
    return set(re.findall(r"`(--[\w-]+)`", after[:after.index(end)]))


def as_flags(destinations: tuple[str, ...]) -> set[str]:
    return {"--" + dest.replace("_", "-") for dest in destinations}


def test_docs_list_the_flags_each_mode_refuses() -> None:
    """The lists of flags refused in one mode (``--task e2e``, ``recommend --model``,
    ``complete --ratings``) are the code's."""
    from deeplora.cli.complete import SYNTHETIC_ONLY
    from deeplora.cli.finetune import GLUE_ONLY
    from deeplora.cli.recommend import FIT_ONLY

    nlg, recommender = doc_text("nlg.md"), doc_text("recommender.md")
    assert flags_between(nlg, "The GLUE tasks' ", "are refused with") == as_flags(GLUE_ONLY)
    assert flags_between(recommender, "With `--model` (already fitted) the options of fitting,",
                         "are refused") == as_flags(FIT_ONLY)
    assert flags_between(recommender, "refuses the synthetic problem's (", ")") == as_flags(
        SYNTHETIC_ONLY)


def test_readme_names_keys_of_the_complete_json(tmp_path: Path, one_thread: None) -> None:
    """README's "`--json -` prints one JSON object (method, size, …)" names keys it has."""
    import json

    from deeplora.cli import main

    text = doc_text("README.md")
    listed = text[text.index("`--json -` prints one JSON object (") + 35:]
    keys = [key.strip() for key in listed[:listed.index(")")].split(",")]
    out = tmp_path / "r.json"
    assert main(["complete", "--size", "20", "--rank", "2", "--steps", "5", "--quiet", "--json",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    assert keys[-1] == "…" and set(keys[:-1]) <= set(result), keys


def test_readme_describes_dmc_theory_at_its_defaults() -> None:
    """README: "`dmc-theory` trains a 60×60, depth-3 factorization of a rank-3 target …
    each layer's 60 singular values (54 of them stay equal throughout)", i.e. d − 2r."""
    defaults = cli_defaults("experiment", "dmc-theory")
    size, depth, rank = defaults["size"], defaults["depth"], defaults["rank"]
    assert (f"`dmc-theory` trains a {size}×{size}, depth-{depth} factorization of a rank-{rank} "
            f"target by GD and shows each layer's {size} singular values ({size - 2 * rank} of "
            "them stay equal throughout)") in doc_text("README.md")


def test_docs_state_the_constants_the_code_uses() -> None:
    """Thresholds and sizes the docs quote: export-lora's held-out batch, a result's numerical
    rank tolerance, NLG's "left its initialization" bound."""
    from deeplora.cli.adapters import HELD_OUT
    from deeplora.finetune.train import RANK_ATOL
    from deeplora.nlg.train import LEFT_INIT_ATOL

    assert (f"measured on {HELD_OUT['batch']}×{HELD_OUT['length']} random token ids"
            in doc_text("adapters.md"))
    assert says(doc_text("finetune.md"), "the numerical rank (σ > {})", RANK_ATOL)
    assert says(doc_text("nlg.md"), "largest spectral norm of any ΔW above {})", LEFT_INIT_ATOL)
