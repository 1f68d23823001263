"""The results store: append and reload round trip, and the median-of-last-7 regression flag."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from workbench.bench import history
from workbench.bench.registry import Claim, Outcome, Phase
from workbench.bench.runner import run_phases


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bench" / "history.parquet"
    monkeypatch.setenv(history.ENV_VAR, str(path))
    return path


def _records(base_lat_us: int, opt_lat_us: int) -> list[dict]:
    lat = {"b": [base_lat_us * 1000] * 100, "o": [opt_lat_us * 1000] * 100}
    phases = [
        Phase(name="fake.latency", topic="fake", claim=Claim("x", 2.0, 3.0),
              prepare=lambda q: None, metric="latency", repeats=1, warmup=0,
              baseline=lambda _: Outcome("r", items=100, latencies_ns=lat["b"],
                                         extra={"causes": {"gc": 3}}),
              optimized=lambda _: Outcome("r", items=100, latencies_ns=lat["o"]),
              check=lambda a, b: None),
        Phase(name="fake.size", topic="fake", claim=Claim("y"), prepare=lambda q: None,
              metric="bytes", repeats=1, warmup=0, baseline=lambda _: Outcome(1, nbytes=10),
              optimized=lambda _: Outcome(1, nbytes=5), check=lambda a, b: None),
    ]
    return run_phases(phases, quick=True)[1]


def test_history_path_follows_env(store: Path) -> None:
    assert history.history_path() == store


def test_append_and_reload_round_trip(store: Path) -> None:
    assert history.load().is_empty()
    first = _records(10, 4)
    second = _records(12, 4)
    history.append(first)
    assert store.exists()
    history.append(second)
    df = history.load()
    assert df.height == 4
    assert df["phase"].to_list() == ["fake.latency", "fake.size"] * 2
    assert df["run_id"].n_unique() == 2
    lat = df.filter(pl.col("phase") == "fake.latency")
    assert lat["baseline_p99_ns"].to_list() == [10_000.0, 12_000.0]
    assert lat["ratio"].to_list() == pytest.approx([2.5, 3.0])
    size = df.filter(pl.col("phase") == "fake.size")
    assert size["baseline_nbytes"].to_list() == [10, 10]
    assert size["verdict"].to_list() == ["measured", "measured"]
    assert df["cores"][0] == first[0]["machine"]["cores"]
    assert '"gc": 3' in lat["extra"][0]


def _history(p99s: list[float], rates: list[float]) -> pl.DataFrame:
    return pl.DataFrame({
        "phase": ["p"] * len(p99s), "status": ["ok"] * len(p99s), "quick": [False] * len(p99s),
        "time_utc": [f"2026-01-{d + 1:02d}T00:00:00+00:00" for d in range(len(p99s))],
        "optimized_p99_ns": p99s, "optimized_items_per_s": rates,
    })


def test_regression_flag_on_median_of_last_seven() -> None:
    # the first run is outside the 7-run window: its huge P99 must not affect the median
    p99 = [1e9, 100, 100, 105, 95, 100, 102, 98, 115]
    rate = [1.0, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 950]
    flags = history.regressions(_history(p99, rate))
    assert flags.height == 1
    row = flags.row(0, named=True)
    assert row["figure"] == "p99_ns" and row["variant"] == "optimized"
    assert row["median"] == 100 and row["latest"] == 115 and row["runs"] == 7
    assert row["change"] == pytest.approx(0.15)


def test_throughput_drop_is_flagged_and_small_changes_are_not() -> None:
    flags = history.regressions(_history([100] * 8 + [109], [1000] * 8 + [850]))
    assert flags["figure"].to_list() == ["items_per_s"]
    assert flags["change"][0] == pytest.approx(0.15)
    assert history.regressions(_history([100] * 8 + [109], [1000] * 8 + [910])).is_empty()
    assert history.regressions(pl.DataFrame()).is_empty()
