"""`%hft profile`: a py-spy flamegraph of this kernel, shown inline, surviving HTML export.

py-spy runs with `--nonblocking`: it reads the kernel's memory without stopping the process
(blocking sampling pauses every thread at each sample and creates the very spikes we measure).
The SVG flamegraph is shown in an `<iframe srcdoc=...>` so its own scripts (search, zoom) work
in JupyterLab and in the exported HTML alike, with nothing fetched from elsewhere. The SVG is
also saved beside the run's journal and the session marks the run as profiled.

Attaching needs ptrace permission on the kernel process: root, CAP_SYS_PTRACE, or
`kernel.yama.ptrace_scope` allowing it. Without it `ProfileError` says so and how to grant it.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

PTRACE_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
_DENIED = re.compile(r"permission denied|operation not permitted|ptrace|elevated permissions",
                     re.IGNORECASE)


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

    def iframe_html(self, height_px: int = 520) -> str:
        """The flamegraph as an `<iframe srcdoc>` (self-contained: works offline)."""
        return (f'<iframe title="py-spy flamegraph (pid {self.pid})" '
                f'style="width:100%;height:{height_px}px;border:1px solid #ddd" '
                f'srcdoc="{html.escape(self.svg, quote=True)}"></iframe>')

    def _repr_html_(self) -> str:
        return (f"<p>py-spy --nonblocking, pid {self.pid}, {self.seconds:g} s at {self.rate} Hz;"
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
        err = (proc.stderr or proc.stdout).strip()
        if _DENIED.search(err):
            raise ProfileError(f"py-spy may not attach to pid {pid} (ptrace not permitted: "
                               f"{err.splitlines()[-1] if err else 'no output'}). "
                               + ptrace_advice())
        raise ProfileError(f"py-spy failed (exit {proc.returncode}): {err or 'no output'}")
    return Profile(out.read_text(encoding="utf-8"), out, pid, float(seconds), rate)


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
