"""Saved runs of real engine runs (the embedded simulator): `runs.load` returns a typed run
with the same figures the engine reported, `workbench runs show | compare` print them, and a
run saved without a spike summary gets one rebuilt from its journaled spikes."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import polars as pl
import pytest

from workbench import runs
from workbench.cli import main as cli_main
from workbench.engine.config import EngineConfig
from workbench.engine.engine import Engine
from workbench.errors import EngineError
from workbench.latency.stages import STAGES


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A polling run and a callback run of 2 s each, saved under one runs directory."""
    root = tmp_path_factory.mktemp("runs")
    engines = {}
    for mode in ("polling", "callback"):
        engine = Engine(EngineConfig(source="sim", dispatch=mode, duration_s=2.0,
                                     out_dir=str(root))).start()
        assert engine.wait(60)
        engine.stop()
        assert engine.error is None
        engines[mode] = engine
    return {"root": root, **engines}


def test_load_returns_the_run_as_the_engine_reported_it(saved: dict) -> None:
    engine = saved["polling"]
    status = engine.status()
    for ref in (engine.run_id, Path(status.run_dir)):  # by id under the root, or by path
        run = runs.load(ref, saved["root"])
        assert run.run_id == engine.run_id and run.state == "stopped"
        assert run.dispatch == "polling" and run.config["dispatch"] == "polling"
        assert run.fills.height == status.fills and run.orders.height >= status.orders
        assert set(run.fills["symbol"].to_list()) <= {"BTCUSDT"}
        assert run.positions["symbol"].to_list() == [p.symbol for p in status.positions]
        assert run.spikes == status.spike_summary
        for stage in STAGES:
            assert run.latency[stage.value] == status.latency[stage]
        t2t = run.histogram("tick_to_trade")
        assert t2t.get_total_count() == status.latency[STAGES[-1]].count
        assert t2t.get_value_at_percentile(99) == status.latency[STAGES[-1]].p99_ns
        assert run.histogram("wire") is None  # sim measures no wire stage
        t, net, position = run.pnl_curve()
        assert len(t) == len(net) == len(position) == status.fills
        net_fills = float((run.fills["realized_pnl"] - run.fills["fee"]).sum())
        assert net[-1] == pytest.approx(net_fills)
        assert position[-1] == pytest.approx(status.position_qty)


def test_runs_compare_prints_per_stage_p50_p99_and_the_ratio(saved: dict, capsys) -> None:
    a, b = saved["polling"].status(), saved["callback"].status()
    assert cli_main(["runs", "compare", a.run_id, b.run_id, "--out", str(saved["root"])]) == 0
    out = capsys.readouterr().out
    assert "ratio B/A" in out and "…" not in out  # nothing cut in a pipe
    for stage in ("parse", "queue", "book", "strategy", "tick_to_trade"):
        x, y = a.latency[stage], b.latency[stage]
        row = next(line for line in out.splitlines() if re.match(rf"\W*{stage}\W", line))
        cells = [c.strip() for c in re.split(r"[│|]", row) if c.strip()]
        assert cells[1:7] == [f"{x.p50_ns / 1e3:,.1f}", f"{y.p50_ns / 1e3:,.1f}",
                              runs.ratio_text(y.p50_ns / x.p50_ns), f"{x.p99_ns / 1e3:,.1f}",
                              f"{y.p99_ns / 1e3:,.1f}", runs.ratio_text(y.p99_ns / x.p99_ns)]
    # the polling run waits in the queue: B (callback) is far faster there
    queue = a.latency["queue"].p99_ns / b.latency["queue"].p99_ns
    assert queue > 10


def test_runs_show_prints_latency_pnl_and_spikes(saved: dict, capsys) -> None:
    status = saved["polling"].status()
    assert cli_main(["runs", "show", status.run_dir]) == 0
    out = capsys.readouterr().out
    assert f"run {status.run_id}: stopped" in out and "BTCUSDT" in out
    assert f"{status.spike_summary.count:,} spikes over" in out
    assert "dominant stage" in out and "wire: no exchange clock offset fitted" in out


def test_a_run_without_a_spike_summary_rebuilds_it_from_its_journal(saved: dict,
                                                                    tmp_path: Path) -> None:
    import shutil

    status = saved["polling"].status()  # a polling run always has spikes
    copy = tmp_path / status.run_id
    shutil.copytree(status.run_dir, copy)
    summary = orjson.loads((copy / "summary.json").read_bytes())
    del summary["spike_summary"]  # as runs saved before the summary existed
    (copy / "summary.json").write_bytes(orjson.dumps(summary))
    rebuilt = runs.load(copy).spikes
    original = status.spike_summary
    assert rebuilt.count == original.count == pl.read_parquet(copy / "spikes.parquet").height
    assert rebuilt.max_ns == original.max_ns and rebuilt.by_stage == original.by_stage
    assert rebuilt.by_cause == original.by_cause


def test_an_unknown_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="expected a run directory at"):
        runs.load("nope", tmp_path)
