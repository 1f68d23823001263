"""notebooks/tick_backtest_lab.ipynb executed by papermill (real kernel) with small parameters."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm

from workbench.jupyter.report import ensure_kernelspec
from workbench.shared_data import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "tick_backtest_lab.ipynb"
BOKEH_EXEC_MIME = "application/vnd.bokehjs_exec.v0+json"
SMALL = dict(queues=["risk_averse", "power"], sweep_latencies_us=[1000.0], plot_seconds=30.0)


def test_tick_backtest_lab_runs_under_papermill(tmp_path: Path, shared_data: Path,
                                                monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_TICK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tick_backtest_lab.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=SMALL,
                        kernel_name=ensure_kernelspec(), cwd=str(tmp_path),
                        execution_timeout=600, progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert re.search(r"[\d,]+ rows of BTCUSDT \(tick 0\.1, lot 0\.001\)", text)
    fills = re.search(r"(\d+) fills of (\d+) orders", text)
    assert fills and int(fills.group(1)) > 0
    assert "attribution sums to total: True" in text
    assert "2 runs (1 latencies x 2 queue models)" in text
    # price + inventory + queue, attribution, latency model
    assert sum(BOKEH_EXEC_MIME in o.get("data", {}) for o in outputs) == 3
