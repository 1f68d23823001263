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
    assert "Tonight: claimed against measured" in html and "hft-summary" in html
    for phase in report_phases:
        assert phase in html


def test_every_figure_embeds_its_data(nightly_report: dict[str, Path],
                                      report_phases: list[str]) -> None:
    html = nightly_report["html"].read_text(encoding="utf-8")
    nb = nbformat.read(nightly_report["ipynb"], as_version=4)
    shown = sum("application/vnd.bokehjs_exec.v0+json" in o.get("data", {})
                for c in nb.cells for o in c.get("outputs", []))
    docs = _docs(html)
    assert shown >= 1 and len(docs) == shown
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


def _record(run: int, ratio: float, items_per_s: float = 1e6) -> dict:
    return {"run_id": f"run{run:02d}", "time_utc": f"2026-11-{run + 1:02d}T02:00:00+00:00",
            "phase": "spikes.demo", "topic": "spikes", "metric": "latency", "status": "ok",
            "verdict": "confirmed", "quick": True, "ratio": ratio,
            "optimized_p99_ns": 1000.0, "optimized_items_per_s": items_per_s,
            "baseline_p99_ns": 2000.0, "baseline_items_per_s": items_per_s / 2}


def _ringed(fig: object) -> list[str]:
    xs = []
    for r in fig.renderers:
        if getattr(r.glyph, "line_color", None) == "red":
            xs += list(r.data_source.data["x"])
    return xs


def test_trends_flag_the_night_whose_ratio_fell_below_the_band(tmp_path: Path) -> None:
    # night 2 collapses with 2 nights of history (not flagged), 8 steady nights, night 11
    # collapses (flagged); night 12's throughput halves with a steady ratio (not flagged)
    ratios = [2.0, 2.05, 0.5, 2.0, 1.95, 2.0, 2.02, 1.98, 2.0, 2.01, 1.99, 1.0, 2.0]
    records = [_record(i, r, 0.5e6 if i == 12 else 1e6) for i, r in enumerate(ratios)]
    store = tmp_path / "h.parquet"
    history.append(records, store)
    trends = plots.nightly_trends(history.load(store))
    assert trends.nights == 13 and len(trends.figures) == 1  # one figure per topic
    [fig] = trends.figures
    assert fig.title.text.startswith("spikes:")
    assert _ringed(fig) == [fig.x_range.factors[11]]
    assert fig.legend[0] in fig.below  # legend under the plot: never clipped


@pytest.mark.parametrize("bad", [["no.such_phase"]])
def test_report_failure_names_the_executed_notebook(tmp_path: Path, bad: list[str]) -> None:
    from workbench.jupyter.report import ReportError, build_report

    with pytest.raises(ReportError, match=r"nightly-.*\.ipynb"):
        build_report(tmp_path, quick=True, history=tmp_path / "h.parquet", phases=bad,
                     timeout_s=120)


def _summary_cells(html: str) -> list[str]:
    table = re.split(r"<table class=[\"']hft-summary[\"']>", html, maxsplit=1)[1]
    table = table.split("</table>", 1)[0]
    return [re.sub(r"<[^>]+>", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                      table, re.DOTALL)]


def test_summary_table_is_formatted_with_a_key_and_no_flag_without_history(
        nightly_report: dict[str, Path], report_phases: list[str]) -> None:
    html = nightly_report["html"].read_text(encoding="utf-8")
    cells = _summary_cells(html)
    assert len(cells) == 7 * len(report_phases)
    text = " ".join(cells)
    assert not re.search(r"\d\.\d{4,}", text)  # no raw float (0.200625)
    assert "..." not in text and "…" not in text
    assert all(re.search(r"\d\.\d{1,3}x \[\d", c) for c in cells[2::7])  # ratio [min-max]
    # the second run of the history: one earlier run, so nothing can be flagged
    assert all(c.startswith("· not enough history (1 earlier run)") for c in cells[6::7])
    assert "not enough history: no phase has 5 earlier runs with quick=True" in html
    assert "REGRESSION" not in html
    for verdict in ("CONFIRMED", "LARGER", "SMALLER", "REFUTED", "MEASURED", "INVALID"):
        assert verdict in html  # the key
    for label in ("machine", "kernel", "commit", "python", "hiccups", "packages"):
        assert f">{label}</th>" in html
    assert "logical cores" in html and "/s over 5 µs" in html


def test_status_file_and_exit_code(nightly_report: dict[str, Path], tmp_path: Path) -> None:
    from workbench.bench.registry import Claim, Outcome, Phase
    from workbench.bench.runner import run_phases
    from workbench.jupyter.nightly import write_status
    from workbench.jupyter.report import failed_phases, status_path

    assert failed_phases(status_path(nightly_report["html"])) == ([], 2)

    def boom(_prepared: object) -> Outcome:
        raise RuntimeError("boom")

    broken = Phase(name="fake.broken", topic="fake", claim=Claim("x", 2.0),
                   prepare=lambda q: None, metric="time", repeats=1, warmup=0,
                   baseline=boom, optimized=boom, check=lambda a, b: None)
    results, _ = run_phases([broken], quick=True)
    write_status(tmp_path / "s.json", results)
    assert failed_phases(tmp_path / "s.json") == (["fake.broken"], 1)


def test_progress_lines_pass_only_the_notebook_progress() -> None:
    import io

    from workbench.jupyter.report import ProgressLines

    out = io.StringIO()
    lines = ProgressLines(out)
    lines.write("noise\nhft-report: phase 1 of 2: a")
    assert out.getvalue() == ""  # the line is not complete yet
    lines.write(" (0 s so far)\nmore noise\nhft-report: phase 1 of 2: a: confirmed\n")
    assert out.getvalue() == ("report: phase 1 of 2: a (0 s so far)\n"
                              "report: phase 1 of 2: a: confirmed\n")
    assert lines.lines == 2
