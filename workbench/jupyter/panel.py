"""The engine session of a notebook and its ipywidgets control panel.

`Session` owns one `Engine` at a time (the `%hft` magics and the panel share it), its live UI
and the static plots of the last run. The engine thread never touches a widget or a bokeh
object: it calls `UiPump.notify` at each snapshot publish (<= 10/s), which only schedules a wake
up with `loop.call_soon_threadsafe`; one asyncio task on the kernel's event loop then reads the
engine's published state (`Engine.latest`, the LatencyRecorder's per-second series, the
SpikeLog) and updates the counters and the bokeh sources, at most `max_hz` times a second.

`ControlPanel`: start/stop, a dispatch toggle that switches the running engine, source / venue
/ symbol pickers, strategy parameters, live counters (events/s, tick-to-trade P50/P99, spikes,
position, PnL, ring drops and gaps), the spike attribution (the same rows as the CLI's table),
a pause button for the plots, and the live plots (`plots.LivePlots`).

The UI runs in the kernel, which shares the GIL with the engine: its own work is latency there.
The panel says so: the P99 counter carries a note when spikes saw the UI's `display_refresh`,
and the figures it shows are over the whole run (across dispatch switches, said when there
were some). Pausing the plots stops their updates (the counters go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets

from workbench.errors import EngineError
from workbench.jupyter import plots
from workbench.latency.stages import LOCAL_STAGES, Stage

if TYPE_CHECKING:
    from workbench.engine.config import EngineConfig
    from workbench.engine.engine import Engine
    from workbench.engine.status import PositionStatus, RunStatus, Snapshot
    from workbench.latency.spikes import SpikeSummary

log = logging.getLogger("workbench.jupyter")

MAX_HZ = 10.0  # counters
PLOT_PERIOD_S = 1.0  # per-second series, PnL, ring (the series gains a point a second)
SLOW_PERIOD_S = 2.0  # CDFs and spikes (whole-source replacements)
IDLE_WAKE_S = 0.5  # the UI task also wakes this often on its own (engine finished, no publish)

DISPATCH_TIPS = {"polling": "queue drained every poll interval",
                 "blocking": "queue, engine blocks on it",
                 "callback": "feed thread calls the engine directly"}
"""The dispatch toggle's tooltip per mode (`workbench.engine.dispatch.MODES`)."""

_bokeh_loaded_for: set[str | None] = set()


def _frontend() -> str | None:
    """The client session of the request being executed (a new one each time a notebook page
    is opened or reloaded); None outside a kernel."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent()
    except TypeError:  # ipykernel < 6.0 takes the channel
        parent = kernel.get_parent("shell")
    return (parent or {}).get("header", {}).get("session")


def ensure_bokeh_loaded() -> None:
    """Load inline BokehJS into the page unless this page already got it: once per frontend
    view (a reopened or reloaded notebook is a new client session and gets it again; once per
    kernel left a reloaded page without BokehJS: "Javascript Error: timeout")."""
    frontend = _frontend()
    if frontend not in _bokeh_loaded_for:
        plots.use_static_resources()
        _bokeh_loaded_for.add(frontend)


def thread_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the calling (kernel) thread: the running one, else the thread's current
    loop, else a new loop made current. `asyncio.run` elsewhere in the process leaves the main
    thread with no current loop, so `asyncio.get_event_loop()` alone may raise RuntimeError."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    try:
        return asyncio.get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop


class UiPump:
    """Engine snapshots -> kernel event loop, at most `max_hz` updates a second.

    `notify()` may be called from any thread (the engine subscribes it); it only schedules
    `_wake` on the loop with `call_soon_threadsafe`. The task calls `tick()` on the loop;
    `tick` returns False when there is nothing more to follow (the run ended).
    """

    def __init__(self, tick: Callable[[], bool], max_hz: float = MAX_HZ,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._tick = tick
        self._min_interval = 1.0 / max_hz
        self._loop = loop or thread_loop()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._scheduled = False
        self.ticks = 0

    def notify(self, _snapshot: Snapshot | None = None) -> None:
        """Wake the UI task (any thread; never touches the UI itself)."""
        if not self._scheduled and not self._loop.is_closed():
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._scheduled = False
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Create the UI task on the loop (call from the loop's thread, e.g. a cell)."""
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = self._loop
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_WAKE_S)
            self._wake.clear()
            started = loop.time()
            try:
                more = self._tick()
            except Exception:
                log.exception("UI update failed")
                more = True
            self.ticks += 1
            if not more:
                return
            await asyncio.sleep(max(0.0, self._min_interval - (loop.time() - started)))


