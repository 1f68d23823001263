"""%hft profile: real py-spy --nonblocking on this process; a real ptrace refusal."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from workbench.jupyter.profile import flamegraph_page
from workbench.shared_data import REPO_ROOT


def busy_loop_for_profile(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def test_profile_magic_shows_an_inline_flamegraph_and_marks_the_run(tmp_path: Path) -> None:
    sh = InteractiveShell.instance()
    sh.display_pub = CapturingDisplayPublisher()
    sh.run_line_magic("load_ext", "workbench")
    stop = threading.Event()
    busy = threading.Thread(target=busy_loop_for_profile, args=(stop,))
    busy.start()
    try:
        sh.run_line_magic("hft", f"start --out {tmp_path} --no-ui")
        sh.run_line_magic("hft", "profile --seconds 1 --rate 100")
    finally:
        stop.set()
        busy.join()
    from workbench.jupyter.magics import _registered

    session = _registered[id(sh)].session
    [saved] = session.profiled
    assert saved.parent == Path(session.engine.run_dir) and saved.read_text().startswith("<?xml")
    shown = sh.display_pub.outputs[-1]["data"]["text/html"]
    assert "<iframe" in shown and 'srcdoc="' in shown
    svg = html.unescape(shown.split('srcdoc="', 1)[1].split('"></iframe>', 1)[0])
    assert svg == flamegraph_page(saved.read_text())[0]  # the whole flamegraph, made fluid
    assert '<svg version="1.1" width="100%"' in svg and "svg{width:100%" in svg
    root = saved.read_text().index("<svg")
    body = saved.read_text()[root:].split(">", 1)[1]
    assert body in svg and "viewBox" not in svg.split("<svg", 1)[1].split(">", 1)[0]
    assert "busy_loop_for_profile" in svg
    sh.run_line_magic("unload_ext", "workbench")
    assert session.engine.state == "stopped"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run py-spy as an unprivileged user")
def test_without_ptrace_permission_it_says_how_to_grant_it() -> None:
    code = ("from workbench.jupyter.profile import record, ProfileError\n"
            "try:\n    record(1, pid=1)\n"
            "except ProfileError as exc:\n    print(exc)\n")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    out = proc.stdout
    assert "ptrace not permitted" in out and "pid 1" in out
    assert "kernel.yama.ptrace_scope" in out and "cap_sys_ptrace" in out
    assert "SYS_PTRACE" in out


def test_cell_magic_profiles_the_cell_and_returns_its_result(tmp_path: Path) -> None:
    sh = InteractiveShell.instance()
    sh.display_pub = CapturingDisplayPublisher()
    sh.run_line_magic("load_ext", "workbench")
    try:
        cell = ("import time\n"
                "def cell_busy_for_profile():\n"
                "    t = time.perf_counter()\n"
                "    while time.perf_counter() - t < 1.5:\n"
                "        pass\n"
                "    return 42\n"
                "answer = cell_busy_for_profile()\n")
        sh.run_cell_magic("hft", "profile --rate 100", cell)
        assert sh.user_ns["answer"] == 42  # the cell ran in the user namespace
        shown = sh.display_pub.outputs[-1]["data"]["text/html"]
        svg = html.unescape(shown.split('srcdoc="', 1)[1].split('"></iframe>', 1)[0])
        assert "cell_busy_for_profile" in svg and "one cell at 100 Hz" in shown
        assert 'width="100%"' in shown and "hft-flamegraph" in shown
    finally:
        sh.run_line_magic("unload_ext", "workbench")
