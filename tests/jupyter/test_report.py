"""The nightly report: real papermill + nbconvert; offline HTML with every figure's data inside."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import nbformat
import polars as pl
import pytest

from workbench.bench import history
from workbench.jupyter import plots
from workbench.jupyter.report import KERNEL_NAME, ensure_kernelspec

CDN_HOSTS = ("cdn.bokeh.org", "cdnjs.cloudflare.com", "unpkg.com", "cdn.jsdelivr.net/npm/@jupyter")
DOCS_JSON = re.compile(r"const docs_json = (\{.*?\});\n", re.DOTALL)


def _docs(html: str) -> list[dict]:
    return [json.loads(m) for m in DOCS_JSON.findall(html)]


def _sources(doc: dict) -> list[dict]:
    """Every ColumnDataSource's data in one embedded bokeh document (walks the JSON)."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource" and "attributes" in node:
                data = node["attributes"]["data"]
                found.append({e[0]: e[1] for e in data["entries"]} if "entries" in data else data)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    return found


def test_kernelspec_is_this_interpreter_and_idempotent() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    assert ensure_kernelspec() == KERNEL_NAME
    spec_dir = KernelSpecManager().find_kernel_specs()[KERNEL_NAME]
    mtime = (Path(spec_dir) / "kernel.json").stat().st_mtime_ns
    assert ensure_kernelspec() == KERNEL_NAME
    assert (Path(spec_dir) / "kernel.json").stat().st_mtime_ns == mtime  # not reinstalled
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


def test_report_loads_nothing_from_a_cdn(nightly_report: dict[str, Path]) -> None:
    html = nightly_report["html"].read_text(encoding="utf-8")
    assert not re.findall(r"<(?:script|link|img|iframe)[^>]+(?:src|href)\s*=\s*[\"']?https?:", html)
    assert not re.findall(r"import\(\s*[\"']https?:", html)
    for host in CDN_HOSTS:
        assert host not in html, host
    assert "BokehJS" in html or "Bokeh" in html  # BokehJS is inlined instead
    assert (nightly_report["out"] / "nightly-latest.html").read_text(encoding="utf-8") == html


def test_report_hides_code_and_shows_results(nightly_report: dict[str, Path],
                                             report_phases: list[str]) -> None:
    html = nightly_report["html"].read_text(encoding="utf-8")
    assert "run_phases(select(phases)" not in html  # code cells hidden
    assert "claimed vs measured" in html
    for phase in report_phases:
        assert phase in html


def test_every_figure_embeds_its_data(nightly_report: dict[str, Path],
                                      report_phases: list[str]) -> None:
    html = nightly_report["html"].read_text(encoding="utf-8")
    nb = nbformat.read(nightly_report["ipynb"], as_version=4)
    shown = sum("application/vnd.bokehjs_exec.v0+json" in o.get("data", {})
                for c in nb.cells for o in c.get("outputs", []))
    docs = _docs(html)
    assert shown >= 2 and len(docs) == shown
    # the ratio trend figure carries exactly the history's ratios, run by run
    hist = history.load(nightly_report["history"])
    assert hist["run_id"].n_unique() == 2
    ratio_lines = {}
    for doc in docs:
        for data in _sources(doc):
            if {"night", "y", "phase"} <= set(data) and data["phase"]:
                ratio_lines.setdefault(data["phase"][0], []).append(data["y"])
    for phase in report_phases:
        expected = (hist.filter(pl.col("phase") == phase).sort("time_utc")["ratio"].to_list())
        assert any(all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(ys, expected,
                                                                        strict=True))
                   for ys in ratio_lines[phase]), (phase, ratio_lines[phase], expected)


def _record(run: int, p99: float, items_per_s: float) -> dict:
    return {"run_id": f"run{run:02d}", "time_utc": f"2026-11-{run + 1:02d}T02:00:00+00:00",
            "phase": "spikes.demo", "topic": "spikes", "metric": "latency", "status": "ok",
            "verdict": "confirmed", "quick": True, "ratio": 2.0,
            "optimized_p99_ns": p99, "optimized_items_per_s": items_per_s,
            "baseline_p99_ns": 2 * p99, "baseline_items_per_s": items_per_s / 2}


def test_trends_flag_the_night_that_regressed(tmp_path: Path) -> None:
    # 8 steady nights, then P99 25% worse than the median of the last 7, then throughput 30%
    # worse: exactly those two nights are ringed, on their own figure each.
    records = [_record(i, 1000.0 + i, 1e6) for i in range(8)]
    records += [_record(8, 1250.0 * 1.004, 1e6), _record(9, 1004.0, 0.7e6)]
    store = tmp_path / "h.parquet"
    history.append(records, store)
    trends = plots.nightly_trends(history.load(store))
    assert trends.nights == 10
    titles = {f.title.text: f for f in trends.figures}
    p99_fig = next(f for t, f in titles.items() if "P99" in t)
    tput_fig = next(f for t, f in titles.items() if "throughput" in t)

    def ringed(fig: object) -> list[str]:
        xs = []
        for r in fig.renderers:
            if getattr(r.glyph, "line_color", None) == "red":
                xs += list(r.data_source.data["x"])
        return xs

    labels = p99_fig.x_range.factors
    assert ringed(p99_fig) == [labels[8]]
    assert ringed(tput_fig) == [labels[9]]


@pytest.mark.parametrize("bad", [["no.such_phase"]])
def test_report_failure_names_the_executed_notebook(tmp_path: Path, bad: list[str]) -> None:
    from workbench.jupyter.report import ReportError, build_report

    with pytest.raises(ReportError, match=r"nightly-.*\.ipynb"):
        build_report(tmp_path, quick=True, history=tmp_path / "h.parquet", phases=bad,
                     timeout_s=120)
