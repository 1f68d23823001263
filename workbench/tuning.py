"""Process tuning for a run: gc mode, GIL switch interval, CPU affinity of the feed and engine
threads, event loop, and a busy-polling loop for the feed thread.

Every choice made here is returned as a plain dict and lands in the run summary, so a latency
figure always says under which tuning it was measured.

gc modes (CPython `gc` module):
- `default`: the interpreter's generational collector as configured.
- `freeze`: `gc.collect()` then `gc.freeze()` after start-up, so every object alive at start
  moves to the permanent generation and later collections only scan what the run allocates.
- `disabled`: `gc.disable()` for the run (re-enabled by `restore_gc`).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import selectors
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from workbench.errors import ConfigError

GC_MODES = ("default", "freeze", "disabled")
LOOP_CHOICES = ("auto", "uvloop", "asyncio")


def apply_gc_mode(mode: str) -> dict[str, Any]:
    """Apply a gc mode (one of GC_MODES). Returns what was done (for the run summary).

    Raises ConfigError for an unknown mode."""
    if mode not in GC_MODES:
        raise ConfigError(f"gc_mode: expected one of {', '.join(GC_MODES)}, got {mode!r}")
    info: dict[str, Any] = {"gc_mode": mode, "gc_threshold": list(gc.get_threshold())}
    if mode == "freeze":
        gc.collect()
        gc.freeze()
        info["gc_frozen_objects"] = gc.get_freeze_count()
    elif mode == "disabled":
        gc.disable()
    return info


def restore_gc(mode: str) -> None:
    """Undo `apply_gc_mode(mode)`: re-enable the collector, unfreeze."""
    if mode == "disabled":
        gc.enable()
    elif mode == "freeze":
        gc.unfreeze()


def apply_switch_interval(interval_us: float | None) -> dict[str, Any]:
    """Set the GIL switch interval (`sys.setswitchinterval`, CPython default 5000 µs): how long
    a thread that wants the GIL waits before the holder is asked to drop it. Shorter bounds
    the wait of the feed thread behind the journal writer or housekeeping. None leaves it.
    Returns {"gil_switch_interval_us": new, "gil_switch_interval_before_us": old}."""
    before = sys.getswitchinterval() * 1e6
    if interval_us is not None:
        sys.setswitchinterval(interval_us / 1e6)
    return {"gil_switch_interval_us": sys.getswitchinterval() * 1e6,
            "gil_switch_interval_before_us": before}


def pin_current_thread(cpus: tuple[int, ...] | None, role: str) -> dict[str, Any]:
    """Pin the calling thread to `cpus` (Linux: `os.sched_setaffinity` on the thread's native
    id). None or () leaves it alone. Returns {"<role>_cpus": [...] or None, ...}.

    A CPU that does not exist raises ConfigError naming the role and the CPUs available."""
    key = f"{role}_cpus"
    if not cpus:
        return {key: None}
    available = sorted(os.sched_getaffinity(0))
    bad = [c for c in cpus if c not in available]
    if bad:
        raise ConfigError(f"{key}: CPUs {bad} not available; accepted: {available}")
    os.sched_setaffinity(threading.get_native_id(), set(cpus))
    return {key: sorted(cpus)}


class SpinSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's default selector (epoll on Linux), busy-polling: `select(timeout)` polls
    with timeout 0 until a file object is ready or `timeout` seconds have passed (None: until
    one is ready), so the thread never sleeps in the kernel. A ready socket is read by a
    running CPU instead of one woken from idle: at the recording's live pace it lowers the
    callback path's tick-to-trade on this VM (`python -m workbench.bench run dispatch`).
    The price is one core at 100%; the process's other threads get the GIL within the switch
    interval.

    Polling alone does not keep the message path warm: after milliseconds of it, the first
    message of a read costs several times what the next ones do (the VM's timer interrupts
    and other tenants evict caches and predictors). `on_idle`, when given, is called after
    every `idle_period_ns` of polling with nothing ready (the engine's `PathWarmer` runs a
    shadow message through the path there); an exception from it propagates to the caller.
    """

    def __init__(self, on_idle: Callable[[], object] | None = None,
                 idle_period_ns: int = 0) -> None:
        if on_idle is not None and idle_period_ns <= 0:
            raise ConfigError(f"idle_period_ns must be > 0 with on_idle, got {idle_period_ns}")
        super().__init__()
        self.on_idle = on_idle
        self.idle_period_ns = idle_period_ns

    def select(self, timeout: float | None = None) -> list:
        poll = super().select
        ready = poll(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        deadline = None if timeout is None else time.monotonic() + timeout
        on_idle, period = self.on_idle, self.idle_period_ns
        now_ns = time.perf_counter_ns
        next_idle = now_ns() + period if on_idle is not None else math.inf
        while not ready and (deadline is None or time.monotonic() < deadline):
            if now_ns() >= next_idle:
                on_idle()
                next_idle = now_ns() + period
            ready = poll(0)
        return ready


def new_event_loop(choice: str = "auto", spin: bool = False,
                   on_idle: Callable[[], object] | None = None, idle_period_ns: int = 0
                   ) -> tuple[asyncio.AbstractEventLoop, str]:
    """A fresh event loop for a thread: uvloop when installed (`auto`) or asked for, else the
    asyncio default; with `spin`, asyncio's selector loop on a `SpinSelector` whatever the
    choice (uvloop cannot busy-poll), calling `on_idle` every `idle_period_ns` of idle polling
    when given. Returns (loop, name). Asking for uvloop without it raises ConfigError."""
    if choice not in LOOP_CHOICES:
        raise ConfigError(f"event_loop: expected one of {', '.join(LOOP_CHOICES)}, got {choice!r}")
    if spin:
        return (asyncio.SelectorEventLoop(SpinSelector(on_idle, idle_period_ns)),
                "asyncio-spin")
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise ConfigError("event_loop: uvloop asked for but not installed") from exc
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"
