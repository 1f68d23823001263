"""notebooks/backtest_lab.ipynb executed by papermill (real kernel) with tiny parameters."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm

from workbench.jupyter.report import ensure_kernelspec
from workbench.shared_data import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "backtest_lab.ipynb"
BOKEH_EXEC_MIME = "application/vnd.bokehjs_exec.v0+json"
TINY = dict(days=2.0, phase0_minutes=60, kernel_repeats=2, sweep_days=1.0, lookbacks=[20, 40],
            vol_mults=[2.0, 3.0], sweep_workers=1, plot_hours=6.0)


def test_backtest_lab_runs_under_papermill(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "backtest_lab.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=TINY,
                        kernel_name=ensure_kernelspec(), cwd=str(tmp_path),
                        execution_timeout=240, progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "16 symbols x 2,880 minutes = 46,080 bar-steps" in text
    trades = dict(re.findall(r"(TrueBreakout|Fakeout): ([\d,]+) trades", text))
    assert set(trades) == {"TrueBreakout", "Fakeout"}
    assert all(int(n.replace(",", "")) > 0 for n in trades.values())
    assert re.search(r"identical trades in all phases: \d+ trades on 960 bar-steps", text)
    assert "64 runs (4 grid points x 16 symbols)" in text
    # equity + per-symbol PnL, trades on price, phase speedups, sweep heatmap
    assert sum(BOKEH_EXEC_MIME in o.get("data", {}) for o in outputs) == 4
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "cdn.bokeh.org" not in html
