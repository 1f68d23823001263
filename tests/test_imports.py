"""The package's import graph: no circles, the floor order of DESIGN.md, a light `import workbench`.

Floors (DESIGN.md, package map): a module imports only from its own folder, from the ground
floor and from folders below it:

    floor 0 (ground)  events, errors, latency, tuning, shared_data, lazy
    floor 1           feed, book            (book imports nothing from feed)
    floor 2           engine
    floor 3           backtest, bench, runs
    floor 4           jupyter, cli
    top               workbench/__init__.py (the public API: nothing inside the package
                      imports it; modules import from the module that defines a name)

Folders on the same floor may import each other (feed replays recordings through book, the
bench measures the backtester) except the pairs in FORBIDDEN; a real circle between them is
caught by the circle check. A folder missing from FLOORS is reported, so a new one gets a floor.

Which imports count (every `import` / `from ... import` in workbench/**/*.py is read):
- circles: the imports that run when the module is imported: module level, inside `if`,
  `try` and class bodies included. Not imports inside functions (they run when called, after
  every module has loaded) and not `if TYPE_CHECKING:` blocks (they never run).
- floors: every import that can run, function-level ones included (a deferred import is still
  a dependency on that floor); not `if TYPE_CHECKING:` blocks, since an annotation may name a
  type of any floor without loading it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import workbench

PACKAGE = "workbench"
PACKAGE_DIR = Path(workbench.__file__).parent

FLOORS: dict[str, int] = {
    "events": 0, "errors": 0, "latency": 0, "tuning": 0, "shared_data": 0, "lazy": 0,
    "feed": 1, "book": 1,
    "engine": 2,
    "backtest": 3, "bench": 3, "runs": 3,
    "jupyter": 4, "cli": 4,
}
FORBIDDEN: frozenset[tuple[str, str]] = frozenset({("book", "feed")})
# modules that are not .py files, and the folder they belong to
# the cffi extensions built by feed/_feed_build.py and feed/_native_build.py
ALIASES: dict[str, str] = {"_feed": "feed", "_native": "feed"}

HEAVY = ("numba", "numpy", "polars", "bokeh", "ipywidgets", "IPython", "jupyter_bokeh")


@dataclass(frozen=True)
class Import:
    """One imported module as written in `source` (a dotted module name)."""

    source: str
    target: str
    path: Path
    line: int
    runtime: bool  # runs when `source` is imported (module level)
    type_only: bool  # inside `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Violation:
    imp: Import
    reason: str

    def __str__(self) -> str:
        return f"{self.imp.where()}: {self.imp.source} imports {self.imp.target}: {self.reason}"


def module_name(path: Path, root: Path) -> str:
    """`root/pkg/feed/ring.py` -> `pkg.feed.ring`; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, runtime: bool = True, type_only: bool = False
                  ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, runtime, type_only
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        runtime = False
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _import_nodes(stmt, runtime, True)
        for stmt in node.orelse:
            yield from _import_nodes(stmt, runtime, type_only)
        return
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, runtime, type_only)


