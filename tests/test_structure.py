"""Package structure: no import cycles, no library module importing the command line, and
light start-up (a subcommand imports only what it uses)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.util import resolve_name
from pathlib import Path

import deeplora

SRC = Path(deeplora.__file__).resolve().parent
HEAVY = ("transformers", "peft", "accelerate", "datasets", "sklearn", "matplotlib")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the deeplora modules it imports anywhere (top level or inside functions)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve_name("." * node.level + (node.module or ""), package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_detects_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert {"deeplora.finetune.runs", "deeplora.cli.finetune"} <= graph.keys()
    assert "deeplora.finetune.report" in graph["deeplora.cli.finetune"]  # edges are found
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


def test_library_modules_do_not_import_the_command_line() -> None:
    offenders = {name: sorted(t for t in targets if t.startswith("deeplora.cli"))
                 for name, targets in import_graph().items()
                 if not name.startswith("deeplora.cli")}
    assert {k: v for k, v in offenders.items() if v} == {}


def _imported_by(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(SRC.parent), os.environ.get("PYTHONPATH")]))}  # this deeplora
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, env=env)
    return {name.split(".")[0] for name in proc.stdout.split()}


def test_complete_help_imports_no_fine_tuning_stack() -> None:
    loaded = _imported_by("from deeplora.cli import main\ntry:\n    main(['complete', '--help'])"
                          "\nexcept SystemExit:\n    pass")
    assert "deeplora" in loaded and "torch" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_package_imports_are_lazy_and_deeplora_lora_config_registers_with_peft() -> None:
    assert _imported_by("import deeplora, deeplora.cli, deeplora.finetune.config").isdisjoint(
        HEAVY)
    loaded = _imported_by("from deeplora import DeepLoraConfig\n"
                          "from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING as M\n"
                          "assert any(c is DeepLoraConfig for c in M.values())")
    assert "peft" in loaded
