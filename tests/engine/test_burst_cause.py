"""A spike's burst cause names the message's position in its socket read: every source stamps
the frames of one read with that read's time, so batches with one `ts_recv_ns` came in one
read, and the later ones waited for the earlier ones."""

from __future__ import annotations

import time

import numpy as np

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.events import EVENT_DTYPE, F_LAST, K_BBO, M_BBO, S_BUY, S_SELL, MessageInfo


def quote(recv_ns: int, bid: float) -> tuple[np.ndarray, MessageInfo]:
    """One best bid/offer message received at `recv_ns`."""
    batch = np.zeros(2, dtype=EVENT_DTYPE)
    batch["ts_event_ns"] = 1_700_000_000_000_000_000
    batch["ts_recv_ns"] = recv_ns
    batch["symbol_id"] = 1
    batch["kind"] = K_BBO
    batch["side"] = [S_BUY, S_SELL]
    batch["flags"] = [0, F_LAST]
    batch["price"] = [bid, bid + 0.1]
    batch["qty"] = 1.0
    info = MessageInfo()
    info.kind, info.symbol_id = M_BBO, 1
    return batch, info


def test_burst_spikes_say_where_in_their_socket_read() -> None:
    engine = Engine(EngineConfig(out_dir=None, spike_threshold_us=0.001))
    read = time.perf_counter_ns()
    for i in range(3):  # three messages of one read
        engine.on_events(*quote(read, 100.0 + i))
    details = [c.detail for s in engine.spikes.summary().worst for c in s.causes
               if c.name == "burst"]
    assert "position 3 in its burst, message 3 of its socket read" in details
    assert "position 2 in its burst, message 2 of its socket read" in details
