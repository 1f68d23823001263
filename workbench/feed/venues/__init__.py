"""One module per venue: Normalizer (raw bytes -> events), subscribe messages, sequence rules.

`normalizer_for(venue)` builds the normalizer of a venue key:

| venue key       | class                             | feed                                  |
|-----------------|-----------------------------------|---------------------------------------|
| `binance`       | BinanceNormalizer(market="spot")  | Binance spot combined streams         |
| `binance-usdm`  | BinanceNormalizer(market="usdm")  | Binance USD-M futures                 |
| `binance-coinm` | BinanceNormalizer(market="coinm") | Binance COIN-M futures                |
| `bybit`         | BybitNormalizer("linear")         | Bybit v5 /v5/public/linear            |
| `bybit-spot`    | BybitNormalizer("spot")           | Bybit v5 /v5/public/spot              |
| `bybit-inverse` | BybitNormalizer("inverse")        | Bybit v5 /v5/public/inverse           |
| `coinbase`      | CoinbaseNormalizer                | Coinbase Advanced Trade               |
| `tardis`        | TardisNormalizer                  | Tardis.dev CSV rows (see replay.py)   |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.feed.symbols import SYMBOLS, SymbolRegistry

if TYPE_CHECKING:
    from workbench.feed.venues.base import Normalizer

VENUES = ("binance", "binance-usdm", "binance-coinm", "bybit", "bybit-spot", "bybit-inverse",
          "coinbase", "tardis")


def normalizer_for(venue: str, registry: SymbolRegistry = SYMBOLS, **options: object
                   ) -> Normalizer:
    """A new normalizer for `venue` (a key of VENUES), registering symbols in `registry`.

    options go to the class (e.g. default_symbol= for Binance). Raises ValueError listing the
    venue keys for an unknown venue.
    """
    if venue.startswith("binance"):
        from workbench.feed.venues.binance import MARKETS, BinanceNormalizer

        markets = {v: k for k, v in MARKETS.items()}
        if venue in markets:
            return BinanceNormalizer(registry, market=markets[venue], **options)
    elif venue.startswith("bybit"):
        from workbench.feed.venues.bybit import CATEGORIES, BybitNormalizer

        categories = {v: k for k, v in CATEGORIES.items()}
        if venue in categories:
            return BybitNormalizer(registry, category=categories[venue], **options)
    elif venue == "coinbase":
        from workbench.feed.venues.coinbase import CoinbaseNormalizer

        return CoinbaseNormalizer(registry, **options)
    elif venue == "tardis":
        from workbench.feed.venues.tardis import TardisNormalizer

        return TardisNormalizer(registry, **options)
    raise ValueError(f"unknown venue {venue!r}: expected one of {', '.join(VENUES)}")
