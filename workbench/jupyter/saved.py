"""Saved runs in a notebook: `%hft load RUN`, `%hft compare RUN_A RUN_B`, `%hft spikes --top N`.

What they show comes from `workbench.runs.load` (a typed `Run`) and the engine's own
`SpikeSummary`: latency CDFs per stage (from the run's saved HdrHistograms), spikes by dominant
stage and primary cause, PnL from the fills, and for two runs the per-stage P50/P99 table with
the ratio B/A, as `workbench runs compare` prints it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from workbench.jupyter import plots
from workbench.latency.attribution import spike_rows
from workbench.latency.spikes import Spike
from workbench.latency.stages import LOCAL_STAGES
from workbench.runs import Run, compare_rows, ratio, ratio_text


def _cdfs(run: Run) -> dict[str, tuple[Any, Any]]:
    out = {}
    for stage in LOCAL_STAGES:
        hist = run.histogram(stage.value)
        if hist is not None:
            out[stage.value] = plots.cdf_points(hist)
    return out


def _pnl(run: Run) -> Any:
    return plots.pnl_figure(*run.pnl_curve())


def run_layout(run: Run) -> Any:
    """One saved run: its latency CDF per stage, spikes by stage and cause, PnL."""
    from bokeh.layouts import column, row

    return column(row(plots.latency_cdf_figure(_cdfs(run)), _pnl(run)),
                  plots.spikes_figure(run.spikes))


def compare_layout(a: Run, b: Run) -> Any:
    """Two runs side by side: one CDF figure per stage with both runs, the spike attribution
    of both, and each run's PnL."""
    from bokeh.layouts import column, gridplot, row

    ca, cb = _cdfs(a), _cdfs(b)
    figures = [plots.cdf_comparison_figure(
        {f"A {a.dispatch}": ca[s], f"B {b.dispatch}": cb[s]}, title=f"{s} latency CDF")
        for s in (st.value for st in LOCAL_STAGES) if s in ca and s in cb]
    grid = gridplot([figures[i:i + 2] for i in range(0, len(figures), 2)],
                    width=plots.WIDTH, height=plots.HEIGHT)
    return column(grid, plots.spike_attribution_figure(
        {f"A {a.run_id}": a.spikes, f"B {b.run_id}": b.spikes}), row(_pnl(a), _pnl(b)))


def compare_html(a: Run, b: Run) -> str:
    """The per-stage P50/P99 table of two runs with the ratio B/A (µs), as HTML."""
    head = "".join(f"<th>{h}</th>" for h in ("stage", "A P50", "B P50", "P50 B/A", "A P99",
                                              "B P99", "P99 B/A"))
    body = []
    for stage, x, y in compare_rows(a, b):
        cells = [stage, f"{x.p50_ns / 1e3:,.1f}", f"{y.p50_ns / 1e3:,.1f}",
                 ratio_text(ratio(x.p50_ns, y.p50_ns)), f"{x.p99_ns / 1e3:,.1f}",
                 f"{y.p99_ns / 1e3:,.1f}", ratio_text(ratio(x.p99_ns, y.p99_ns))]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (f'<table class="hft-compare"><caption style="text-align:left">A = '
            f"{html.escape(a.describe())}<br>B = {html.escape(b.describe())}<br>latency per "
            f"stage (µs); ratio B/A, above 1: B slower</caption><tr>{head}</tr>"
            f"{''.join(body)}</table>")


def spikes_html(spikes: Sequence[Spike], title: str) -> str:
    """The worst spikes (worst first) with their stage breakdown (µs) and causes, as HTML."""
    stages = [s.value for s in LOCAL_STAGES if s.value != "tick_to_trade"]
    head = "".join(f"<th>{h}</th>" for h in ("#", "seq", "tick-to-trade µs", "dominant",
                                              *stages, "primary cause", "causes seen"))
    body = []
    for r in spike_rows(list(spikes)):
        cells = [str(r.rank), str(r.seq), f"{r.tick_to_trade_us:,.1f}", r.dominant,
                 *(f"{r.stages_us[s]:,.1f}" if s in r.stages_us else "-" for s in stages),
                 r.primary, r.causes or "(none seen)"]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (f'<table class="hft-spikes"><caption style="text-align:left">'
            f"{html.escape(title)}</caption><tr>{head}</tr>{''.join(body)}</table>")
