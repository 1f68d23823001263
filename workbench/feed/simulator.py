"""The built-in market simulator: a seeded order-flow model emitting real Binance messages.

The embedded default source of `SimExchange` for users with neither exchange access nor
recordings. One `MarketSimulator` per symbol keeps an exact L2 book (integer price ticks and
integer quantity lots) and produces, for every order arrival, the messages Binance USD-M
futures would send on its combined stream, byte for byte in the venue's layout:
`trade` (one per fill), `depthUpdate` (`U`/`u`/`pu`, `@depth@0ms`) and `bookTicker`, plus the
REST depth snapshot (`GET /fapi/v1/depth`, `lastUpdateId`). Formats: Binance USD-M Futures API
docs, "Websocket Market Streams" (Diff. Book Depth Streams, Individual Symbol Book Ticker
Streams, Trade Streams) and "Market Data Endpoints / Order Book". With `venue="bybit"` it
speaks Bybit v5 instead ("WebSocket Stream > Public": `orderbook.{depth}.{symbol}` snapshot
and deltas of the top `depth` levels with `u` + 1 per message, `publicTrade.{symbol}`).

The model (all in simulated time, deterministic for a seed):
- reference mid: a random walk on a fixed step (`vol_step_ms`) whose variance follows
  GARCH(1,1), h_t = omega + alpha * eps_{t-1}^2 + beta * h_{t-1} (Bollerslev 1986,
  "Generalized autoregressive conditional heteroskedasticity", J. Econometrics 31), which gives
  the volatility clustering of real returns; omega is set so the unconditional variance is
  `step_ticks_sd`^2.
- order flow: independent Poisson arrivals of limit orders, cancels and market orders, as in
  Cont, Stoikov and Talreja 2010 ("A stochastic model for order book dynamics", Operations
  Research 58(3)). Limit orders rest at a geometric distance (in ticks) from the reference mid;
  a limit order priced through the opposite best executes first (so the book follows the mid).
  Order sizes are log-normal in lots (Bouchaud, Mezard and Potters 2002 report broad,
  roughly log-normal order-size distributions). Cancels pick a level uniformly and remove one
  order-sized amount; market orders sweep from the best level.

Update ids mimic futures: ids are global across the venue's symbols, so `U` of a message is the
previous `u` plus one plus a Poisson number of other symbols' updates, and `pu` is the previous
message's `u` (the sequence rule BookSync checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import orjson

from workbench.errors import ConfigError

NS_PER_MS = 1_000_000
FORMATS = ("binance", "bybit")
BYBIT_DEPTHS = (1, 50, 200, 500)  # linear orderbook depths (Bybit v5 "Orderbook")


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulated instrument. Rates are per second of simulated time.

    price_decimals / qty_decimals: digits the venue prints ("61800.20", "0.014").
    tick_units / lot_units: tick size and lot size in units of the last printed digit
    (tick 0.10 = 10 units at 2 decimals). mid: starting mid price. levels: price levels per
    side in the initial book. place_p: parameter of the geometric distance (in ticks) of new
    limit orders from the mid (mean distance 1/place_p). size_mu / size_sigma: log-normal order
    size in lots. garch_alpha / garch_beta: GARCH(1,1) coefficients (alpha + beta < 1).
    step_ticks_sd: unconditional s.d. of the mid per vol step, in ticks. start_ms: exchange
    time of the first event (ms since the epoch). first_update_id: `lastUpdateId` of the initial
    book. id_gap_mean: mean number of other symbols' updates between two of ours.
    venue: message format, 'binance' (USD-M combined stream) or 'bybit' (v5 linear
    `orderbook.{book_depth}.{symbol}` and `publicTrade.{symbol}`).
    """

    symbol: str = "BTCUSDT"
    seed: int = 7
    mid: float = 60_000.0
    price_decimals: int = 2
    tick_units: int = 10
    qty_decimals: int = 3
    lot_units: int = 1
    levels: int = 60
    limit_rate: float = 900.0
    cancel_rate: float = 500.0
    market_rate: float = 120.0
    place_p: float = 0.05
    size_mu: float = 3.0
    size_sigma: float = 1.2
    garch_alpha: float = 0.08
    garch_beta: float = 0.90
    step_ticks_sd: float = 1.5
    vol_step_ms: int = 100
    start_ms: int = 1_723_161_255_000
    first_update_id: int = 5_000_000_000_000
    id_gap_mean: float = 2.0
    venue: str = "binance"
    book_depth: int = 50

    def __post_init__(self) -> None:
        positive = ("mid", "limit_rate", "cancel_rate", "market_rate", "size_sigma",
                    "step_ticks_sd")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"SimConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("tick_units", "lot_units", "levels", "vol_step_ms", "first_update_id"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.place_p < 1:
            raise ConfigError(f"SimConfig.place_p must be in (0, 1), got {self.place_p!r}")
        if not (self.garch_alpha >= 0 and self.garch_beta >= 0
                and self.garch_alpha + self.garch_beta < 1):
            raise ConfigError("SimConfig.garch_alpha + garch_beta must be in [0, 1) with both "
                              f">= 0, got {self.garch_alpha!r} + {self.garch_beta!r}")
        if not self.symbol or not self.symbol.isalnum():
            raise ConfigError(f"SimConfig.symbol must be alphanumeric, got {self.symbol!r}")
        if self.id_gap_mean < 0:
            raise ConfigError(f"SimConfig.id_gap_mean must be >= 0, got {self.id_gap_mean!r}")
        if self.venue not in FORMATS:
            raise ConfigError(f"SimConfig.venue must be one of {FORMATS}, got {self.venue!r}")
        if self.book_depth not in BYBIT_DEPTHS:
            raise ConfigError(f"SimConfig.book_depth must be one of {BYBIT_DEPTHS}, got "
                              f"{self.book_depth!r}")


