"""The `workbench` command. Each subcommand lives in the module that owns its feature.

A subcommand module exposes `add_arguments(parser)` and `main(args) -> int`; it is imported only
when its command runs, so `workbench feed` does not pay for numba or Jupyter imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from workbench.errors import WorkbenchError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("workbench.engine.run", "run the paper engine on sim, a recording, a ring or ws"),
    "runs": ("workbench.runs", "saved runs: list, show, compare two, repair after a crash"),
    "feed": ("workbench.feed.handler", "publish into a shared-memory ring (C++): an event "
             "file, or a venue read live (--venue)"),
    "rings": ("workbench.feed.ring", "list the shared-memory rings on this machine"),
    "record": ("workbench.feed.capture", "capture a live websocket session to a replayable file"),
    "inspect": ("workbench.feed.inspect", "what a recording holds, replayed through the book"),
    "convert": ("workbench.backtest.tick.convert_cmd", "a recording to a tick event file"),
    "backtest": ("workbench.backtest.tick.backtest_cmd", "the tick backtester on a recording"),
    "bench": ("workbench.bench.__main__", "the optimization-phase catalogue"),
    "report": ("workbench.jupyter.report", "run the nightly notebook and export an HTML report"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="hft-workbench: measure and explain a Python trading path.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()),
    )
    parser.add_argument("command", choices=list(SUBCOMMANDS), metavar="command")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `workbench` console script. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2
    name = argv[0]
    module_name, text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"workbench {name}", description=text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
