"""Fixtures of the Jupyter tests: a tiny report built once per session (real papermill run)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

# Cheap real phases: enough to exercise the whole report path in a few seconds.
REPORT_PHASES = ["memory.slots_trade", "serialization.msgpack_size"]


@pytest.fixture(scope="session")
def report_phases() -> list[str]:
    """The phases the test reports run."""
    return list(REPORT_PHASES)


@pytest.fixture(scope="session")
def nightly_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two quick nightly reports into one history store; paths of the second one."""
    from workbench.jupyter.report import build_report

    out = tmp_path_factory.mktemp("report")
    history = out / "history.parquet"
    build_report(out / "first", quick=True, history=history, phases=REPORT_PHASES, timeout_s=300)
    html = build_report(out, quick=True, history=history, phases=REPORT_PHASES, timeout_s=300)
    return {"html": html, "ipynb": html.with_suffix(".ipynb"), "history": history, "out": out}


@pytest.fixture(autouse=True)
def kernel_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A current event loop in the main thread, as an IPython kernel has; closed after the test
    (earlier tests' `asyncio.run` leave the main thread without one)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()
