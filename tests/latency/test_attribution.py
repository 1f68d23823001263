"""Spike attribution of real engine runs on the embedded simulator (SimExchange on loopback):
a polling run's spikes are the queue's, a forced gc.collect() is named, and the CLI, the status
and the saved summary say the same numbers."""

from __future__ import annotations

import gc
from pathlib import Path

import orjson
from rich.console import Console

from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.engine.run import spike_table
from workbench.engine.strategy import EmaCross
from workbench.latency.attribution import attribution_line
from workbench.latency.spikes import SpikeSummary


class GcAt(EmaCross):
    """EmaCross that runs a full gc.collect() in its `at`-th call and remembers that batch."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0
        self.seq = -1

    def on_events(self, book, batch):
        self.calls += 1
        if self.calls == self.at:
            self.seq = int(batch["seq"][0])
            gc.collect()
        return super().on_events(book, batch)


def _run(tmp_path: Path, dispatch: str, strategy=None, seconds: float = 3.0) -> Engine:
    engine = Engine(EngineConfig(source="sim", dispatch=dispatch, duration_s=seconds,
                                 out_dir=str(tmp_path)), strategy=strategy).start()
    assert engine.wait(60), "the run did not end"
    engine.stop()
    assert engine.error is None
    return engine


def test_polling_spikes_name_the_queue_stage_and_a_forced_gc(tmp_path: Path) -> None:
    strategy = GcAt(1500)
    engine = _run(tmp_path, "polling", strategy)
    status = engine.status()
    s = status.spike_summary
    assert s.count == status.spikes > 100  # a 50 ms poll makes most batches spikes
    assert s.by_stage["queue"] >= 0.95 * s.count
    assert sum(s.by_stage.values()) == sum(s.by_cause.values()) == s.count
    assert s.by_cause["poll_wait"] > 0
    assert strategy.seq >= 0
    assert s.seen["gc"] >= 1
    forced = [x for x in s.worst if x.seq == strategy.seq]
    assert forced, "the batch that ran gc.collect() is not among the worst spikes"
    assert any(c.name == "gc" and c.detail.startswith("gen2") for c in forced[0].causes)
    # the saved summary holds the same attribution
    saved = orjson.loads((Path(status.run_dir) / "summary.json").read_bytes())
    assert SpikeSummary.from_dict(saved["spike_summary"]) == s
    # the CLI's table and sentence carry the same counts
    console = Console(width=200, record=True)
    console.print(spike_table(s))
    text = console.export_text()
    assert f"{s.by_stage['queue']:,}" in text and f"{s.count:,} spikes" in text
    assert f"queue {s.by_stage['queue']:,} (" in attribution_line(s)


def test_callback_spikes_state_their_unexplained_share(tmp_path: Path) -> None:
    engine = _run(tmp_path, "callback", GcAt(1500))
    s = engine.status().spike_summary
    assert s.count >= 1  # the forced collection at least
    assert sum(s.by_cause.values()) == s.count
    assert "unexplained" in attribution_line(s)
    assert s.seen["gc"] >= 1
