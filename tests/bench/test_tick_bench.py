"""The 'tick' benchmark topic: its phases register (their runs are the peer, slicing and
Python-strategy checks of tests/backtest/tick, which these phases repeat at full size)."""

from __future__ import annotations

from workbench.bench import registry


def test_tick_phases_register():
    registry.load_topics(["tick"])
    phases = {p.name: p for p in registry.select(["tick"])}
    assert set(phases) == {"tick.events_per_s", "tick.first_backtest", "tick.live_p99",
                           "tick.slicing", "tick.python_strategy"}
    assert phases["tick.events_per_s"].claim.ratio_low == 2.0
    assert phases["tick.live_p99"].metric == "latency"
    assert phases["tick.events_per_s"].metric == "throughput"
