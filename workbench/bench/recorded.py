"""Benchmark inputs from the real recording: Binance USD-M BTCUSDT, 2024-08-08 (hftbacktest).

File format (shared/data/README.md, "hftbacktest collector dump"): gzip text, one message per
line, `<local_recv_ns> <raw json>`; combined-stream messages `{"stream": ..., "data": ...}` for
`btcusdt@depth@0ms`, `btcusdt@bookTicker`, `btcusdt@trade`, and REST depth snapshots (no
"stream" key). Field meanings follow the Binance USD-M futures websocket docs ("Individual
Symbol Book Ticker Streams": b/B/a/A best bid/qty/ask/qty; "Trade Streams": p price, q qty,
m buyer is maker, T trade time ms).
"""

from __future__ import annotations

from functools import lru_cache

import orjson

from workbench.feed.replay import open_recording
from workbench.shared_data import shared_path

RECORDING = "binance/hftbacktest/usdm/btcusdt_20240808.gz"


@lru_cache(maxsize=1)
def _all_messages() -> tuple[tuple[int, bytes], ...]:
    return tuple(open_recording(shared_path(RECORDING)))


def messages(limit: int | None = None) -> tuple[tuple[int, bytes], ...]:
    """The first `limit` lines (all when None) as (local_recv_ns, raw json bytes); the file
    (93,954 lines, about 30 MB decoded) is read once per process.

    Read through `workbench.feed.replay.open_recording`. Raises SharedDataMissing when the
    recording is not on this machine, RecordingError (file and line) when it is corrupt.
    """
    everything = _all_messages()
    return everything if limit is None else everything[:limit]


@lru_cache(maxsize=8)
def quotes_and_trades(limit: int | None = None) -> tuple[list[tuple], list[tuple]]:
    """bookTicker quotes and trades among the first `limit` messages, prices parsed to float.

    quotes: (local_ns, event_ms, update_id, bid, bid_qty, ask, ask_qty);
    trades: (local_ns, trade_ms, trade_id, price, qty, buyer_is_maker).
    """
    quotes, trades = [], []
    for local_ns, raw in messages(limit):
        if b"@bookTicker" in raw:
            d = orjson.loads(raw)["data"]
            quotes.append((local_ns, d["E"], d["u"], float(d["b"]), float(d["B"]),
                           float(d["a"]), float(d["A"])))
        elif b"@trade" in raw:
            d = orjson.loads(raw)["data"]
            trades.append((local_ns, d["T"], d["t"], float(d["p"]), float(d["q"]), d["m"]))
    return quotes, trades
