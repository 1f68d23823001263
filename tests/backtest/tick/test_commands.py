"""`workbench convert`, `workbench backtest` and `%hft backtest` on a real recording."""

from __future__ import annotations

import json

import numpy as np
from IPython.core.interactiveshell import InteractiveShell

from workbench.backtest.tick import ConstantLatency, TickConfig, TickData, tick_backtest
from workbench.cli import main
from workbench.engine.compiled import Quoter

FUTURES = "binance/cryptofeed_v3/BINANCE_FUTURES.jsonl.zst"


def test_convert_then_backtest_on_the_command_line(shared_data, tmp_path, capsys):
    out = tmp_path / "fut.npy"
    assert main(["convert", str(shared_data / FUTURES), str(out)]) == 0
    assert "SUSHIUSDT" in capsys.readouterr().out
    data = TickData(out)
    assert len(data) > 1000
    stats_file = tmp_path / "stats.json"
    assert main(["backtest", str(out), "--symbol", "SUSHIUSDT", "--qty", "1",
                 "--max-position", "5", "--entry-us", "500", "--json", str(stats_file)]) == 0
    stats = json.loads(stats_file.read_text())
    expected = tick_backtest(data, Quoter(1.0, 5.0), TickConfig(
        symbol="SUSHIUSDT", latency=ConstantLatency(500_000, 1_000_000)))
    assert stats["orders"] > 10
    assert stats["fills"] == len(expected.fill_columns["qty"])
    assert stats["orders"] == len(expected.order_columns["qty"])
    assert np.isclose(stats["total"], expected.pnl()["total"])


def test_hft_backtest_magic_returns_the_result(shared_data, tmp_path, capsys):
    out = tmp_path / "fut.npy"
    main(["convert", str(shared_data / FUTURES), str(out)])
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "workbench")
    try:
        result = sh.run_line_magic("hft", f"backtest {out} --symbol SUSHIUSDT --qty 1 "
                                          "--max-position 5")
    finally:
        sh.run_line_magic("unload_ext", "workbench")
    assert result.symbol == "SUSHIUSDT"
    printed = capsys.readouterr().out
    assert "fill_ratio" in printed and "sharpe" in printed
    assert result.fills.columns[:4] == ["order_id", "side", "price", "qty"]
