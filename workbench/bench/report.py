"""The claimed-vs-measured table of a bench run and the notes printed under it.

`results_table` is what `python -m workbench.bench` and `%hft bench` print; `cause_notes` and
`context_notes` say what the latency figures stand on. The nightly report renders
`header_html` (machine, kernel, hiccups, commit, Python, packages) and `summary_html` (one
styled table: claim, measured ratio with its min-max, verdict, trend against the history, and
the keys to the verdicts and arrows).
"""

from __future__ import annotations

import html
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

from rich.table import Table

from workbench.bench.history import Trend
from workbench.bench.registry import Phase
from workbench.bench.runner import PhaseResult
from workbench.shared_data import REPO_ROOT

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


# ---- the nightly report's HTML: header, summary table, verdict key ------------------------

VERDICT_KEY: dict[str, str] = {
    "confirmed": "the measured ratio is inside the claimed range (a point claim: +-10%)",
    "larger": "better than claimed: the ratio is above the claimed range",
    "smaller": "an improvement (ratio > 1) but less than claimed",
    "refuted": "no improvement where one was claimed (ratio <= 1)",
    "measured": "nothing numeric was claimed: measured only",
    "invalid": "the variants disagreed: the check of equal results failed",
    "error": "the phase raised an exception",
}
VERDICT_COLORS = {"confirmed": "#1a7f37", "larger": "#1a7f37", "smaller": "#9a6700",
                  "refuted": "#cf222e", "measured": "#0969da", "invalid": "#cf222e",
                  "error": "#cf222e"}
TREND_KEY: dict[str, str] = {
    "↑": "the ratio is above the noise band of the earlier runs (better)",
    "→": "inside the band: no change beyond run-to-run noise",
    "↓": "below the band: a regression (flagged)",
    "·": "not enough history (fewer than 5 earlier runs of this mode): nothing is flagged",
}


def _esc(text: object) -> str:
    return html.escape(str(text))


def report_header(machine: dict[str, Any], hiccups: Any | None = None,
                  commit: str | None = None) -> list[tuple[str, str]]:
    """(label, value) rows of the report's header: machine (CPU model, cores, kernel), the
    machine's hiccup rate (a `latency.hiccups.Hiccups`, if measured), commit, Python and the
    versions of the packages that matter (`runner.machine_info()` gives `machine`)."""
    rows = [("machine", f"{machine.get('cpu_model')}, {machine.get('cores')} logical cores"),
            ("kernel", platform.release()), ("platform", str(machine.get("platform"))),
            ("python", str(machine.get("python"))), ("commit", commit or git_commit())]
    if hiccups is not None:
        rows.append(("hiccups", f"{hiccups.per_s:,.0f}/s over {hiccups.threshold_us:g} µs "
                                f"(P50 {hiccups.p50_us:,.0f} µs, max {hiccups.max_us:,.0f} µs,"
                                f" {hiccups.stolen_pct:.2f}% of a spinning core lost)"))
    packages = machine.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v)))
    return rows


def git_commit(root: Path = REPO_ROOT) -> str:
    """`<short hash>` of the checkout (`+ uncommitted changes` when dirty), or `unknown`."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def header_html(rows: list[tuple[str, str]], title: str) -> str:
    """The header rows as a two-column HTML table under `title`."""
    body = "".join(f'<tr><th style="text-align:left;padding-right:12px">{_esc(k)}</th>'
                   f"<td>{_esc(v)}</td></tr>" for k, v in rows)
    return (f'{TABLE_STYLE}<h2>{_esc(title)}</h2><table class="hft-report-header">{body}'
            "</table>")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def summary_rows(results: list[PhaseResult], trends: dict[str, Trend]) -> list[dict[str, str]]:
    """One row of formatted text per phase: phase, claim, ratio (median of the pair-by-pair
    ratios with their min-max), baseline, optimized, verdict, trend (arrow, the change against
    the history's median, the status)."""
    rows = []
    for res in results:
        p, t = res.phase, trends.get(res.phase.name)
        ratio = format_ratio(res) if res.status == "ok" else f"{res.status}: {res.error or ''}"
        if t is None:
            trend = "· not enough history"
        elif t.status == "not enough history":
            trend = f"· not enough history ({t.runs} earlier run{'s' * (t.runs != 1)})"
        else:
            trend = f"{t.arrow} {_pct(t.change)} vs median {t.median:.2f}x of {t.runs} runs"
        rows.append({"phase": p.name, "claim": format_claim(p), "ratio": ratio,
                     "baseline": format_figure(p.metric, res.baseline),
                     "optimized": format_figure(p.metric, res.optimized),
                     "verdict": res.verdict, "trend": trend,
                     "labels": f"{p.baseline_label} -> {p.optimized_label}"})
    return rows


TABLE_STYLE = """<style>
table.hft-summary{border-collapse:collapse;font-size:90%;width:100%;table-layout:auto}
table.hft-summary th,table.hft-summary td{padding:3px 8px;border-bottom:1px solid #ddd;
 text-align:left !important;vertical-align:top;white-space:normal}
table.hft-summary td.num{text-align:right !important}
table.hft-summary .labels{color:#666;font-size:85%}
table.hft-summary .hft-verdict{font-weight:bold;white-space:nowrap}
table.hft-report-header th,table.hft-report-header td{text-align:left !important}
</style>"""


def summary_html(results: list[PhaseResult], trends: dict[str, Trend]) -> str:
    """The report's one summary table (styled HTML; every number formatted) and the keys to
    its verdicts and trend arrows under it."""
    head = "".join(f"<th>{h}</th>" for h in ("phase", "claimed", "measured ratio [min-max]",
                                              "baseline", "optimized", "verdict", "trend"))
    body = []
    for row in summary_rows(results, trends):
        color = VERDICT_COLORS.get(row["verdict"], "#333")
        body.append(
            f"<tr><td>{_esc(row['phase'])}<div class='labels'>{_esc(row['labels'])}</div></td>"
            f"<td class='num'>{_esc(row['claim'])}</td><td class='num'>{_esc(row['ratio'])}</td>"
            f"<td class='num'>{_esc(row['baseline'])}</td>"
            f"<td class='num'>{_esc(row['optimized'])}</td>"
            f"<td class='hft-verdict' style='color:{color}'>{_esc(row['verdict'].upper())}</td>"
            f"<td>{_esc(row['trend'])}</td></tr>")
    verdicts = "".join(f"<li><b style='color:{VERDICT_COLORS[v]}'>{v.upper()}</b>: {_esc(t)}"
                       "</li>" for v, t in VERDICT_KEY.items())
    arrows = "".join(f"<li><b>{a}</b> {_esc(t)}</li>" for a, t in TREND_KEY.items())
    note = ("The measured ratio is the median of pair-by-pair ratios (baseline and optimized "
            "run back to back on the same input), with their min-max; baseline and optimized "
            "are each side's own median, so their quotient can differ from the ratio when pairs "
            "vary: the min-max says by how much. Regressions are judged on these within-run "
            "ratios only, against the noise band of at least 5 earlier runs of the same mode.")
    return (f"{TABLE_STYLE}<table class='hft-summary'><tr>{head}</tr>{''.join(body)}</table>"
            f"<p style='font-size:85%;color:#444'>{_esc(note)}</p>"
            f"<details open><summary>key</summary><ul style='font-size:85%'>{verdicts}</ul>"
            f"<ul style='font-size:85%'>{arrows}</ul></details>")
