"""Bokeh plots of a run: latency per second and its CDF per stage, spikes by dominant stage and
by primary cause, PnL, ring.

Two uses of the same figures:

* **static** (reports, exported notebooks): build a figure from plain data (`latency_series_figure`,
  `latency_cdf_figure`, `spikes_figure` and `spike_attribution_figure` from a `SpikeSummary`,
  `pnl_figure`, `ring_figure`, `bench_trend_figure`) and
  `show_static(fig)` it after `use_static_resources()`; BokehJS is inlined (`STATIC_RESOURCES`, the
  core bundle only) so the exported HTML needs no CDN.
* **live** (`LivePlots`): the same figures over `ColumnDataSource`s, wrapped in one
  `jupyter_bokeh.BokehModel`. Only the kernel's event loop calls `LivePlots.apply(frame)` (the
  `UiPump` of `workbench.jupyter.panel` does); nothing reaches the bokeh document before a
  frontend view exists: until then frames are kept in plain Python buffers and the render bundle
  is refreshed when the first view appears (patches sent to no view would be lost and leave the
  view's patch receiver out of step, i.e. a frozen plot).

Units: latency in the figures is µs (data in ns), time on the x axis is seconds since the run
started, PnL is in quote currency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bokeh.io import output_notebook, show
from bokeh.layouts import gridplot
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    HoverTool,
    LayoutDOM,
    LinearAxis,
    Range1d,
)
from bokeh.palettes import Category10_10, Category20_20
from bokeh.plotting import figure
from bokeh.resources import Resources
from hdrh.histogram import HdrHistogram

from workbench.latency.spikes import (
    CAUSE_KEYS,
    STAGE_KEYS,
    UNEXPLAINED,
    UNMEASURED,
    SpikeSummary,
    empty_summary,
)
from workbench.latency.stages import LOCAL_STAGES, STAGES

STATIC_RESOURCES = Resources(mode="inline", components=["bokeh"])
"""BokehJS core, inlined: what static figures need, and nothing that loads from a CDN."""

STAGE_COLORS: dict[str, str] = {s.value: Category10_10[i] for i, s in enumerate(STAGES)}
ROLLOVER = 600  # points kept per live series (10 minutes of per-second points)
TREND_WIDTH = 560  # two trend charts and their toolbar side by side in a report
WIDTH, HEIGHT = 620, 280


def use_static_resources() -> None:
    """Load inline BokehJS (core bundle) into the notebook: call once before `show_static`."""
    output_notebook(resources=STATIC_RESOURCES, hide_banner=True)


def show_static(layout: LayoutDOM) -> None:
    """Display a figure (or layout) as a static plot that survives nbconvert HTML export."""
    show(layout)


def _figure(title: str, y_label: str, *, x_label: str = "run time (s)", **kw: Any) -> Any:
    if x_label == "run time (s)":  # time axes start at the run's start, not before it
        kw.setdefault("x_range", DataRange1d(start=0))
    fig = figure(title=title, width=WIDTH, height=HEIGHT, x_axis_label=x_label,
                 y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,reset,save", **kw)
    fig.toolbar.logo = None
    return fig


def _legend_outside(fig: Any, font: str = "8pt") -> None:
    """Legend to the right of the plot area (never over the data), click to hide a series."""
    legend = fig.legend[0]
    legend.label_text_font_size = font
    legend.click_policy = "hide"
    legend.spacing = 0
    legend.padding = 4
    fig.add_layout(legend, "right")


# -- per-second P50/P99 per stage ---------------------------------------------------------------

def _series_columns(stages: Iterable[str]) -> list[str]:
    cols = ["t"]
    for s in stages:
        cols += [f"{s}_p50", f"{s}_p99"]
    return cols


def _series_values(data: Mapping[str, Sequence[float]]) -> list[list[float]]:
    return [[v for v in values if v == v] for c, values in data.items() if c != "t"]


def _latency_series_plot(source: ColumnDataSource, stages: Sequence[str], title: str) -> Any:
    # An explicit Range1d: a log DataRange1d that first rendered without data stays at 0.1..10.
    fig = _figure(title, "latency (µs)", y_axis_type="log",
                  y_range=Range1d(*log_span(_series_values(source.data), (0.1, 1e4))))
    for s in stages:
        color = STAGE_COLORS[s]
        fig.line("t", f"{s}_p50", source=source, color=color, line_width=2,
                 legend_label=f"{s} P50")
        fig.line("t", f"{s}_p99", source=source, color=color, line_dash="dashed",
                 legend_label=f"{s} P99")
    _legend_outside(fig)
    fig.add_tools(HoverTool(tooltips=[("t", "@t{0.0} s")]))
    return fig


def series_rows(series: Mapping[str, Mapping[str, Sequence[int]]], t0_s: float,
                stages: Sequence[str]) -> dict[str, list[float]]:
    """Align per-stage per-second series into columns `t`, `<stage>_p50`, `<stage>_p99` (µs).

    series[stage] = {"t_s": int seconds (perf_counter), "p50_ns": ..., "p99_ns": ...} as
    `LatencyRecorder.series` returns; a second missing for a stage becomes NaN. `t` is seconds
    since `t0_s`.
    """
    seconds = sorted({int(t) for s in stages for t in series.get(s, {}).get("t_s", [])})
    index = {t: i for i, t in enumerate(seconds)}
    out: dict[str, list[float]] = {"t": [t - t0_s for t in seconds]}
    for s in stages:
        p50 = [float("nan")] * len(seconds)
        p99 = [float("nan")] * len(seconds)
        points = series.get(s, {})
        for t, a, b in zip(points.get("t_s", []), points.get("p50_ns", []),
                           points.get("p99_ns", []), strict=True):
            p50[index[int(t)]] = a / 1e3
            p99[index[int(t)]] = b / 1e3
        out[f"{s}_p50"] = p50
        out[f"{s}_p99"] = p99
    return out


def latency_series_figure(series: Mapping[str, Mapping[str, Sequence[int]]], *,
                          t0_s: float | None = None,
                          stages: Sequence[str] | None = None,
                          title: str = "P50 (solid) and P99 (dashed) per second") -> Any:
    """Per-second P50/P99 per stage (µs, log axis) from `LatencyRecorder.series` data."""
    stages = list(stages or [s.value for s in LOCAL_STAGES if s.value in series])
    if t0_s is None:
        starts = [int(v["t_s"][0]) for v in series.values() if len(v.get("t_s", []))]
        t0_s = float(min(starts)) if starts else 0.0
    source = ColumnDataSource(series_rows(series, t0_s, stages))
    return _latency_series_plot(source, stages, title)


# -- latency CDF per stage -----------------------------------------------------------------------

CDF_FRACTIONS = np.unique(np.concatenate([np.linspace(0.0, 0.99, 100),
                                          1.0 - np.logspace(-2, -5, 13), [1.0]]))
"""Where a CDF is sampled: every percent to P99, then log-spaced to P99.999, and the max."""


def cdf_points(histogram: HdrHistogram, fractions: np.ndarray = CDF_FRACTIONS
               ) -> tuple[np.ndarray, np.ndarray]:
    """(latency_ns, cumulative fraction) of an HdrHistogram at the buckets holding the given
    fractions of the recorded values (float64 arrays of equal length, empty when nothing was
    recorded). A bounded number of points whatever the histogram holds, so it is cheap enough
    for the live UI; reads a copy of the counts, so a writer adding meanwhile cannot break it."""
    counts = np.frombuffer(histogram.counts, dtype=np.int64, count=histogram.counts_len)
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1]) if cumulative.size else 0
    if total == 0:
        return np.empty(0), np.empty(0)
    targets = np.maximum(np.ceil(fractions * total), 1)
    buckets = np.unique(np.searchsorted(cumulative, targets, side="left"))
    buckets = buckets[buckets < cumulative.size]
    values = [histogram.get_highest_equivalent_value(histogram.get_value_from_index(int(i)))
              for i in buckets]
    return np.asarray(values, dtype=np.float64), cumulative[buckets] / total


def _cdf_data(cdfs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
              stages: Sequence[str]) -> dict[str, list[list[float]]]:
    xs, ys, names, colors = [], [], [], []
    for s in stages:
        values, fractions = cdfs.get(s, ([], []))
        if len(values) == 0:
            continue
        xs.append([v / 1e3 for v in values])
        ys.append(list(map(float, fractions)))
        names.append(s)
        colors.append(STAGE_COLORS[s])
    return {"xs": xs, "ys": ys, "stage": names, "color": colors}


def log_span(xs_lists: Iterable[Sequence[float]], default: tuple[float, float] = (0.1, 1e5)
             ) -> tuple[float, float]:
    """(start, end) of a log axis holding every positive x of several lines, with a margin."""
    xs = [x for line in xs_lists for x in line if x > 0]
    return (min(xs) / 1.5, max(xs) * 1.5) if xs else default


def _cdf_plot(source: ColumnDataSource) -> Any:
    # An explicit Range1d: BokehJS does not refit a DataRange1d when the source is replaced.
    fig = _figure("Latency CDF per stage", "fraction of batches", x_label="latency (µs)",
                  x_axis_type="log", y_range=(0, 1.01),
                  x_range=Range1d(*log_span(source.data["xs"])))
    fig.multi_line("xs", "ys", source=source, color="color", line_width=2, legend_field="stage")
    _legend_outside(fig)
    return fig


def latency_cdf_figure(cdfs: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                       stages: Sequence[str] | None = None) -> Any:
    """CDF per stage on a log latency axis; cdfs[stage] = (latency_ns, fraction) as
    `cdf_points` returns."""
    stages = list(stages or [s.value for s in LOCAL_STAGES])
    return _cdf_plot(ColumnDataSource(_cdf_data(cdfs, stages)))


# -- spikes: by dominant stage and by primary cause -------------------------------------------

SPIKE_STAGE_COLORS: dict[str, str] = {**{k: STAGE_COLORS.get(k, "#999999") for k in STAGE_KEYS},
                                      UNMEASURED: "#bbbbbb"}
CAUSE_PALETTE: tuple[str, ...] = Category20_20[0::2] + Category20_20[1::2]
"""20 distinct colours, the Category10 ones first."""
CAUSE_COLORS: dict[str, str] = {**{c: CAUSE_PALETTE[i] for i, c in enumerate(CAUSE_KEYS)},
                                UNEXPLAINED: "#cccccc"}
SPIKE_GROUPS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "stage": (STAGE_KEYS, SPIKE_STAGE_COLORS), "cause": (CAUSE_KEYS, CAUSE_COLORS)}
"""by -> (stack keys, colours): `stage` stacks the dominant stages, `cause` the primary
causes (`workbench.latency.spikes`)."""


def spike_timeline_rows(summary: SpikeSummary, by: str = "stage", t0_s: float = 0.0
                        ) -> dict[str, list[float]]:
    """The summary's timeline as stacked-bar columns: `t` (bucket centre, s since the run
    started + t0_s), `w` (bucket width, s), one column of counts per key of `by` (`stage` |
    `cause`) and `<key>_bottom` / `<key>_top` (cumulative, in key order). Covers the whole
    run, whatever its length (`SpikeSummary`)."""
    keys, _ = SPIKE_GROUPS[by]
    timeline = summary.timeline_stage if by == "stage" else summary.timeline_cause
    width = summary.bucket_s
    out: dict[str, list[float]] = {
        "t": [t0_s + t + width / 2 for t in summary.timeline_t_s]}
    out["w"] = [width * 0.9] * len(out["t"])
    bottom = [0.0] * len(out["t"])
    for key in keys:
        counts = [float(v) for v in timeline[key]]
        top = [b + v for b, v in zip(bottom, counts, strict=True)]
        out[key], out[f"{key}_bottom"], out[f"{key}_top"] = counts, bottom, top
        bottom = top
    return out


def _spikes_plot(source: ColumnDataSource, by: str) -> Any:
    keys, colors = SPIKE_GROUPS[by]
    title = ("Spikes by dominant stage" if by == "stage"
             else "Spikes by primary cause (longest thing that ran meanwhile)")
    fig = _figure(title, "spikes")
    for key in keys:
        fig.vbar(x="t", width="w", bottom=f"{key}_bottom", top=f"{key}_top", source=source,
                 color=colors[key], legend_label=key)
    _legend_outside(fig)
    fig.add_tools(HoverTool(tooltips=[("t", "@t{0.0} s"), *[(k, f"@{k}") for k in keys]]))
    return fig


def spikes_timeline_figure(summary: SpikeSummary, by: str = "stage") -> Any:
    """Stacked bars over run time: spikes per bucket by dominant stage (`by="stage"`) or by
    primary cause (`by="cause"`)."""
    return _spikes_plot(ColumnDataSource(spike_timeline_rows(summary, by)), by)


def spike_attribution_figure(summaries: Mapping[str, SpikeSummary]) -> Any:
    """Horizontal stacked bars, two per run label: the share of its spikes by dominant stage
    and by primary cause (each bar adds up to 100%; the count is in the label)."""
    labels: list[str] = []
    rows: list[tuple[str, str, float, float, int]] = []  # (label, key, left, right, count)
    for name, summary in summaries.items():
        for by in ("stage", "cause"):
            keys, _ = SPIKE_GROUPS[by]
            counts = summary.by_stage if by == "stage" else summary.by_cause
            label = f"{name}: {by} ({summary.count:,} spikes)"
            labels.append(label)
            left = 0.0
            for key in keys:
                share = summary.share(counts[key])
                if share:
                    rows.append((label, key, left, left + share, counts[key]))
                    left += share
    fig = figure(title="Spike attribution (share of spikes)", width=WIDTH + 200,
                 height=70 + 34 * max(1, len(labels)), y_range=list(reversed(labels)),
                 x_range=(0, 1), x_axis_label="share of spikes",
                 tools="hover,save", tooltips=[("", "@key: @count spikes (@pct)")])
    fig.toolbar.logo = None
    colors = {**SPIKE_STAGE_COLORS, **CAUSE_COLORS}
    for key in dict.fromkeys(r[1] for r in rows):
        mine = [r for r in rows if r[1] == key]
        fig.hbar(y="y", left="left", right="right", height=0.7, color=colors[key],
                 legend_label=key, source=ColumnDataSource({
                     "y": [r[0] for r in mine], "left": [r[2] for r in mine],
                     "right": [r[3] for r in mine], "key": [key] * len(mine),
                     "count": [r[4] for r in mine],
                     "pct": [f"{r[3] - r[2]:.1%}" for r in mine]}))
    if fig.legend:
        _legend_outside(fig)
    return fig


def spikes_figure(summary: SpikeSummary) -> Any:
    """`%hft plot spikes`: the timeline by dominant stage, by primary cause, and the shares."""
    from bokeh.layouts import column, row

    return column(row(spikes_timeline_figure(summary, "stage"),
                      spikes_timeline_figure(summary, "cause")),
                  spike_attribution_figure({"run": summary}))


# -- PnL and position --------------------------------------------------------------------------

def _pnl_plot(source: ColumnDataSource) -> Any:
    fig = _figure("PnL and position", "PnL (quote)")
    pnl = fig.line("t", "pnl", source=source, color="#1f77b4", line_width=2, legend_label="PnL")
    fig.extra_y_ranges = {"position": DataRange1d()}
    position = fig.step("t", "position", source=source, color="#ff7f0e", mode="after",
                        legend_label="position", y_range_name="position")
    fig.y_range.renderers = [pnl]
    fig.extra_y_ranges["position"].renderers = [position]
    fig.add_layout(LinearAxis(y_range_name="position", axis_label="position (qty)"), "right")
    fig.legend.location = "top_left"
    return fig


def pnl_figure(t_s: Sequence[float], pnl: Sequence[float], position: Sequence[float]) -> Any:
    """PnL (realized + unrealized, quote currency) and position over run time (s)."""
    return _pnl_plot(ColumnDataSource({"t": list(t_s), "pnl": list(pnl),
                                       "position": list(position)}))


# -- ring ------------------------------------------------------------------------------------

def _ring_plot(source: ColumnDataSource) -> Any:
    fig = _figure("Ring: events/s, drops and gaps", "count")
    fig.line("t", "events_per_s", source=source, color="#2ca02c", line_width=2,
             legend_label="events/s")
    fig.line("t", "drops", source=source, color="#d62728", line_width=2, legend_label="drops")
    fig.line("t", "gaps", source=source, color="#9467bd", line_width=2, legend_label="gaps")
    fig.legend.location = "top_left"
    return fig


def ring_figure(t_s: Sequence[float], events_per_s: Sequence[float], drops: Sequence[int],
                gaps: Sequence[int]) -> Any:
    """Events/s with cumulative ring drops and sequence gaps over run time (s)."""
    return _ring_plot(ColumnDataSource({"t": list(t_s), "events_per_s": list(events_per_s),
                                        "drops": list(drops), "gaps": list(gaps)}))


# -- benchmark trends (nightly report) --------------------------------------------------------

def bench_trend_figure(nights: Sequence[str], values: Mapping[str, Sequence[float]], *,
                       title: str, y_label: str,
                       flagged: Mapping[str, Sequence[bool]] | None = None,
                       y_axis_type: str = "linear", width: int = WIDTH) -> Any:
    """One line per phase over nights (x = night label); flagged[phase][i] marks a regression
    at night i with a red circle. The legend goes under the plot, one entry per row, so it is
    never clipped however many phases there are."""
    fig = figure(title=title, width=width, height=HEIGHT + 60 + 16 * len(values),
                 x_range=list(nights), y_axis_label=y_label, y_axis_type=y_axis_type,
                 tools="pan,wheel_zoom,box_zoom,reset,save")
    fig.toolbar.logo = None
    fig.xaxis.major_label_orientation = 0.8
    for i, (name, ys) in enumerate(values.items()):
        color = Category10_10[i % 10]
        source = ColumnDataSource({"night": list(nights), "y": list(ys),
                                   "phase": [name] * len(nights)})
        fig.line("night", "y", source=source, color=color, line_width=2, legend_label=name)
        fig.scatter("night", "y", source=source, color=color, size=5)
        marks = (flagged or {}).get(name)
        if marks is not None:
            bad = [i for i, m in enumerate(marks) if m]
            if bad:
                fig.scatter([nights[i] for i in bad], [ys[i] for i in bad], size=14,
                            fill_alpha=0, line_color="red", line_width=3)
    fig.add_tools(HoverTool(tooltips=[("phase", "@phase"), ("night", "@night"), ("value", "@y")]))
    if fig.legend:
        legend = fig.legend[0]
        legend.label_text_font_size = "8pt"
        legend.click_policy = "hide"
        legend.spacing = 0
        legend.padding = 4
        fig.add_layout(legend, "below")
    return fig


# -- live ------------------------------------------------------------------------------------

@dataclass
class UiFrame:
    """What the UI needs from one engine snapshot, as plain data (built on the kernel loop).

    t_s: seconds since the run started. series: new per-second points per stage
    ({"t_s", "p50_ns", "p99_ns"} arrays, perf_counter seconds). cdfs: per stage
    (latency_ns, fraction) or None when unchanged. spikes: the run's `SpikeSummary` or None
    when unchanged.
    """

    t_s: float
    t0_perf_s: float
    events_per_s: float = 0.0
    position: float = 0.0
    pnl: float = 0.0
    drops: int = 0
    gaps: int = 0
    series: dict[str, dict[str, Sequence[int]]] = field(default_factory=dict)
    cdfs: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None
    spikes: SpikeSummary | None = None


class LivePlots:
    """The live figures of one run, in one `BokehModel` widget (`.widget`).

    `apply(frame)` must run on the kernel's event loop. Before the first frontend view of the
    widget exists, frames accumulate in Python buffers (bounded by `rollover`); when a view
    appears, the render bundle is rebuilt with all data so far, and later frames stream. The
    spike chart stacks the run's spikes by dominant stage over the whole run. `paused`: the
    session stops applying frames while True (the panel's pause button); the ring figure is
    shown for ring sources only (`reset(ring=...)`).
    """

    def __init__(self, stages: Sequence[str] | None = None, rollover: int = ROLLOVER) -> None:
        from jupyter_bokeh import BokehModel

        self.stages = list(stages or [s.value for s in LOCAL_STAGES])
        self.rollover = rollover
        self.paused = False
        cols = _series_columns(self.stages)
        self._series_src = ColumnDataSource({c: [] for c in cols}, name="live_series")
        self._cdf_src = ColumnDataSource(_cdf_data({}, self.stages), name="live_cdf")
        self._spike_src = ColumnDataSource(spike_timeline_rows(empty_summary()),
                                           name="live_spikes")
        self._pnl_src = ColumnDataSource({"t": [], "pnl": [], "position": []}, name="live_pnl")
        self._ring_src = ColumnDataSource({"t": [], "events_per_s": [], "drops": [], "gaps": []},
                                          name="live_ring")
        self._cdf_fig = _cdf_plot(self._cdf_src)
        self._series_fig = _latency_series_plot(self._series_src, self.stages,
                                                "P50 (solid) and P99 (dashed) per second")
        self._series_span: list[float] = []
        self._pending: dict[ColumnDataSource, dict[str, deque]] = {}
        self._last_spikes: dict[str, list[float]] | None = None
        self._last_cdf: dict[str, list[list[float]]] | None = None
        self.frames_applied = 0
        self._ring_fig = _ring_plot(self._ring_src)
        self._ring_fig.visible = False
        self.layout = gridplot(
            [
                [self._series_fig,
                 self._cdf_fig],
                [_spikes_plot(self._spike_src, "stage"), _pnl_plot(self._pnl_src)],
                [self._ring_fig, None],
            ],
            toolbar_location="right",
        )
        self.widget = BokehModel(self.layout)
        self._dirty = False  # data changed since the render bundle was built
        self.widget._view_count = 0  # ask the frontend to count views (ipywidgets protocol)
        self.widget.observe(self._on_views, names="_view_count")

    def reset(self, ring: bool = False) -> None:
        """Empty every figure for a new run (`ring`: show the ring figure). Without a view the
        document is changed with the widget detached (no patch is sent to no one) and the
        render bundle is rebuilt."""
        self._pending.clear()
        self._last_spikes = None
        self._last_cdf = None
        self._series_span = []
        self.frames_applied = 0
        detached = not self.has_view
        if detached:
            self.widget._document.remove_on_change(self.widget)
        for source in (self._series_src, self._pnl_src, self._ring_src):
            source.data = {c: [] for c in source.data}
        self._spike_src.data = spike_timeline_rows(empty_summary())
        self._cdf_src.data = _cdf_data({}, self.stages)
        self._ring_fig.visible = ring
        if detached:
            self.widget.update_from_model(self.layout)
        self._dirty = not detached

    @property
    def has_view(self) -> bool:
        """True once a frontend view of the widget was rendered."""
        return bool(self.widget._view_count)

    def _on_views(self, change: dict[str, Any]) -> None:
        """A new view renders from the render bundle: rebuild it when the data changed since
        (held frames go into the sources with the widget detached: no patch to no one)."""
        if (change["new"] or 0) > (change["old"] or 0) and self._dirty:
            self.widget._document.remove_on_change(self.widget)
            self._flush_pending()
            self.widget.update_from_model(self.layout)
            self._dirty = False

    def _flush_pending(self) -> None:
        for source, cols in self._pending.items():
            data = {c: list(v) for c, v in cols.items()}
            merged = {c: list(source.data[c])[-self.rollover:] + data[c] for c in data}
            source.data = {c: v[-self.rollover:] for c, v in merged.items()}
        self._pending.clear()
        if self._last_cdf is not None:
            self._set_cdf(self._last_cdf)
        self._fit_series()
        if self._last_spikes is not None:
            self._spike_src.data = self._last_spikes

    def _stream(self, source: ColumnDataSource, rows: dict[str, list]) -> None:
        if not rows or not next(iter(rows.values())):
            return
        self._dirty = True
        if self.has_view:
            source.stream(rows, rollover=self.rollover)
            return
        cols = self._pending.setdefault(
            source, {c: deque(maxlen=self.rollover) for c in source.data})
        for c, v in rows.items():
            cols[c].extend(v)

    def _fit_series(self) -> None:
        if self._series_span:
            self._series_fig.y_range.start, self._series_fig.y_range.end = log_span(
                [self._series_span])

    def apply(self, frame: UiFrame) -> None:
        """Push one frame into the figures (kernel event loop only)."""
        rows = series_rows(frame.series, frame.t0_perf_s, self.stages)
        self._stream(self._series_src, rows)
        seen = [v for values in _series_values(rows) for v in values if v > 0]
        if seen:
            span = self._series_span
            self._series_span = [min([*span, *seen]), max([*span, *seen])]
            if self._series_span != span and self.has_view:
                self._fit_series()
        self._stream(self._pnl_src, {"t": [frame.t_s], "pnl": [frame.pnl],
                                     "position": [frame.position]})
        self._stream(self._ring_src, {"t": [frame.t_s], "events_per_s": [frame.events_per_s],
                                      "drops": [frame.drops], "gaps": [frame.gaps]})
        if frame.spikes is not None:
            self._last_spikes = spike_timeline_rows(frame.spikes)
            self._dirty = True
            if self.has_view:
                self._spike_src.data = self._last_spikes
        if frame.cdfs is not None:
            self._last_cdf = _cdf_data(frame.cdfs, self.stages)
            self._dirty = True
            if self.has_view:
                self._set_cdf(self._last_cdf)
        self.frames_applied += 1

    def _set_cdf(self, data: dict[str, list[list[float]]]) -> None:
        """Replace the CDF curves and fit the log x range to them."""
        self._cdf_src.data = data
        if data["xs"]:
            self._cdf_fig.x_range.start, self._cdf_fig.x_range.end = log_span(data["xs"])


@dataclass
class NightlyTrends:
    """Trend figures of the bench history: `figures` (bokeh, one per topic), `grid` (them as
    small multiples, two a row; None without figures), `nights` (runs shown)."""

    figures: list[Any]
    nights: int
    grid: Any = None


def nightly_trends(history: Any, *, last: int = 30, min_runs: int | None = None
                   ) -> NightlyTrends:
    """The measured ratio (optimized vs baseline within each run, > 1: optimized better) of
    every phase over the last `last` runs of a bench history frame (polars, as
    `workbench.bench.history.load` returns), one figure per topic. A night is ringed when
    `history.trends` (on the history up to that night) finds that phase's ratio below the
    noise band of at least `min_runs` earlier runs."""
    import polars as pl
    from bokeh.layouts import gridplot

    from workbench.bench import history as store

    min_runs = store.MIN_HISTORY if min_runs is None else min_runs
    if history.is_empty():
        return NightlyTrends([], 0)
    ok = history.filter(pl.col("status") == "ok")
    runs = (ok.group_by("run_id").agg(pl.col("time_utc").min()).sort("time_utc")
            .tail(last))
    run_ids = runs["run_id"].to_list()
    labels = [f"{t[5:16].replace('T', ' ')} {r[:4]}"
              for r, t in zip(run_ids, runs["time_utc"].to_list(), strict=True)]
    flags: dict[str, list[bool]] = {}
    for i, (run_id, t) in enumerate(zip(run_ids, runs["time_utc"].to_list(), strict=True)):
        upto = ok.filter(pl.col("time_utc") <= t)
        for phase, tr in store.trends(upto, run_id, min_runs=min_runs).items():
            if tr.status == "regression":
                flags.setdefault(phase, [False] * len(run_ids))[i] = True
    shown = ok.filter(pl.col("run_id").is_in(run_ids))
    figures = []
    for (topic,), group in shown.group_by(["topic"], maintain_order=True):
        values: dict[str, list[float]] = {}
        for (phase,), rows in group.group_by(["phase"], maintain_order=True):
            by_run = dict(zip(rows["run_id"].to_list(), rows["ratio"].to_list(), strict=True))
            ys = [by_run.get(r) for r in run_ids]
            if any(y is not None for y in ys):
                values[phase] = [float("nan") if y is None else float(y) for y in ys]
        if values:
            figures.append(bench_trend_figure(
                labels, values, title=f"{topic}: measured ratio per run", y_label="ratio",
                flagged={p: flags.get(p, [False] * len(run_ids)) for p in values},
                y_axis_type="log", width=TREND_WIDTH))
    grid = (gridplot([figures[i:i + 2] for i in range(0, len(figures), 2)],
                     toolbar_location="right") if figures else None)
    return NightlyTrends(figures, len(run_ids), grid)


def cdf_comparison_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                          title: str = "Latency CDF") -> Any:
    """Several CDFs on one log latency axis; curves[label] = (latency_ns, fraction) as
    `cdf_points` returns (e.g. tick-to-trade of a polling run against a callback run)."""
    fig = _figure(title, "fraction of batches", x_label="latency (µs)", x_axis_type="log",
                  y_range=(0, 1.01))
    for i, (label, (values, fractions)) in enumerate(curves.items()):
        if len(values):
            fig.line([v / 1e3 for v in values], list(fractions), line_width=2,
                     color=Category10_10[i % 10], legend_label=label)
    if fig.legend:
        _legend_outside(fig)
    return fig
