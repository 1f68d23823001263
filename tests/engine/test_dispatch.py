"""Dispatcher: the polling cadence does not follow the engine's other wake-ups."""

from __future__ import annotations

import time

from workbench.engine.dispatch import Dispatcher
from workbench.events import empty_batch


def test_polling_drains_once_per_poll_interval_whatever_wakes_the_engine() -> None:
    handled: list[int] = []
    dispatcher = Dispatcher(lambda batch, info, publish_ns, dseq, depth: handled.append(dseq),
                            mode="polling", poll_interval_ms=200.0)
    batch = empty_batch(1)
    dispatcher.submit(batch)
    assert dispatcher.poll() == 1 and handled == [1]  # the first poll is due at once
    dispatcher.submit(batch)
    started = time.perf_counter()
    assert dispatcher.poll() == 0  # woken early (a housekeeping job): not a poll yet
    assert dispatcher.depth == 1 and handled == [1]
    while dispatcher.poll() == 0:
        time.sleep(0.01)
    assert time.perf_counter() - started >= 0.2 * 0.9
    assert handled == [1, 2] and dispatcher.depth == 0
    dispatcher.set_mode("blocking")
    dispatcher.submit(batch)
    assert dispatcher.poll() == 1  # other modes drain whenever the engine looks
