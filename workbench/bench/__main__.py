"""`python -m workbench.bench` (and `workbench bench`): list and run the optimization phases.

  list                                   one phase a line: name, topic, claim
  run [PHASE|TOPIC ...] [--quick] [--json PATH] [--no-history]
  TOPIC|PHASE [...] [--quick] [--json PATH]      shorthand for `run TOPIC`

Without names, `run` measures every phase of every topic module that exists (a topic not written
yet is skipped with a note); an unknown or missing name lists the valid ones and exits 2. Every
run prints the claimed-vs-measured table and appends its records to the history parquet
(`workbench.bench.history`); `--json` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workbench.bench import history
from workbench.bench.registry import Phase, all_phases, load_topics, select
from workbench.bench.report import cause_notes, context_notes, results_table
from workbench.bench.runner import PhaseResult, run_phases
from workbench.errors import UnknownPhase


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `workbench bench` / `python -m workbench.bench` (options may sit anywhere)."""
    parser.add_argument("targets", nargs="*", metavar="list | run [PHASE|TOPIC ...] | TOPIC",
                        help="'list', 'run' followed by phase or topic names, or names alone")
    parser.add_argument("--quick", action="store_true", help="small inputs, fewer repeats")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the records here")
    parser.add_argument("--no-history", action="store_true",
                        help=f"do not append to the history parquet (${history.ENV_VAR})")
    # `run --quick ring` mixes options and names; plain parse_args would reject it.
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]


def _list(console: Console) -> int:
    skipped = load_topics()
    for p in all_phases():
        console.print(f"{p.name:<34} {p.topic:<14} {p.claim.text}", highlight=False,
                      soft_wrap=True)
    for topic, why in skipped.items():
        console.print(f"[dim]({topic}: {why}; skipped)[/dim]", highlight=False)
    return 0


def _run(names: list[str], args: argparse.Namespace, console: Console) -> int:
    err = Console(stderr=True)
    try:
        skipped = {} if names else load_topics()
        phases = select(names)
    except UnknownPhase as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    except Exception:  # a requested topic module that fails to import: say where, exit 1
        err.print_exception(max_frames=4)
        return 1
    for topic, why in skipped.items():
        err.print(f"[dim]note: topic {topic!r} skipped ({why})[/dim]", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("bench", total=len(phases))

        def progress(phase: Phase, stage: str) -> None:
            bar.update(task, description=f"{phase.name}: {stage}")

        def done(res: PhaseResult) -> None:
            bar.advance(task)
            finished.append(res)
            if not err.is_terminal:  # logs (CI, papermill) get one line per phase instead
                err.print(f"[{len(finished)}/{len(phases)}] {res.phase.name}: {res.verdict} "
                          f"in {res.seconds:.1f} s", highlight=False)

        finished: list[PhaseResult] = []
        results, records = run_phases(phases, quick=args.quick, progress=progress,
                                      on_result=done)
    console.print(results_table(results))
    for line in cause_notes(results) + context_notes(results):
        console.print(line, highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1, default=str), encoding="utf-8")
        console.print(f"records: {args.json}")
    if not args.no_history and records:
        console.print(f"history: {history.append(records)}")
    bad = [r for r in results if r.status != "ok"]
    return 1 if bad else 0


def main(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit code (2 for unknown names, 1 if any phase was
    invalid or failed)."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    targets = list(args.targets)
    if not targets or targets[0] == "list":
        return _list(console)
    if targets[0] == "run":
        return _run(targets[1:], args, console)
    return _run(targets, args, console)


def cli(argv: list[str] | None = None) -> int:
    """Entry point of `python -m workbench.bench`."""
    parser = argparse.ArgumentParser(prog="python -m workbench.bench",
                                     description="the optimization-phase catalogue")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