def native_text(native: dict | None) -> str | None:
    """One line of the native handler's counters (`NativeStats` as a dict): messages,
    malformed, gaps / resyncs, reconnects, read-to-publish P99."""
    if not native:
        return None
    c = native["counters"]
    p99 = native["read_to_publish_ns"].get("p99", 0.0) / 1e3
    return (f"{native['state']}: {c['messages']:,} msgs, {c['malformed']:,} malformed, "
            f"{c['gaps']:,} gaps / {c['resyncs']:,} resyncs, {c['reconnects']:,} reconnects, "
            f"read→push P99 {p99:,.1f} µs")


@dataclasses.dataclass
class Counters:
    """The panel's live figures (plain data)."""

    state: str = "idle"
    dispatch: str = "-"
    events: int = 0
    events_per_s: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    spikes: int = 0
    position: float = 0.0
    positions: tuple[PositionStatus, ...] = ()
    pnl: float = 0.0
    ring_drops: int | None = None
    ring_gaps: int | None = None
    dispatch_gaps: int = 0
    dispatch_switches: int = 0
    ui_spikes: int = 0  # spikes that saw the UI's display refresh
    native: str | None = None  # the native feed handler's counters (native sources only)

    def notes(self) -> list[str]:
        """What the P50/P99 figures stand on: the whole run, across dispatch switches, and
        the UI's own share of the spikes."""
        window = "P50/P99 over the whole run"
        if self.dispatch_switches:
            window += (f", across {self.dispatch_switches} dispatch switch"
                       f"{'es' if self.dispatch_switches > 1 else ''}")
        notes = [window]
        if self.ui_spikes:
            notes.append(f"{self.ui_spikes:,} spikes saw this UI's display refresh: the "
                         "notebook perturbs the measurement (pause the plots, or run "
                         "`workbench run` outside Jupyter, for the engine alone)")
        return notes

    def html(self) -> str:
        """Counters as HTML cells that wrap as whole cells (never inside a value); each value
        in a span of class `hft-<name>`; the notes under them (class `hft-notes`)."""
        def cell(name: str, label: str, value: str) -> str:
            return (f'<div style="padding:2px 10px;white-space:nowrap">'
                    f'<div style="color:#666;font-size:85%">{label}</div>'
                    f'<span class="hft-{name}" style="font-size:130%;font-family:monospace">'
                    f'{html.escape(value)}</span></div>')

        cells = [
            cell("state", "state", f"{self.state} ({self.dispatch})"),
            cell("events", "events", f"{self.events:,}"),
            cell("events-per-s", "events/s", f"{self.events_per_s:,.0f}"),
            cell("p50", "tick-to-trade P50", f"{self.p50_us:,.1f} µs"),
            cell("p99", "tick-to-trade P99", f"{self.p99_us:,.1f} µs"),
            cell("spikes", "spikes", f"{self.spikes:,}"),
            cell("position", "position", positions_text(self.positions)),
            cell("pnl", "PnL", f"{self.pnl:+,.4f}"),
        ]
        if self.native is not None:
            cells.append(cell("native", "native feed", self.native))
        if self.ring_drops is not None:
            cells.append(cell("ring", "ring drops / gaps",
                              f"{self.ring_drops:,} / {self.ring_gaps:,}"))
        cells.append(cell("dispatch-gaps", "dispatch gaps", f"{self.dispatch_gaps:,}"))
        notes = "; ".join(html.escape(n) for n in self.notes())
        return (f'<div class="hft-counters" style="display:flex;flex-wrap:wrap">'
                f'{"".join(cells)}</div><div class="hft-notes" style="color:#666;'
                f'font-size:85%;padding:0 10px">{notes}</div>')


