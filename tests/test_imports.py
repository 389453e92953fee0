"""Every module of napari_unet imports, and the top-level imports between them form no cycle.

The graph is read from the source (an AST walk over ``src/napari_unet``): an edge
``a → b`` for each module-level ``import``/``from … import`` in ``a`` that names a module
``b`` of the package (a ``from pkg import name`` where ``name`` is a submodule gives an edge
to that submodule), plus ``a → p`` for each package ``p`` whose ``__init__`` that import
runs and that does not contain ``a``. Imports inside functions (lazy by design) and under
``if TYPE_CHECKING:`` are not followed: they do not run when the module is imported.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import napari_unet

ROOT = Path(napari_unet.__file__).resolve().parent
PACKAGE = "napari_unet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: module level, also inside top-level
    ``try``/``if`` blocks, except ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody):
                    visit(block)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool) -> list[str]:
    """Dotted names a top-level import statement of module ``name`` brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importing module's package
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules its top-level imports execute."""
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_packages = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        if _is_package(name, modules):
            own_packages.add(name)
        for node in _top_level_imports(tree):
            for target in _imported(node, name, _is_package(name, modules)):
                if not target.startswith(PACKAGE) or target not in modules:
                    continue
                graph[name].add(target)
                parts = target.split(".")
                for k in range(1, len(parts)):  # packages whose __init__ this import runs
                    parent = ".".join(parts[:k])
                    if parent not in own_packages and parent in modules:
                        graph[name].add(parent)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "napari_unet.training.scoring" in graph["napari_unet.training.trainer"]
    assert "napari_unet.evaluation.metrics" in graph["napari_unet.training.handlers"]
    # lazy (function-level) imports are not edges
    assert "napari_unet.inference.predict" not in graph["napari_unet.training.scoring"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_every_module_imports(name):
    if name.endswith("__main__"):
        pytest.skip("runs the CLI when imported")
    importlib.import_module(name)
