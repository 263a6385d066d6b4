"""The house's import graph, read from the source: no circle of modules (nor of the packages inside iql_tf), and
no library module importing a command (the console scripts of setup.py, and what runs as `python -m`)."""

import ast
import pathlib
import re

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "iql_tf"


def module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports() -> dict:
    """{module: the iql_tf modules it imports}, at any depth of its code (imports inside functions count too)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        # Importing a submodule runs its package's __init__ too, but a package that imports its own submodules
        # is no circle.
        graph[name] = {other for other in found if other in modules and other != name
                       and not name.startswith(other + ".")}
    return graph


def circles(graph: dict) -> list:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unit(module: str) -> str:
    """A package inside iql_tf counts as one unit (iql_tf.data.sources -> iql_tf.data); a module as itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def test_no_module_imports_itself_through_others():
    assert circles(imports()) == []


def test_no_package_inside_iql_tf_imports_itself_through_others():
    graph = {}
    for module, others in imports().items():
        graph.setdefault(unit(module), set()).update(unit(other) for other in others if unit(other) != unit(module))
    assert circles(graph) == []


def test_no_library_module_imports_a_command():
    commands = set(re.findall(r"\"[\w-]+\": \"(iql_tf\.\w+):run\"", (REPO_ROOT / "setup.py").read_text()))
    assert "iql_tf.train" in commands
    offenders = sorted(f"{module} -> {other}" for module, others in imports().items() if module not in commands
                       for other in others & commands)
    assert offenders == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