def attribution_html(summary: SpikeSummary) -> str:
    """The spike attribution (`attribution.attribution_rows`, the CLI's table) as a small HTML
    table of class `hft-attribution`, with its one-line summary as caption."""
    from workbench.latency.attribution import attribution_line, attribution_rows

    rows = []
    for row in attribution_rows(summary):
        seen = "" if row.seen is None else f"{row.seen:,}"
        rows.append(f"<tr><td>{html.escape(row.group)}</td><td>{html.escape(row.name)}</td>"
                    f'<td style="text-align:right">{row.spikes:,}</td>'
                    f'<td style="text-align:right">{row.share:.1%}</td>'
                    f'<td style="text-align:right">{seen}</td>'
                    f'<td style="color:#666">{html.escape(row.note)}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("by", "name", "spikes", "share", "saw it",
                                              "what it is"))
    return (f'<table class="hft-attribution" style="font-size:85%"><caption '
            f'style="text-align:left">{html.escape(attribution_line(summary))}</caption>'
            f"<tr>{head}</tr>{''.join(rows)}</table>")


def positions_text(positions: tuple[PositionStatus, ...]) -> str:
    """`BTCUSDT +0.01, ETHUSDT -0.02`: each symbol's signed quantity; `+0` with none."""
    return ", ".join(f"{p.symbol} {p.qty:+g}" for p in positions) or f"{0.0:+g}"


class RunView:
    """Turns one engine's published state into `UiFrame`s and `Counters` (kernel loop only).

    Keeps what it already sent: the last per-second point per stage, the spikes seen, and a
    history of (t, PnL, position, events/s, drops, gaps) for the static plots of the run.
    """

    def __init__(self, engine: Engine, t0_perf_s: float) -> None:
        self.engine = engine
        self.t0_perf_s = t0_perf_s
        self.stages = [s.value for s in LOCAL_STAGES]
        self._last_second = dict.fromkeys(self.stages, -1)
        self._spikes_seen = -1
        self._elapsed_s = 0.0
        self.last_plot = self.last_slow = -1e9
        source = engine.config.source
        self._ring = source.arg if source.kind == "ring" else None
        self.history: dict[str, list[float]] = {
            "t": [], "pnl": [], "position": [], "events_per_s": [], "drops": [], "gaps": []}
        self.counters = Counters()
        self.spike_summary: SpikeSummary | None = None  # the newest one the UI read

    def _ring_stats(self) -> tuple[int, int] | None:
        if self._ring is None:
            return None
        from workbench.feed.ring import ShmRing

        for stats in ShmRing.list():
            if stats.name == self._ring:
                return stats.dropped, stats.gaps
        return None

    def counters_now(self) -> Counters | None:
        """Refresh the counters from the engine; None before its first snapshot. A running
        engine's figures come from its published Snapshot (`status()` computes every stage's
        percentiles: too much for the kernel thread 10 times a second), a finished one's from
        its final RunStatus."""
        engine = self.engine
        now: Snapshot | RunStatus
        if engine.state in ("starting", "running"):
            snap = engine.latest.get()
            if snap is None:
                return None
            now, events_per_s = snap, snap.events_per_s
        else:
            now = engine.status()
            events_per_s = 0.0
        t2t = now.latency[Stage.TICK_TO_TRADE]
        ring = self._ring_stats()
        c = self.counters
        c.state, c.dispatch = now.state, now.dispatch
        c.events, c.events_per_s = now.events, events_per_s
        c.p50_us, c.p99_us = t2t.p50_ns / 1e3, t2t.p99_ns / 1e3
        c.spikes, c.pnl = now.spikes, now.pnl.net_pnl
        c.positions = now.positions
        c.position = now.position_qty
        c.ring_drops, c.ring_gaps = ring if ring is not None else (None, None)
        c.native = native_text(engine.source.stats().get("native")) \
            if engine.source is not None and engine.source.kind == "native" else None
        c.dispatch_gaps = now.dispatch_gaps
        c.dispatch_switches = engine.dispatch_switches
        self._elapsed_s = now.elapsed_s
        return c

    def frame(self, slow: bool) -> plots.UiFrame:
        """The plot data since the last frame (call after `counters_now`). `slow`: also the
        CDFs and the new spikes (they replace whole sources, so they come less often)."""
        engine, c = self.engine, self.counters
        series = {}
        for stage in self.stages:
            points = engine.latency.series(stage)
            new = points["t_s"] > self._last_second[stage]
            if new.any():
                series[stage] = {k: v[new] for k, v in points.items()}
                self._last_second[stage] = int(points["t_s"][-1])
        cdfs = spikes = None
        if slow:
            cdfs = {s: plots.cdf_points(engine.latency.histogram(s)) for s in self.stages}
            if c.spikes != self._spikes_seen:
                spikes = self.spike_summary = engine.spikes.summary()
                self._spikes_seen = spikes.count
                c.ui_spikes = spikes.seen.get("display_refresh", 0)
        t = self._elapsed_s
        gaps = c.ring_gaps if c.ring_gaps is not None else c.dispatch_gaps
        h = self.history
        for key, value in (("t", t), ("pnl", c.pnl), ("position", c.position),
                           ("events_per_s", c.events_per_s), ("drops", c.ring_drops or 0),
                           ("gaps", gaps)):
            h[key].append(value)
        return plots.UiFrame(t_s=t, t0_perf_s=self.t0_perf_s, events_per_s=c.events_per_s,
                             position=c.position, pnl=c.pnl, drops=c.ring_drops or 0,
                             gaps=gaps, series=series, cdfs=cdfs, spikes=spikes)


