"""The native extension's tests again under AddressSanitizer + UndefinedBehaviorSanitizer.

`python -m workbench.feed._native_build --sanitize --out DIR` builds a debug copy of
`workbench._native` (-O1 -g -fsanitize=address,undefined, no recovery from UB); a child
Python, with the ASan runtime preloaded (the interpreter itself is not instrumented), loads
that copy as `workbench._native` and runs the native test modules: the parser parity and fuzz
tests and the handler's loopback tests. Any sanitizer report fails the child, hence this test.
Leak detection is off: CPython does not free everything at exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["tests/feed/test_native_parse.py", "tests/feed/test_native_fuzz.py",
           "tests/feed/test_native_feed.py"]
# the handler's loopback tests but the long per-recording parity runs (the parser meets every
# recording in test_native_parse already)
SELECT = "not recordings_served_over_loopback"
RUN = """
import importlib.util, sys
import workbench
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("workbench._native", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["workbench._native"] = module
workbench._native = module
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--timeout", "600",
                      *sys.argv[2:]]))
"""


def _runtime(name: str) -> str:
    out = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not os.path.isabs(out):
        pytest.fail(f"the compiler has no {name}: the sanitizer runtime is missing")
    return out


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_native_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "workbench.feed._native_build", "--sanitize", "--out",
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-4000:]
    (module,) = (tmp_path / "workbench").glob("_native*.so")
    env = {**os.environ, "LD_PRELOAD": _runtime("libasan.so"),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    modules = [m for m in MODULES if (ROOT / m).exists()]
    done = subprocess.run([sys.executable, "-c", RUN, str(module), "-k", SELECT, *modules],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    report = done.stdout[-6000:] + done.stderr[-6000:]
    assert done.returncode == 0, report
    assert "ERROR: AddressSanitizer" not in report and "runtime error:" not in report, report
    assert " passed" in done.stdout
