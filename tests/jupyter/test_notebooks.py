"""Every notebook executed by papermill (real kernel) with small parameters; outputs checked."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from workbench.jupyter.report import ensure_kernelspec
from workbench.shared_data import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
BOKEH_EXEC_MIME = "application/vnd.bokehjs_exec.v0+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _execute(name: str, tmp_path: Path, **params: object) -> nbformat.NotebookNode:
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params,
                        kernel_name=ensure_kernelspec(), cwd=str(tmp_path),
                        execution_timeout=240, progress_bar=False)
    return nbformat.read(out, as_version=4)


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


def _outputs(nb: nbformat.NotebookNode, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def test_every_notebook_has_a_parameters_cell() -> None:
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert {"quickstart.ipynb", "latency_lab.ipynb", "nightly_benchmarks.ipynb"} <= set(names)
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name


def test_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))  # the kernel inherits it
    nb = _execute("quickstart.ipynb", tmp_path, watch_s=1.5)
    text = _text(nb)
    statuses = re.findall(r"running \[(\w+)\]: ([\d,]+) events", text)
    assert [mode for mode, _ in statuses] == ["callback", "polling", "callback"]
    counts = [int(n.replace(",", "")) for _, n in statuses]
    assert 0 < counts[0] < counts[1] < counts[2]  # the engine kept running through the switches
    stopped = re.search(r"hft: stopped run (\S+): ([\d,]+) events", text)
    assert stopped and int(stopped.group(2).replace(",", "")) >= counts[2]
    assert (tmp_path / "runs" / stopped.group(1) / "summary.json").exists()
    assert _outputs(nb, WIDGET_MIME) == 1  # the panel
    assert _outputs(nb, BOKEH_EXEC_MIME) == 3  # plot latency, spikes, pnl


def test_latency_lab(tmp_path: Path, shared_data: Path) -> None:
    nb = _execute("latency_lab.ipynb", tmp_path, seconds=2.0)
    text = _text(nb)
    runs = dict(re.findall(r"(callback|polling): ([\d,]+) events in", text))
    assert set(runs) == {"callback", "polling"}
    assert all(int(n.replace(",", "")) > 1000 for n in runs.values())
    assert "error: None" in text and _outputs(nb, BOKEH_EXEC_MIME) >= 3
    # the polling run's spikes are explained by the queue stage (50 ms poll interval)
    assert re.search(r"polling: [\d,]+ spikes; \d+% of them spent most of their time in the "
                     r"'queue' stage", text)


@pytest.mark.parametrize("phases", [["memory.slots_quote"]])
def test_nightly_benchmarks(tmp_path: Path, phases: list[str]) -> None:
    store = tmp_path / "history.parquet"
    nb = _execute("nightly_benchmarks.ipynb", tmp_path, quick=True, phases=phases,
                  history_path=str(store))
    text = _text(nb)
    assert "1 phases measured (quick=True)" in text and "1 runs in the history" in text
    assert store.exists() and _outputs(nb, BOKEH_EXEC_MIME) >= 1
