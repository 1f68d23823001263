"""The public API: `workbench`, `workbench.bench` and `workbench.backtest` export their names
lazily (PEP 562), each name from the module that defines it, and the error tree is drawn right."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import workbench
from workbench import errors

FACADES = ("workbench", "workbench.bench", "workbench.backtest")


def _facade(name: str) -> ModuleType:
    return importlib.import_module(name)


def _submodules(facade: ModuleType) -> frozenset[str]:
    return getattr(facade, "_SUBMODULES", frozenset())


def _type_checking_imports(facade: ModuleType) -> dict[str, str]:
    """name -> module of the imports in the facade's `if TYPE_CHECKING:` block."""
    assert facade.__file__ is not None
    tree = ast.parse(Path(facade.__file__).read_text(encoding="utf-8"))
    blocks = [node for node in tree.body if isinstance(node, ast.If)
              and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{facade.__name__}: expected one `if TYPE_CHECKING:` block"
    found = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        found.update((alias.asname or alias.name, node.module) for alias in node.names)
    return found


PUBLIC = [(f, name) for f in FACADES for name in _facade(f).__all__]


@pytest.mark.parametrize(("facade_name", "name"), PUBLIC, ids=[f"{f}:{n}" for f, n in PUBLIC])
def test_every_public_name_resolves_to_its_defining_module(facade_name: str, name: str) -> None:
    facade = _facade(facade_name)
    value = getattr(facade, name)
    if name in _submodules(facade):
        assert value is importlib.import_module(f"{facade_name}.{name}")
    elif name != "__version__":
        assert value is getattr(importlib.import_module(facade._EXPORTS[name]), name)
        assert vars(facade)[name] is value  # cached: the next read is a plain attribute


@pytest.mark.parametrize("facade_name", FACADES)
def test_all_lazy_map_and_type_checking_imports_agree(facade_name: str) -> None:
    facade = _facade(facade_name)
    public = set(facade.__all__)
    assert len(facade.__all__) == len(public), "a name is listed twice in __all__"
    lazy = set(facade._EXPORTS) | _submodules(facade)
    assert public - {"__version__"} == lazy
    seen = _type_checking_imports(facade)
    assert set(seen) == lazy
    expected = {**facade._EXPORTS, **dict.fromkeys(_submodules(facade), facade_name)}
    assert seen == expected


@pytest.mark.parametrize("facade_name", FACADES)
def test_dir_lists_the_public_names(facade_name: str) -> None:
    facade = _facade(facade_name)
    assert set(facade.__all__) <= set(dir(facade))


@pytest.mark.parametrize("facade_name", FACADES)
def test_an_unknown_name_raises_attribute_error_naming_it(facade_name: str) -> None:
    facade = _facade(facade_name)
    with pytest.raises(AttributeError, match=rf"{re.escape(facade_name)}.*no_such_name"):
        _ = facade.no_such_name
    assert not hasattr(facade, "no_such_name")


@pytest.mark.parametrize("facade_name", FACADES)
def test_no_public_name_is_shadowed_by_a_submodule(facade_name: str) -> None:
    """Importing `pkg.x` binds the attribute `x` of `pkg` to that module, so a function named
    like its own module would read as the module once anything imported the module."""
    facade = _facade(facade_name)
    assert facade.__file__ is not None
    folder = Path(facade.__file__).parent
    clashes = [name for name in facade.__all__ if name not in _submodules(facade)
               and ((folder / f"{name}.py").exists() or (folder / name).is_dir())]
    assert not clashes, (f"{facade_name}: public names that are also submodule names "
                         f"(rename the module): {clashes}")


def test_every_error_class_is_public() -> None:
    classes = {name for name, obj in vars(errors).items()
               if isinstance(obj, type) and issubclass(obj, errors.WorkbenchError)}
    assert classes <= set(workbench.__all__)


def _drawn_tree(doc: str) -> dict[str, tuple[str | None, frozenset[str]]]:
    """class -> (parent, builtin bases) as drawn in the indented block of `doc`."""
    at_column: dict[int, str] = {}
    tree = {}
    for line in doc.splitlines():
        if not line.startswith("    "):
            continue
        m = re.fullmatch(r"[ │]*(?:[├└]── )?(\w+)(?:\s+\(also ([\w, ]+)\))?", line)
        assert m, f"not a line of the error tree: {line!r}"
        column = m.start(1)
        at_column[column] = m.group(1)
        also = frozenset(m.group(2).split(", ")) if m.group(2) else frozenset()
        tree[m.group(1)] = (at_column.get(column - 4), also)
    return tree


def test_the_error_tree_in_the_docstring_matches_the_classes() -> None:
    expected: dict[str, tuple[str | None, frozenset[str]]] = {"Exception": (None, frozenset())}
    for name, cls in vars(errors).items():
        if not (isinstance(cls, type) and issubclass(cls, errors.WorkbenchError)):
            continue
        ours = [b for b in cls.__bases__ if issubclass(b, errors.WorkbenchError)]
        builtin = frozenset(b.__name__ for b in cls.__bases__ if b not in ours)
        if ours:
            expected[name] = (ours[0].__name__, builtin)
        else:
            expected[name] = ("Exception", builtin - {"Exception"})
    assert errors.__doc__ is not None
    assert _drawn_tree(errors.__doc__) == expected
