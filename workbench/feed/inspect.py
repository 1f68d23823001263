"""`workbench inspect PATH [--venue V] [--json]`: what a recording holds, replayed through the
venue normalizer and BookSync, so users can trust a recording before they benchmark on it.

Reports the format, venue(s) and symbols, message counts by type, the time span, sequence gaps,
resyncs, stale deltas, malformed messages by kind, every message type that was not normalized
(with counts and why: a connection no normalizer reads and the reason, or the malformed kind),
and the final top 5 levels of every book (price and quantity as numbers). Nothing can fetch a
snapshot during an inspection, so a gap stays a gap (the book stays invalid until the recording
itself brings a new snapshot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from workbench.book.sync import BookSync
from workbench.feed.replay import open_recording
from workbench.feed.symbols import SymbolRegistry
from workbench.feed.venues import VENUES, get_venue
from workbench.feed.venues.base import MALFORMED_KINDS

TOP_LEVELS = 5


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def inspect_recording(path: str | Path, venue: str | None = None) -> dict[str, Any]:
    """Replay `path` through the normalizer and BookSync of its venue (or `venue`, a key of
    `workbench.feed.venues.VENUES`, for every connection) and summarize it.

    Returns a JSON-ready dict: path, format, venues, symbols, messages, by_type (message type
    -> count), malformed (kind -> count), not_normalized ([{conn, type, count, why}], most
    first: every message type a normalizer skipped, or that no normalizer reads), time_span
    {first_ns, last_ns, seconds, first_utc, last_utc}, gaps, resyncs, dropped_stale,
    connections (per-connection figures) and books ({symbol: {venue, valid, crossed, bids:
    [[price, qty]] x5, asks: [[price, qty]] x5}}).
    Raises RecordingError for a missing or corrupt recording, ConfigError for an unknown venue.
    """
    forced = get_venue(venue) if venue is not None else None
    rec = open_recording(path)
    registry = SymbolRegistry()
    pipes: dict[str, tuple[Any, BookSync] | None] = {}
    per_conn: dict[str, dict[str, Any]] = {}
    first_ns = last_ns = None
    for record in rec.records():
        conn = record.conn
        if conn not in pipes:
            key = venue or rec.venues.get(conn)
            spec = forced or (get_venue(key) if key else None)
            pipes[conn] = ((spec.normalizer(registry), BookSync(spec.sequencing))
                           if spec else None)
            per_conn[conn] = {"conn": conn, "address": rec.connections.get(conn, ""),
                              "venue": key, "messages": 0, "unread": Counter()}
        stats = per_conn[conn]
        stats["messages"] += 1
        if record.recv_ns > 0:
            first_ns = record.recv_ns if first_ns is None else min(first_ns, record.recv_ns)
            last_ns = record.recv_ns if last_ns is None else max(last_ns, record.recv_ns)
        pipe = pipes[conn]
        if pipe is None:
            stats["unread"][_protocol_type(record.message)] += 1
            continue
        norm, sync = pipe
        events = norm.normalize(record.message, record.recv_ns)
        sync.process(events, norm.last)
    return _summary(rec, pipes, per_conn, registry, first_ns, last_ns)


def _protocol_type(message: bytes) -> str:
    """A type label for messages no normalizer reads (legacy protocols)."""
    try:
        obj = json.loads(message)
    except ValueError:
        return "unparsed"
    if isinstance(obj, dict):
        return str(obj.get("type") or obj.get("topic", "").split(".")[0] or obj.get("event")
                   or "object")
    return "array"


def _summary(rec: Any, pipes: dict, per_conn: dict, registry: SymbolRegistry,
             first_ns: int | None, last_ns: int | None) -> dict[str, Any]:
    by_type: Counter = Counter()
    malformed: Counter = Counter()
    not_normalized: list[dict[str, Any]] = []
    gaps = resyncs = stale = 0
    books: dict[str, Any] = {}
    connections = []
    for conn, info in per_conn.items():
        pipe = pipes[conn]
        entry = {k: v for k, v in info.items() if k != "unread"}
        if pipe is None:
            why = rec.refused.get(conn) or "no normalizer reads this connection's protocol"
            entry["note"] = f"not normalized: {why}; messages counted only"
            entry["by_type"] = dict(info["unread"])
            by_type.update(info["unread"])
            not_normalized += [{"conn": conn, "type": t, "count": n, "why": why}
                               for t, n in info["unread"].items()]
        else:
            norm, sync = pipe
            entry["by_type"] = dict(norm.stats.by_channel)
            entry["malformed"] = dict(norm.stats.malformed)
            entry["gaps"] = sync.stats.gaps
            entry["resyncs"] = sync.stats.resyncs
            entry["dropped_stale"] = sync.stats.dropped_stale
            entry["snapshots"] = sync.stats.snapshots
            by_type.update(norm.stats.by_channel)
            malformed.update(norm.stats.malformed)
            not_normalized += [{"conn": conn, "type": channel, "count": n,
                                "why": f"{kind}: {MALFORMED_KINDS.get(kind, kind)}"}
                               for (channel, kind), n in norm.stats.skipped.items()]
            gaps += sync.stats.gaps
            resyncs += sync.stats.resyncs
            stale += sync.stats.dropped_stale
            for sid, book in sorted(sync.books.items()):
                bp, bq, ap, aq = book.depth(TOP_LEVELS)
                venue, symbol = registry.name(sid)
                name = symbol if len(per_conn) == 1 else f"{venue}:{symbol}"
                books[name] = {
                    "venue": venue,
                    "valid": book.valid,
                    "crossed": book.crossed,
                    "bids": [[float(p), float(q)] for p, q in zip(bp, bq, strict=True)],
                    "asks": [[float(p), float(q)] for p, q in zip(ap, aq, strict=True)],
                }
        connections.append(entry)
    symbols = sorted({f"{v}:{s}" if len(per_conn) > 1 else s for _, v, s in registry.items()})
    span: dict[str, Any] = {"first_ns": first_ns, "last_ns": last_ns, "seconds": None,
                            "first_utc": None, "last_utc": None}
    if first_ns is not None and last_ns is not None:
        span.update(seconds=(last_ns - first_ns) / 1e9, first_utc=_utc(first_ns),
                    last_utc=_utc(last_ns))
    return {
        "path": str(rec.path),
        "format": rec.format,
        "venues": sorted({c["venue"] or "unsupported" for c in connections}),
        "symbols": symbols,
        "messages": sum(c["messages"] for c in connections),
        "by_type": dict(by_type.most_common()),
        "malformed": dict(malformed),
        "not_normalized": sorted(not_normalized, key=lambda r: -r["count"]),
        "time_span": span,
        "gaps": gaps,
        "resyncs": resyncs,
        "dropped_stale": stale,
        "connections": connections,
        "books": books,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a recording (any format workbench.feed.replay reads)")
    parser.add_argument("--venue", choices=VENUES, default=None,
                        help="normalizer venue key (default: sniffed from the recording)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def main(args: argparse.Namespace) -> int:
    report = inspect_recording(args.path, args.venue)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    _print_tables(report)
    return 0


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    span = report["time_span"]
    summary = Table(title=f"recording {report['path']}", show_header=False)
    summary.add_row("format", report["format"])
    summary.add_row("venues", ", ".join(report["venues"]))
    summary.add_row("symbols", ", ".join(report["symbols"]) or "-")
    summary.add_row("messages", f"{report['messages']:,}")
    if span["seconds"] is not None:
        summary.add_row("time span", f"{span['first_utc']} .. {span['last_utc']} "
                                     f"({span['seconds']:.1f} s)")
    summary.add_row("gaps / resyncs", f"{report['gaps']} / {report['resyncs']}")
    summary.add_row("stale deltas dropped", str(report["dropped_stale"]))
    summary.add_row("malformed", ", ".join(f"{k}: {v}" for k, v in report["malformed"].items())
                    or "0")
    console.print(summary)
    types = Table(title="messages by type")
    types.add_column("type")
    types.add_column("count", justify="right")
    for name, count in report["by_type"].items():
        types.add_row(name, f"{count:,}")
    console.print(types)
    for note in {c.get("note") for c in report["connections"] if c.get("note")}:
        console.print(f"[yellow]{note}[/yellow]")
    if report["not_normalized"]:
        skipped = Table(title="messages not normalized")
        for col in ("connection", "type", "count", "why"):
            skipped.add_column(col, justify="right" if col == "count" else "left")
        for row in report["not_normalized"]:
            skipped.add_row(row["conn"] or "-", row["type"], f"{row['count']:,}", row["why"])
        console.print(skipped)
    for symbol, book in report["books"].items():
        state = "valid" if book["valid"] else "INVALID"
        table = Table(title=f"{symbol} top {TOP_LEVELS} ({state}"
                            f"{', CROSSED' if book['crossed'] else ''})")
        for col in ("bid qty", "bid", "ask", "ask qty"):
            table.add_column(col, justify="right")
        for i in range(max(len(book["bids"]), len(book["asks"]))):
            bid = book["bids"][i] if i < len(book["bids"]) else ("", "")
            ask = book["asks"][i] if i < len(book["asks"]) else ("", "")
            table.add_row(str(bid[1]), str(bid[0]), str(ask[0]), str(ask[1]))
        console.print(table)