def _fmt(units: int, decimals: int) -> str:
    """Exact decimal string of an integer amount of 10**-decimals units."""
    if decimals == 0:
        return str(units)
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


class MarketSimulator:
    """One simulated instrument: an exact L2 book and the Binance USD-M messages it produces.

    `step()` processes the next order arrival and returns its messages as
    `list[(ts_ns, stream, message_bytes)]` (ts_ns: simulated exchange time in ns; stream:
    the combined-stream name, e.g. 'btcusdt@depth@0ms'). `snapshot(limit)` is the REST depth
    body of the current book. `top(n)` gives the book as float arrays for comparisons.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = cfg = config or SimConfig()
        self._rng = np.random.default_rng(cfg.seed)
        lower = cfg.symbol.lower()
        self._streams = (f"{lower}@trade", f"{lower}@depth@0ms", f"{lower}@bookTicker")
        self._topics = (f"publicTrade.{cfg.symbol}", f"orderbook.{cfg.book_depth}.{cfg.symbol}")
        self.book_update_id = 1000  # Bybit orderbook `u` (u == 1 would mean a restart)
        self._rates = np.array([cfg.limit_rate, cfg.cancel_rate, cfg.market_rate])
        self._total_rate = float(self._rates.sum())
        self._cum = np.cumsum(self._rates) / self._total_rate
        self._omega = cfg.step_ticks_sd**2 * (1.0 - cfg.garch_alpha - cfg.garch_beta)
        self._h = cfg.step_ticks_sd**2
        self._eps = 0.0
        self._step_ns = cfg.vol_step_ms * NS_PER_MS
        self.time_ns = cfg.start_ms * NS_PER_MS
        self._next_vol_ns = self.time_ns + self._step_ns
        # reference mid in ticks (float); book prices are integer ticks
        self._ref = cfg.mid * 10**cfg.price_decimals / cfg.tick_units
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_update_id = cfg.first_update_id
        self.trade_id = 1
        self.messages = 0
        self._bbo: tuple[int, int, int, int] | None = None
        center = math.floor(self._ref)
        for k in range(cfg.levels):
            self.bids[center - k] = self._size()
            self.asks[center + 1 + k] = self._size()
        self._bbo = self._best()
        self._view = self._top_view()

    # ---- model -------------------------------------------------------------------------
    def _size(self) -> int:
        lots = int(self._rng.lognormal(self.config.size_mu, self.config.size_sigma))
        return max(1, lots) * self.config.lot_units

    def _vol_step(self) -> None:
        cfg = self.config
        self._h = self._omega + cfg.garch_alpha * self._eps**2 + cfg.garch_beta * self._h
        self._eps = math.sqrt(self._h) * float(self._rng.standard_normal())
        self._ref += self._eps

    def _best(self) -> tuple[int, int, int, int]:
        bid = max(self.bids)
        ask = min(self.asks)
        return bid, self.bids[bid], ask, self.asks[ask]

    def _execute(self, buy: bool, qty: int, limit: int | None,
                 fills: list[tuple[int, int]], changes: dict) -> int:
        """Match `qty` against the opposite side up to price `limit`; keep one level there.
        Appends (price, qty) fills, records level changes; returns the unfilled qty."""
        book = self.asks if buy else self.bids
        side_changes = changes["a" if buy else "b"]
        while qty > 0 and len(book) > 1:
            best = min(book) if buy else max(book)
            if limit is not None and (best > limit if buy else best < limit):
                break
            take = min(qty, book[best])
            fills.append((best, take))
            qty -= take
            left = book[best] - take
            if left:
                book[best] = left
            else:
                del book[best]
            side_changes[best] = left
        return qty

    def _order(self) -> tuple[list[tuple[int, int]], dict, bool]:
        """One arrival: returns (fills, {'b': {px: qty}, 'a': {...}}, aggressor_is_buy)."""
        rng = self._rng
        changes: dict[str, dict[int, int]] = {"b": {}, "a": {}}
        fills: list[tuple[int, int]] = []
        buy = bool(rng.random() < 0.5)
        kind = int(np.searchsorted(self._cum, rng.random(), side="right"))
        if kind == 0:  # limit order at a geometric distance from the reference mid
            dist = int(rng.geometric(self.config.place_p)) - 1
            price = math.floor(self._ref) - dist if buy else math.floor(self._ref) + 1 + dist
            qty = self._execute(buy, self._size(), price, fills, changes)
            if qty and (price < min(self.asks) if buy else price > max(self.bids)):
                book = self.bids if buy else self.asks
                book[price] = book.get(price, 0) + qty
                changes["b" if buy else "a"][price] = book[price]
        elif kind == 1:  # cancel part of a random level (never the last level of a side)
            book = self.bids if buy else self.asks
            if len(book) > 1:
                prices = list(book)
                price = prices[int(rng.integers(len(prices)))]
                left = max(0, book[price] - self._size())
                if left:
                    book[price] = left
                else:
                    del book[price]
                changes["b" if buy else "a"][price] = left
        else:  # market order sweeping from the best level
            self._execute(buy, self._size(), None, fills, changes)
        return fills, changes, buy

    # ---- messages ----------------------------------------------------------------------
    def step(self) -> list[tuple[int, str, bytes]]:
        """Advance to the next order arrival; its messages in venue send order
        (trades, then the depth update, then the book ticker if the top changed).
        Returns [] for an arrival that changed nothing (e.g. a cancel on a one-level side)."""
        self.time_ns += int(self._rng.exponential(1e9 / self._total_rate)) + 1
        while self.time_ns >= self._next_vol_ns:
            self._vol_step()
            self._next_vol_ns += self._step_ns
        fills, changes, buy = self._order()
        n_changes = len(changes["b"]) + len(changes["a"])
        prev = self.last_update_id
        if n_changes:
            first = prev + 1 + int(self._rng.poisson(self.config.id_gap_mean))
            self.last_update_id = first + n_changes - 1
        if self.config.venue == "bybit":
            out = self._bybit(fills, buy, n_changes)
        else:
            out = self._binance(fills, changes, buy, prev)
        self.messages += len(out)
        return out

    def _binance(self, fills: list[tuple[int, int]], changes: dict, buy: bool, prev: int
                 ) -> list[tuple[int, str, bytes]]:
        """trade per fill, depthUpdate (U/u/pu), bookTicker when the top changed."""
        out: list[tuple[int, str, bytes]] = []
        ms = self.time_ns // NS_PER_MS
        cfg = self.config
        trade_stream, depth_stream, ticker_stream = self._streams
        for price, qty in fills:
            data = {"e": "trade", "E": ms, "T": ms, "s": cfg.symbol, "t": self.trade_id,
                    "p": _fmt(price * cfg.tick_units, cfg.price_decimals),
                    "q": _fmt(qty, cfg.qty_decimals), "X": "MARKET", "m": not buy}
            self.trade_id += 1
            out.append((self.time_ns, trade_stream, self._wrap(trade_stream, data)))
        if self.last_update_id != prev:
            first = self.last_update_id - (len(changes["b"]) + len(changes["a"])) + 1
            data = {"e": "depthUpdate", "E": ms, "T": ms, "s": cfg.symbol, "U": first,
                    "u": self.last_update_id, "pu": prev,
                    "b": self._levels(sorted(changes["b"].items(), reverse=True)),
                    "a": self._levels(sorted(changes["a"].items()))}
            out.append((self.time_ns, depth_stream, self._wrap(depth_stream, data)))
            bbo = self._best()
            if bbo != self._bbo:
                self._bbo = bbo
                bid, bid_qty, ask, ask_qty = bbo
                data = {"e": "bookTicker", "u": self.last_update_id, "s": cfg.symbol,
                        "b": _fmt(bid * cfg.tick_units, cfg.price_decimals),
                        "B": _fmt(bid_qty, cfg.qty_decimals),
                        "a": _fmt(ask * cfg.tick_units, cfg.price_decimals),
                        "A": _fmt(ask_qty, cfg.qty_decimals), "T": ms, "E": ms}
                out.append((self.time_ns, ticker_stream, self._wrap(ticker_stream, data)))
        return out

    def _bybit(self, fills: list[tuple[int, int]], buy: bool, n_changes: int
               ) -> list[tuple[int, str, bytes]]:
        """One publicTrade message for the fills, one orderbook delta for the change of the
        top `book_depth` levels (levels leaving the window are sent with size 0)."""
        out: list[tuple[int, str, bytes]] = []
        ms = self.time_ns // NS_PER_MS
        cfg = self.config
        trade_topic, book_topic = self._topics
        if fills:
            trades = []
            for price, qty in fills:
                trades.append({"T": ms, "s": cfg.symbol, "S": "Buy" if buy else "Sell",
                               "v": _fmt(qty, cfg.qty_decimals),
                               "p": _fmt(price * cfg.tick_units, cfg.price_decimals),
                               "L": "ZeroPlusTick", "i": str(self.trade_id), "BT": False})
                self.trade_id += 1
            message = {"topic": trade_topic, "type": "snapshot", "ts": ms, "data": trades}
            out.append((self.time_ns, trade_topic, orjson.dumps(message)))
        if n_changes:
            old, self._view = self._view, self._top_view()
            sides = []
            for side, descending in (("b", True), ("a", False)):
                before, after = old[side], self._view[side]
                diff = {p: 0 for p in before if p not in after}
                diff.update((p, q) for p, q in after.items() if before.get(p) != q)
                sides.append(self._levels(sorted(diff.items(), reverse=descending)))
            if sides[0] or sides[1]:
                self.book_update_id += 1
                data = {"s": cfg.symbol, "b": sides[0], "a": sides[1],
                        "u": self.book_update_id, "seq": self.last_update_id}
                message = {"topic": book_topic, "type": "delta", "ts": ms, "data": data,
                           "cts": ms}
                out.append((self.time_ns, book_topic, orjson.dumps(message)))
        return out

    def _top_view(self) -> dict[str, dict[int, int]]:
        depth = self.config.book_depth
        return {"b": dict(sorted(self.bids.items(), reverse=True)[:depth]),
                "a": dict(sorted(self.asks.items())[:depth])}

    def bybit_snapshot(self) -> bytes:
        """The Bybit v5 `orderbook.{book_depth}.{symbol}` snapshot message of the current book
        (what the venue sends on subscribe), with the current `u`."""
        ms = self.time_ns // NS_PER_MS
        cfg = self.config
        view = self._top_view()
        data = {"s": cfg.symbol, "b": self._levels(sorted(view["b"].items(), reverse=True)),
                "a": self._levels(sorted(view["a"].items())), "u": self.book_update_id,
                "seq": self.last_update_id}
        return orjson.dumps({"topic": self._topics[1], "type": "snapshot", "ts": ms,
                             "data": data, "cts": ms})

    @staticmethod
    def _wrap(stream: str, data: dict) -> bytes:
        return orjson.dumps({"stream": stream, "data": data})

    def _levels(self, items: list[tuple[int, int]]) -> list[list[str]]:
        cfg = self.config
        return [[_fmt(px * cfg.tick_units, cfg.price_decimals), _fmt(q, cfg.qty_decimals)]
                for px, q in items]

    def snapshot(self, limit: int = 1000) -> bytes:
        """REST depth body of the current book (top `limit` levels per side):
        `{"lastUpdateId", "E", "T", "bids": [[price, qty], ...], "asks": [...]}`."""
        ms = self.time_ns // NS_PER_MS
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return orjson.dumps({"lastUpdateId": self.last_update_id, "E": ms, "T": ms,
                             "bids": self._levels(bids), "asks": self._levels(asks)})

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `n` levels as float64 arrays of shape (k, 2) [price, qty]: bids best-first
        (descending price), asks best-first (ascending)."""
        cfg = self.config
        # integer / power of ten rounds exactly like parsing the printed decimal string
        pd, qd = 10**cfg.price_decimals, 10**cfg.qty_decimals
        out = []
        for items in (sorted(self.bids.items(), reverse=True)[:n], sorted(self.asks.items())[:n]):
            rows = [(p * cfg.tick_units / pd, q / qd) for p, q in items]
            out.append(np.array(rows, dtype=np.float64).reshape(-1, 2))
        return out[0], out[1]
