"""Bounded memory: converting and replaying the largest recording in small chunks, in a fresh
process, peaks far under 1 GiB RSS (the shared data holds no full day; the Binance USD-M file is
6 minutes, 94k messages, 625k rows; chunks of 64k rows make ten windows of it)."""

from __future__ import annotations

import subprocess
import sys

USDM = "binance/hftbacktest/usdm/btcusdt_20240808.gz"
SMALL = "bybit/xrpusdt-ob500.data.zip"
GIB = 1 << 30

SCRIPT = """
import re, sys
from workbench.backtest.tick import TickConfig, convert, tick_backtest
from workbench.engine.compiled import Quoter

def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024

# compile every kernel on a small recording first (numba's JIT memory is not the data's)
small = convert(sys.argv[3], sys.argv[2] + ".small.npy", chunk_events=65536)
tick_backtest(small, Quoter(0.001, 0.005), TickConfig(chunk_events=65536))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM, the peak resident set size, to the RSS now
data = convert(sys.argv[1], sys.argv[2], chunk_events=65536)
r = tick_backtest(data, Quoter(0.001, 0.005), TickConfig(chunk_events=65536))
print(len(data), len(r.fill_columns["qty"]), peak())
"""


def test_convert_and_replay_peak_rss(shared_data, tmp_path):
    """The peak resident set of the conversion and replay themselves: the kernels are compiled
    first on a small recording and the kernel's peak counter (VmHWM) is reset after it, since
    a fresh checkout's numba JIT alone peaked at ~1.2 GiB in a clean CI clone."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(shared_data / USDM),
                           str(tmp_path / "usdm.npy"), str(shared_data / SMALL)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows, fills, peak = map(int, done.stdout.split()[-3:])
    assert rows > 600_000 and fills > 100
    assert peak < GIB, f"peak RSS {peak / 2**20:.0f} MiB"
