"""Topic "native" (issue 15): every phase runs through the bench runner in --quick mode on tiny
real inputs (the USD-M recording served by SimExchange processes, the C++ handler, the engine),
its check passes and its figures are sane; each check catches a real difference. No timing is
asserted: `python -m workbench.bench run native` measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.bench import feed_ws, native, registry
from workbench.bench.runner import PhaseResult, run_phase
from workbench.errors import PhaseMismatch

PHASES = {p.name: p for p in registry.select(["native"])}


@pytest.fixture(scope="module")
def results(shared_data: Path) -> dict[str, PhaseResult]:
    """Each phase once, quick, on tiny inputs (about 25 s on the 2-core VM)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "QUICK_MESSAGES", 2000)
        mp.setattr(native, "LIVE_QUICK_S", 0.5)
        mp.setattr(native, "HICCUP_S", 0.2)
        mp.setattr(feed_ws, "QUICK_MESSAGES", 3000)
        return {name: run_phase(phase, quick=True) for name, phase in PHASES.items()}


def test_the_topic_registers_its_four_phases() -> None:
    assert list(PHASES) == ["native.normalize", "native.live", "native.flat_out",
                            "native.pinning"]
    metrics = {name: p.metric for name, p in PHASES.items()}
    assert metrics == {"native.normalize": "throughput", "native.live": "latency",
                       "native.flat_out": "throughput", "native.pinning": "latency"}
    assert PHASES["native.pinning"].claim.ratio_low == 2.0
    assert PHASES["native.pinning"].claim.ratio_high == 10.0


def _ok(res: PhaseResult) -> tuple[dict, dict]:
    assert res.status == "ok", res.error
    assert res.ratio is not None and res.ratio > 0
    return res.baseline["extra"], res.optimized["extra"]


def test_normalize_phase_writes_the_same_events(results: dict[str, PhaseResult]) -> None:
    res = results["native.normalize"]
    base, opt = _ok(res)
    assert res.baseline["items"] == res.optimized["items"] == 2000
    assert base["events"] == opt["events"] > 2000  # depth messages carry many levels
    assert opt["malformed"] == {}
    assert opt["msgs_per_s"] > 0 and opt["one_message"]["msgs_per_s"] > 0
    assert opt["target_met"] == (opt["msgs_per_s"] >= native.TARGET_MSGS_PER_S)


def test_live_phase_measures_both_paths_in_one_run(results: dict[str, PhaseResult]) -> None:
    res = results["native.live"]
    base, opt = _ok(res)
    assert (base["source"], opt["source"]) == ("ws", "native")
    for extra in (base, opt):
        t2t = extra["tick_to_trade_us"]
        assert t2t["count"] > 0 and 0 < t2t["p50"] <= t2t["p99"] and t2t["max"] > 0
        assert extra["fills"] > 0  # the check compared real fills
        assert extra["hiccups"]["seconds"] > 0 and extra["bursts"]["messages"] > 0
    assert base["tuning"]["feed_warm_us"] == native.WARM_US
    assert opt["dropped"] == opt["gaps"] == opt["malformed"] == opt["reconnects"] == 0
    assert opt["messages"] > 0 and opt["read_to_publish_us"]["count"] > 0
    assert res.p50_ratio is not None and res.p50_ratio > 0


def test_flat_out_phase_ends_with_equal_books(results: dict[str, PhaseResult]) -> None:
    base, opt = _ok(results["native.flat_out"])
    for extra in (base, opt):
        assert extra["events_per_s"] > 0 and extra["messages"] > 0
        assert extra["book_sync"]["snapshots"] >= 1 and extra["book_sync"]["gaps"] == 0
        assert extra["target_met"] == (extra["events_per_s"] >= native.TARGET_EVENTS_PER_S)
    assert opt["dropped"] == opt["gaps"] == 0


def test_pinning_phase_pins_only_the_optimized_run(results: dict[str, PhaseResult]) -> None:
    base, opt = _ok(results["native.pinning"])
    assert base["pinned_cpu"] is None and base["tuning"]["native_cpu"] is None
    assert opt["tuning"]["native_cpu"] == native.pin_cpu()
    assert opt["pinned_cpu"] == native.pin_cpu() or opt["pin_error"]
    parse = opt["stages_us"]["parse"]
    assert parse["count"] > 0 and parse["p50"] <= parse["p99"]


def test_checks_name_the_first_difference() -> None:
    events = np.zeros(4, dtype=native.EVENT_DTYPE)
    events["price"] = [1.0, 2.0, 3.0, 4.0]
    changed = events.copy()
    changed["qty"][2] = 0.5
    native._first_difference(events, events.copy(), "same")
    with pytest.raises(PhaseMismatch, match="event 2 field qty"):
        native._first_difference(events, changed, "x")
    with pytest.raises(PhaseMismatch, match="4 events vs 3"):
        native._first_difference(events, events[:3], "x")
    depth = (np.array([10.0]), np.array([1.0]), np.array([11.0]), np.array([2.0]))
    native.check_books((True, depth), (True, tuple(a.copy() for a in depth)))
    with pytest.raises(PhaseMismatch, match="ask qtys differ at level 0"):
        native.check_books((True, depth), (True, (*depth[:3], np.array([3.0]))))
    with pytest.raises(PhaseMismatch, match="not valid"):
        native.check_books((True, depth), (False, depth))
