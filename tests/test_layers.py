"""The folders are the layers: each imports only from itself and the layers below it, and nothing imports in a circle.

Read from the source with `ast`, nothing imported: every `import` and `from ... import` of the
package counts, at the top of a module, inside a function (a lazy import is an edge at run time
all the same) and under `if TYPE_CHECKING:` (a circle of type hints is a circle a reader
follows, and one `from __future__ import annotations` away from a runtime one). The checks take
the package's folder, so the last test shows them catching a wrong import and a circle in a
small package of their own.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tradeul_maint"

# Top to bottom. A layer's modules import from their own layer and the ones below, never above.
LAYERS = ("cli", "core", "observe", "view", "run", "plan", "state", "config", "redisio", "base")
ENTRY = ("__init__", "__main__")  # the package itself (its version) and `python -m tradeul_maint`


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package in `root` (a package's name for its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The package's modules that `name` imports (target, line): `from a.b import c` is a.b.c when c is a module."""
    package = name.split(".")[0]
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}".rstrip(".")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.extend((t, node.lineno) for t in targets if t.split(".")[0] == package)
    return found


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def unplaced(root: Path) -> list[str]:
    """Modules outside every layer (besides the package's own __init__ and __main__)."""
    return [name for name in modules(root) if layer(name) is None
            and name not in (root.name, f"{root.name}.__main__")]


def upward_imports(root: Path) -> list[str]:
    """Each import of a module from a layer above its own, as `file:line: a imports b (a layer above)`."""
    known = modules(root)
    found = []
    for name, path in known.items():
        mine = layer(name)
        for target, line in imports(name, path, known):
            theirs = layer(target)
            if mine is not None and theirs is not None and LAYERS.index(theirs) < LAYERS.index(mine):
                found.append(f"{path.relative_to(root.parent)}:{line}: {name} imports {target}, "
                             f"but {mine}/ may import only from {', '.join(LAYERS[LAYERS.index(mine):])}")
    return found


def cycles(root: Path) -> list[list[str]]:
    """Every circle of imports between modules (Tarjan's strongly connected components), each as a path."""
    known = modules(root)
    graph = {name: sorted({t for t, _ in imports(name, path, known) if t in known and t != name})
             for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(circle(graph, sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def circle(graph: dict[str, list[str]], component: list[str]) -> list[str]:
    """One circle through the component's first module, for the message: a -> b -> a."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph[v]:
            if w == start:
                return paths[v] + [start]
            if w in inside and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def test_every_module_is_in_a_layer():
    outside = unplaced(PACKAGE)
    assert not outside, f"place each in one of {', '.join(LAYERS)}: " + ", ".join(outside)


def test_layer_packages_import_nothing():
    """A layer's __init__ is its docstring: importing one module of a layer loads nothing else (the cron tick)."""
    heavy = [layer for layer in LAYERS if any(isinstance(node, (ast.Import, ast.ImportFrom))
                                              for node in parsed(PACKAGE / layer / "__init__.py").body)]
    assert not heavy, f"these layers' __init__.py import something: {heavy}"


def test_every_import_points_down_the_layers():
    upward = upward_imports(PACKAGE)
    assert not upward, "\n" + "\n".join(upward)


def test_no_module_imports_itself_back_at_run_time_or_for_type_hints():
    circles = cycles(PACKAGE)
    assert not circles, "\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_checks_catch_a_module_out_of_place_an_upward_import_and_circles(tmp_path):
    root = tmp_path / "pkg"
    for folder in ("", "plan", "run", "base"):
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").write_text('"""A layer."""\n')
    (root / "loose.py").write_text("")
    (root / "base" / "a.py").write_text("from pkg.base import b\n")
    (root / "base" / "b.py").write_text("def f():\n    from pkg.base import a\n")  # a lazy import closes a circle
    (root / "plan" / "planner.py").write_text("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
                                              "if TYPE_CHECKING:\n    from pkg.run.runner import Runner\n")
    (root / "run" / "runner.py").write_text("from ..plan import planner\n")  # relative, and a circle of type hints
    assert unplaced(root) == ["pkg.loose"]
    assert upward_imports(root) == ["pkg/plan/planner.py:4: pkg.plan.planner imports pkg.run.runner, but plan/ may "
                                    "import only from plan, state, config, redisio, base"]
    assert sorted(cycles(root)) == [["pkg.base.a", "pkg.base.b", "pkg.base.a"],
                                    ["pkg.plan.planner", "pkg.run.runner", "pkg.plan.planner"]]
