"""`workbench run`: the engine in the foreground with a live progress line and a final report.

    workbench run --source sim|replay:PATH|ring:NAME|ws:URL --venue binance --symbols BTCUSDT
                  --dispatch callback --duration 30 --speed 10 [--out DIR]

`--speed 0` replays flat out and the run ends at the end of the recording. The progress line
shows events/s, tick-to-trade P50/P99, position and PnL; at the end a per-stage latency table
(P50/P99/P99.9/max in µs, count) and the PnL summary are printed (rich). `config_from_args`
is shared with the `%hft start` magic, which takes the same flags.
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from workbench.engine.config import DISPATCH_MODES, QUEUE_MODELS, VENUES, EngineConfig
from workbench.engine.status import RunStatus, Snapshot, StageLatency
from workbench.latency.attribution import attribution_line, attribution_rows
from workbench.latency.spikes import SpikeSummary
from workbench.latency.stages import STAGES, WIRE_EMPTY_REASON, Stage
from workbench.shared_data import REPO_ROOT
from workbench.tuning import GC_MODES, LOOP_CHOICES

RUNS_ENV = "WORKBENCH_RUNS"
PLAIN_PROGRESS_S = 5.0  # progress line period when stdout is not a terminal


def cli_console(stderr: bool = False) -> Console:
    """A rich Console for command output: a terminal's own width and colours; into a pipe or
    a file, plain text 160 columns wide, so tables are not cut at 80."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=160,
                                                       no_color=True)


def default_runs_dir() -> str:
    """Where runs are saved by default: `$WORKBENCH_RUNS` when set, else `runs/` of the
    project (the same directory from the CLI and from a notebook in `notebooks/`)."""
    return os.environ.get(RUNS_ENV) or str(REPO_ROOT / "runs")


