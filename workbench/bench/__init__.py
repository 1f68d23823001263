"""The optimization-phase catalogue: `python -m workbench.bench list | run | TOPIC`.

From Python (names imported on first use, PEP 562):

    from workbench.bench import history, load_topics, results_table, run_phases, select

    results, records = run_phases(select(["ring"]), quick=True)
    Console().print(results_table(results))
    history.append(records)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.lazy import exports

if TYPE_CHECKING:
    from workbench.bench import history
    from workbench.bench.registry import (
        Claim,
        Outcome,
        Phase,
        all_phases,
        load_topics,
        register,
        select,
    )
    from workbench.bench.report import results_table
    from workbench.bench.runner import PhaseResult, run_phase, run_phases

__all__ = [
    "Claim",
    "Outcome",
    "Phase",
    "PhaseResult",
    "all_phases",
    "history",
    "load_topics",
    "register",
    "results_table",
    "run_phase",
    "run_phases",
    "select",
]

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Claim": "workbench.bench.registry",
    "Outcome": "workbench.bench.registry",
    "Phase": "workbench.bench.registry",
    "all_phases": "workbench.bench.registry",
    "load_topics": "workbench.bench.registry",
    "register": "workbench.bench.registry",
    "select": "workbench.bench.registry",
    "results_table": "workbench.bench.report",
    "PhaseResult": "workbench.bench.runner",
    "run_phase": "workbench.bench.runner",
    "run_phases": "workbench.bench.runner",
}
# public submodules: the bench history parquet (append, load, regressions)
_SUBMODULES = frozenset({"history"})


__getattr__, __dir__ = exports(__name__, _EXPORTS, _SUBMODULES)
