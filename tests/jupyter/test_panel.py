"""The control panel drives a real engine (SimExchange on loopback); the UI task runs on the
event loop, which the test turns like the kernel does between cells."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.jupyter.panel import Session


def _spin(seconds: float) -> None:
    asyncio.get_event_loop().run_until_complete(asyncio.sleep(seconds))


def _counter(panel: object, name: str) -> str:
    return re.search(rf'class="hft-{name}"[^>]*>([^<]*)<', panel.counters.value).group(1)


def _bundled_series(bundle: dict) -> dict:
    """The live series source's data inside a BokehModel render bundle (JSON walk)."""
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource":
                data = node["attributes"]["data"]
                data = {k: v for k, v in data["entries"]} if "entries" in data else data
                if "tick_to_trade_p99" in data:
                    found.append(data)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(json.dumps(bundle["docs_json"], default=str)))
    [data] = found
    return data


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))  # the panel's runs go there

    InteractiveShell.instance().display_pub = CapturingDisplayPublisher()
    s = Session()
    s.show()
    yield s
    if s.running:
        s.stop()


def test_panel_starts_toggles_and_stops_a_real_engine(session: Session, tmp_path: Path) -> None:
    panel = session.panel
    assert panel.start_button.disabled is False and panel.stop_button.disabled is True
    panel.source.value = "sim"
    panel.symbols.value = "btcusdt"
    panel.ema_fast.value, panel.ema_slow.value = 5, 40
    panel.dispatch.value = "callback"
    panel.start_button.click()
    engine = session.engine
    assert engine is not None and engine.state == "running"
    cfg = engine.config
    assert (cfg.source.source, cfg.source.symbols, cfg.strategy.ema_fast,
            cfg.strategy.ema_slow) == ("sim", ("BTCUSDT",), 5, 40)
    assert panel.start_button.disabled and not panel.stop_button.disabled
    assert panel.ema_fast.disabled  # parameters are fixed while a run goes on

    _spin(1.5)
    first = int(_counter(panel, "events").replace(",", ""))
    assert first > 0 and float(_counter(panel, "events-per-s").replace(",", "")) > 0
    assert _counter(panel, "state") == "running (callback)"

    panel.dispatch.value = "polling"  # the toggle switches the running engine
    assert engine.dispatcher.mode == "polling" and engine.dispatch_switches == 1
    _spin(1.0)
    assert _counter(panel, "state") == "running (polling)"
    assert int(_counter(panel, "events").replace(",", "")) > first

    session.set_dispatch("callback")  # switched elsewhere (%hft dispatch): the toggle follows
    assert panel.dispatch.value == "callback" and engine.dispatch_switches == 2

    panel.stop_button.click()
    assert engine.state == "stopped"
    assert panel.message.value.startswith(f"stopped run {engine.run_id}")
    assert not panel.start_button.disabled and not panel.ema_fast.disabled
    assert int(_counter(panel, "events").replace(",", "")) == engine.status().events
    assert Path(engine.run_dir) == tmp_path / "runs" / engine.run_id
    assert (Path(engine.run_dir) / "summary.json").exists()


def test_bad_parameters_show_the_field_and_start_nothing(session: Session) -> None:
    panel = session.panel
    panel.ema_fast.value, panel.ema_slow.value = 50, 20
    panel.start_button.click()
    assert session.engine is None
    assert "ema_fast" in panel.message.value and "ema_slow" in panel.message.value


def test_live_plots_hold_data_until_a_view_exists_then_stream(session: Session) -> None:
    panel = session.panel
    panel.start_button.click()
    _spin(2.5)
    live = session.live
    source = live._series_src
    assert live.frames_applied > 0 and not live.has_view
    assert len(source.data["t"]) == 0  # nothing touched the document without a view
    held = len(live._pending[source]["t"])
    assert held >= 1
    live.widget._view_count = 1  # what the frontend reports when it renders the widget
    assert len(source.data["t"]) == held and not live._pending
    bundled = _bundled_series(live.widget.render_bundle)  # what a (new) view renders from
    assert bundled["t"] == list(source.data["t"]) and len(bundled["t"]) == held
    _spin(1.5)
    assert len(source.data["t"]) > held  # later frames stream into the source
    assert all(v > 0 for v in source.data["tick_to_trade_p99"])


def test_a_native_run_shows_the_handler_counters(session: Session) -> None:
    from workbench.engine.config import EngineConfig

    engine = session.start(EngineConfig(source="native", dispatch="callback"))
    assert engine.state == "running"
    _spin(2.0)
    native = _counter(session.panel, "native")
    messages = int(re.search(r"live: ([\d,]+) msgs", native).group(1).replace(",", ""))
    assert messages > 0 and "0 malformed" in native and "read→push P99" in native
    session.stop()
    assert engine.state == "stopped"
