"""The `%hft` magics: drive the engine from a notebook (`%hft --help` lists the commands).

    %load_ext workbench
    %hft start [flags of `workbench run`] [--no-ui]   start the engine, show the live panel
    %hft stop | status | dispatch MODE | plot WHAT | profile | bench | report | ...
    %%hft profile                                      profile the cell (py-spy flamegraph)

`%hft --help` (or `%hft?`, `%hft help`) lists the commands; `%hft COMMAND --help` lists the
command's flags with their help text: `%hft start --help` prints the flags of `workbench run`,
built from the same definition (`workbench.engine.run.add_arguments`). A bad command or flag
raises `UsageError` carrying the usage. Expected mistakes (stop with nothing running, start
twice, a missing recording) print one line, never a traceback. `%unload_ext workbench` stops
the engine.

`%load_ext` imports nothing heavy (this module needs IPython only): the engine, bokeh and the
widgets are imported by the first command that needs them.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

from workbench.errors import WorkbenchError

COMMANDS: dict[str, str] = {
    "start": "start the engine and show the live panel (the flags of `workbench run`)",
    "stop": "stop the running engine (flushes its journal, writes its run files)",
    "status": "one line about the current or last run",
    "dispatch": "switch the running engine's dispatch: polling | blocking | callback",
    "plot": "static plot of the current or last run: latency | spikes | pnl | ring",
    "spikes": "the worst spikes with their stage breakdown and causes (--top N, --run RUN)",
    "load": "plot a saved run: latency CDFs per stage, spikes by stage and cause, PnL",
    "compare": "two saved runs side by side: per-stage P50/P99 and their ratio, CDFs, spikes",
    "profile": "py-spy flamegraph of this kernel for --seconds (%%hft profile: of the cell)",
    "bench": "run benchmark phases or topics, print the claimed-vs-measured table",
    "report": "the nightly HTML report (papermill + nbconvert)",
    "backtest": "the tick backtester on a recording (the flags of `workbench backtest`)",
    "help": "this list",
}
PLOTS = ("latency", "spikes", "pnl", "ring")
HELP_FLAGS = ("-h", "--help")

USAGE = f"usage: %hft {{{','.join(COMMANDS)}}} [flags]"


def help_text() -> str:
    """What `%hft --help` and `%hft?` show: the usage and one line per command."""
    width = max(map(len, COMMANDS))
    lines = [USAGE, "", "Drive the hft-workbench engine from this notebook.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "%hft COMMAND --help lists the command's flags; %%hft profile profiles a "
              "cell."]
    return "\n".join(lines)


class _Parser(MagicArgumentParser):
    """A sub-command parser whose errors carry the usage line."""

    def __init__(self, prog: str, description: str | None = None) -> None:
        super().__init__(prog=prog, description=description,
                         formatter_class=argparse.HelpFormatter)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


def _start_parser() -> _Parser:
    from workbench.engine.run import add_arguments

    parser = _Parser(prog="%hft start", description=COMMANDS["start"])
    add_arguments(parser)
    parser.add_argument("--no-ui", action="store_true",
                        help="do not display the live panel and plots")
    return parser


def _parser(command: str) -> _Parser:
    """The parser of `%hft COMMAND` (ValueError for an unknown command)."""
    if command == "start":
        return _start_parser()
    p = _Parser(prog=f"%hft {command}", description=COMMANDS[command])
    add = p.add_argument
    if command == "stop":
        add("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    elif command == "dispatch":
        add("mode", choices=("polling", "blocking", "callback"), help="the dispatch mode")
    elif command == "plot":
        add("what", choices=PLOTS, help="which plot")
    elif command == "spikes":
        add("--top", type=int, default=20, help="how many of the worst spikes (default 20)")
        add("--run", default=None, help="a saved run (id or path) instead of the current one")
    elif command == "load":
        add("run", help="run id (under --out) or the path of a run directory")
        add("--out", default=None, help="runs directory (default: the project's runs/)")
    elif command == "compare":
        add("run_a", help="run id or path")
        add("run_b", help="run id or path")
        add("--out", default=None, help="runs directory (default: the project's runs/)")
    elif command == "bench":
        add("names", nargs="+", metavar="PHASE|TOPIC", help="phases or topics to run")
        add("--quick", action="store_true", help="small inputs, fewer repeats")
    elif command == "profile":
        add("--seconds", type=float, default=5.0,
            help="sampling duration (line magic only; default 5)")
        add("--rate", type=int, default=200, help="samples per second (default 200)")
    elif command == "backtest":
        from workbench.backtest.tick.backtest_cmd import add_arguments

        add_arguments(p)
    elif command == "report":
        add("--quick", action="store_true", help="quick benchmark inputs")
        add("--out", default=None, help="output directory")
    return p


def _say(text: str) -> None:
    print(f"hft: {text}")


@magics_class
class HftMagics(Magics):
    """The `%hft` magics; one engine session per IPython shell (created on first use)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._session: Any = None

    @property
    def session(self) -> Any:
        """The shell's `panel.Session` (imports the engine side on first use)."""
        if self._session is None:
            from workbench.jupyter.panel import Session

            self._session = Session()
        return self._session

    @line_cell_magic
    def hft(self, line: str, cell: str | None = None) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%hft: {exc}\n{USAGE}") from None
        if not words:
            raise UsageError(f"%hft: a command is required\n{help_text()}")
        command, rest = words[0], words[1:]
        if command in (*HELP_FLAGS, "help"):
            print(help_text())
            return None
        if command not in COMMANDS:
            raise UsageError(f"%hft: unknown command {command!r}\n{help_text()}")
        if cell is not None and command != "profile":
            raise UsageError(f"%%hft: only `%%hft profile` is a cell magic, got {command!r}")
        parser = _parser(command)
        if any(w in HELP_FLAGS for w in rest):
            print(parser.format_help())
            return None
        args = parser.parse_args(rest)
        try:
            if cell is not None:
                return self._cell_profile(args, cell)
            return getattr(self, f"_cmd_{command}")(args)
        except WorkbenchError as exc:
            _say(str(exc))
            return None

    def _cmd_start(self, args: argparse.Namespace) -> None:
        from workbench.engine.run import config_from_args

        if self.session.running:
            _say(f"already running ({self.session.describe()}); %hft stop first")
            return
        config = config_from_args(args)
        if not args.no_ui:  # build the UI first: building it while the engine runs is a spike
            self.session.prepare()
        self.session.start(config)
        _say(f"started {self.session.describe()}")
        if not args.no_ui:
            self.session.show()

    def _cmd_stop(self, args: argparse.Namespace) -> None:
        if not self.session.running:
            _say("no engine running")
            return
        _say(self.session.stop(args.timeout))

    def _cmd_status(self, _args: argparse.Namespace) -> None:
        _say(self.session.status_line())

    def _cmd_dispatch(self, args: argparse.Namespace) -> None:
        if not self.session.running:
            _say("no engine running; %hft start first")
            return
        self.session.set_dispatch(args.mode)
        _say(f"dispatch is now {args.mode}")

    def _cmd_plot(self, args: argparse.Namespace) -> None:
        self.session.plot(args.what)

    def _cmd_spikes(self, args: argparse.Namespace) -> None:
        from IPython.display import HTML, display

        from workbench.jupyter.saved import spikes_html
        from workbench.latency.attribution import attribution_line

        if args.run is not None:
            from workbench.runs import load

            run = load(args.run)
            summary, name = run.spikes, f"run {run.run_id}"
        else:
            engine = self.session.engine
            if engine is None:
                _say("no run yet; %hft start, or --run RUN for a saved one")
                return
            summary, name = engine.spikes.summary(), f"run {engine.run_id}"
        worst = summary.worst[:max(0, args.top)]
        display(HTML(spikes_html(worst, f"{name}: the {len(worst)} worst of "
                                        f"{attribution_line(summary)}")))

    def _cmd_load(self, args: argparse.Namespace) -> None:
        from workbench.jupyter import plots
        from workbench.jupyter.panel import ensure_bokeh_loaded
        from workbench.jupyter.saved import run_layout
        from workbench.runs import load

        run = load(args.run, args.out)
        _say(run.describe())
        ensure_bokeh_loaded()
        plots.show_static(run_layout(run))

    def _cmd_compare(self, args: argparse.Namespace) -> None:
        from IPython.display import HTML, display

        from workbench.jupyter import plots
        from workbench.jupyter.panel import ensure_bokeh_loaded
        from workbench.jupyter.saved import compare_html, compare_layout
        from workbench.runs import load

        a, b = load(args.run_a, args.out), load(args.run_b, args.out)
        display(HTML(compare_html(a, b)))
        ensure_bokeh_loaded()
        plots.show_static(compare_layout(a, b))

    def _cmd_help(self, _args: argparse.Namespace) -> None:
        print(help_text())

    def _cmd_bench(self, args: argparse.Namespace) -> None:
        from rich.console import Console

        from workbench.bench import results_table, run_phases, select

        results, _ = run_phases(select(args.names), quick=args.quick)
        Console(width=140).print(results_table(results))

    def _cmd_backtest(self, args: argparse.Namespace) -> Any:
        """Run the tick backtest, print its stats, return the TickResult (frames, stats())."""
        from workbench.backtest.tick.backtest_cmd import run

        result = run(args)
        for name, value in result.stats().items():
            print(f"{name:>18}  {value}")
        return result

    def _cmd_profile(self, args: argparse.Namespace) -> None:
        from workbench.jupyter.profile import profile_kernel

        profile_kernel(args.seconds, rate=args.rate, session=self.session)

    def _cell_profile(self, args: argparse.Namespace, cell: str) -> Any:
        from workbench.jupyter.profile import profile_cell

        return profile_cell(lambda: self.shell.run_cell(cell), rate=args.rate,
                            session=self.session)

    def _cmd_report(self, args: argparse.Namespace) -> None:
        from pathlib import Path

        from IPython.display import FileLink, display

        from workbench.jupyter.report import DEFAULT_OUT, build_report

        html = build_report(Path(args.out) if args.out else DEFAULT_OUT, quick=args.quick)
        _say(f"report written to {html}")
        display(FileLink(str(html)))


HftMagics.hft.__doc__ = help_text()  # what `%hft?` shows

_registered: dict[int, HftMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: register `%hft` / `%%hft` on this shell (idempotent)."""
    if id(ipython) in _registered:
        return
    magics = HftMagics(ipython)
    ipython.register_magics(magics)
    _registered[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext workbench`: stop the running engine (if any), remove `%hft`."""
    magics = _registered.pop(id(ipython), None)
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("hft", None)
    if magics is not None and magics._session is not None and magics.session.running:
        _say(magics.session.stop(5.0))
