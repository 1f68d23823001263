"""`workbench report`: run the nightly notebook with papermill and export one offline HTML file.

Steps: make sure the `hft-workbench` kernelspec (this interpreter) is registered, execute
`notebooks/nightly_benchmarks.ipynb` with papermill (named kernel, per-cell timeout), then
convert the executed notebook with nbconvert into a single self-contained HTML file: code cells
hidden (`exclude_input`), BokehJS inlined by the notebook (`plots.use_static_resources`), and a
template that drops nbconvert's CDN scripts (require.js, MathJax, mermaid, the widget manager),
so opening the file makes no network request. The notebook itself appends tonight's benchmark
results to the history store and plots the trends with the regression flags.

Progress: the notebook prints `hft-report: phase k of n: NAME` as each phase starts and ends;
papermill hands the kernel's stdout to `ProgressLines`, which shows those lines on stderr as they
come. The notebook also writes `nightly-<stamp>.status.json` (phases run, those that errored or
failed their check): `workbench report` exits 1 when a phase errored or was invalid, 0 otherwise.

Outputs in `--out` (default `runs/reports`): `nightly-<UTC stamp>.ipynb` and `.html`, the status
file, and a copy of the HTML as `nightly-latest.html`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

from workbench.errors import WorkbenchError
from workbench.shared_data import REPO_ROOT

KERNEL_NAME = "hft-workbench"
NOTEBOOK = REPO_ROOT / "notebooks" / "nightly_benchmarks.ipynb"
DEFAULT_OUT = REPO_ROOT / "runs" / "reports"
DEFAULT_HISTORY = REPO_ROOT / "data" / "bench" / "history.parquet"
CELL_TIMEOUT_S = 1800

OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""
"""nbconvert's lab template without the blocks that load scripts from a CDN."""


PROGRESS_PREFIX = "hft-report: "  # the lines the notebook prints for `ProgressLines`


class ReportError(WorkbenchError):
    """The nightly notebook failed to execute or to export."""


class ProgressLines:
    """A text stream for papermill's `stdout_file`: writes the lines that start with
    PROGRESS_PREFIX (without it) to `out` as they arrive, and drops the rest."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._partial = ""
        self.lines = 0

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                self.out.write(f"report: {line[len(PROGRESS_PREFIX):]}\n")
                self.lines += 1
        self.out.flush()
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def ensure_kernelspec(name: str = KERNEL_NAME) -> str:
    """Register a kernelspec `name` that runs this interpreter (`sys.executable`) under
    `sys.prefix/share/jupyter/kernels`, unless one already does. Idempotent. Returns the name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def export_html(notebook_path: Path, html_path: Path, title: str | None = None) -> Path:
    """Convert an executed notebook to one self-contained HTML file (inputs hidden, no CDN
    scripts). Widget state is dropped: widgets do not render offline. Returns `html_path`."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    nb.metadata.pop("widgets", None)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})],
        template_file="offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def status_path(html: Path) -> Path:
    """The status file (JSON: phases, errors, invalid) beside a report's HTML."""
    return html.with_suffix(".status.json")


def build_report(out_dir: Path, *, quick: bool = False, history: Path = DEFAULT_HISTORY,
                 phases: list[str] | None = None, timeout_s: int = CELL_TIMEOUT_S,
                 kernel: str = KERNEL_NAME, notebook: Path = NOTEBOOK,
                 progress: TextIO | None = None) -> Path:
    """Execute the nightly notebook and export it. Returns the HTML path (`status_path(html)`
    holds which phases failed). `progress`: a stream the notebook's progress lines go to as
    they come (see `ProgressLines`).

    Raises ReportError naming the executed notebook when a cell fails or times out.
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    executed = out_dir / f"nightly-{stamp}.ipynb"
    params = {"quick": quick, "history_path": str(history), "phases": list(phases or []),
              "run_label": stamp, "status_path": str(status_path(executed))}
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params,
                            kernel_name=ensure_kernelspec(kernel), execution_timeout=timeout_s,
                            cwd=str(REPO_ROOT), progress_bar=False,
                            stdout_file=ProgressLines(progress) if progress else None)
    except Exception as exc:  # papermill raises PapermillExecutionError, TimeoutError, ...
        raise ReportError(f"the nightly notebook failed ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); "
                          f"see {executed}") from exc
    html = export_html(executed, executed.with_suffix(".html"),
                       title=f"hft-workbench nightly report {stamp}")
    shutil.copyfile(html, out_dir / "nightly-latest.html")
    return html


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `workbench report`."""
    parser.add_argument("--quick", action="store_true",
                        help="quick benchmark inputs (CI): every topic well under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY,
                        help="bench history store (Parquet) to append to and plot")
    parser.add_argument("--phase", action="append", dest="phases", default=[],
                        metavar="PHASE|TOPIC", help="run only these phases or topics (repeat)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S,
                        help="per-cell execution timeout in seconds")
    parser.add_argument("--kernel", default=KERNEL_NAME, help="kernelspec name to execute with")


def main(args: argparse.Namespace) -> int:
    """Run `workbench report` with progress on stderr; prints the HTML path. Returns 1 when a
    phase errored or failed its check, else 0 (a notebook that fails raises ReportError)."""
    html = build_report(args.out, quick=args.quick, history=args.history, phases=args.phases,
                        timeout_s=args.timeout, kernel=args.kernel, progress=sys.stderr)
    print(html)
    failed, total = failed_phases(status_path(html))
    if failed:
        print(f"workbench report: {len(failed)} of {total} phases failed: "
              f"{', '.join(failed)} (see the report)", file=sys.stderr)
        return 1
    return 0


def failed_phases(path: Path) -> tuple[list[str], int]:
    """(names of the phases that errored or failed their check, phases run) from a report's
    status file. Raises ReportError when the file is missing (the notebook did not get to
    writing it)."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"expected the report's status file at {path}: {exc}") from exc
    return status["errors"] + status["invalid"], status["phases"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m workbench.jupyter.report")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
