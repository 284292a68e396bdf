r"""The house rules the package tree keeps: no import cycle, and a domain that imports nothing above it."""

import ast
from pathlib import Path

import llamafactory_fea


PACKAGE = Path(llamafactory_fea.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    r"""Every module of the package and the package modules it imports, at the top or inside functions."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                imported |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}

        graph[name] = {module for module in imported if module in files and module != name}

    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    r"""One import cycle of the graph, as the modules along it, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported]
            if imported not in state and (cycle := visit(imported, [*path, imported])):
                return cycle

        state[module] = "done"
        return None

    return next(
        (cycle for module in sorted(graph) if module not in state and (cycle := visit(module, [module]))), None
    )


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "llamafactory_fea.loop" in graph["llamafactory_fea.cli"]  # the graph sees imports inside functions
    assert find_cycle(graph) is None


def test_the_domain_imports_nothing_above_it():
    domain = "llamafactory_fea.fea"
    for module, imported in import_graph().items():
        if module.startswith(domain):
            assert all(name.startswith(domain) for name in imported), (module, imported)
