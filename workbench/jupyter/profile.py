"""`%hft profile` and `%%hft profile`: a py-spy flamegraph of this kernel (for some seconds, or
while one cell runs), shown inline, surviving HTML export.

py-spy runs with `--nonblocking`: it reads the kernel's memory without stopping the process
(blocking sampling pauses every thread at each sample and creates the very spikes we measure).
The SVG flamegraph is shown in an `<iframe srcdoc=...>` so its own scripts (search, zoom) work
in JupyterLab and in the exported HTML alike, with nothing fetched from elsewhere. The SVG is
made fluid (inferno draws its frames in percentages: the root's width becomes 100%), so it
fills the output's width; the frame shows FRAME_HEIGHT_PX of it and a button opens it to its
full height. The SVG is also saved beside the run's journal and the session marks the run as
profiled.

Attaching needs ptrace permission on the kernel process: root, CAP_SYS_PTRACE, or
`kernel.yama.ptrace_scope` allowing it. Without it `ProfileError` says so and how to grant it.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

PTRACE_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
_DENIED = re.compile(r"permission denied|operation not permitted|ptrace|elevated permissions",
                     re.IGNORECASE)
_SVG_TAG = re.compile(r"<svg\b[^>]*>")
FRAME_HEIGHT_PX = 520
ATTACH_TIMEOUT_S = 30.0


FLUID_STYLE = "html,body{margin:0;padding:0}svg{width:100%;display:block}"


def flamegraph_page(svg: str) -> tuple[str, int]:
    """An HTML page holding the flamegraph fluid, and the flamegraph's height in px (0 when
    not found). In an HTML page (an iframe's srcdoc) the SVG is inline, and inferno's fluid
    mode removes its width: an inline SVG without one is 300 px wide; the page's CSS makes it
    100% (inferno draws its frames in percentages and re-fits its text to the width). The
    XML prolog and SVG doctype are dropped (not HTML); the root's fixed width and viewBox
    too."""
    match = _SVG_TAG.search(svg)
    if match is None:
        return svg, 0
    tag = match.group(0)
    height = re.search(r'\sheight="(\d+)', tag)
    fluid = re.sub(r'\swidth="[^"]*"', ' width="100%"', tag, count=1)
    fluid = re.sub(r'\sviewBox="[^"]*"', "", fluid, count=1)
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>{FLUID_STYLE}</style>"
            f"</head><body>{fluid}{svg[match.end():]}</body></html>")
    return page, int(height.group(1)) if height else 0


class ProfileError(WorkbenchError):
    """py-spy is missing, cannot attach (ptrace not permitted), or failed."""


@dataclass(frozen=True)
class Profile:
    """One profile: the SVG flamegraph (text), where it was saved, samples asked for."""

    svg: str
    path: Path
    pid: int
    seconds: float
    rate: int

    def iframe_html(self, height_px: int = FRAME_HEIGHT_PX) -> str:
        """The flamegraph, fluid (`flamegraph_page`), in a full-width `<iframe srcdoc>` at most
        `height_px` high, with a button that opens it to its full height (self-contained:
        works offline)."""
        page, full = flamegraph_page(self.svg)
        full += 8
        shown = min(height_px, full)
        button = ""
        if full > shown:
            button = ('<button class="hft-flame-full" onclick="const f=this.nextElementSibling;'
                      f"f.style.height=f.style.height==='{full}px'?'{shown}px':'{full}px'\">"
                      "full size / back</button>")
        return (f'{button}<iframe class="hft-flamegraph" title="py-spy flamegraph '
                f'(pid {self.pid})" width="100%" height="{shown}" style="width:100%;'
                f'min-width:100%;height:{shown}px;border:1px solid #ddd;display:block" '
                f'srcdoc="{html.escape(page, quote=True)}"></iframe>')

    def _repr_html_(self) -> str:
        what = f"{self.seconds:g} s" if self.seconds else "one cell"
        return (f"<p>py-spy --nonblocking, pid {self.pid}, {what} at {self.rate} Hz;"
                f" saved to <code>{html.escape(str(self.path))}</code></p>"
                + self.iframe_html())


def py_spy_path() -> str:
    """The py-spy executable (beside this interpreter first, then PATH). Raises ProfileError."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfileError("py-spy not found beside the interpreter or on PATH; "
                           "pip install py-spy")
    return found


