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


def _history(ratios: list[float], quick: list[bool] | None = None,
             rates: list[float] | None = None) -> pl.DataFrame:
    n = len(ratios)
    return pl.DataFrame({
        "run_id": [f"r{d:02d}" for d in range(n)], "phase": ["p"] * n, "status": ["ok"] * n,
        "quick": quick or [False] * n,
        "time_utc": [f"2026-01-{d + 1:02d}T00:00:00+00:00" for d in range(n)],
        "ratio": ratios, "optimized_items_per_s": rates or [1000.0] * n,
    })


def test_no_flag_without_five_earlier_runs_of_the_same_mode() -> None:
    # a ratio that collapsed, after 4 runs: not enough history, never a regression
    t = history.trends(_history([3.0, 3.0, 3.1, 2.9, 1.0]))["p"]
    assert t.status == "not enough history" and t.arrow == "·" and t.runs == 4
    assert history.regressions(_history([3.0, 3.0, 3.1, 2.9, 1.0])).is_empty()
    # the first run ever: nothing to compare with
    first = history.trends(_history([3.0]))["p"]
    assert first.status == "not enough history" and first.median is None
    # 5 earlier runs, but 2 of them quick: still 3 of the full mode
    mixed = _history([3.0, 3.0, 3.0, 3.0, 3.0, 1.0], quick=[True, True] + [False] * 4)
    assert history.trends(mixed)["p"].status == "not enough history"


def test_a_ratio_below_the_noise_band_is_a_regression() -> None:
    ratios = [3.0, 3.1, 2.9, 3.0, 3.05, 2.95, 2.0]
    t = history.trends(_history(ratios))["p"]
    assert t.status == "regression" and t.arrow == "↓" and t.runs == 6
    assert t.median == pytest.approx(3.0) and t.low < 3.0 < t.high
    assert t.change == pytest.approx(2.0 / 3.0 - 1)
    flags = history.regressions(_history(ratios))
    assert flags["phase"].to_list() == ["p"] and flags["runs"].to_list() == [6]
    # inside the band (noise) and above it
    assert history.trends(_history([*ratios[:-1], 2.9]))["p"].status == "steady"
    assert history.trends(_history([*ratios[:-1], 4.0]))["p"].status == "improvement"


def test_absolute_figures_are_never_flagged() -> None:
    # the optimized throughput halves, but so does the baseline's: the ratio is steady
    rates = [1000.0] * 6 + [500.0]
    assert history.regressions(_history([3.0] * 7, rates=rates)).is_empty()
    assert history.regressions(pl.DataFrame()).is_empty()


def test_the_band_follows_the_spread_of_the_history() -> None:
    noisy = [2.0, 4.0, 2.5, 3.5, 3.0, 2.2, 3.8]
    t = history.trends(_history([*noisy, 2.1]))["p"]
    assert t.status == "steady"  # 2.1 is inside a noisy phase's band
    quiet = [3.0] * 7
    assert history.trends(_history([*quiet, 2.8]))["p"].status == "regression"  # 5% floor
