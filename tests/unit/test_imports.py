"""The shape of the code's imports: no module of services/ or schemas/ imports itself
back through others, and the contract package (schemas/) stands alone.

The graph holds every import a module makes at its top level, those under
`if TYPE_CHECKING:` included (a cycle there still ties the two modules together for a
reader and for mypy). Imports inside functions are left out: they run late, on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "schemas")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The module's own import statements: at its top, or in a top-level if/try block."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            todo.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.Try):
            todo.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                todo.extend(handler.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (`from pkg import mod` names pkg.mod)."""
    modules = our_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that reach one another through their imports, sorted."""
    reach = {node: reachable(graph, node) for node in graph}
    groups = {
        tuple(sorted(n for n in reach[node] if node in reach[n]))
        for node in graph
        if node in reach[node]
    }
    return sorted(list(group) for group in groups)


def test_the_graph_sees_the_imports_it_is_built_from() -> None:
    graph = import_graph()
    assert "services.errors" in graph["services.bus"]
    assert "schemas.subjects" in graph["services.bus"]  # `from schemas import subjects`
    assert "services.bus" in graph["services.micro"]  # under TYPE_CHECKING


def test_cycles_finds_a_circle_and_only_the_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_services_or_schemas_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_the_contract_package_imports_nothing_from_services() -> None:
    reach = {
        name: sorted(t for t in targets if t.startswith("services"))
        for name, targets in import_graph().items()
        if name.startswith("schemas")
    }
    assert {name: found for name, found in reach.items() if found} == {}
