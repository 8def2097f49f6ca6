"""The import graph of service/ and workers/, read from the source (ast), not by importing it.

Every ``import`` and ``from ... import`` counts, at module level or inside a function; those under
``if TYPE_CHECKING:`` do not (they never run). A function-level import counts for circles too: the
circles this check was written against (``service.api.openapi`` with four blueprints, and
``workers.app``, ``fleet`` and ``state``) each closed through one.

The rules:
- no circle among the modules;
- ``service`` never imports ``workers`` (the workers import the service, never the reverse);
- ``service.engine`` reaches nothing of ``service.store``, ``service.api``, ``service.cli`` or
  ``service.client`` (the engine is a pure torch loop, no I/O);
- ``service.api`` reaches neither ``service.engine`` nor ``workers``, and torch only through
  ``service.spec`` and ``service.expr``. "Reaches": through any chain of imports, a package's
  ``__init__`` included when one of its modules is imported. The API makes no dynamic import
  (``importlib.import_module``, ``__import__``), so the chains read here are all it runs.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "workers")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # a module of the packages, or the top-level name of an outside one
    line: int
    in_function: bool
    inside: bool  # target is a module of the packages


@dataclass(frozen=True)
class Graph:
    modules: dict[str, Path]
    imports: tuple[Import, ...]

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {name: set() for name in self.modules}
        for imp in self.imports:
            if imp.inside and imp.target != imp.source:
                out[imp.source].add(imp.target)
        return out

    def reached_from(self, starts: list[str]) -> set[str]:
        """The modules importing ``starts`` may run: what they import, and on, with the packages
        each one sits in (their ``__init__`` runs first)."""
        edges = self.edges()
        seen: set[str] = set()
        todo = list(starts)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(edges[name])
            todo.extend(self.packages_of(name))
        return seen

    def packages_of(self, name: str) -> list[str]:
        parts = name.split(".")
        return [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in self.modules]

    def where(self, source: str, target: str) -> str:
        """Where ``source`` imports ``target``: its lines, marking those inside a function."""
        lines = sorted({f"{imp.line}{' (in a function)' if imp.in_function else ''}" for imp in self.imports
                        if imp.source == source and imp.target == target})
        return f"{source} -> {target} (line {', '.join(lines)})"


def _module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _raw_imports(name: str, path: Path) -> list[tuple[str, str | None, int, bool]]:
    """(module, imported name or None, line, in a function) for each import ``name`` runs."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[tuple[str, str | None, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for stmt in child.orelse:
                    visit_one(stmt, in_function)
            else:
                visit_one(child, in_function)

    def visit_one(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.extend((module, alias.name, node.lineno, in_function) for alias in node.names)
        visit(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def build_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    modules = _module_names(root, packages)
    imports = []
    for name, path in modules.items():
        for module, attr, line, in_function in _raw_imports(name, path):
            if attr is not None and f"{module}.{attr}" in modules:  # from package import module
                target = f"{module}.{attr}"
            else:
                target = module
                while target and target not in modules:
                    target = target.rpartition(".")[0]
            if target:
                imports.append(Import(name, target, line, in_function, inside=True))
            elif module.split(".")[0] not in packages:
                imports.append(Import(name, module.split(".")[0], line, in_function, inside=False))
    return Graph(modules, tuple(imports))


def cycles(graph: Graph) -> list[tuple[list[str], list[str]]]:
    """Each circle: the modules of a strongly connected component of more than one (Tarjan), and a
    shortest path round it from the first of them (that module repeated at the end)."""
    edges = graph.edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return [(component, _round(edges, component)) for component in components]


def _round(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to it, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return component  # unreachable for a strongly connected component


@functools.cache
def graph() -> Graph:
    return build_graph()


def _describe(g: Graph, path: list[str]) -> str:
    return "\n  ".join(g.where(a, b) for a, b in zip(path, path[1:]))


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_graph_is_read():
    g = graph()
    assert {"service.api.openapi", "service.api.openapi_parts", "workers.app", "workers.state"} <= set(g.modules)
    assert "service.api.openapi_parts" in g.edges()["service.api.surface"]
    assert "workers.state" in g.edges()["workers.fleet"]
    assert any(i.target == "torch" and not i.inside for i in g.imports)


def test_no_import_circles():
    g = graph()
    found = cycles(g)
    assert not found, "import circles:\n" + "\n".join(
        f"among {', '.join(members)}: {' -> '.join(path)}\n  {_describe(g, path)}" for members, path in found)


def test_service_never_imports_workers():
    g = graph()
    wrong = [g.where(i.source, i.target) for i in g.imports
             if i.inside and _within(i.source, "service") and _within(i.target, "workers")]
    assert not wrong, "service imports workers:\n" + "\n".join(wrong)


def test_the_engine_reaches_nothing_above_it():
    g = graph()
    engine = [m for m in g.modules if _within(m, "service.engine")]
    above = ("service.store", "service.api", "service.cli", "service.client", "workers")
    wrong = sorted(m for m in g.reached_from(engine) if _within(m, *above))
    assert not wrong, f"service.engine reaches {wrong}"


def test_the_api_reaches_neither_the_engine_nor_the_workers():
    g = graph()
    api = [m for m in g.modules if _within(m, "service.api")]
    wrong = sorted(m for m in g.reached_from(api) if _within(m, "service.engine", "workers"))
    assert not wrong, f"service.api reaches {wrong}"


def test_the_api_reaches_torch_only_through_spec_and_expr():
    g = graph()
    reached = g.reached_from([m for m in g.modules if _within(m, "service.api")])
    wrong = [g.where(i.source, i.target) for i in g.imports
             if not i.inside and i.target == "torch" and i.source in reached
             and not _within(i.source, "service.spec", "service.expr")]
    assert not wrong, "torch imported on the API's side other than by service.spec or service.expr:\n" + \
        "\n".join(wrong)


def test_the_api_imports_nothing_by_name_at_run_time():
    dynamic = []
    for name, path in graph().modules.items():
        if not _within(name, "service.api"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__"):
                    dynamic.append(f"{name}:{node.lineno}")
    assert not dynamic, f"dynamic imports the graph cannot follow: {dynamic}"


def test_the_check_finds_a_circle_closed_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("thing = 1\n\ndef late():\n    from pkg import a\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                  "from . import b\n")
    g = build_graph(tmp_path, ("pkg",))
    assert cycles(g) == [(["pkg.a", "pkg.b"], ["pkg.a", "pkg.b", "pkg.a"])]
    assert g.edges()["pkg.c"] == {"pkg.b"}  # the TYPE_CHECKING import does not count
    assert "line 4 (in a function)" in g.where("pkg.b", "pkg.a")
