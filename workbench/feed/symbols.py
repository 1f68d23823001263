"""One registry maps (venue, symbol string) to a compact `symbol_id` (u4) and back.

Events carry `symbol_id` (EVENT_DTYPE field `symbol_id`, uint32) instead of strings. Ids are
assigned on first use, from 1 upwards (0 means "no symbol"), and never reused in a process.
`SYMBOLS` is the process-wide default; tests build their own `SymbolRegistry()`.

Venue names are the normalizer venue keys (`binance`, `binance-usdm`, `binance-coinm`, `bybit`,
`bybit-spot`, `bybit-inverse`, `coinbase`, `tardis`), so BTCUSDT on Binance spot and BTCUSDT on
USD-M futures are two instruments with two ids. Symbol strings are kept upper-case as the venue
writes them in messages (`BTCUSDT`, `BTC-USD`).
"""

from __future__ import annotations

import threading

from workbench.errors import ConfigError

MAX_SYMBOL_ID = 2**32 - 1


class SymbolRegistry:
    """Bidirectional map (venue, symbol) <-> symbol_id (int in 1..2**32-1). Thread-safe."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._names: list[tuple[str, str]] = [("", "")]
        self._lock = threading.Lock()

    def id(self, venue: str, symbol: str) -> int:
        """The symbol_id of `symbol` on `venue`, assigned now if new."""
        key = (venue, symbol.upper())
        found = self._ids.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._ids.get(key)
            if found is None:
                found = len(self._names)
                if found > MAX_SYMBOL_ID:
                    raise ConfigError(f"symbol registry full: expected < 2**32 ids, got {found}")
                self._names.append(key)
                self._ids[key] = found
            return found

    def lookup(self, venue: str, symbol: str) -> int | None:
        """The symbol_id of `symbol` on `venue`, or None if it was never registered."""
        return self._ids.get((venue, symbol.upper()))

    def name(self, symbol_id: int) -> tuple[str, str]:
        """(venue, symbol) of `symbol_id`. Raises KeyError for an unknown id."""
        if not 0 < symbol_id < len(self._names):
            raise KeyError(f"unknown symbol_id {symbol_id}: expected 1..{len(self._names) - 1}")
        return self._names[symbol_id]

    def symbol(self, symbol_id: int) -> str:
        """The symbol string of `symbol_id` (without the venue)."""
        return self.name(symbol_id)[1]

    def __len__(self) -> int:
        return len(self._names) - 1

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def items(self) -> list[tuple[int, str, str]]:
        """Every registered (symbol_id, venue, symbol), in id order."""
        return [(i, v, s) for i, (v, s) in enumerate(self._names) if i]


SYMBOLS = SymbolRegistry()