class Session:
    """The notebook's engine session: one running engine at most; the last run stays for plots.

    start(config) raises EngineError when one is running (callers print one line), and the
    engine's ConfigError / EngineError for a bad config or a source that cannot open (a
    missing recording names its path).
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.view: RunView | None = None
        self.live: plots.LivePlots | None = None
        self.panel: ControlPanel | None = None
        self.pump: UiPump | None = None
        self.profiled: list[Path] = []
        self._listeners: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self.engine is not None and self.engine.state in ("starting", "running")

    def describe(self) -> str:
        """`run <id>: source S, dispatch D, state X` of the current or last run."""
        if self.engine is None:
            return "no run yet"
        e = self.engine
        return (f"run {e.run_id}: source {e.config.source.source}, dispatch {e.dispatcher.mode}, "
                f"{e.state}")

    def start(self, config: EngineConfig) -> Engine:
        """Start an engine on `config` (EngineConfig); returns it. The UI task starts too."""
        from workbench.engine.engine import Engine

        if self.running:
            raise EngineError(f"already running ({self.describe()}); stop it first")
        engine = Engine(config)
        engine.start()
        self.engine = engine
        self.profiled = []
        self.view = RunView(engine, time.perf_counter())
        if self.live is not None:
            self.live.reset(ring=config.source.kind == "ring")
        self.pump = UiPump(self._tick)
        engine.subscribe(self.pump.notify)
        self.pump.start()
        self._changed()
        return engine

    def stop(self, timeout_s: float = 5.0) -> str:
        """Stop the running engine; returns a one-line summary (raises EngineError if none)."""
        if not self.running:
            raise EngineError("no engine running")
        engine = self.engine
        status = engine.stop(timeout_s)
        engine.unsubscribe(self.pump.notify)
        self._tick()
        self.pump.stop()
        self._changed()
        t2t = status.latency[Stage.TICK_TO_TRADE]
        line = (f"stopped run {status.run_id}: {status.events:,} events in "
                f"{status.elapsed_s:.1f} s, tick-to-trade P50 {t2t.p50_ns / 1e3:,.1f}"
                f" µs P99 {t2t.p99_ns / 1e3:,.1f} µs, {status.fills} fills, PnL "
                f"{status.pnl.net_pnl:+,.4f}")
        if status.run_dir:
            line += f"; files in {status.run_dir}"
        if status.error:
            line += f"; error: {status.error}"
        return line

    def set_dispatch(self, mode: str) -> None:
        """Switch the running engine's dispatch mode (ConfigError for an unknown mode)."""
        if not self.running:
            raise EngineError("no engine running")
        self.engine.set_dispatch(mode)
        self._changed()

    def status_line(self) -> str:
        """One line about the current or last run."""
        if self.engine is None:
            return "no run yet; %hft start"
        s = self.engine.status()
        t2t = s.latency[Stage.TICK_TO_TRADE]
        extra = f", profiled ({self.profiled[-1]})" if self.profiled else ""
        return (f"run {s.run_id} {s.state} [{s.dispatch}]: {s.events:,} events, "
                f"{s.events_per_s:,.0f}/s, tick-to-trade P50 {t2t.p50_ns / 1e3:,.1f}"
                f" µs P99 {t2t.p99_ns / 1e3:,.1f} µs, spikes {s.spikes}, position "
                f"{positions_text(s.positions)}, PnL {s.pnl.net_pnl:+,.4f}{extra}")

    # -- UI ------------------------------------------------------------------------------
    def _tick(self) -> bool:
        """One UI update on the kernel loop: counters every time, plots every PLOT_PERIOD_S,
        CDFs and spikes every SLOW_PERIOD_S (the kernel's main thread shares the GIL with the
        engine: UI work here is latency there). False once the run is over."""
        view = self.view
        if view is None:
            return False
        finished = view.engine.state not in ("starting", "running")
        counters = view.counters_now()
        if counters is None:
            return True
        if self.panel is not None:
            self.panel.show_counters(counters)
        if self.live is not None and self.live.paused and not finished:
            return True
        now = time.monotonic()
        if finished or now - view.last_plot >= PLOT_PERIOD_S:
            slow = finished or now - view.last_slow >= SLOW_PERIOD_S
            view.last_plot = now
            if slow:
                view.last_slow = now
            frame = view.frame(slow)
            if self.live is not None:
                self.live.apply(frame)
            if frame.spikes is not None and self.panel is not None:
                self.panel.show_spikes(frame.spikes)
        if finished:
            self._changed()
        return not finished

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def prepare(self) -> None:
        """Do the slow parts ahead (`%load_ext`): import the engine, load BokehJS into the page,
        build the panel and its live plots, so that `%hft start` returns at once."""
        import workbench.engine.engine  # noqa: F401  (book, broker, ... imported once here)

        ensure_bokeh_loaded()
        if self.live is None:
            self.live = plots.LivePlots()
        if self.panel is None:
            self.panel = ControlPanel(self)
            self.panel.set_live(self.live)

    def show(self) -> None:
        """Display the control panel with its live plots (the same widgets for every run)."""
        from IPython.display import display

        self.prepare()
        display(self.panel.widget)

    # -- static plots --------------------------------------------------------------------
    def plot(self, what: str) -> None:
        """Static plot of the current or last run: latency | spikes | pnl | ring."""
        from bokeh.layouts import row

        if self.engine is None or self.view is None:
            raise EngineError("no run to plot yet; %hft start first")
        engine, view = self.engine, self.view
        ensure_bokeh_loaded()
        h = view.history
        if what == "latency":
            engine.latency.fold()
            series = {s: engine.latency.series(s) for s in view.stages}
            cdfs = {s: plots.cdf_points(engine.latency.histogram(s)) for s in view.stages}
            layout = row(plots.latency_series_figure(series, t0_s=view.t0_perf_s),
                         plots.latency_cdf_figure(cdfs))
        elif what == "spikes":
            layout = plots.spikes_figure(engine.spikes.summary())
        elif what == "pnl":
            layout = plots.pnl_figure(h["t"], h["pnl"], h["position"])
        elif what == "ring":
            layout = plots.ring_figure(h["t"], h["events_per_s"], h["drops"], h["gaps"])
        else:
            raise EngineError(f"plot: expected latency | spikes | pnl | ring, got {what!r}")
        plots.show_static(layout)

    # -- profiling -----------------------------------------------------------------------
    def profile_path(self) -> Path | None:
        """Where `%hft profile` saves the flamegraph: the run's directory when journaled."""
        run_dir = self.engine.run_dir if self.engine is not None else None
        if run_dir is None:
            return None
        return Path(run_dir) / f"profile-{time.strftime('%H%M%S')}.svg"

    def mark_profiled(self, path: Path) -> None:
        """Record that the current run was profiled (shown by `%hft status`)."""
        self.profiled.append(path)


