"""Lazy public names for the package facades (`workbench`, `workbench.bench`,
`workbench.backtest`): PEP 562 module `__getattr__` and `__dir__`, so importing a facade loads
none of the modules behind its names until one is used. Model: httpx's and memray's facades.

    __getattr__, __dir__ = lazy.exports(__name__, {"Engine": "workbench.engine.engine"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str], submodules: frozenset[str] = frozenset()
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the module `package`. names: public name -> the module
    that defines it; the first use imports it and keeps it in the package's namespace.
    submodules: names that are the package's own submodules, imported as such. An unknown
    name raises AttributeError naming it and the package."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace["__all__"]})

    return __getattr__, __dir__
