"""Capture a live websocket session to a file ReplayFeed reads back (`workbench record`).

Format: the hftbacktest collector dump that `workbench.feed.replay` reads, gzip text with one
line per received frame, `<recv_ns> <raw message>\\n`, recv_ns in ns since the Unix epoch.
Frames are written byte for byte, except that a frame containing CR or LF (JSON allows them
only as whitespace) has them replaced by spaces so it stays one line (counted in
`rewritten`). REST depth snapshots the feed fetches (Binance) are written as their own lines,
as the hftbacktest dumps hold them, so the capture can rebuild the book on replay.

Receive times: the feed stamps `perf_counter_ns()`; the writer adds the offset to the epoch
clock (`time.time_ns() - time.perf_counter_ns()`) measured once when it opens, so the spacing of
the stamps stays monotonic and exact.
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
from pathlib import Path

import numpy as np

from workbench.errors import ConfigError, RecordingError


class CaptureWriter:
    """A feed sink that writes every frame to `path` (gzip `<ns> <json>` lines).

    Use as `WebSocketFeed(..., sink=writer)`; `writer(batch, message, recv_ns)` ignores the
    batch. `close()` flushes and closes the file. Raises RecordingError if the file cannot be
    created. Thread-safe.
    """

    def __init__(self, path: str | Path, compresslevel: int = 6) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = gzip.open(self.path, "wb", compresslevel=compresslevel)  # noqa: SIM115
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot create the capture file: {exc}") from exc
        self._offset_ns = time.time_ns() - time.perf_counter_ns()
        self._lock = threading.Lock()
        self.messages = 0
        self.bytes = 0
        self.rewritten = 0

    def __call__(self, batch: np.ndarray, message: bytes, recv_ns: int) -> None:
        self.write(recv_ns, message)

    def write(self, recv_ns: int, message: bytes) -> None:
        """Write one frame received at perf_counter_ns `recv_ns`."""
        if b"\n" in message or b"\r" in message:
            message = message.replace(b"\r", b" ").replace(b"\n", b" ")
            self.rewritten += 1
        line = b"%d %s\n" % (recv_ns + self._offset_ns, message)
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self.messages += 1
            self.bytes += len(message)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`workbench record --url URL --venue V --symbols S [S ...] --out FILE [--duration S]`."""
    parser.add_argument("--url", required=True,
                        help="websocket URL, e.g. wss://fstream.binance.com/stream")
    parser.add_argument("--venue", required=True,
                        help="normalizer venue key: binance, binance-usdm, binance-coinm, "
                             "bybit, coinbase, ...")
    parser.add_argument("--symbols", nargs="+", required=True, help="venue symbols")
    parser.add_argument("--out", required=True, help="output file (.gz)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to record (default: until Ctrl-C)")
    parser.add_argument("--messages", type=int, default=None,
                        help="stop after this many frames (and the first REST snapshot of "
                             "each symbol, when snapshots are fetched)")
    parser.add_argument("--channels", nargs="+", default=None,
                        help="venue channels (default: the normalizer's book, BBO and trades)")
    parser.add_argument("--rest-url", default=None,
                        help="Binance REST base URL for depth snapshots (default: the venue)")
    parser.add_argument("--no-snapshots", action="store_true",
                        help="do not fetch REST depth snapshots (Binance)")


def main(args: argparse.Namespace) -> int:
    """Record until --duration, --messages or Ctrl-C; print what was written. Returns 0."""
    from workbench.feed.ws import WebSocketFeed

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")
    if args.messages is not None and args.messages < 1:
        raise ConfigError(f"--messages must be >= 1, got {args.messages}")
    enough = threading.Event()
    with CaptureWriter(args.out) as writer:

        def sink(batch: np.ndarray, message: bytes, recv_ns: int) -> None:
            writer.write(recv_ns, message)
            if (args.messages is not None and writer.messages >= args.messages
                    and (not feed.snapshots or feed.stats.snapshots >= len(feed.symbols))):
                enough.set()

        feed = WebSocketFeed(args.url, args.venue, args.symbols, sink,
                             channels=tuple(args.channels) if args.channels else None,
                             rest_url=args.rest_url, snapshots=not args.no_snapshots)
        feed.start()
        try:
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not enough.is_set() and not feed.wait(0):
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if left <= 0:
                    break
                enough.wait(left)
        finally:
            feed.stop()
    stats = feed.stats
    print(f"recorded {writer.messages} frames ({writer.bytes} bytes) to {args.out}; "
          f"connects {stats.connects}, reconnects {stats.reconnects}, "
          f"snapshots {stats.snapshots}, malformed {stats.malformed}")
    if feed.error is not None:
        raise feed.error
    return 0
