"""Accepted TCP sockets have Nagle's algorithm off (TCP_NODELAY), on every event loop.

The asyncio drivers do not set it themselves: asyncio's and uvloop's TCP transports do,
and anyio's listener does for trio. This test is what would notice a loop that stopped.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio.from_thread
import pytest

from midge import Broker, ListenerSettings, Settings
from midge.codec import ConnAck, Connect, Decoder, Role, encode


def _nodelay_of_accepted(backend: str, options: dict[str, Any]) -> list[int]:
    settings = Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))
    broker = Broker(settings)
    with anyio.from_thread.start_blocking_portal(backend, options) as portal:
        future, _ = portal.start_task(broker.run)
        port = broker.addresses[0][1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(encode(Connect("nodelay", 4), 4))
            decoder = Decoder(Role.CLIENT, protocol_level=4)
            packet = None
            while packet is None:
                decoder.feed(sock.recv(64))
                packet = decoder.next_packet()
            assert isinstance(packet, ConnAck) and packet.reason_code == 0

            def flags() -> list[int]:
                found = []
                for conn in broker.engine.connections:
                    driver: Any = conn.outbox._driver  # the transport under test
                    if hasattr(driver, "transport"):
                        raw = driver.transport.get_extra_info("socket")
                    else:
                        raw = driver.stream.extra(anyio.abc.SocketAttribute.raw_socket)
                    found.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                return found

            result = portal.call(flags)
        portal.call(broker.shutdown)
        future.result(timeout=15)
    return result


@pytest.mark.parametrize(("backend", "options"), [
    ("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {}),
], ids=["asyncio", "uvloop", "trio"])
def test_accepted_sockets_have_nagle_off(backend: str, options: dict[str, Any]) -> None:
    if options.get("use_uvloop"):
        pytest.importorskip("uvloop")
    flags = _nodelay_of_accepted(backend, options)
    assert len(flags) == 1
    assert flags[0] != 0
