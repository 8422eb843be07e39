"""The status page in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromedriver. The test makes MQTT traffic, reads the page's DOM (the numbers shown,
charts drawn with more than one point, the listeners and clients tables, no console errors)
and saves a screenshot in test-artefacts/status-page.png."""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import Client
from test_http_listener import Observed, observed_factory  # noqa: F401 - a fixture

import midge

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)",
)


@pytest.fixture
def broker(observed_factory: Callable[..., Observed]) -> Observed:  # noqa: F811
    return observed_factory()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


SNAPSHOT = """
const text = {};
for (const id of ["version", "uptime", "clients", "rate-in", "rate-out", "rate-drop",
                  "subscriptions", "state"]) text[id] = document.getElementById(id).textContent;
const points = {};
for (const id of ["chart-connections", "chart-messages", "chart-dropped"]) {
  points[id] = Array.from(document.querySelectorAll("#" + id + " polyline"),
                          (line) => Number(line.getAttribute("data-points")));
}
const line = document.querySelector("#chart-messages polyline");
const xs = new Set(line ? line.getAttribute("points").split(" ").map((p) => p.split(",")[0]) : []);
const rows = (sel) => Array.from(document.querySelectorAll(sel),
                                 (tr) => Array.from(tr.cells, (td) => td.textContent));
return {text, points, distinct_x: xs.size, listeners_rows: rows("#listeners tr"),
        clients_rows: rows("#clients-table tr"),
        clients_note: document.getElementById("clients-note").textContent};
"""


def test_the_status_page_shows_live_traffic(
    broker: Observed, client_factory: Callable[..., Client], browser: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    subscribers = [client_factory(f"dashboard-sub-{i}") for i in range(3)]
    for sub in subscribers:
        sub.subscribe("plant/#", qos=1)
    gateway = client_factory("gateway-7", protocol=paho.MQTTv5)
    gateway.subscribe("plant/+/alarm", qos=0)
    publisher = client_factory("line-3-publisher")
    # a persistent session whose client has gone home: offline, holding a queue
    night = client_factory("night-shift", clean=False)
    night.subscribe("plant/+/alarm", qos=1)
    night.close()
    for index in range(3):
        publisher.paho.publish("plant/line3/alarm", f"alarm {index}", qos=1).wait_for_publish(3)
    stop = threading.Event()
    sent = [0]

    def traffic() -> None:
        # bounded: at most 20 s, at most 20,000 messages
        started = time.monotonic()
        deadline = started + 40
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < 40_000:
            # a rate that rises and falls, so the charts have a shape
            burst = int(12 + 10 * math.sin((time.monotonic() - started) / 2))
            for _ in range(burst):
                publisher.paho.publish("plant/line3/temp", b"21.5", qos=0)
                sent[0] += 1
            time.sleep(0.02)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        browser.get(f"http://127.0.0.1:{broker.http_port}/")

        def snapshot() -> dict[str, Any]:
            # one script reads everything at once: the page redraws every second, so
            # element handles kept across calls would go stale
            result: dict[str, Any] = browser.execute_script(SNAPSHOT)
            return result

        # MIDGE_STATUS_POINTS=30 waits for a fuller chart (the README's screenshot)
        wanted = int(os.environ.get("MIDGE_STATUS_POINTS", "4"))
        WebDriverWait(browser, wanted + 20, poll_frequency=0.2).until(
            lambda _: min(snapshot()["points"]["chart-messages"] or [0]) >= wanted
            and snapshot()["clients_rows"])
        page = snapshot()
        text = page["text"]
        assert text["version"] == midge.__version__
        assert text["state"] == "live"
        assert text["clients"] == "5"
        assert text["subscriptions"] == "5"
        assert float(text["rate-in"].replace(",", "")) > 0
        assert float(text["rate-out"].replace(",", "")) > 0
        assert text["uptime"].endswith("s")
        for chart in ("chart-connections", "chart-messages", "chart-dropped"):
            assert page["points"][chart] and min(page["points"][chart]) > 1, chart
        # the line really goes somewhere: its points have distinct x positions
        assert page["distinct_x"] > 1
        listeners = page["listeners_rows"]
        assert [row[1] for row in listeners] == ["tcp", "http"]
        assert listeners[0][3] == "5"
        ids = {row[0] for row in page["clients_rows"]}
        assert {"gateway-7", "line-3-publisher", "dashboard-sub-0", "night-shift"} <= ids
        # the deepest queue first: the offline session's
        night_row = page["clients_rows"][0]
        assert night_row[0] == "night-shift" and night_row[6] == "3"
        assert night_row[2] == "\u2013" and night_row[8].startswith("offline since ")
        assert page["clients_note"] == "5 connected, 1 offline session"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        ARTEFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTEFACTS / "status-page.png"))
        assert (ARTEFACTS / "status-page.png").stat().st_size > 10_000
    finally:
        stop.set()
        worker.join(timeout=25)


def test_the_status_page_is_self_contained(broker: Observed) -> None:
    """One file, no third-party or remote script, style or font: it works offline."""
    from test_http_listener import get

    status, headers, body = get(broker.http_port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'unsafe-inline'" in headers["content-security-policy"]
    page = body.decode()
    for remote in ("http://", "https://", "//cdn", "<script src", "<link", "@import"):
        assert remote not in page.replace("http://www.w3.org/2000/svg", ""), remote
    assert "textContent" in page and "innerHTML" not in page
