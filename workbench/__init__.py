"""hft-workbench: a Jupyter-first workbench for low-latency trading systems in Python.

In a notebook: `%load_ext workbench`, then `%hft start`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: registers the %hft magics."""
    from workbench.jupyter.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext workbench`: stops a running engine."""
    from workbench.jupyter.magics import unload_ipython_extension as _unload

    _unload(ipython)
