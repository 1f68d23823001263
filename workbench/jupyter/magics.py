"""The `%hft` line magic: drive the engine from a notebook.

    %load_ext workbench
    %hft start [flags of `workbench run`] [--no-ui]   start the engine, show the live panel
    %hft stop                                          stop it (flushes the journal)
    %hft status                                        one line: events, P50/P99, PnL, ...
    %hft dispatch callback|polling|blocking            switch the running engine
    %hft plot latency|spikes|pnl|ring                  static plot of the current/last run
    %hft bench PHASE|TOPIC ... [--quick]               run benchmark phases, print the table
    %hft profile [--seconds N] [--rate HZ]             py-spy flamegraph of this kernel
    %hft report [--quick] [--out DIR]                  the nightly HTML report

Parsing uses IPython's `magic_arguments`; a bad command or flag raises `UsageError` carrying the
usage. Expected mistakes (stop with nothing running, start twice, a missing recording) print
one line, never a traceback. `%unload_ext workbench` stops the engine.
"""

from __future__ import annotations

import argparse
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import (
    MagicArgumentParser,
    argument,
    magic_arguments,
    parse_argstring,
)

from workbench.errors import WorkbenchError

COMMANDS = ("start", "stop", "status", "dispatch", "plot", "bench", "profile", "report")
PLOTS = ("latency", "spikes", "pnl", "ring")


USAGE = f"usage: %hft {{{','.join(COMMANDS)}}} [flags]"


class _Parser(MagicArgumentParser):
    """A sub-command parser whose errors carry the usage line."""

    def __init__(self, prog: str, description: str | None = None) -> None:
        super().__init__(prog=prog, description=description,
                         formatter_class=argparse.HelpFormatter)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


def _start_parser() -> _Parser:
    from workbench.engine.run import add_arguments

    parser = _Parser(prog="%hft start", description="start the engine (flags of workbench run)")
    add_arguments(parser)
    parser.add_argument("--no-ui", action="store_true",
                        help="do not display the live panel and plots")
    return parser


def _parsers() -> dict[str, _Parser]:
    from workbench.engine.config import DISPATCH_MODES

    p: dict[str, _Parser] = {
        "stop": _Parser(prog="%hft stop"),
        "status": _Parser(prog="%hft status"),
        "dispatch": _Parser(prog="%hft dispatch"),
        "plot": _Parser(prog="%hft plot"),
        "bench": _Parser(prog="%hft bench"),
        "profile": _Parser(prog="%hft profile"),
        "report": _Parser(prog="%hft report"),
    }
    p["stop"].add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    p["dispatch"].add_argument("mode", choices=DISPATCH_MODES)
    p["plot"].add_argument("what", choices=PLOTS)
    p["bench"].add_argument("names", nargs="+", metavar="PHASE|TOPIC")
    p["bench"].add_argument("--quick", action="store_true", help="small inputs, fewer repeats")
    p["profile"].add_argument("--seconds", type=float, default=5.0, help="sampling duration")
    p["profile"].add_argument("--rate", type=int, default=200, help="samples per second")
    p["report"].add_argument("--quick", action="store_true", help="quick benchmark inputs")
    p["report"].add_argument("--out", default=None, help="output directory")
    return p


def _say(text: str) -> None:
    print(f"hft: {text}")


@magics_class
class HftMagics(Magics):
    """The `%hft` magics; one engine session per IPython shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        from workbench.jupyter.panel import Session

        self.session = Session()
        self._sub: dict[str, _Parser] | None = None

    def _parser(self, command: str) -> _Parser:
        if command == "start":
            return _start_parser()
        if self._sub is None:
            self._sub = _parsers()
        return self._sub[command]

    @magic_arguments()
    @argument("command", choices=COMMANDS, help="what to do")
    @argument("args", nargs=argparse.REMAINDER, help="flags of the command")
    @line_magic
    def hft(self, line: str) -> Any:
        """Drive the hft-workbench engine: start, stop, status, dispatch, plot, bench, profile,
        report. `%hft COMMAND --help`-style usage is shown on any bad flag."""
        try:
            top = parse_argstring(self.hft, line)
        except UsageError as exc:
            raise UsageError(f"%hft: {exc}\n{USAGE}") from None
        args = self._parser(top.command).parse_args(top.args)
        try:
            return getattr(self, f"_cmd_{top.command}")(args)
        except WorkbenchError as exc:
            _say(str(exc))
            return None

    def _cmd_start(self, args: argparse.Namespace) -> None:
        from workbench.engine.run import config_from_args

        if self.session.running:
            _say(f"already running ({self.session.describe()}); %hft stop first")
            return
        config = config_from_args(args)
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

    def _cmd_bench(self, args: argparse.Namespace) -> None:
        from rich.console import Console

        from workbench.bench import results_table, run_phases, select

        results, _ = run_phases(select(args.names), quick=args.quick)
        Console(width=140).print(results_table(results))

    def _cmd_profile(self, args: argparse.Namespace) -> None:
        from workbench.jupyter.profile import profile_kernel

        profile_kernel(args.seconds, rate=args.rate, session=self.session)

    def _cmd_report(self, args: argparse.Namespace) -> None:
        from pathlib import Path

        from IPython.display import FileLink, display

        from workbench.jupyter.report import DEFAULT_OUT, build_report

        html = build_report(Path(args.out) if args.out else DEFAULT_OUT, quick=args.quick)
        _say(f"report written to {html}")
        display(FileLink(str(html)))


_registered: dict[int, HftMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext workbench`: register `%hft` on this shell (idempotent)."""
    if id(ipython) in _registered:
        return
    magics = HftMagics(ipython)
    ipython.register_magics(magics)
    _registered[id(ipython)] = magics
    magics.session.prepare()


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext workbench`: stop the running engine (if any), remove `%hft`."""
    magics = _registered.pop(id(ipython), None)
    ipython.magics_manager.magics["line"].pop("hft", None)
    if magics is not None and magics.session.running:
        _say(magics.session.stop(5.0))
