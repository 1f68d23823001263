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

# WB_BAD_* code -> malformed kind ('' for WB_BAD_NONE)
BAD_KINDS: tuple[str, ...] = ("", "json", "schema", "unknown_type", "bad_price", "bad_qty",
                              "unknown_symbol", "depth", "memory", "internal", "oversize")
assert len(BAD_KINDS) == lib.WB_BAD_COUNT and BAD_KINDS[lib.WB_BAD_OVERSIZE] == "oversize"


def malformed_counts(by_code: Sequence[int]) -> dict[str, int]:
    """{kind name: count} of the non-zero entries of a WB_BAD_COUNT-long count array."""
    return {BAD_KINDS[i]: int(by_code[i]) for i in range(1, len(BAD_KINDS)) if by_code[i]}
