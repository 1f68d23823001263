"""EngineConfig validation and the `workbench run` flags that build it."""

from __future__ import annotations

import argparse

import pytest

from workbench.engine.config import (
    BrokerConfig,
    EngineConfig,
    HousekeepingConfig,
    RiskConfig,
    SourceConfig,
    StrategyConfig,
    TuningConfig,
    nearest_prime_ms,
)
from workbench.engine.run import add_arguments, config_from_args
from workbench.errors import ConfigError


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("source", "kafka:topic", "sim | replay:PATH | ring:NAME | ws:URL"),
        ("source", "replay:", "sim | replay:PATH"),
        ("dispatch", "threads", "polling | blocking | callback"),
        ("poll_interval_ms", -1, ">= 0"),
        ("gc_mode", "off", "default | freeze | disabled"),
        ("on_strategy_error", "ignore", "halt | continue"),
        ("order_type", "stop", "market | limit"),
        ("venue", "kraken", "binance"),
        ("symbols", (), "non-empty tuple"),
        ("symbols", "BTCUSDT", "non-empty tuple"),
        ("speed", float("nan"), "finite number"),
        ("ema_fast", 0, "integer >= 1"),
        ("publish_ms", 50, ">= 100"),
        ("engine_cpus", (0, -1), "tuple of CPU ids"),
        ("maker_fee_bps", 500, "basis points"),
        ("rest_url", "ftp://x", "http"),
        ("feed_spin", "yes", "True or False"),
        ("feed_warm_us", -1, ">= 0"),
        ("feed_warm_us", 300.0, "0 unless feed_spin is True"),
    ],
)
def test_invalid_config_names_field_and_accepted_values(field, value, accepted):
    with pytest.raises(ConfigError) as info:
        EngineConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}:")
    assert accepted in message
    assert repr(value) in message


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"^ema_fast: .*ema_slow"):
        EngineConfig(ema_fast=50, ema_slow=50)
    with pytest.raises(ConfigError, match=r"^target_qty: .*max_position"):
        EngineConfig(target_qty=1.0, max_position=0.5)
    with pytest.raises(ConfigError, match=r"^recording: "):
        EngineConfig(source="replay:/x.gz", recording="/y.gz")


def test_defaults_and_derived_values():
    cfg = EngineConfig(symbols=("btcusdt",))
    assert cfg.source.symbols == ("BTCUSDT",)
    assert cfg.source.kind == "sim" and cfg.source.arg == ""
    assert EngineConfig(source="ws:wss://x/stream").source.arg == "wss://x/stream"
    assert cfg.source.idle_end is None
    assert EngineConfig(recording="/r.gz", speed=0).source.idle_end == 1.0
    assert nearest_prime_ms(100) == 101 and nearest_prime_ms(97) == 97
    staggered = EngineConfig(stagger=True, journal_flush_ms=1000)
    assert staggered.housekeeping.period_ms("journal_flush") == 1009
    assert EngineConfig().housekeeping.period_ms("journal_flush") == 100  # the loss window


def test_groups_and_the_flat_form_build_the_same_config():
    grouped = EngineConfig(source=SourceConfig("replay:/x.gz", speed=0.0),
                           strategy=StrategyConfig(ema_fast=5, ema_slow=40),
                           tuning=TuningConfig(gc_mode="freeze"), dispatch="polling")
    flat = EngineConfig(source="replay:/x.gz", speed=0.0, ema_fast=5, ema_slow=40,
                        gc_mode="freeze", dispatch="polling")
    assert grouped == flat
    assert grouped.source == SourceConfig("replay:/x.gz", speed=0.0)
    assert grouped.risk == RiskConfig() and grouped.broker == BrokerConfig()
    assert grouped.housekeeping == HousekeepingConfig()
    # flat knobs override the given groups; replace() validates like the constructor
    assert EngineConfig(strategy=StrategyConfig(ema_fast=5, ema_slow=40),
                        ema_fast=7).strategy == StrategyConfig(ema_fast=7, ema_slow=40)
    assert flat.replace(speed=2.0).source.speed == 2.0
    assert flat.replace(speed=2.0).strategy is flat.strategy
    seeded = EngineConfig(seed=3, idle_end_s=2.0)
    assert seeded.replace(source="replay:/y.gz").source == SourceConfig(
        "replay:/y.gz", seed=3, idle_end_s=2.0)
    with pytest.raises(ConfigError, match=r"^ema_fast: .*ema_slow"):
        flat.replace(ema_fast=40)
    with pytest.raises(ConfigError, match=r"^speedy: not a knob"):
        EngineConfig(speedy=2.0)
    assert flat.to_dict()["source"]["source"] == "replay:/x.gz"
    assert flat.to_dict()["dispatch"] == "polling"


def test_cli_flags_build_the_same_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--source", "replay:/data/x.gz", "--dispatch", "polling",
                              "--symbols", "btcusdt, ethusdt", "--speed", "0", "--duration",
                              "30", "--engine-cpus", "1", "--no-journal", "--gc-mode", "freeze",
                              "--feed-spin", "--feed-warm-us", "300"])
    cfg = config_from_args(args)
    assert cfg == EngineConfig(source="replay:/data/x.gz", dispatch="polling",
                               symbols=("BTCUSDT", "ETHUSDT"), speed=0.0, duration_s=30.0,
                               engine_cpus=(1,), out_dir=None, gc_mode="freeze",
                               feed_spin=True, feed_warm_us=300.0)
    bad = parser.parse_args(["--poll-interval-ms", "-5"])
    with pytest.raises(ConfigError, match=r"^poll_interval_ms"):
        config_from_args(bad)
