"""The runner on synthetic phases: ratios pair by pair, verdicts, invalid and error rows."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.bench.registry import Claim, Outcome, Phase
from workbench.bench.runner import (
    extended_repeats,
    improvement_ratio,
    percentiles_ns,
    run_phase,
    run_phases,
    verdict,
)
from workbench.errors import PhaseMismatch


class FakeClock:
    """perf_counter_ns stand-in: variants advance it by the time they pretend to take."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _equal(a, b) -> None:
    if a != b:
        raise PhaseMismatch(f"first difference: {a!r} != {b!r}")


CLAIM_2_3 = Claim("x", 2.0, 3.0)


def _phase(clock: FakeClock, base_ns, opt_ns, metric="time", claim=CLAIM_2_3,
           check=_equal, **outcome_kw) -> tuple[Phase, dict]:
    calls = {"b": 0, "o": 0, "order": []}

    def variant(key, cost):
        def run(_prepared):
            n = calls[key]
            calls[key] += 1
            calls["order"].append(key)
            clock.now += cost(n) if callable(cost) else cost
            kw = {k: (v(key) if callable(v) else v) for k, v in outcome_kw.items()}
            return Outcome(result=kw.pop("result", "same"), **kw)
        return run

    phase = Phase(name="fake.phase", topic="fake", claim=claim, prepare=lambda quick: None,
                  baseline=variant("b", base_ns), optimized=variant("o", opt_ns), check=check,
                  metric=metric, repeats=5, warmup=1)
    return phase, calls


def test_improvement_ratio_direction() -> None:
    assert improvement_ratio("time", 10.0, 4.0) == 2.5
    assert improvement_ratio("latency", 10.0, 4.0) == 2.5
    assert improvement_ratio("bytes", 100.0, 30.0) == pytest.approx(100 / 30)
    assert improvement_ratio("throughput", 100.0, 250.0) == 2.5
    assert improvement_ratio("time", 10.0, 0.0) == float("inf")


@pytest.mark.parametrize(("claim", "ratio", "expected"), [
    (Claim("r", 2.0, 3.0), 2.5, "confirmed"),
    (Claim("r", 2.0, 3.0), 2.0, "confirmed"),
    (Claim("r", 2.0, 3.0), 3.5, "larger"),
    (Claim("r", 2.0, 3.0), 1.5, "smaller"),
    (Claim("r", 2.0, 3.0), 1.0, "refuted"),
    (Claim("r", 2.0, 3.0), 0.5, "refuted"),
    (Claim("r", 2.0, None), 50.0, "confirmed"),
    (Claim("point", 2.0, 2.0), 2.15, "confirmed"),
    (Claim("point", 2.0, 2.0), 2.3, "larger"),
    (Claim("point", 2.0, 2.0), 1.7, "smaller"),
    (Claim("cost", 0.5, None), 0.6, "confirmed"),
    (Claim("cost", 0.5, None), 0.4, "refuted"),
    (Claim("no number"), 7.0, "measured"),
])
def test_verdict_against_claimed_range(claim: Claim, ratio: float, expected: str) -> None:
    assert verdict(claim, ratio) == expected


def test_time_ratios_are_paired_within_the_run() -> None:
    clock = FakeClock()
    # both variants drift upwards by call count; each pair stays exactly 2.5x apart
    phase, calls = _phase(clock, lambda n: 10_000 * (n + 1), lambda n: 4_000 * (n + 1))
    res = run_phase(phase, quick=False, clock=clock)
    assert res.status == "ok"
    assert res.ratios and all(r == pytest.approx(2.5) for r in res.ratios)
    assert res.ratio == pytest.approx(2.5)
    assert res.verdict == "confirmed"
    # the first pair was tiny, so repeats were extended up to 10x; warmup pair not counted
    assert len(res.ratios) == res.repeats == extended_repeats(5, 14_000, False) == 50
    assert calls["b"] == calls["o"] == res.repeats + 1
    order = calls["order"]
    assert order[:4] == ["b", "o", "o", "b"]  # alternating who goes first
    rec = res.record()
    assert rec["baseline_min"] == 20_000 and rec["optimized_min"] == 8_000
    assert rec["ratio_min"] == pytest.approx(2.5) and rec["ratio_max"] == pytest.approx(2.5)


def test_quick_caps_repeats_for_slow_phases() -> None:
    clock = FakeClock()
    phase, _ = _phase(clock, 1_000_000_000, 400_000_000)  # a 1.4 s pair: no extension
    res = run_phase(phase, quick=True, clock=clock)
    assert res.repeats == 3 and len(res.ratios) == 3
    assert res.ratio == pytest.approx(2.5)


def test_a_variant_that_times_itself_is_taken_at_its_word() -> None:
    clock = FakeClock()
    # the optimized call takes 9,000 ns on the clock but reports its measured part as 2,000
    phase, _ = _phase(clock, 10_000, 9_000,
                      wall_ns=lambda key: 2_000 if key == "o" else None)
    res = run_phase(phase, quick=True, clock=clock)
    assert res.optimized["median"] == 2_000 and res.baseline["median"] == 10_000
    assert res.ratio == pytest.approx(5.0)


def test_throughput_uses_items_per_second() -> None:
    clock = FakeClock()
    phase, _ = _phase(clock, 2_000_000_000, 500_000_000, metric="throughput", items=1000,
                   claim=Claim("x", 2.0, 4.0))
    res = run_phase(phase, quick=True, clock=clock)
    assert res.baseline["median"] == pytest.approx(500.0)
    assert res.optimized["median"] == pytest.approx(2000.0)
    assert res.ratio == pytest.approx(4.0) and res.verdict == "confirmed"


