"""%hft through a real IPython InteractiveShell with a capturing display publisher, driving a
real engine on the embedded simulator (SimExchange on loopback)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
BOKEH_EXEC_MIME = "application/vnd.bokehjs_exec.v0+json"


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    sh = InteractiveShell.instance()
    sh.display_pub = CapturingDisplayPublisher()
    sh.run_line_magic("load_ext", "workbench")
    yield sh
    sh.run_line_magic("unload_ext", "workbench")


def _magics(sh: InteractiveShell):
    from workbench.jupyter.magics import _registered

    return _registered[id(sh)]


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def _spin(seconds: float) -> None:
    """Let the (not otherwise running) event loop run the UI task, as the kernel's loop does."""
    asyncio.get_event_loop().run_until_complete(asyncio.sleep(seconds))


def _events(line: str) -> int:
    return int(re.search(r"([\d,]+) events", line).group(1).replace(",", ""))


@pytest.mark.parametrize(("line", "usage"), [
    ("", "%hft"),
    ("launch", "%hft"),
    ("start --no-such-flag", "%hft start"),
    ("start --dispatch sideways", "%hft start"),
    ("dispatch sideways", "%hft dispatch"),
    ("plot everything", "%hft plot"),
    ("profile --seconds many", "%hft profile"),
    ("bench", "%hft bench"),
])
def test_bad_commands_and_flags_raise_usage_error(shell: InteractiveShell, line: str,
                                                  usage: str) -> None:
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("hft", line)
    assert f"usage: {usage}" in str(info.value)


