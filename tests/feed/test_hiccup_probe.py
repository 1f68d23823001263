"""The native hiccup probe sees a process stopped from outside (SIGSTOP: no thread of it gets a
core) and the spike log blames the spike that spanned the stop on `machine_hiccup`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from workbench.feed.hiccup_probe import HiccupProbe

STOP_S = 0.3


def _run_stopped_once(script: str, timeout_s: float) -> str:
    """Run `script` in a child Python; when it prints "ready", stop it for STOP_S and continue
    it; its stdout once it exited 0."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None
                                         else "")
        time.sleep(0.2)  # the probe sleeps and wakes a few hundred times first
        proc.send_signal(signal.SIGSTOP)
        time.sleep(STOP_S)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    return out


def test_a_stopped_process_is_a_late_wake_up_and_its_spike_blames_the_machine():
    script = textwrap.dedent("""
        import json, time
        from workbench.feed.hiccup_probe import HiccupProbe
        from workbench.latency.spikes import SpikeLog
        log = SpikeLog(threshold_us=1000)
        log.hiccups = HiccupProbe(threshold_us=5000)
        log.hiccups.start()
        start = time.perf_counter_ns()
        log.begin_iteration(start)
        print("ready", flush=True)
        time.sleep(1.5)  # stopped from outside meanwhile
        spike = log.end_iteration(time.perf_counter_ns() - start, {"strategy": 1})
        stats = log.hiccups.stats()
        log.hiccups.stop()
        print(json.dumps({"causes": [[c.name, c.duration_ns, c.end_ns - start, c.detail]
                                     for c in spike.causes],
                          "primary": spike.primary, "late": stats.late,
                          "max_late_us": stats.max_late_us, "wakeups": stats.wakeups,
                          "t2t": spike.tick_to_trade_ns}))
    """)
    out = _run_stopped_once(script, 60)
    got = json.loads(out.strip().splitlines()[-1])
    hiccups = [c for c in got["causes"] if c[0] == "machine_hiccup"]
    # the stop: one wake-up late by about STOP_S (less the part of a 1 ms sleep already slept,
    # more whatever the resumed process waited for a core), inside the spike's window
    longest = max(hiccups, key=lambda c: c[1])
    assert 0.9 * STOP_S * 1e9 <= longest[1] <= got["t2t"], got
    assert 0 < longest[2] <= got["t2t"] and "µs late" in longest[3]
    assert got["primary"] == "machine_hiccup"  # the longest cause the spike saw
    assert got["late"] >= 1 and got["max_late_us"] >= 0.9 * STOP_S * 1e6
    assert got["wakeups"] >= 100  # it kept sleeping 1 ms at a time around the stop


def test_probes_share_one_thread_and_refuse_other_settings():
    first, second = HiccupProbe(threshold_us=200), HiccupProbe(threshold_us=200)
    first.start()
    try:
        second.start()
        assert first.stats().running and first.stats().threshold_us == 200
        with pytest.raises(RuntimeError, match="threshold 200 µs"):
            HiccupProbe(threshold_us=300).start()
        second.stop()
        assert first.stats().running  # one user left
        t0 = time.perf_counter_ns()
        time.sleep(0.05)
        assert all(t0 <= end for end, _ in first.late_between(t0, time.perf_counter_ns()))
    finally:
        first.stop()
        second.stop()
    assert not first.stats().running
    assert first.late_between(0, time.perf_counter_ns()) == []  # stopped: nothing
    with pytest.raises(ValueError, match="must be > 0"):
        HiccupProbe(threshold_us=0)


def test_an_engine_run_stopped_from_outside_attributes_spikes_to_the_machine(tmp_path):
    """A polling run on the simulator: batches that waited in the queue while the process was
    stopped are spikes that saw the hiccup; summary.json carries the probe's counters."""
    script = textwrap.dedent(f"""
        import time
        from workbench.engine.config import EngineConfig
        from workbench.engine.engine import Engine
        engine = Engine(EngineConfig(source="sim", dispatch="polling", duration_s=60,
                                     out_dir="{tmp_path}")).start()
        while engine.batches < 200:
            time.sleep(0.01)
        print("ready", flush=True)
        time.sleep(1.5)  # stopped from outside meanwhile
        engine.stop()
    """)
    _run_stopped_once(script, 120)
    (run_dir,) = tmp_path.iterdir()
    summary = orjson.loads((run_dir / "summary.json").read_bytes())
    probe = summary["hiccup_probe"]
    assert probe["threshold_us"] == 100.0 and probe["late"] >= 1
    assert probe["max_late_us"] >= 0.9 * STOP_S * 1e6

    from workbench.runs import load

    spikes = load(run_dir).spikes
    assert spikes.seen.get("machine_hiccup", 0) >= 1, spikes.seen
    blamed = [s for s in spikes.worst
              if any(c.name == "machine_hiccup" and c.duration_ns >= 0.9 * STOP_S * 1e9
                     for c in s.causes)]
    assert blamed and blamed[0].tick_to_trade_ns >= 0.9 * STOP_S * 1e9