def _cpus(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected CPU ids like 0,1; got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `workbench run` (and of `%hft start`)."""
    d = EngineConfig()
    src, st, t = d.source, d.strategy, d.tuning
    add = parser.add_argument
    add("--source", default=src.source,
        help="sim | replay:PATH | ring:NAME | ws:URL | native (the C++ feed handler on a "
             "loopback SimExchange) | native:URL (on a venue) (default %(default)s)")
    add("--recording", default=None,
        help="with --source sim or native: a recording SimExchange serves")
    add("--venue", default=src.venue, choices=VENUES,
        help="the venue whose messages the source speaks (default %(default)s)")
    add("--symbols", default=",".join(src.symbols),
        help="comma-separated, e.g. BTCUSDT,ETHUSDT (default %(default)s)")
    add("--dispatch", default=d.dispatch, choices=DISPATCH_MODES,
        help="how batches reach the engine: polling (queue drained every poll interval), "
             "blocking (queue, the engine blocks on it), callback (the feed thread calls the "
             "engine) (default %(default)s)")
    add("--poll-interval-ms", type=float, default=d.poll_interval_ms,
        help="polling period in ms, 0 = busy polling (default %(default)s)")
    add("--duration", type=float, default=None,
        help="seconds to run (default: until Ctrl-C or the end of the data)")
    add("--speed", type=float, default=src.speed,
        help="replay speed, 1 as recorded, 0 = flat out (default %(default)s)")
    add("--seed", type=int, default=src.seed,
        help="the simulator's seed (sim without --recording): same seed, same stream")
    add("--target-qty", type=float, default=st.target_qty,
        help="EmaCross target position, base units (default %(default)s)")
    add("--max-position", type=float, default=d.risk.max_position,
        help="risk limit on the absolute position, base units (default %(default)s)")
    add("--order-type", default=st.order_type, choices=("market", "limit"),
        help="the strategy's order type (default %(default)s)")
    add("--broker-latency-us", type=float, default=d.broker.broker_latency_us,
        help="market time before an order or a cancel reaches the paper book, µs (default "
             "%(default)s)")
    add("--queue-model", default=d.broker.queue_model, choices=QUEUE_MODELS,
        help="how the paper broker fills resting limit orders: none (when the opposite best "
             "reaches them) or risk_averse (the tick backtester's queue position; needs a lot "
             "size) (default %(default)s)")
    add("--lot-size", type=float, default=d.broker.lot_size,
        help="the instrument's lot, base units (the risk_averse queue model's; default "
             "%(default)s)")
    add("--on-strategy-error", default=st.on_strategy_error, choices=("halt", "continue"),
        help="a strategy exception halts trading and flattens, or is counted and skipped "
             "(default %(default)s)")
    add("--spike-threshold-us", type=float, default=d.housekeeping.spike_threshold_us,
        help="tick-to-trade above which a batch is a spike, µs (default %(default)s)")
    add("--hiccup-threshold-us", type=float, default=d.housekeeping.hiccup_threshold_us,
        help="the machine-hiccup probe (a native thread waking every 1 ms) blames a spike on "
             "wake-ups later than this, µs; 0: no probe (default %(default)s)")
    add("--stagger", action="store_true",
        help="prime-staggered housekeeping periods (jobs rarely share a loop turn)")
    add("--gc-mode", default=t.gc_mode, choices=GC_MODES,
        help="garbage collector setting for the run (default %(default)s)")
    add("--gil-switch-interval-us", type=float, default=None,
        help="sys.setswitchinterval for the run, in µs (default: the interpreter's 5000)")
    add("--feed-cpus", type=_cpus, default=(), help="CPU ids for the feed thread, e.g. 0")
    add("--engine-cpus", type=_cpus, default=(), help="CPU ids for the engine thread, e.g. 1")
    add("--event-loop", default=t.event_loop, choices=LOOP_CHOICES,
        help="the engine thread's asyncio loop (default %(default)s: uvloop when installed)")
    add("--feed-spin", action="store_true",
        help="the feed thread busy-polls its sockets (sim, ws: sources): a core at 100%%")
    add("--feed-warm-us", type=float, default=t.feed_warm_us,
        help="with --feed-spin: every that many µs of idle polling, run one recent message "
             "through a shadow of the path to keep it warm (e.g. 300; default 0: off)")
    add("--native-cpu", type=int, default=None,
        help="with --source native: pin the C++ handler thread to this CPU (and try "
             "SCHED_FIFO; refusals are reported in the feed counters)")
    add("--out", default=default_runs_dir(),
        help="parent directory of <run-id>/ (default: $WORKBENCH_RUNS, else runs/ of the "
             "project)")
    add("--no-journal", action="store_true", help="write no run files")
    add("--quiet", action="store_true", help="no progress line")


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """EngineConfig from parsed `workbench run` flags. Raises ConfigError for bad values."""
    return EngineConfig(
        source=args.source,
        recording=args.recording,
        venue=args.venue,
        symbols=tuple(s.strip() for s in args.symbols.split(",") if s.strip()),
        dispatch=args.dispatch,
        poll_interval_ms=args.poll_interval_ms,
        duration_s=args.duration,
        speed=args.speed,
        seed=args.seed,
        target_qty=args.target_qty,
        max_position=args.max_position,
        order_type=args.order_type,
        broker_latency_us=args.broker_latency_us,
        queue_model=args.queue_model,
        lot_size=args.lot_size,
        on_strategy_error=args.on_strategy_error,
        spike_threshold_us=args.spike_threshold_us,
        hiccup_threshold_us=args.hiccup_threshold_us,
        stagger=args.stagger,
        gc_mode=args.gc_mode,
        gil_switch_interval_us=args.gil_switch_interval_us,
        feed_cpus=args.feed_cpus,
        engine_cpus=args.engine_cpus,
        event_loop=args.event_loop,
        feed_spin=args.feed_spin,
        feed_warm_us=args.feed_warm_us,
        native_cpu=args.native_cpu,
        out_dir=None if args.no_journal else args.out,
    )


def _us(ns: int) -> str:
    return f"{ns / 1000:,.1f}"


def progress_line(snap: Snapshot) -> str:
    """One line: elapsed, events/s, tick-to-trade P50/P99 (µs), position, PnL."""
    t2t = snap.latency.get(Stage.TICK_TO_TRADE, StageLatency())
    pos = ", ".join(f"{p.symbol} {p.qty:+g}" for p in snap.positions) or "0"
    return (f"{snap.elapsed_s:6.1f}s  {snap.events:>10,} ev  {snap.events_per_s:>10,.0f}"
            f" ev/s  t2t P50 {_us(t2t.p50_ns)} µs  P99 {_us(t2t.p99_ns)} µs"
            f"  pos {pos}  PnL {snap.pnl.net_pnl:+,.4f}  [{snap.dispatch}]")


def latency_table(latency: dict[Stage, StageLatency], title: str = "latency per stage (µs)"
                  ) -> Table:
    """rich Table of the per-stage figures (P50/P99/P99.9/max in µs, count); an empty `wire`
    row says why under the table."""
    table = Table(title=title)
    for col in ("stage", "P50", "P99", "P99.9", "max", "count"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage in STAGES:
        s = latency.get(stage)
        if s is None or not s.count:
            table.add_row(stage.value + ("*" if stage is Stage.WIRE else ""),
                          "-", "-", "-", "-", "0")
            if stage is Stage.WIRE:
                table.caption = f"* wire: {WIRE_EMPTY_REASON}"
            continue
        table.add_row(stage.value, _us(s.p50_ns), _us(s.p99_ns), _us(s.p999_ns),
                      _us(s.max_ns), f"{s.count:,}")
    return table


def spike_table(summary: SpikeSummary, title: str = "spikes") -> Table:
    """rich Table of the spike attribution (`attribution.attribution_rows`): by dominant stage,
    then by primary cause, each group adding up to the spikes, with the share and (causes)
    how many spikes saw it at all."""
    table = Table(title=f"{title}: {attribution_line(summary).split(':', 1)[0]}")
    for col in ("by", "name", "spikes", "share", "saw it", "what it is"):
        table.add_column(col, justify="right" if col in ("spikes", "share", "saw it")
                         else "left")
    rows = attribution_rows(summary)
    for i, row in enumerate(rows):
        first = i == 0 or rows[i - 1].group != row.group
        last = i + 1 == len(rows) or rows[i + 1].group != row.group
        table.add_row(row.group if first else "", row.name, f"{row.spikes:,}",
                      f"{row.share:.1%}", "" if row.seen is None else f"{row.seen:,}",
                      row.note, end_section=last)
    return table


def pnl_table(status: RunStatus) -> Table:
    """rich Table of positions and PnL totals."""
    table = Table(title="positions and PnL (quote units)")
    for col in ("symbol", "qty", "avg price", "realized", "unrealized", "fees", "net"):
        table.add_column(col, justify="right")
    for p in status.positions:
        table.add_row(p.symbol, f"{p.qty:+g}", f"{p.avg_price:,.2f}",
                      f"{p.realized_pnl:+,.4f}", f"{p.unrealized_pnl:+,.4f}",
                      f"{p.fees:,.4f}", f"{p.net_pnl:+,.4f}")
    t = status.pnl
    table.add_row("total", "", "", f"{t.realized_pnl:+,.4f}", f"{t.unrealized_pnl:+,.4f}",
                  f"{t.fees:,.4f}", f"{t.net_pnl:+,.4f}")
    return table


def main(args: argparse.Namespace) -> int:
    """Run the engine until --duration, the end of the recording, or Ctrl-C."""
    from workbench.engine.engine import Engine

    config = config_from_args(args)
    console = cli_console()
    engine = Engine(config).start()
    console.print(f"run {engine.run_id}: source {config.source.source}, "
                  f"dispatch {config.dispatch}", highlight=False)
    # a terminal gets one line rewritten in place; a pipe a plain line every PLAIN_PROGRESS_S
    tty = console.is_terminal
    last = 0.0
    try:
        while not engine.wait(0.5):
            snap = engine.latest.get()
            if snap is None or args.quiet:
                continue
            if tty:
                console.print(progress_line(snap), end="\r", highlight=False)
            elif snap.elapsed_s - last >= PLAIN_PROGRESS_S:
                last = snap.elapsed_s
                console.print(progress_line(snap), highlight=False)
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping")
    finally:
        status = engine.stop(timeout_s=30.0)
    if tty:
        console.print()
    if status.events:
        console.print(latency_table(status.latency))
        console.print(pnl_table(status))
        if status.spikes:
            console.print(spike_table(status.spike_summary))
        console.print(f"events {status.events:,} in {status.elapsed_s:.1f} s "
                      f"({status.events_per_s:,.0f}/s), orders {status.orders}, fills "
                      f"{status.fills}; {attribution_line(status.spike_summary)}",
                      highlight=False)
    if status.run_dir:
        console.print(f"run files: {status.run_dir}")
    failure = failure_line(status)
    if failure:
        Console(stderr=True, soft_wrap=True).print(f"workbench run: {failure}", style="red",
                                                   markup=False, highlight=False)
        return 1
    return 0


def failure_line(status: RunStatus) -> str | None:
    """Why a finished run counts as failed, in one line, or None: its error (the run failed:
    a feed or engine thread died, the source was unreachable), or no events at all (with what
    the source reported: messages, malformed, the last connection error, ring events that
    never ended a message)."""
    if not status.finished:
        return f"the engine was still finishing when the CLI gave up (state {status.state})"
    if status.error:
        return f"run {status.run_id} failed: {status.error}"
    if status.events:
        return None
    feed = status.feed
    said = [f"{k.replace('_', ' ')}: {feed[k]:,}" for k in
            ("messages", "malformed", "unterminated_events") if feed.get(k)]
    if feed.get("last_error"):
        said.append(f"last connection error: {feed['last_error']}")
    return (f"run {status.run_id}: no events from {status.source} in {status.elapsed_s:.1f} s"
            f" ({'; '.join(said) or 'the source delivered nothing'})")
