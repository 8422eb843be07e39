"""MQTT 3.1.1 conformance: plain third-party clients over TCP, without any extension
(section 7: conformance targets).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import paho.mqtt.client as paho
import pytest

try:
    from v311_helpers import Factory
except ImportError:  # pragma: no cover - core/tests/conformance made a package
    from conformance.v311_helpers import Factory  # type: ignore[no-redef]

MOSQUITTO = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto-clients is not installed",
)


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.mqtt311("MQTT-7.0.0-2", "MQTT-7.1.1-1")
@MOSQUITTO
@pytest.mark.parametrize("version", ["mqttv311", "mqttv31"])
def test_mosquitto_clients_work_without_extensions(broker: Any, version: str) -> None:
    common = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", version]
    run("mosquitto_pub", *common, "-i", f"mpub-{version}", "-t", "interop/t",
        "-m", "hello", "-q", "1", "-r")
    out = run("mosquitto_sub", *common, "-i", f"msub-{version}", "-t", "interop/#",
              "-q", "1", "-C", "1", "-W", "5", "-F", "%t %q %r %p")
    assert out.split() == ["interop/t", "1", "1", "hello"]


@pytest.mark.mqtt311("MQTT-7.0.0-2", "MQTT-7.1.1-1")
@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv31], ids=["3.1.1", "3.1"])
def test_paho_works_without_extensions(client_factory: Factory, protocol: int) -> None:
    sub = client_factory(protocol=protocol)
    sub.subscribe("paho/#", 2)
    pub = client_factory(protocol=protocol)
    pub.publish("paho/t", b"over tcp", 2)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("paho/t", b"over tcp", 2)