def test_latency_ratio_on_p99_with_p50_shown() -> None:
    base = np.arange(1, 1001, dtype=np.int64) * 1000          # 1..1000 µs
    opt = np.arange(1, 1001, dtype=np.int64) * 100
    clock = FakeClock()
    phase, _ = _phase(clock, 1_000_000_000, 1_000_000_000, metric="latency",
                   latencies_ns=lambda key: base if key == "b" else opt,
                   claim=Claim("x", 3.6, 10.0))
    res = run_phase(phase, quick=True, clock=clock)
    expected = percentiles_ns(base)
    assert expected["p99_ns"] == pytest.approx(np.percentile(base, 99))
    assert res.baseline["p99_ns"] == pytest.approx(expected["p99_ns"])
    assert res.baseline["p50_ns"] == pytest.approx(np.percentile(base, 50))
    assert res.baseline["max_ns"] == 1_000_000
    assert res.ratio == pytest.approx(10.0) and res.p50_ratio == pytest.approx(10.0)
    assert res.verdict == "confirmed"


def test_bytes_metric_uses_nbytes() -> None:
    clock = FakeClock()
    phase, _ = _phase(clock, 1, 1, metric="bytes", nbytes=lambda key: 1000 if key == "b" else 300,
                   claim=Claim("70% smaller", 1 / 0.3, 1 / 0.3))
    res = run_phase(phase, quick=True, clock=clock)
    assert res.ratio == pytest.approx(1000 / 300) and res.verdict == "confirmed"


def test_disagreeing_variants_are_invalid_with_first_difference() -> None:
    clock = FakeClock()
    phase, _ = _phase(clock, 10_000, 1_000,
                      result=lambda key: [1, 2, 3] if key == "b" else [1, 2, 4],
                      check=lambda a, b: _first_diff(a, b))
    res = run_phase(phase, quick=True, clock=clock)
    assert res.status == "invalid" and res.verdict == "invalid"
    assert res.ratio is None and res.ratios == []
    assert "index 2" in res.error and "3 != 4" in res.error
    assert res.record()["ratio"] is None


def _first_diff(a: list, b: list) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            raise PhaseMismatch(f"first difference at index {i}: {x} != {y}")


def test_a_raising_phase_is_an_error_row_and_the_run_goes_on() -> None:
    clock = FakeClock()

    def boom(_quick: bool) -> None:
        raise RuntimeError("no input")

    broken = Phase(name="fake.broken", topic="fake", claim=Claim("x", 2.0, 3.0), prepare=boom,
                   baseline=lambda _: Outcome(), optimized=lambda _: Outcome(), check=_equal)
    good, _ = _phase(clock, 10_000, 4_000)
    results, records = run_phases([broken, good], quick=True, clock=clock)
    assert [r.status for r in results] == ["error", "ok"]
    assert "RuntimeError: no input" in results[0].error
    assert records[0]["verdict"] == "error" and records[1]["verdict"] == "confirmed"
    assert records[0]["run_id"] == records[1]["run_id"]
    machine = records[0]["machine"]
    assert machine["cores"] >= 1 and machine["python"].count(".") == 2
    assert machine["packages"]["numpy"] == np.__version__


def test_a_variant_returning_no_outcome_is_an_error() -> None:
    bad = Phase(name="fake.bad", topic="fake", claim=Claim("x"), prepare=lambda q: None,
                baseline=lambda _: 42, optimized=lambda _: Outcome(), check=_equal)
    res = run_phase(bad, quick=True)
    assert res.status == "error" and "Outcome" in res.error


@pytest.mark.parametrize(("metric", "gc_during", "expected"), [
    ("time", None, False), ("throughput", None, False), ("latency", None, True),
    ("time", True, True), ("latency", False, False),
])
def test_automatic_gc_during_measured_calls(metric: str, gc_during: bool | None,
                                            expected: bool) -> None:
    import gc

    seen: list[bool] = []

    def variant(_prepared: object) -> Outcome:
        seen.append(gc.isenabled())
        return Outcome("r", items=10, latencies_ns=np.array([5, 6, 7]))

    phase = Phase(name="fake.gc", topic="fake", claim=Claim("x"), prepare=lambda q: None,
                  baseline=variant, optimized=variant, check=_equal, metric=metric,
                  repeats=1, warmup=0, gc_during=gc_during)
    assert gc.isenabled()
    res = run_phase(phase, quick=True)
    assert res.status == "ok"
    assert set(seen) == {expected}
    assert gc.isenabled()  # restored after the phase


def test_context_notes_give_each_latency_topic_its_machine_and_burst_facts() -> None:
    from workbench.bench.report import context_notes
    from workbench.bench.runner import PhaseResult

    facts = {"hiccups": {"per_s": 460.4, "p50_us": 33.2, "max_us": 509.0, "stolen_pct": 1.64},
             "bursts": {"position_p99": 39.4, "largest": 82}}

    def result(name: str, topic: str, extra: dict) -> PhaseResult:
        phase = Phase(name=name, topic=topic, claim=CLAIM_2_3, prepare=lambda quick: None,
                      baseline=lambda p: None, optimized=lambda p: None, check=_equal)
        return PhaseResult(phase, "ok", "met", False, optimized={"extra": extra})

    lines = context_notes([result("ring.a", "ring", {}), result("dispatch.a", "dispatch", facts),
                           result("dispatch.b", "dispatch", facts)])
    assert lines == ["dispatch: this machine stops a spinning thread 460 times/s (P50 33 µs, "
                     "max 509 µs, 1.6% of the core); the live window's P99 message is #40 of "
                     "its burst (largest 82), so it waits for the messages before it"]
