"""The claimed-vs-measured table of a bench run and the notes printed under it.

`results_table` is what `python -m workbench.bench`, `%hft bench` and the nightly notebook
print; `cause_notes` and `context_notes` say what the latency figures stand on.
"""

from __future__ import annotations

import math

from rich.table import Table

from workbench.bench.registry import Phase
from workbench.bench.runner import PhaseResult

VERDICT_STYLE = {"confirmed": "green", "larger": "green", "smaller": "yellow", "refuted": "red",
                 "measured": "cyan", "invalid": "bold red", "error": "bold red"}

NS_UNITS = (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1.0))
BYTE_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1.0))
RATE_UNITS = (("G/s", 1e9), ("M/s", 1e6), ("k/s", 1e3), ("/s", 1.0))


def _scaled(value: float, units: tuple[tuple[str, float], ...], sep: str = " ") -> str:
    """`value` in the largest unit it reaches (3 significant digits), e.g. 1.5e6 ns -> 1.5 ms."""
    for unit, scale in units:
        if value >= scale:
            return f"{value / scale:.3g}{sep}{unit}"
    return f"{value:.3g}{sep}{units[-1][0]}"


def format_figure(metric: str, stats: dict) -> str:
    """A variant's median figure for the table: time, items/s, P99 (P50), or bytes."""
    if not stats:
        return "-"
    if metric == "time":
        text = _scaled(stats["median"], NS_UNITS)
        if "items_per_s" in stats:
            text += f" ({_scaled(stats['items_per_s'], RATE_UNITS, '')})"
        return text
    if metric == "throughput":
        return _scaled(stats["median"], RATE_UNITS, "")
    if metric == "latency":
        return (f"P99 {_scaled(stats['p99_ns'], NS_UNITS)} "
                f"(P50 {_scaled(stats['p50_ns'], NS_UNITS)})")
    return _scaled(stats["median"], BYTE_UNITS)


def format_ratio(res: PhaseResult) -> str:
    """Median pair ratio with its min-max (and the P50 ratio for latency phases)."""
    if res.ratio is None:
        return "-"
    text = f"{res.ratio:.2f}x [{min(res.ratios):.2f}-{max(res.ratios):.2f}]"
    if res.p50_ratio is not None and math.isfinite(res.p50_ratio):
        text += f" P50 {res.p50_ratio:.2f}x"
    return text


def format_claim(phase: Phase) -> str:
    """The claimed ratio range in the table's terms, or the claim text when no number."""
    low, high = phase.claim.ratio_low, phase.claim.ratio_high
    if low is None and high is None:
        return "(no number)"
    if high is None:
        return f">= {low:.3g}x"
    if low is None or low == high:
        return f"{high:.3g}x"
    return f"{low:.3g}-{high:.3g}x"


def results_table(results: list[PhaseResult]) -> Table:
    """The claimed-vs-measured table: phase, baseline, optimized, measured ratio, claimed,
    verdict; invalid and error rows carry the first difference / the exception."""
    table = Table(title="optimization phases: claimed vs measured (ratio > 1 = optimized better)")
    table.add_column("phase", overflow="fold", ratio=3)
    for col in ("baseline", "optimized"):
        table.add_column(col, overflow="fold", ratio=2)
    table.add_column("measured ratio", overflow="fold", ratio=2)
    table.add_column("claimed", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for res in results:
        p = res.phase
        style = VERDICT_STYLE.get(res.verdict, "")
        table.add_row(
            f"{p.name}\n[dim]{p.baseline_label} -> {p.optimized_label}[/dim]",
            format_figure(p.metric, res.baseline), format_figure(p.metric, res.optimized),
            format_ratio(res) if res.status == "ok" else f"[red]{res.error}[/red]",
            format_claim(p), f"[{style}]{res.verdict.upper()}[/{style}]",
        )
    return table


def cause_notes(results: list[PhaseResult]) -> list[str]:
    """One line per phase whose variants reported spikes and their causes (SpikeLog counts)."""
    lines = []
    for res in results:
        base, opt = res.baseline.get("extra", {}), res.optimized.get("extra", {})
        if "causes" not in base or "causes" not in opt:
            continue
        def fmt(extra: dict) -> str:
            causes = ", ".join(f"{k} {v}" for k, v in sorted(extra["causes"].items()))
            return f"{extra.get('spikes', '?')} spikes ({causes or 'no causes'})"
        lines.append(f"{res.phase.name}: {res.phase.baseline_label}: {fmt(base)}; "
                     f"{res.phase.optimized_label}: {fmt(opt)}")
    return lines


def context_notes(results: list[PhaseResult]) -> list[str]:
    """The facts a latency topic's figures stand on, once per topic: the machine's hiccups
    and the paced window's bursts, from the first phase whose extras carry them."""
    lines, seen = [], set()
    for res in results:
        extra = res.optimized.get("extra", {})
        topic = res.phase.topic
        if topic in seen or "hiccups" not in extra or "bursts" not in extra:
            continue
        seen.add(topic)
        h, b = extra["hiccups"], extra["bursts"]
        lines.append(
            f"{topic}: this machine stops a spinning thread {h['per_s']:.0f} times/s "
            f"(P50 {h['p50_us']:.0f} µs, max {h['max_us']:.0f} µs, {h['stolen_pct']:.1f}% of "
            f"the core); the live window's P99 message is #{b['position_p99'] + 1:.0f} of its "
            f"burst (largest {b['largest']}), so it waits for the messages before it")
    return lines
