"""hft-workbench: a Jupyter-first workbench for low-latency trading systems in Python.

In a notebook: `%load_ext workbench`, then `%hft start`. From Python:

    from workbench import Engine, EngineConfig

The names in `__all__` are the public API. They are imported on first use (PEP 562), so
`import workbench` and `%load_ext workbench` load none of numpy, numba, polars or bokeh; the
module that defines a name is loaded when the name is first read. The bench catalogue and the
backtester have their own public names (`workbench.bench`, `workbench.backtest`), and
`workbench.jupyter.plots` is the plotting module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.lazy import exports

if TYPE_CHECKING:
    from workbench.book.l2 import L2Book
    from workbench.book.sync import BookSync
    from workbench.engine.config import EngineConfig
    from workbench.engine.engine import Engine
    from workbench.engine.status import RunStatus, Snapshot
    from workbench.engine.strategy import EmaCross, OrderRequest, Strategy
    from workbench.errors import (
        BarsError,
        BookError,
        ConfigError,
        EngineError,
        FeedError,
        NormalizeError,
        PhaseMismatch,
        RecordingError,
        RingClosed,
        RingError,
        RingExists,
        RingLayoutError,
        RingNotFound,
        SharedDataMissing,
        UnknownPhase,
        WorkbenchError,
    )
    from workbench.events import (
        EVENT_DTYPE,
        EventFlag,
        EventKind,
        MessageInfo,
        MessageKind,
        Side,
    )
    from workbench.feed.replay import ReplayFeed
    from workbench.feed.ring import RingStats, ShmRing
    from workbench.feed.scouter import EndpointScouter
    from workbench.feed.simex import SimExchange
    from workbench.feed.ws import WebSocketFeed
    from workbench.latency.recorder import LatencyRecorder
    from workbench.latency.stages import LOCAL_STAGES, Stage
    from workbench.shared_data import shared_path

__version__ = "0.1.0"

__all__ = [
    "EVENT_DTYPE",
    "LOCAL_STAGES",
    "BarsError",
    "BookError",
    "BookSync",
    "ConfigError",
    "EmaCross",
    "EndpointScouter",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EventFlag",
    "EventKind",
    "FeedError",
    "L2Book",
    "LatencyRecorder",
    "MessageInfo",
    "MessageKind",
    "NormalizeError",
    "OrderRequest",
    "PhaseMismatch",
    "RecordingError",
    "ReplayFeed",
    "RingClosed",
    "RingError",
    "RingExists",
    "RingLayoutError",
    "RingNotFound",
    "RingStats",
    "RunStatus",
    "SharedDataMissing",
    "ShmRing",
    "Side",
    "SimExchange",
    "Snapshot",
    "Stage",
    "Strategy",
    "UnknownPhase",
    "WebSocketFeed",
    "WorkbenchError",
    "__version__",
    "shared_path",
]

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Engine": "workbench.engine.engine",
    "EngineConfig": "workbench.engine.config",
    "RunStatus": "workbench.engine.status",
    "Snapshot": "workbench.engine.status",
    "Strategy": "workbench.engine.strategy",
    "OrderRequest": "workbench.engine.strategy",
    "EmaCross": "workbench.engine.strategy",
    "ShmRing": "workbench.feed.ring",
    "RingStats": "workbench.feed.ring",
    "ReplayFeed": "workbench.feed.replay",
    "SimExchange": "workbench.feed.simex",
    "WebSocketFeed": "workbench.feed.ws",
    "EndpointScouter": "workbench.feed.scouter",
    "L2Book": "workbench.book.l2",
    "BookSync": "workbench.book.sync",
    "EVENT_DTYPE": "workbench.events",
    "EventKind": "workbench.events",
    "Side": "workbench.events",
    "EventFlag": "workbench.events",
    "MessageKind": "workbench.events",
    "MessageInfo": "workbench.events",
    "LatencyRecorder": "workbench.latency.recorder",
    "Stage": "workbench.latency.stages",
    "LOCAL_STAGES": "workbench.latency.stages",
    "shared_path": "workbench.shared_data",
    **dict.fromkeys(
        ("WorkbenchError", "ConfigError", "RingError", "RingNotFound", "RingExists",
         "RingLayoutError", "RingClosed", "RecordingError", "SharedDataMissing",
         "NormalizeError", "BookError", "FeedError", "EngineError", "BarsError",
         "PhaseMismatch", "UnknownPhase"),
        "workbench.errors",
    ),
}


__getattr__, __dir__ = exports(__name__, _EXPORTS)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: registers the %hft magics."""
    from workbench.jupyter.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext workbench`: stops a running engine."""
    from workbench.jupyter.magics import unload_ipython_extension as _unload

    _unload(ipython)
