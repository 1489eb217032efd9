"""The packages' import graphs have no cycles, and the pure layers import no I/O.

Every ``import`` statement counts, wherever it stands (module level, inside a function,
under ``TYPE_CHECKING``): a lazy import that closes a loop is still a loop. The graph is
read from the source with :mod:`ast`, so the test needs none of the modules to import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ec", "placement", "hcstore", "ray_integration")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules that ``path`` imports (``from pkg import mod`` resolves to ``pkg.mod``)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    graph = _graph()
    inside = {
        name: {t for t in targets if t.split(".")[0] == package}
        for name, targets in graph.items()
        if name.split(".")[0] == package
    }
    assert _find_cycle(inside) is None, f"import cycle: {' -> '.join(_find_cycle(inside) or [])}"


def test_no_cycle_across_packages():
    assert _find_cycle(_graph()) is None


@pytest.mark.parametrize(
    "package, allowed",
    [
        ("ec", {"ec"}),
        ("placement", {"placement"}),
        ("hcstore", {"hcstore", "ec", "placement"}),
    ],
)
def test_layers_import_only_below_themselves(package, allowed):
    graph = _graph()
    for name, targets in graph.items():
        if name.split(".")[0] == package:
            above = {t for t in targets if t.split(".")[0] not in allowed}
            assert not above, f"{name} imports {sorted(above)}, above its layer"


def test_hcstore_errors_and_config_load_without_zeromq():
    code = "import sys, hcstore.errors, hcstore.config; print('zmq' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
