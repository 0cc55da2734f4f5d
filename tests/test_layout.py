"""The package's layout contract: no import circle, no private name used across modules, and one definition
each of device synchronisation, peak memory and samples/s."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "meltr"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path):
    """(node, imported module, imported names) of every import in the module, at any depth."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = _package_of(name, path).split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = ".".join(p for p in (base, node.module) if p)
            else:
                target = node.module or ""
            yield node, target, [a.name for a in node.names]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for _, target, names in _imports(name, path):
            for candidate in [target] + [f"{target}.{n}" for n in names]:
                if candidate in MODULES and candidate != name:
                    edges.add(candidate)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_among_the_package_modules():
    graph = _graph()
    assert "meltr.train.loop" in graph["meltr.bench.runner"]  # relative imports are resolved
    assert "meltr.data.synth.common" in graph["meltr.data.synth.tvqa"]
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_name_is_imported_from_another_module():
    bad = [f"{name}: from {target} import {n}" for name, path in MODULES.items()
           for _, target, names in _imports(name, path) if target != "__future__"
           for n in names if n.startswith("_")]
    assert bad == []


def _private_defs() -> dict[str, set[str]]:
    """Private functions and methods (`_x`, not dunders) -> the modules that define them."""
    out: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("_") \
                    and not node.name.endswith("__"):
                out.setdefault(node.name, set()).add(name)
    return out


def test_no_private_method_is_called_from_another_module():
    defs = _private_defs()
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in defs and name not in defs[node.attr] \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                bad.append(f"{name}:{node.lineno} .{node.attr}")
    assert bad == []


@pytest.mark.parametrize("pattern, home", [
    (r"torch\.cuda\.synchronize\(", "train/device.py"),            # device synchronisation
    (r"max_memory_allocated\(|ru_maxrss|PeakRSS\(", "train/memory.py"),   # peak memory
    (r"sum\([^)]*\)\s*/\s*1e3|\.sum\(\)\s*/\s*1e3", "train/timing.py"),  # samples/s
])
def test_one_definition(pattern, home):
    where = sorted(str(p.relative_to(PACKAGE)) for p in MODULES.values() if re.search(pattern, p.read_text()))
    assert where == [home]


def test_the_top_level_holds_only_cross_cutting_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "config.py", "errors.py", "evaluate.py", "io.py", "rng.py"]
