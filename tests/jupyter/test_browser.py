"""Real JupyterLab in Debian's headless Chromium (Playwright), and the report opened offline.

JupyterLab: 127.0.0.1, a free port, a random token, fresh workspace/config directories, a copy
of the notebooks as its root. Chromium: /usr/bin/chromium (never `playwright install`).
Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from workbench.shared_data import REPO_ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = REPO_ROOT / "test-artifacts"

# every bokeh figure view in the page: (title, canvas width, canvas height, glyph renderers)
FIGURES_JS = """() => {
  const out = [];
  const walk = (view) => {
    if (view.model && view.model.type === 'Figure') {
      const bbox = view.canvas_view.bbox;
      out.push([view.model.title ? view.model.title.text : '', bbox.width, bbox.height,
                view.model.renderers.length]);
    }
    for (const child of (view.child_views || [])) walk(child);
  };
  if (window.Bokeh && Bokeh.index) for (const v of Object.values(Bokeh.index)) walk(v);
  return out;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A JupyterLab server on a copy of notebooks/; yields url, token, root."""
    root = tmp_path_factory.mktemp("lab-root")
    for nb in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    config = tmp_path_factory.mktemp("jupyter-config")
    (config / "labconfig").mkdir()
    (config / "labconfig" / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    token = secrets.token_hex(16)
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
           "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
           f"--LabApp.workspaces_dir={tmp_path_factory.mktemp('workspaces')}",
           f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config)}
    log = (tmp_path_factory.mktemp("lab-log") / "lab.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; see {log.name}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_report_renders_offline_with_every_figure(browser: object,
                                                  nightly_report: dict[str, Path]) -> None:
    import nbformat

    nb = nbformat.read(nightly_report["ipynb"], as_version=4)
    expected = sum("application/vnd.bokehjs_exec.v0+json" in o.get("data", {})
                   for c in nb.cells for o in c.get("outputs", []))
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    blocked: list[str] = []

    def only_files(route: object) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    failed: list[str] = []
    errors: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(nightly_report["html"].as_uri())
    page.wait_for_function(f"() => ({FIGURES_JS})().length >= {expected}", timeout=30_000)
    figures = page.evaluate(FIGURES_JS)
    page.screenshot(path=str(ARTIFACTS / "report-offline.png"), full_page=True)
    context.close()
    assert len(figures) == expected >= 2
    for title, width, height, renderers in figures:
        assert width > 100 and height > 100 and renderers > 0, title
    assert blocked == [] and failed == [] and errors == []
