"""One module per venue: its `Venue` records (normalizer, subscribe frames, REST depth market,
sequencing rule, SimExchange dialect and simulator format) and its Normalizer.

`get_venue(key)` gives the record of a normalizer venue key (`normalizer_for(key, registry)` is
`get_venue(key).normalizer(registry)`):

| venue key       | module     | normalizer                        | feed                         |
|-----------------|------------|-----------------------------------|------------------------------|
| `binance`       | binance.py | BinanceNormalizer(market="spot")  | Binance spot combined streams|
| `binance-usdm`  | binance.py | BinanceNormalizer(market="usdm")  | Binance USD-M futures        |
| `binance-coinm` | binance.py | BinanceNormalizer(market="coinm") | Binance COIN-M futures       |
| `bybit`         | bybit.py   | BybitNormalizer("linear")         | Bybit v5 /v5/public/linear   |
| `bybit-spot`    | bybit.py   | BybitNormalizer("spot")           | Bybit v5 /v5/public/spot     |
| `bybit-inverse` | bybit.py   | BybitNormalizer("inverse")        | Bybit v5 /v5/public/inverse  |
| `coinbase`      | coinbase.py| CoinbaseNormalizer                | Coinbase Advanced Trade      |
| `tardis`        | tardis.py  | TardisNormalizer                  | Tardis.dev CSV rows (replay) |

A venue module is imported on first use (they load numba kernels), so importing this package
stays light. Adding a venue is adding its module and its keys to `_MODULES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from workbench.errors import ConfigError
from workbench.feed.symbols import SYMBOLS, SymbolRegistry
from workbench.feed.venues.record import Dialect, RestMarket, SimSession, Venue

if TYPE_CHECKING:
    from workbench.feed.venues.base import Normalizer

__all__ = ["VENUES", "Dialect", "RestMarket", "SimSession", "Venue", "all_venues", "get_venue",
           "normalizer_for", "simulated_venue"]

# venue key -> the module of this package that defines its record
_MODULES = {"binance": "binance", "binance-usdm": "binance", "binance-coinm": "binance",
            "bybit": "bybit", "bybit-spot": "bybit", "bybit-inverse": "bybit",
            "coinbase": "coinbase", "tardis": "tardis"}
VENUES = tuple(_MODULES)


def get_venue(key: str) -> Venue:
    """The Venue record of venue key `key` (one of VENUES). Raises ConfigError listing the
    keys for an unknown one."""
    module = _MODULES.get(key)
    if module is None:
        raise ConfigError(f"unknown venue {key!r}: expected one of {', '.join(VENUES)}")
    records = importlib.import_module(f"{__name__}.{module}").RECORDS
    return next(r for r in records if r.key == key)


def normalizer_for(key: str, registry: SymbolRegistry = SYMBOLS, **options: object
                   ) -> Normalizer:
    """A new normalizer of venue `key`, registering symbols in `registry`; options go to its
    class (e.g. default_symbol= for Binance). Raises ConfigError for an unknown key."""
    return get_venue(key).normalizer(registry, **options)


def all_venues() -> tuple[Venue, ...]:
    """Every Venue record, in VENUES order (imports every venue module)."""
    return tuple(get_venue(key) for key in VENUES)


def simulated_venue(exchange: str) -> Venue:
    """The record whose messages the built-in simulator writes when SimExchange speaks
    `exchange` ('binance' -> binance-usdm, 'bybit' -> bybit linear). Raises ConfigError when
    the simulator does not speak that exchange."""
    found = [v for v in all_venues() if v.exchange == exchange and v.simulator is not None]
    if not found:
        speaks = sorted({v.exchange for v in all_venues() if v.simulator and v.exchange})
        raise ConfigError(f"the built-in simulator speaks {' and '.join(speaks)}, got "
                          f"{exchange!r}")
    return found[0]
