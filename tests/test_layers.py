"""The layers point one way (index <- models <- service, the CLI on top), no two modules import
each other even indirectly, and offline evaluation loads the serving engine without the web
stack or a store. Read from the source's own import statements."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("index", "models", "service", "loadtest", "cli")
# What each top-level package may import from the project. The load generator is a client:
# it reads the dataset's ids (models.data), never the service.
ALLOWED = {"index": {"index"}, "models": {"index", "models"},
           "service": {"index", "models", "service"}, "loadtest": {"models", "loadtest"},
           "cli": set(PACKAGES)}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports, at any depth of the file (lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module(p): p for p in files}
    # "from a.b import c" names module a.b.c when it exists, else attribute c of a.b.
    return {name: {m for m in _imports(path) if m in modules}
            for name, path in modules.items()}


def test_layers_point_one_way(graph: dict[str, set[str]]) -> None:
    bad = [f"{src} -> {dst}" for src, dsts in graph.items() for dst in dsts
           if dst.split(".")[0] not in ALLOWED[src.split(".")[0]]]
    assert bad == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> successors) as [a, b, ..., a], or None: depth-first search
    for a back edge."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules(graph: dict[str, set[str]]) -> None:
    assert find_cycle(graph) is None


def test_no_import_cycle_between_packages(graph: dict[str, set[str]]) -> None:
    # The rooms of index/ and models/ are their folders (models.nets, models.engine.recall, ...);
    # the web layer and the CLI are one room each (the app wires routers that read its deps).
    def unit(module: str) -> str:
        if module.split(".")[0] in ("service", "cli"):
            return module.split(".")[0]
        path = ROOT.joinpath(*module.split("."))
        return module if path.is_dir() else module.rpartition(".")[0] or module

    units: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        units.setdefault(unit(src), set()).update(unit(d) for d in dsts if unit(d) != unit(src))
    assert find_cycle(units) is None


def test_offline_evaluation_loads_no_web_stack_and_no_store() -> None:
    code = ("import sys, models.evaluate.offline, models.engine.factory; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'redis', 'service', 'uvicorn')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"


def test_serving_engine_loads_no_trainer() -> None:
    code = ("import sys, models.engine.factory; "
            "print([m for m in sys.modules if m.startswith(('models.train', 'models.build'))])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"