def ptrace_advice() -> str:
    """How to grant ptrace permission on this machine (one paragraph)."""
    scope = PTRACE_SCOPE.read_text().strip() if PTRACE_SCOPE.exists() else "absent (no Yama)"
    return (f"kernel.yama.ptrace_scope is {scope}. Grant it with "
            "`sudo sysctl kernel.yama.ptrace_scope=0` (until reboot), or give py-spy the "
            "capability: `sudo setcap cap_sys_ptrace+ep $(which py-spy)`; in a container start "
            "it with `--cap-add SYS_PTRACE`.")


def record(seconds: float, *, rate: int = 200, pid: int | None = None,
           out: Path | None = None) -> Profile:
    """Sample `pid` (default: this process) for `seconds` (rounded up to whole seconds, >= 1)
    with `py-spy record --nonblocking` and return the SVG flamegraph.

    Raises ProfileError: py-spy missing; ptrace not permitted (with `ptrace_advice()`); any
    other py-spy failure (with its stderr).
    """
    if seconds <= 0 or rate <= 0:
        raise ProfileError(f"seconds and rate must be > 0, got seconds={seconds}, rate={rate}")
    pid = os.getpid() if pid is None else pid
    out = out or Path(tempfile.mkdtemp(prefix="hft-profile-")) / f"profile-{pid}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy_path(), "record", "--nonblocking", "--pid", str(pid),
           "--duration", str(max(1, math.ceil(seconds))), "--rate", str(rate),
           "--format", "flamegraph", "--output", str(out), "--threads"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not out.exists():
        raise _failure(proc.returncode, (proc.stderr or proc.stdout).strip(), pid)
    return Profile(out.read_text(encoding="utf-8"), out, pid, float(seconds), rate)


def _failure(proc_returncode: int | None, err: str, pid: int) -> ProfileError:
    if _DENIED.search(err):
        return ProfileError(f"py-spy may not attach to pid {pid} (ptrace not permitted: "
                            f"{err.splitlines()[-1] if err else 'no output'}). "
                            + ptrace_advice())
    return ProfileError(f"py-spy failed (exit {proc_returncode}): {err or 'no output'}")


def record_while(run: Callable[[], Any], *, rate: int = 200, out: Path | None = None
                 ) -> tuple[Profile, Any]:
    """Sample this process with `py-spy record --nonblocking` while `run()` runs (py-spy is
    started first and waited for until it samples, then stopped with SIGINT, which makes it
    write the flamegraph). Returns (the Profile, what `run` returned). Raises ProfileError as
    `record` does; an exception from `run` propagates after py-spy is stopped."""
    if rate <= 0:
        raise ProfileError(f"rate must be > 0, got {rate}")
    pid = os.getpid()
    out = out or Path(tempfile.mkdtemp(prefix="hft-profile-")) / f"profile-{pid}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy_path(), "record", "--nonblocking", "--pid", str(pid), "--rate", str(rate),
           "--format", "flamegraph", "--output", str(out), "--threads"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    sampling = threading.Event()

    def read_stderr() -> None:
        for text in proc.stderr:
            said.append(text)
            if "Sampling process" in text:
                sampling.set()
        sampling.set()  # py-spy ended

    reader = threading.Thread(target=read_stderr, name="py-spy-stderr", daemon=True)
    reader.start()
    sampling.wait(ATTACH_TIMEOUT_S)
    if proc.poll() is not None:
        reader.join(1.0)
        raise _failure(proc.returncode, "".join(said).strip(), pid)
    try:
        result = run()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(1.0)
    if not out.exists():
        raise _failure(proc.returncode, "".join(said).strip(), pid)
    return Profile(out.read_text(encoding="utf-8"), out, pid, 0.0, rate), result


def profile_cell(run: Callable[[], Any], *, rate: int = 200, session: Any = None) -> Any:
    """`%%hft profile`: run the cell (`run`) under py-spy, display the flamegraph inline, mark
    the session's run as profiled. Returns the cell's result."""
    from IPython.display import HTML, display

    out = session.profile_path() if session is not None else None
    prof, result = record_while(run, rate=rate, out=out)
    if session is not None:
        session.mark_profiled(prof.path)
    display(HTML(prof._repr_html_()))
    return result


def profile_kernel(seconds: float, *, rate: int = 200, session: Any = None) -> Profile:
    """`%hft profile`: record this kernel while the engine runs, display the flamegraph inline
    and mark the session's run as profiled (the SVG goes to the run's directory)."""
    from IPython.display import HTML, display

    out = session.profile_path() if session is not None else None
    prof = record(seconds, rate=rate, out=out)
    if session is not None:
        session.mark_profiled(prof.path)
    display(HTML(prof._repr_html_()))
    return prof
