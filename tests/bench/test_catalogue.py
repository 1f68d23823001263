"""The catalogue: names, unknown names, missing topic modules, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import cli
from workbench.bench import __main__ as bench_main
from workbench.bench import registry
from workbench.errors import UnknownPhase

MY_TOPICS = ("serialization", "eventloop", "memory", "frames", "spikes")


def test_topics_register_named_phases() -> None:
    registry.load_topics(MY_TOPICS)
    names = {p.name for p in registry.select(list(MY_TOPICS))}
    for expected in ("serialization.json_loads", "serialization.lz4_size", "eventloop.ws_echo",
                     "memory.slots_trade", "memory.window_10000", "frames.lazy_query",
                     "frames.rolling_zscore_vwap", "spikes.gc_mode", "spikes.all_fixes"):
        assert expected in names
    for p in registry.select(list(MY_TOPICS)):
        assert p.name.startswith(p.topic + ".")
        assert p.metric in ("time", "throughput", "latency", "memory", "bytes")


def test_select_by_phase_name_and_topic() -> None:
    assert [p.name for p in registry.select(["memory.slots_quote"])] == ["memory.slots_quote"]
    frames = registry.select(["frames"])
    assert {p.topic for p in frames} == {"frames"} and len(frames) == 2


def test_unknown_name_lists_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # only this topics: importing the others here would slow every later test's gc
    monkeypatch.setattr(registry, "TOPIC_MODULES", {t: registry.TOPIC_MODULES[t]
                                                    for t in MY_TOPICS})
    with pytest.raises(UnknownPhase) as info:
        registry.select(["serialization.nope"])
    text = str(info.value)
    assert "serialization.nope" in text
    assert "serialization.json_loads" in text and "spikes" in text


def test_missing_topic_module_skipped_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = {t: registry.TOPIC_MODULES[t] for t in MY_TOPICS}
    monkeypatch.setattr(registry, "TOPIC_MODULES",
                        {**topics, "ghost": "workbench.bench.ghost_not_written"})
    assert registry.load_topics() == {"ghost": "module not written yet"}
    assert "ghost" not in registry.available_topics()
    with pytest.raises(UnknownPhase, match="not written yet"):
        registry.load_topics(["ghost"])
    with pytest.raises(UnknownPhase, match="ghost"):
        registry.select(["ghost"])


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.bench", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_list_in_a_subprocess() -> None:
    out = _bench("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = next(line for line in lines if line.startswith("spikes.all_fixes "))
    assert "spikes" in row.split()[1] and "P99 18-20 ms" in row
    for name in ("serialization.json_dumps", "eventloop.ws_echo", "memory.slots_level",
                 "frames.lazy_query"):
        assert any(line.split()[0] == name for line in lines if line.strip())


def test_unknown_name_exits_2_listing_valid_ones(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(registry, "TOPIC_MODULES", {t: registry.TOPIC_MODULES[t]
                                                    for t in MY_TOPICS})
    assert bench_main.cli(["run", "no_such_topic", "--no-history"]) == 2
    err = capsys.readouterr().err
    assert "no_such_topic" in err and "memory.slots_trade" in err


def test_run_writes_json_and_history(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "history.parquet"
    out = _bench("run", "--quick", "memory.slots_level", "--json", str(tmp_path / "r.json"),
                 env={"WORKBENCH_BENCH_HISTORY": str(store)})
    assert out.returncode == 0, out.stderr
    assert "memory.slots_level" in out.stdout and "claimed" in out.stdout
    records = json.loads((tmp_path / "r.json").read_text())
    assert [r["phase"] for r in records] == ["memory.slots_level"]
    rec = records[0]
    assert rec["status"] == "ok" and rec["metric"] == "memory"
    assert rec["baseline_nbytes"] > rec["optimized_nbytes"] > 0
    assert rec["machine"]["cpu_model"] and rec["machine"]["packages"]["polars"]
    assert store.exists()


def test_workbench_cli_bench_shorthand(tmp_path: Path, shared_data: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WORKBENCH_BENCH_HISTORY", str(tmp_path / "h.parquet"))
    monkeypatch.setattr(registry, "TOPIC_MODULES", {t: registry.TOPIC_MODULES[t]
                                                    for t in MY_TOPICS})
    path = tmp_path / "s.json"
    code = cli.main(["bench", "serialization.lz4_size", "--quick", "--json", str(path)])
    assert code == 0
    rec = json.loads(path.read_text())[0]
    assert rec["phase"] == "serialization.lz4_size"
    assert rec["baseline_nbytes"] / rec["optimized_nbytes"] == pytest.approx(rec["ratio"])
    assert "serialization.lz4_size" in capsys.readouterr().out
    assert cli.main(["bench", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("spikes.") for line in listed) == 8
