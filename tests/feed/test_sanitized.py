"""The C++ extensions' tests again under AddressSanitizer + UndefinedBehaviorSanitizer.

`python -m workbench.feed._native_build --sanitize [--feed] --out DIR` builds a debug copy of
`workbench._native` (or, with --feed, of `workbench._feed`: the ring, the replay handler, the
hiccup probe), -O1 -g -fsanitize=address,undefined with no recovery from UB; a child Python,
with the ASan runtime preloaded (the interpreter itself is not instrumented), loads that copy
under the module's name and runs the module's test files. Any sanitizer report fails the child,
hence this test. Leak detection is off: CPython does not free everything at exit. Tests that
start other Python processes check those with the regular build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDS = {
    # the native parser's parity and fuzz tests and the handler's loopback tests, but the long
    # per-recording parity runs (the parser meets every recording in test_native_parse already)
    "_native": ([], ["tests/feed/test_native_parse.py", "tests/feed/test_native_fuzz.py",
                     "tests/feed/test_native_feed.py"], "not recordings_served_over_loopback"),
    # the ring (in-process and across processes), the replay handler, the hiccup probe (the
    # engine run under SIGSTOP is another process: the regular build)
    "_feed": (["--feed"], ["tests/feed/test_ring.py", "tests/feed/test_handler.py",
                           "tests/feed/test_hiccup_probe.py"], "not engine_run"),
}
RUN = """
import importlib.util, sys
import workbench
name, path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(f"workbench.{name}", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[f"workbench.{name}"] = module
setattr(workbench, name, module)
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--timeout", "600",
                      *sys.argv[3:]]))
"""


def _runtime(name: str) -> str:
    out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not os.path.isabs(out):
        pytest.fail(f"the compiler has no {name}: the sanitizer runtime is missing")
    return out


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_extension_tests_pass_under_asan_and_ubsan(name: str, tmp_path: Path) -> None:
    flags, modules, select = BUILDS[name]
    built = subprocess.run(
        [sys.executable, "-m", "workbench.feed._native_build", "--sanitize", *flags, "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-4000:]
    (module,) = (tmp_path / "workbench").glob(f"{name}*.so")
    env = {**os.environ, "LD_PRELOAD": _runtime("libasan.so"),
           # handle_sigbus=0: the ring's own SIGBUS handler is under test (and a fault
           # outside the rings must still kill the process by the signal)
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:handle_sigbus=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    modules = [m for m in modules if (ROOT / m).exists()]
    done = subprocess.run([sys.executable, "-c", RUN, name, str(module), "-k", select,
                           *modules], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    report = done.stdout[-6000:] + done.stderr[-6000:]
    assert done.returncode == 0, report
    assert "ERROR: AddressSanitizer" not in report and "runtime error:" not in report, report
    assert " passed" in done.stdout
