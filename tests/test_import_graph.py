"""The import graph, read with `ast`: the policy language imports nothing from the gateway, and
no module imports itself back through others, counting imports inside functions (which hide a
cycle without breaking it). Imports under `if TYPE_CHECKING:` are for annotations only and are
not counted."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "dsl")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in PACKAGES for p in (ROOT / top).rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, known: dict[str, Path]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imported(ast.parse(path.read_text(encoding="utf-8")), known) - {name}
            for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_the_policy_language_imports_nothing_from_the_gateway():
    graph = import_graph()
    offending = {name: sorted(n for n in deps if n.startswith("gateway"))
                 for name, deps in graph.items() if name.startswith("dsl")}
    assert {k: v for k, v in offending.items() if v} == {}


def test_there_are_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_function_level_imports_count():
    source = "def f():\n    from gateway.state import GatewayState\n"
    known = {"gateway.state": Path("x")}
    assert _imported(ast.parse(source), known) == {"gateway.state"}


def test_every_error_class_lives_in_errors_and_is_drawn_in_its_docstring():
    """Errors in one package: no error class elsewhere in the gateway (private signals apart,
    and the echo upstream's own), the hierarchy drawn in gateway/errors/__init__.py names each,
    and the package exports each."""
    package = ROOT / "gateway" / "errors"
    init = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(init) or ""
    defined = [node.name for path in sorted(package.glob("*.py"))
               for node in ast.parse(path.read_text(encoding="utf-8")).body
               if isinstance(node, ast.ClassDef)]
    assert len(defined) > 50  # the modules were read
    assert [name for name in defined if name not in doc] == []
    exported = next(ast.literal_eval(node.value) for node in init.body
                    if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__")
    assert sorted(exported) == sorted(defined)
    elsewhere = []
    for path in (ROOT / "gateway").rglob("*.py"):
        if package in path.parents or "echo" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ClassDef) and not node.name.startswith("_")
                    and any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception"))
                            for b in node.bases)):
                elsewhere.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert elsewhere == []
