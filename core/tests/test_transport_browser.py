"""MQTT.js in a real browser: headless Debian chromium, driven by selenium through
chromedriver, loads a page that connects to a ws (or wss) listener, subscribes, publishes and
lists what it receives; the test reads the page, and a paho client talks to it."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Pki, RunningBroker
from transport_kit import Endpoint, endpoints, listener, paho_client

JS = Path(__file__).resolve().parent / "js"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
         and (JS / "node_modules" / "mqtt" / "dist" / "mqtt.min.js").exists()),
    reason="needs chromium, chromium-driver and core/tests/js/node_modules (.ci/run "
    "installs them)",
)


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves the page and MQTT.js's browser bundle, quietly."""

    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0].lstrip("/")
        if name == "mqtt.min.js":
            return str(JS / "node_modules" / "mqtt" / "dist" / "mqtt.min.js")
        return str(JS / "page.html")

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def page_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Files, directory=str(JS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 # the wss test's server certificate comes from the tests' own CA
                 "--ignore-certificate-errors",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _text(driver: object, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)  # type: ignore[attr-defined]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_mqttjs_in_headless_chromium(
    settings_broker: Callable[..., RunningBroker], page_server: int, chromium: object,
    pki: Pki, kind: str,
) -> None:
    broker = settings_broker([listener(kind, pki, mutual=False)])
    (ws,) = endpoints(broker)
    url = f"http://127.0.0.1:{page_server}/page.html?url={kind}://127.0.0.1:{ws.port}/mqtt"
    paho = paho_client(Endpoint(kind, ws.host, ws.port, "/mqtt"), pki)
    paho.subscribe("browser/from-page", 1)
    chromium.get(url)  # type: ignore[attr-defined]
    _wait(lambda: _text(chromium, "state") == "subscribed", "the page to subscribe")
    # the page's own message came back to it, and reached paho
    _wait(lambda: "browser/from-page hello from chromium" in _text(chromium, "received"),
          "the page's echo")
    assert paho.expect().payload == b"hello from chromium"
    paho.publish("browser/to-page", b"hello from paho", 1)
    _wait(lambda: "browser/to-page hello from paho" in _text(chromium, "received"),
          "paho's message on the page")
    paho.close()
    connected = [c for c in broker.call(lambda: list(broker.broker.engine.clients))
                 if c.startswith("browser-")]
    assert len(connected) == 1
