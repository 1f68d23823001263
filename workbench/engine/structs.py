"""`compiled_class(spec)`: a Python class as a numba StructRef, so code using it can be cached.

A numba `jitclass` cannot appear in a function compiled with `cache=True` (its type does not
pickle), so every process compiles such code again (seconds for the tick backtester's driver).
`compiled_class` takes the same class body and field spec as `jitclass` and builds a StructRef
(numba.experimental.structref) instead:

    @compiled_class([("qty", float64), ("next_id", int64)])
    class Quoter:
        def __init__(self, qty):
            self.qty = qty
            self.next_id = 1

        def on_feed(self, gw):
            ...

- in compiled code the instance has the fields as attributes and the methods as methods
  (`numba.extending.overload_method`, one per method; `__init__` runs when it is built);
- in Python `Quoter(0.001)` builds one (its constructor compiles on the first call in a
  process), fields read as attributes (each getter compiles on its first use); methods are
  callable from Python too (positional arguments; each compiles on its first call).

Caching: the type is named after the class and a digest of its source (`inspect.getsource`;
without a source file, of its methods' bytecode and constants), so a cached function compiled
for an older version of the class is not reused after the class changes; the same class
defined again (a re-run notebook cell) gives the class built the first time. Functions the
methods call from elsewhere are not part of the digest (numba's own cache has the same limit:
it tracks a function's own file only). The type classes live in this module under that name
(created on demand, also while numba unpickles a cache index that names a class this process
has not defined), so any cache index can be read.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap

from numba import njit
from numba.core import types
from numba.experimental import structref
from numba.extending import overload_method

_PREFIX = "CompiledClass_"
_TYPE_CLASSES: dict[str, type] = {}
_BUILT: dict[str, type] = {}  # type class name -> the Python class built for it


def _type_class(name: str) -> type:
    """The StructRef type class called `name` in this module (made and registered once)."""
    cls = _TYPE_CLASSES.get(name)
    if cls is None:
        cls = type(name, (types.StructRef,), {"__module__": __name__, "__qualname__": name})
        structref.register(cls)
        _TYPE_CLASSES[name] = cls
    return cls


def __getattr__(name: str) -> type:  # pickle looks the type classes up here
    if name.startswith(_PREFIX):
        return _type_class(name)
    raise AttributeError(name)


def _method_typer(func):
    """An overload_method typer with `func`'s signature that returns `func` as the
    implementation (numba checks that the two signatures match)."""
    params = str(inspect.signature(func))
    scope: dict = {"_impl": func}
    exec(f"def typer{params}:\n    return _impl\n", scope)  # a fixed template
    return scope["typer"]


def _source(cls: type) -> str:
    """The class's source; without a source file (exec, a REPL) its methods' code and
    constants."""
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return repr([(name, f.__code__.co_code, f.__code__.co_consts, f.__code__.co_names)
                     for name, f in cls.__dict__.items() if inspect.isfunction(f)])


def _python_method(name: str, doc: str | None):
    """A Python method calling the compiled method `name` (compiled on its first call)."""
    scope: dict = {}
    exec(f"def call(obj, *args):\n    return obj.{name}(*args)\n", scope)  # a fixed template
    call = njit(scope["call"])

    def method(self, *args):
        return call(self, *args)

    method.__name__, method.__doc__ = name, doc
    return method


def _getter(field: str):
    scope: dict = {}
    exec(f"def get(obj):\n    return obj.{field}\n", scope)  # a fixed template
    return njit(scope["get"])


def compiled_class(spec: list[tuple[str, types.Type]]):
    """Decorator: the class as a StructRef-backed class (module docstring). spec: (field name,
    numba type) pairs, as for jitclass. Returns a Python class whose instances box to and from
    the StructRef type (`cls.numba_type`). Raises TypeError for a class without __init__."""

    def build(cls: type) -> type:
        init = cls.__dict__.get("__init__")
        if init is None:
            raise TypeError(f"compiled_class: {cls.__name__} needs an __init__")
        digest = hashlib.sha1((_source(cls) + repr(spec)).encode()).hexdigest()[:12]
        name = f"{_PREFIX}{cls.__name__}_{digest}"
        if name in _BUILT:  # the same class again (a re-run notebook cell): same code
            return _BUILT[name]
        type_class = _type_class(name)
        numba_type = type_class([(name, typ) for name, typ in spec])
        for name, func in cls.__dict__.items():
            if inspect.isfunction(func) and name != "__init__":
                overload_method(type_class, name)(_method_typer(func))
        compiled_init = njit(init)

        @njit
        def ctor(*args):  # pragma: no cover - compiled
            obj = structref.new(numba_type)
            compiled_init(obj, *args)
            return obj

        def new(proxy_cls, *args):
            return ctor(*args)

        attrs = {"__new__": new, "__doc__": cls.__doc__, "__module__": cls.__module__,
                 "__qualname__": cls.__qualname__, "numba_type": numba_type}
        for name, _ in spec:
            attrs[name] = property(_getter(name))
        for name, func in cls.__dict__.items():
            if inspect.isfunction(func) and name != "__init__":
                attrs[name] = _python_method(name, func.__doc__)
        proxy = type(cls.__name__, (structref.StructRefProxy,), attrs)
        structref.define_boxing(type_class, proxy)
        _BUILT[type_class.__name__] = proxy
        return proxy

    return build
