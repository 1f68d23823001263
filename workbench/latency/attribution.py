"""Spike attribution as rows and sentences: the one source of what the CLI, the panel, the
plots, saved runs and the report say about a run's spikes (`SpikeSummary`).

Two groups of rows, each adding up to the spikes: by *dominant stage* (where the time went)
and by *primary cause* (the longest thing that ran meanwhile; `unexplained` when nothing was
seen, stated as its share, never dropped). A spike may have seen several causes: how many saw
each at all is the `seen` column.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.latency.spikes import UNEXPLAINED, Spike, SpikeSummary
from workbench.latency.stages import STAGE_NOTES

STAGE_GROUP = "dominant stage"
CAUSE_GROUP = "primary cause"


@dataclass(frozen=True)
class AttributionRow:
    """One row: group (`dominant stage` | `primary cause`), name, spikes, share of all spikes
    (0..1), seen (spikes that saw this cause at all; None for a stage), note (what it is)."""

    group: str
    name: str
    spikes: int
    share: float
    seen: int | None
    note: str


CAUSE_NOTES: dict[str, str] = {
    "gc": "gc collection",
    "journal_flush": "journal rows to writer",
    "journal_write": "journal part file written",
    "latency_fold": "latency rows folded",
    "latency_summary": "percentiles for the UI",
    "snapshot_publish": "UI snapshot built",
    "display_refresh": "notebook UI ran (UI perturbs)",
    "book_rebuild": "book checked/resynced",
    "queue_depth": "queue backed up",
    "burst": "earlier messages first",
    "poll_wait": "waited for the next poll",
    "machine_hiccup": "no core free (hiccup probe)",
    "other": "unlisted cause",
    UNEXPLAINED: "nothing seen ran meanwhile",
}


def attribution_rows(summary: SpikeSummary, *, empty: bool = False) -> list[AttributionRow]:
    """The stage rows then the cause rows, each group by spikes (most first); rows with no
    spike are left out unless `empty`. `unexplained` is always listed when there are spikes."""
    rows = []
    for group, counts in ((STAGE_GROUP, summary.by_stage), (CAUSE_GROUP, summary.by_cause)):
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            keep = n or empty or (name == UNEXPLAINED and summary.count)
            if not keep:
                continue
            is_cause = group == CAUSE_GROUP
            rows.append(AttributionRow(
                group, name, n, summary.share(n),
                summary.seen.get(name, 0) if is_cause else None,
                CAUSE_NOTES.get(name, "") if is_cause else STAGE_NOTES.get(name, "")))
    return rows


def _us(ns: int) -> str:
    return f"{ns / 1e3:,.0f} µs" if ns < 10_000_000 else f"{ns / 1e6:,.1f} ms"


def attribution_line(summary: SpikeSummary) -> str:
    """One sentence: the spikes, their worst, the dominant stages and primary causes with
    shares, the unexplained share. E.g. `52 spikes over 1 ms (worst 12.3 ms): dominant stage
    queue 50 (96%), book 2 (4%); primary cause gc 10 (19%), unexplained 38 (73%)`."""
    threshold = _us(summary.threshold_ns)
    if not summary.count:
        return f"no spike over {threshold}"
    parts = {STAGE_GROUP: [], CAUSE_GROUP: []}
    for row in attribution_rows(summary):
        parts[row.group].append(f"{row.name} {row.spikes:,} ({row.share:.0%})")
    return (f"{summary.count:,} spikes over {threshold} (worst {_us(summary.max_ns)}): "
            f"{STAGE_GROUP} {', '.join(parts[STAGE_GROUP])}; "
            f"{CAUSE_GROUP} {', '.join(parts[CAUSE_GROUP])}")


@dataclass(frozen=True)
class SpikeRow:
    """One spike for a table: rank (1 = worst), seq, tick_to_trade_us, dominant stage, the
    stage breakdown in µs (stage -> µs, measured stages only), primary cause, the causes seen
    (`name detail duration` each, `; `-joined), queue depth."""

    rank: int
    seq: int
    tick_to_trade_us: float
    dominant: str
    stages_us: dict[str, float]
    primary: str
    causes: str
    queue_depth: int


def spike_rows(spikes: list[Spike] | tuple[Spike, ...]) -> list[SpikeRow]:
    """`spikes` (worst first, as `SpikeSummary.worst`) as table rows."""
    out = []
    for i, s in enumerate(spikes, 1):
        causes = "; ".join(
            " ".join(p for p in (c.name, c.detail, _us(c.duration_ns) if c.duration_ns else "")
                     if p) for c in s.causes)
        out.append(SpikeRow(i, s.seq, s.tick_to_trade_ns / 1e3, s.dominant,
                            {k: v / 1e3 for k, v in s.stages.items() if v >= 0}, s.primary,
                            causes, s.queue_depth))
    return out