class PanelBox(ipywidgets.VBox):
    """The panel's box; its text form (exported notebooks, no kernel) says what it is."""

    def __repr__(self) -> str:
        return "hft-workbench control panel (live: open the notebook with a running kernel)"


class ControlPanel:
    """ipywidgets panel of a Session: controls, live counters and the live plots (`.widget`)."""

    def __init__(self, session: Session) -> None:
        import ipywidgets as w

        from workbench.engine.config import DISPATCH_MODES, ORDER_TYPES, VENUES, EngineConfig

        self.session = session
        d = session.engine.config if session.engine is not None else EngineConfig()
        src, strat = d.source, d.strategy
        layout = w.Layout(width="auto")
        self.source = w.Combobox(value=f"sim:{src.recording}" if src.recording else src.source,
                                 options=_source_choices(), description="source",
                                 ensure_option=False, layout=w.Layout(width="420px"))
        self.venue = w.Dropdown(value=src.venue, options=VENUES, description="venue",
                                layout=w.Layout(width="220px"))
        self.symbols = w.Text(value=",".join(src.symbols), description="symbols",
                              layout=w.Layout(width="260px"))
        self.speed = w.BoundedFloatText(value=src.speed, min=0.0, max=1000.0, step=1.0,
                                        description="speed", layout=w.Layout(width="160px"))
        self.ema_fast = w.BoundedIntText(value=strat.ema_fast, min=1, max=100_000,
                                         description="EMA fast", layout=w.Layout(width="170px"))
        self.ema_slow = w.BoundedIntText(value=strat.ema_slow, min=2, max=100_000,
                                         description="EMA slow", layout=w.Layout(width="170px"))
        self.target_qty = w.BoundedFloatText(value=strat.target_qty, min=0.0, max=1e6,
                                             step=0.01, description="target qty",
                                             layout=w.Layout(width="190px"))
        self.max_position = w.BoundedFloatText(value=d.risk.max_position, min=0.0, max=1e6,
                                               step=0.01, description="max pos",
                                               layout=w.Layout(width="190px"))
        self.order_type = w.Dropdown(value=strat.order_type, options=ORDER_TYPES,
                                     description="orders", layout=w.Layout(width="190px"))
        self.dispatch = w.ToggleButtons(value=d.dispatch, options=DISPATCH_MODES,
                                        description="dispatch",
                                        tooltips=[DISPATCH_TIPS[m] for m in DISPATCH_MODES])
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.pause = w.ToggleButton(value=False, description="Pause plots", icon="pause",
                                    tooltip="stop updating the plots (the counters go on): "
                                            "less UI work competing with the engine")
        self.message = w.HTML(value="")
        self.counters = w.HTML(value=Counters().html(), layout=layout)
        self.attribution = w.HTML(value="", layout=layout)
        self._live_box = w.Box(layout=layout)
        self.start_button.on_click(lambda _b: self._start())
        self.stop_button.on_click(lambda _b: self._stop())
        self.dispatch.observe(self._on_dispatch, names="value")
        self.pause.observe(self._on_pause, names="value")
        session._listeners.append(self._sync_state)
        self.widget = PanelBox([
            w.HBox([self.start_button, self.stop_button, self.dispatch, self.pause]),
            w.HBox([self.source, self.venue, self.symbols, self.speed]),
            w.HBox([self.ema_fast, self.ema_slow, self.target_qty, self.max_position,
                    self.order_type]),
            self.message, self.counters, self.attribution, self._live_box,
        ])
        self.widget.add_class("hft-panel")
        self._sync_state()

    def set_live(self, live: plots.LivePlots) -> None:
        """Show these live plots under the counters (a new run gets fresh plots)."""
        self._live_box.children = (live.widget,)

    def show_counters(self, counters: Counters) -> None:
        self.counters.value = counters.html()

    def show_spikes(self, summary: SpikeSummary) -> None:
        """The run's spike attribution under the counters."""
        self.attribution.value = attribution_html(summary)

    def _on_pause(self, change: dict[str, Any]) -> None:
        live = self.session.live
        if live is not None:
            live.paused = bool(change["new"])
        self.pause.description = "Resume plots" if change["new"] else "Pause plots"
        self.pause.icon = "play" if change["new"] else "pause"

    def config(self) -> EngineConfig:
        """The EngineConfig the controls describe (ConfigError names a bad field)."""
        from workbench.engine.config import EngineConfig

        if self.session.engine is not None:
            base = self.session.engine.config
        else:
            from workbench.engine.run import default_runs_dir

            base = EngineConfig(out_dir=default_runs_dir())
        source = self.source.value.strip()
        recording = None
        if source.startswith("sim:"):  # the picker's "sim:PATH" = SimExchange serving PATH
            source, recording = "sim", source[4:]
        return base.replace(
            source=source, recording=recording, venue=self.venue.value,
            symbols=tuple(s.strip() for s in self.symbols.value.split(",") if s.strip()),
            speed=float(self.speed.value), ema_fast=int(self.ema_fast.value),
            ema_slow=int(self.ema_slow.value), target_qty=float(self.target_qty.value),
            max_position=float(self.max_position.value), order_type=self.order_type.value,
            dispatch=self.dispatch.value, duration_s=None, run_id=None)

    def _start(self) -> None:
        from workbench.errors import WorkbenchError

        try:
            self.session.start(self.config())
            self.message.value = html.escape(f"started {self.session.describe()}")
        except WorkbenchError as exc:
            self.message.value = f'<span style="color:#b00">{html.escape(str(exc))}</span>'

    def _stop(self) -> None:
        from workbench.errors import WorkbenchError

        try:
            self.message.value = html.escape(self.session.stop())
        except WorkbenchError as exc:
            self.message.value = f'<span style="color:#b00">{html.escape(str(exc))}</span>'

    def _on_dispatch(self, change: dict[str, Any]) -> None:
        if self.session.running and self.session.engine.dispatcher.mode != change["new"]:
            self.session.set_dispatch(change["new"])
            self.message.value = html.escape(f"dispatch switched to {change['new']}")

    def _sync_state(self) -> None:
        running = self.session.running
        self.start_button.disabled = running
        self.stop_button.disabled = not running
        for control in (self.source, self.venue, self.symbols, self.speed, self.ema_fast,
                        self.ema_slow, self.target_qty, self.max_position, self.order_type):
            control.disabled = running
        engine = self.session.engine
        if engine is not None and self.dispatch.value != engine.dispatcher.mode:
            self.dispatch.value = engine.dispatcher.mode


def _source_choices() -> list[str]:
    """Suggestions for the source picker: the simulator, the real recordings served by
    SimExchange (`sim:PATH`) or replayed (`replay:PATH`), and the rings on this machine."""
    from workbench.shared_data import shared_data_dir

    choices = ["sim"]
    root = shared_data_dir()
    if root is not None:
        for rel in ("binance/hftbacktest/usdm/btcusdt_20240808.gz",
                    "binance/hftbacktest/usdm/ethusdt_20240808.gz"):
            if (root / rel).exists():
                choices += [f"sim:{root / rel}", f"replay:{root / rel}"]
    try:
        from workbench.feed.ring import ShmRing

        choices += [f"ring:{s.name}" for s in ShmRing.list()]
    except Exception as exc:  # the C++ extension may not be built on this machine
        log.debug("no rings listed: %s", exc)
    return choices