def collect_imports(root: Path, package: str) -> list[Import]:
    """Every import of `package`'s own modules made by a module of `root/package`."""
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    found = []
    for path in files:
        source = module_name(path, root)
        own_package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, runtime, type_only in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: `from . import x`, `from ..events import y`
                    parts = own_package.split(".")
                    anchor = parts[: len(parts) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            found.extend(Import(source, target, path.relative_to(root), node.lineno, runtime,
                                type_only)
                         for target in dict.fromkeys(targets)
                         if target == package or target.startswith(package + "."))
    return found


def find_circles(imports: list[Import]) -> list[list[Import]]:
    """One circle per group of modules that import each other at import time (Tarjan's
    strongly connected components), as the chain of imports that closes it."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.runtime and not imp.type_only:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, {}):
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [_shortest_circle(min(group), group, edges) for group in groups]


def _shortest_circle(start: str, group: set[str], edges: dict[str, dict[str, Import]]
                     ) -> list[Import]:
    """The shortest chain of imports from `start` back to itself inside `group` (breadth first)."""
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt, imp in sorted(edges.get(node, {}).items()):
                if nxt == start:
                    return [*paths[node], imp]
                if nxt in group and nxt not in paths:
                    paths[nxt] = [*paths[node], imp]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{start} is in a strongly connected group but on no circle")


def folder_of(module: str, aliases: dict[str, str]) -> str | None:
    """The folder (or ground-floor module) a module belongs to; None for the package itself."""
    parts = module.split(".")
    return aliases.get(parts[1], parts[1]) if len(parts) > 1 else None


def floor_violations(imports: list[Import], package: str, floors: dict[str, int],
                     forbidden: frozenset[tuple[str, str]], aliases: dict[str, str]
                     ) -> list[Violation]:
    """The imports (TYPE_CHECKING blocks aside) that go up a floor, across a forbidden pair,
    to the public API facade, or to or from a folder without a floor."""
    found = []
    for imp in imports:
        if imp.type_only:
            continue
        src = folder_of(imp.source, aliases)
        dst = folder_of(imp.target, aliases)
        if src is None or src == dst:
            continue  # the public API sits above every floor; a folder uses itself freely
        if dst is None:
            found.append(Violation(imp, f"the public API `{package}` is the top floor; "
                                        "import from the module that defines the name"))
        elif src not in floors or dst not in floors:
            missing = src if src not in floors else dst
            found.append(Violation(imp, f"folder {missing!r} has no floor in FLOORS"))
        elif floors[dst] > floors[src]:
            found.append(Violation(imp, f"{src} (floor {floors[src]}) imports from {dst} "
                                        f"(floor {floors[dst]}), a floor above it"))
        elif (src, dst) in forbidden:
            found.append(Violation(imp, f"{src} imports nothing from {dst}"))
    return found


def _circle_text(circle: list[Import]) -> str:
    return " -> ".join([circle[0].source, *(f"{imp.target} ({imp.where()})" for imp in circle)])


def test_no_import_circles() -> None:
    circles = find_circles(collect_imports(PACKAGE_DIR.parent, PACKAGE))
    assert not circles, "import circles (module level):\n" + "\n".join(
        _circle_text(c) for c in circles)


def test_imports_follow_the_floor_order() -> None:
    imports = collect_imports(PACKAGE_DIR.parent, PACKAGE)
    violations = floor_violations(imports, PACKAGE, FLOORS, FORBIDDEN, ALIASES)
    assert not violations, "imports against the floor order:\n" + "\n".join(
        str(v) for v in violations)


def test_every_folder_of_the_package_has_a_floor() -> None:
    folders = {folder_of(module_name(f, PACKAGE_DIR.parent), ALIASES)
               for f in PACKAGE_DIR.rglob("*.py")} - {None}
    assert folders <= set(FLOORS), f"folders without a floor: {sorted(folders - set(FLOORS))}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checks_find_a_known_circle_and_known_floor_violations(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/events.py": ("from typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    from pkg.jupyter import ui\n"
                          "def late():\n    from pkg.engine import core\n"),
        "pkg/errors.py": "",
        "pkg/feed/__init__.py": "",
        "pkg/feed/a.py": "from pkg.feed import b\nfrom pkg import errors\n",
        "pkg/feed/b.py": "from . import a\nfrom ..events import late\n",
        "pkg/book/__init__.py": "",
        "pkg/book/l2.py": "import pkg.feed.a\n",
        "pkg/engine/__init__.py": "",
        "pkg/engine/core.py": "from pkg.engine import other\nfrom pkg.book.l2 import X\n",
        "pkg/engine/other.py": "def f():\n    from pkg.engine import core\n",
        "pkg/jupyter/__init__.py": "",
        "pkg/jupyter/ui.py": "from pkg.engine.core import Y\nfrom pkg import Thing\n",
        "pkg/mystery.py": "from pkg import events\n",
    })
    imports = collect_imports(tmp_path, "pkg")

    circles = find_circles(imports)
    assert [[(i.source, i.target) for i in c] for c in circles] == [
        [("pkg.feed.a", "pkg.feed.b"), ("pkg.feed.b", "pkg.feed.a")]]
    assert _circle_text(circles[0]) == (
        "pkg.feed.a -> pkg.feed.b (pkg/feed/a.py:1) -> pkg.feed.a (pkg/feed/b.py:1)")

    violations = floor_violations(imports, "pkg", FLOORS, FORBIDDEN, ALIASES)
    assert {(v.imp.source, v.imp.target) for v in violations} == {
        ("pkg.events", "pkg.engine.core"),  # ground floor reaching up, from inside a function
        ("pkg.book.l2", "pkg.feed.a"),  # a forbidden pair on one floor
        ("pkg.jupyter.ui", "pkg"),  # the public API facade used from inside
        ("pkg.mystery", "pkg.events"),  # a folder without a floor
    }
    assert str(next(v for v in violations if v.imp.source == "pkg.events")) == (
        "pkg/events.py:5: pkg.events imports pkg.engine.core: events (floor 0) imports from "
        "engine (floor 2), a floor above it")


def test_import_workbench_loads_no_heavy_package_and_no_submodule() -> None:
    code = "import json, sys, workbench; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = json.loads(out)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    # the facade and its lazy-export helper (stdlib only), nothing behind the names
    assert [m for m in loaded if m.split(".")[0] == PACKAGE] == [PACKAGE, f"{PACKAGE}.lazy"]


def test_the_headline_names_import_from_the_package() -> None:
    from workbench import Engine, EngineConfig, RunStatus
    from workbench.engine.config import EngineConfig as DefinedConfig
    from workbench.engine.engine import Engine as DefinedEngine
    from workbench.engine.status import RunStatus as DefinedStatus

    assert (Engine, EngineConfig, RunStatus) == (DefinedEngine, DefinedConfig, DefinedStatus)
