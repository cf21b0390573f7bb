"""The package has no circle of imports (module level and lazy imports inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import gan_detect

PKG = Path(gan_detect.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> the gan_detect modules it imports (``from pkg import mod`` counts as pkg.mod)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        todo: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and _is_type_checking(node):
                todo.extend(node.orelse)  # annotations only: not an import at run time
                continue
            todo.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    base = ".".join([*anchor, *([base] if base else [])])
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    deps.add(sub if sub in files else base)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_graph_sees_the_known_edges() -> None:
    g = import_graph()
    assert "gan_detect.config.load" in g["gan_detect.app.cli"]
    assert "gan_detect.variants.common" in g["gan_detect.variants.tiny_face"]
    assert (
        "gan_detect.app.demo" in g["gan_detect.app.commands.demo"]
    )  # a lazy import inside a function counts


def test_cycle_finder_finds_a_planted_cycle() -> None:
    g = import_graph()
    g["gan_detect.config.load"] = g["gan_detect.config.load"] | {"gan_detect.app.demo"}
    cycle = find_cycle(g)
    assert cycle is not None and cycle[0] == cycle[-1]


def test_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_only_the_entry_point_imports_the_cli() -> None:
    """Library modules (the demo included) get config loading from configload, not from cli."""
    g = import_graph()
    assert [m for m, deps in g.items() if "gan_detect.app.cli" in deps] == ["gan_detect.__main__"]
