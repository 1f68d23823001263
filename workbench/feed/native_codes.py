"""The codes the native extension (`workbench._native`, csrc/native/wb_parse.h) shares with
Python: venue keys -> WB_VENUE_*, and WB_BAD_* -> malformed kind names (the names of
`workbench.feed.venues.base.MALFORMED_KINDS`, plus 'oversize')."""

from __future__ import annotations

from collections.abc import Sequence

from workbench._native import lib

VENUE_CODES: dict[str, int] = {
    "binance": lib.WB_VENUE_BINANCE_SPOT,
    "binance-usdm": lib.WB_VENUE_BINANCE_USDM,
    "binance-coinm": lib.WB_VENUE_BINANCE_COINM,
    "bybit": lib.WB_VENUE_BYBIT_LINEAR,
    "bybit-spot": lib.WB_VENUE_BYBIT_SPOT,
    "bybit-inverse": lib.WB_VENUE_BYBIT_INVERSE,
    "coinbase": lib.WB_VENUE_COINBASE,
}

MALFORMED_NAMES: dict[int, str] = {
    lib.WB_BAD_JSON: "json",
    lib.WB_BAD_SCHEMA: "schema",
    lib.WB_BAD_UNKNOWN_TYPE: "unknown_type",
    lib.WB_BAD_PRICE: "bad_price",
    lib.WB_BAD_QTY: "bad_qty",
    lib.WB_BAD_UNKNOWN_SYMBOL: "unknown_symbol",
    lib.WB_BAD_DEPTH: "depth",
    lib.WB_BAD_MEMORY: "memory",
    lib.WB_BAD_INTERNAL: "internal",
    lib.WB_BAD_OVERSIZE: "oversize",
}
assert len(MALFORMED_NAMES) == lib.WB_BAD_COUNT - 1


def malformed_counts(by_code: Sequence[int]) -> dict[str, int]:
    """{kind name: count} of the non-zero entries of a WB_BAD_COUNT-long count array."""
    return {MALFORMED_NAMES[i]: int(by_code[i]) for i in MALFORMED_NAMES if by_code[i]}
