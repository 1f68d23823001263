"""The O(1) running volume mean against polars, on real volumes, with and without gaps."""

from __future__ import annotations

import numpy as np
import polars as pl

from workbench.backtest.kernels import volume_mean


def test_volume_mean_equals_polars_rolling_mean(binance_bars) -> None:
    s = binance_bars.symbols.index("SOL_USDT_USDT")
    for m in (1, 20, 60):
        ours = volume_mean(binance_bars.volume[s], binance_bars.has_data[s], m)
        mask = binance_bars.has_data[s]
        ref = pl.Series(binance_bars.volume[s, mask]).rolling_mean(m).shift(1).to_numpy()
        np.testing.assert_allclose(ours[mask], ref, rtol=1e-9, equal_nan=True)
        assert np.isnan(ours[~mask]).all()


def test_volume_mean_skips_bars_without_data() -> None:
    rng = np.random.default_rng(7)
    v = rng.lognormal(3.0, 1.5, 5_000)
    mask = rng.random(5_000) > 0.3
    ours = volume_mean(v, mask, 25)
    ref = pl.Series(v[mask]).rolling_mean(25).shift(1).to_numpy()
    np.testing.assert_allclose(ours[mask], ref, rtol=1e-9, equal_nan=True)
