"""No import cycles inside the lightsweep package, and the layers import downwards only.

A cycle between modules works only as long as every import in it happens late enough (inside a
function, after the other module has finished loading); one moved import, or a new entry point that
loads the modules in another order, turns it into an ImportError or a half-initialised module. So the
graph is built from every import statement in src/lightsweep, function-level ones included (they are
where cycles hide), from the AST only: nothing is imported.

Edges: `import lightsweep.a.b` -> lightsweep.a.b; `from lightsweep.a import x` -> lightsweep.a.x when
x is a submodule, else -> lightsweep.a (its __init__); relative imports likewise. The parent packages
that Python imports implicitly are not edges.

Layers: lightsweep.config and lightsweep.tracking.* sit below lightsweep.sweeps and never import it;
the benchmark sweep (lightsweep.sweeps.benchmark) does not depend on the report module.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "lightsweep"


def package_modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` (a package is its __init__.py)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(src: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: line of the first such import}."""
    modules = package_modules(src, package)

    def known(name: str) -> str | None:
        """`name`, or the closest enclosing module that exists (`a.b.missing` -> `a.b`)."""
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = module.split(".")
                    parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                    source = ".".join(parts + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != package:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else known(source))
            elif (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.split(".")[0] == package
                and (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr == "import_module"
                    or isinstance(node.func, ast.Name)
                    and node.func.id in ("import_module", "__import__")
                )
            ):
                targets = [known(node.args[0].value)]  # importlib.import_module("lightsweep.x")
            for target in targets:
                if target and target != module:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The shortest cycle through each module that is on one (Tarjan's SCCs, then a BFS per module)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def strongconnect(v: str) -> None:  # the package has tens of modules: recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    def shortest_cycle(start: str, component: set[str]) -> list[str]:
        parent, queue = {start: None}, deque([start])
        while queue:
            v = queue.popleft()
            if start in graph[v]:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            for w in sorted(graph[v]):
                if w in component and w not in parent:
                    parent[w] = v
                    queue.append(w)
        raise AssertionError(f"{start} is in a strongly connected component but on no cycle")

    found = set()
    for component in components:
        for module in component:
            cycle = shortest_cycle(module, component)[:-1]
            first = cycle.index(min(cycle))  # one rotation per cycle: it starts at its smallest name
            found.add(tuple(cycle[first:] + cycle[:first]))
    return [list(c) + [c[0]] for c in sorted(found)]


def describe(cycle: list[str], graph: dict[str, dict[str, int]], src: Path) -> str:
    """One line per import of the cycle, with the file and line that makes it."""
    modules = package_modules(src, PACKAGE)
    return "\n".join(
        f"  {a} imports {b}  ({modules[a].relative_to(src.parent)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])
    )


def imports_of(graph: dict[str, dict[str, int]], importer_prefix: str, imported_prefix: str) -> list[str]:
    """The edges from modules under `importer_prefix` to modules under `imported_prefix`."""

    def under(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return [
        f"{a} imports {b} (line {line})"
        for a, edges in sorted(graph.items())
        if under(a, importer_prefix)
        for b, line in sorted(edges.items())
        if under(b, imported_prefix)
    ]


def test_lightsweep_has_no_import_cycles():
    graph = import_graph(SRC, PACKAGE)
    assert len(graph) > 10 and any(graph.values()), "the scan found no modules or no imports"
    found = cycles(graph)
    assert not found, "import cycles in lightsweep:\n" + "\n\n".join(describe(c, graph, SRC) for c in found)


def test_layers_import_downwards_only():
    graph = import_graph(SRC, PACKAGE)
    bad = imports_of(graph, "lightsweep.config", "lightsweep.sweeps")
    bad += imports_of(graph, "lightsweep.tracking", "lightsweep.sweeps")
    bad += imports_of(graph, "lightsweep.sweeps.benchmark", "lightsweep.sweeps.report")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_scanner_finds_a_cycle_and_resolves_imports(tmp_path):
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from lightsweep.b import g   # function-level: still an edge\n",
        "b.py": "from . import c\n",
        "c.py": "import lightsweep.pkg.d\n",
        "pkg/__init__.py": "from lightsweep.pkg.d import thing\n",
        "pkg/d.py": "from .. import a\nfrom lightsweep.pkg import thing\nthing = 1\n",
        "pkg/e.py": "from lightsweep.sweeps import report\nfrom lightsweep import pkg\n",
    }
    src = tmp_path / "src"
    for rel, text in files.items():
        (src / PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / PACKAGE / rel).write_text(textwrap.dedent(text))

    graph = import_graph(src, PACKAGE)
    assert graph["lightsweep.a"] == {"lightsweep.b": 2}
    assert graph["lightsweep.b"] == {"lightsweep.c": 1}
    assert graph["lightsweep.c"] == {"lightsweep.pkg.d": 1}  # not lightsweep.pkg: no implicit parents
    assert graph["lightsweep.pkg"] == {"lightsweep.pkg.d": 1}
    assert graph["lightsweep.pkg.d"] == {"lightsweep.a": 1, "lightsweep.pkg": 2}
    assert graph["lightsweep.pkg.e"] == {"lightsweep": 1, "lightsweep.pkg": 2}  # no lightsweep.sweeps here

    found = cycles(graph)
    assert found == [
        ["lightsweep.a", "lightsweep.b", "lightsweep.c", "lightsweep.pkg.d", "lightsweep.a"],
        ["lightsweep.pkg", "lightsweep.pkg.d", "lightsweep.pkg"],
    ]
    assert describe(found[1], graph, src).splitlines() == [
        f"  lightsweep.pkg imports lightsweep.pkg.d  ({Path('src/lightsweep/pkg/__init__.py')}:1)",
        f"  lightsweep.pkg.d imports lightsweep.pkg  ({Path('src/lightsweep/pkg/d.py')}:2)",
    ]
    assert imports_of(graph, "lightsweep.pkg", "lightsweep.a") == ["lightsweep.pkg.d imports lightsweep.a (line 1)"]