def test_one_line_messages_when_nothing_runs(shell: InteractiveShell,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_line_magic("hft", "stop")
    assert _lines(capsys) == ["hft: no engine running"]
    shell.run_line_magic("hft", "dispatch polling")
    assert _lines(capsys) == ["hft: no engine running; %hft start first"]
    shell.run_line_magic("hft", "status")
    assert _lines(capsys) == ["hft: no run yet; %hft start"]
    shell.run_line_magic("hft", "plot latency")
    assert _lines(capsys) == ["hft: no run to plot yet; %hft start first"]


def test_missing_recording_names_the_path(shell: InteractiveShell, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "btcusdt.gz"
    shell.run_line_magic("hft", f"start --source replay:{missing} --no-journal --no-ui")
    lines = _lines(capsys)
    assert len(lines) == 1 and str(missing) in lines[0]
    assert not _magics(shell).session.running


def test_start_status_dispatch_stop_on_a_real_engine(shell: InteractiveShell, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_line_magic("hft", f"start --dispatch callback --out {tmp_path}")
    session = _magics(shell).session
    engine = session.engine
    assert engine.state == "running" and engine.dispatcher.mode == "callback"
    [started] = _lines(capsys)
    assert started.startswith("hft: started run ") and "dispatch callback" in started
    widgets = [o for o in shell.display_pub.outputs if WIDGET_MIME in o["data"]]
    assert len(widgets) == 1  # the control panel with its live plots

    shell.run_line_magic("hft", "start")  # twice: one line, the same engine keeps running
    [again] = _lines(capsys)
    assert again.startswith("hft: already running (run ") and again.endswith("%hft stop first")
    assert session.engine is engine

    _spin(2.0)
    shell.run_line_magic("hft", "status")
    [first] = _lines(capsys)
    assert "running [callback]" in first and _events(first) > 0
    assert session.live.frames_applied > 0  # the UI task ran on the loop

    shell.run_line_magic("hft", "dispatch polling")
    assert _lines(capsys) == ["hft: dispatch is now polling"]
    assert engine.dispatcher.mode == "polling"
    _spin(1.0)
    shell.run_line_magic("hft", "status")
    [second] = _lines(capsys)
    assert "running [polling]" in second and _events(second) > _events(first)

    shell.run_line_magic("hft", "stop")
    [stopped] = _lines(capsys)
    assert stopped.startswith(f"hft: stopped run {engine.run_id}: ")
    assert engine.state == "stopped"
    assert _events(stopped) == engine.status().events >= _events(second)
    assert str(tmp_path) in stopped and (Path(engine.run_dir) / "summary.json").exists()

    shell.run_line_magic("hft", "stop")
    assert _lines(capsys) == ["hft: no engine running"]

    for what in ("latency", "spikes", "pnl", "ring"):
        before = len(shell.display_pub.outputs)
        shell.run_line_magic("hft", f"plot {what}")
        plotted = shell.display_pub.outputs[before:]
        assert sum(BOKEH_EXEC_MIME in o["data"] for o in plotted) == 1, what


def test_bench_prints_the_claimed_vs_measured_table(shell: InteractiveShell,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_line_magic("hft", "bench memory.slots_quote --quick")
    out = capsys.readouterr().out
    assert "claimed vs measured" in out and "memory.slots_quote" in out
    shell.run_line_magic("hft", "bench no_such_topic")
    [line] = _lines(capsys)
    assert line.startswith("hft: unknown phase or topic 'no_such_topic'")


def test_unload_extension_stops_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    sh = InteractiveShell.instance()
    sh.display_pub = CapturingDisplayPublisher()
    sh.run_line_magic("load_ext", "workbench")
    sh.run_line_magic("hft", "start --no-journal --no-ui")
    engine = _magics(sh).session.engine
    assert engine.state == "running"
    sh.run_line_magic("unload_ext", "workbench")
    assert engine.state == "stopped"
    assert _lines(capsys)[-1].startswith(f"hft: stopped run {engine.run_id}")
    with pytest.raises(UsageError):  # %hft is gone with the extension
        sh.run_line_magic("hft", "status")


def test_help_lists_every_command(shell: InteractiveShell,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.jupyter.magics import COMMANDS

    for line in ("--help", "-h", "help"):
        shell.run_line_magic("hft", line)
        out = capsys.readouterr().out
        assert out.startswith("usage: %hft {")
        for command, text in COMMANDS.items():
            assert f"  {command} " in out and text in out
    # `%hft?` shows the magic's docstring: the same text
    doc = shell.find_line_magic("hft").__doc__
    assert all(f"  {command} " in doc for command in COMMANDS)


def test_start_help_is_the_cli_help_with_every_flag(shell: InteractiveShell,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from workbench.engine.run import add_arguments

    cli = argparse.ArgumentParser(prog="workbench run")
    add_arguments(cli)
    flags = [a for a in cli._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 20
    assert all(a.help for a in flags), [a.dest for a in flags if not a.help]  # every flag
    shell.run_line_magic("hft", "start --help")
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for action in flags:
        assert action.option_strings[-1] in out
        words = (action.help % {"default": action.default}).split()
        assert " ".join(words) in out, action.dest
    assert "--no-ui" in out
    assert not _magics(shell).session.running  # help started nothing
    shell.run_line_magic("hft", "dispatch --help")
    assert "polling" in capsys.readouterr().out


def test_load_ext_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "sh = InteractiveShell.instance()\nsh.run_line_magic('load_ext', 'workbench')\n"
            "heavy = [m for m in ('numba', 'bokeh', 'polars', 'ipywidgets', 'numpy', "
            "'workbench.engine.engine', 'workbench.jupyter.panel') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "HEAVY []" in out, out


def test_spikes_load_and_compare_saved_runs(shell: InteractiveShell, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ids = []
    for mode in ("polling", "callback"):
        shell.run_line_magic("hft", f"start --dispatch {mode} --out {tmp_path} --no-ui")
        _spin(1.5)
        shell.run_line_magic("hft", "stop")
        ids.append(_magics(shell).session.engine.run_id)
    capsys.readouterr()
    engine = _magics(shell).session.engine
    summary = engine.spikes.summary()

    before = len(shell.display_pub.outputs)
    shell.run_line_magic("hft", "spikes --top 3")
    [table] = [o["data"]["text/html"] for o in shell.display_pub.outputs[before:]]
    shown = min(3, summary.count)
    assert table.count("<tr>") == 1 + shown and "hft-spikes" in table
    if shown:
        assert f"{summary.worst[0].tick_to_trade_ns / 1e3:,.1f}" in table

    before = len(shell.display_pub.outputs)
    shell.run_line_magic("hft", f"spikes --top 20 --run {tmp_path / ids[0]}")
    [table] = [o["data"]["text/html"] for o in shell.display_pub.outputs[before:]]
    assert f"run {ids[0]}" in table and "queue" in table  # the polling run's spikes

    before = len(shell.display_pub.outputs)
    shell.run_line_magic("hft", f"load {ids[0]} --out {tmp_path}")
    [line] = _lines(capsys)
    assert line.startswith(f"hft: run {ids[0]}: stopped") and "dispatch polling" in line
    assert sum(BOKEH_EXEC_MIME in o["data"] for o in shell.display_pub.outputs[before:]) == 1

    before = len(shell.display_pub.outputs)
    shell.run_line_magic("hft", f"compare {ids[0]} {ids[1]} --out {tmp_path}")
    outputs = shell.display_pub.outputs[before:]
    [html] = [o["data"]["text/html"] for o in outputs if "hft-compare" in
              o["data"].get("text/html", "")]
    for stage in ("parse", "queue", "book", "strategy", "tick_to_trade"):
        assert f"<td>{stage}</td>" in html
    assert "P99 B/A" in html
    assert sum(BOKEH_EXEC_MIME in o["data"] for o in outputs) == 1

    shell.run_line_magic("hft", f"load nope --out {tmp_path}")
    [line] = _lines(capsys)
    assert line.startswith("hft: expected a run directory at")
