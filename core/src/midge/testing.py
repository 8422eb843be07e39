"""pytest fixtures for midge plugin authors and embedders (the ``midge`` pytest plugin).

Installing ``midge`` registers this module as a pytest plugin (entry point ``pytest11``),
so every test can use these fixtures without a ``conftest.py``:

``midge_broker_factory``
    Start a real broker on a free 127.0.0.1 port, in a background thread with its own
    event loop; every broker it started is stopped at teardown::

        def test_my_plugin(midge_broker_factory, midge_client):
            broker = midge_broker_factory(
                objects=[MyPlugin({"level": 2})],       # plugin objects, called first
                plugins={"auth_ledger": {"file": "ledger.yaml"}},  # entry-point plugins
                max_packet_size=1024,                   # any [broker] limit
            )
            client = midge_client(broker, username="alice", password="s3cret")

    ``allow_anonymous`` (the listener's) defaults to True, unless one of the plugins
    authenticates (implements ``on_connect_authenticate``): then it is False and the
    plugins decide alone, as with a configuration file. A plugin that cannot be activated
    raises ``midge.PluginError`` from the call.

``midge_broker``
    One broker with the defaults (anonymous clients allowed, no plugins).

``midge_client``
    A factory of connected paho-mqtt clients (``pip install paho-mqtt``; tests that use
    it are skipped without it). Each records what it receives::

        sub = midge_client(protocol=5)                  # on midge_broker; 3, 4 or 5
        sub.subscribe("sensors/#", qos=1)
        pub = midge_client(broker, username="u", password="p")
        assert pub.publish("sensors/1", b"21.5", qos=1) == 0   # PUBACK reason code
        assert sub.expect().payload == b"21.5"
        sub.expect_none()

    ``check=False`` returns a refused client instead of failing. Its ``reason_code``
    is the CONNACK code as paho reports it: the v5 reason code, and for v3 clients the
    v5-style code paho maps the return code to (1 -> 0x84, 2 -> 0x85, 3 -> 0x88,
    4 -> 0x86 Bad user name or password, 5 -> 0x87 Not authorized).

``midge_capture``
    Capture the messages the broker routes on a topic filter, through its inline
    subscribe (no client, no ACL)::

        capture = midge_capture("sensors/#")            # on midge_broker, or pass broker=
        ...
        [message] = capture.wait_for(1, timeout=3)      # midge.Message objects

This module imports nothing heavier than pytest when it is loaded: the broker and
paho-mqtt are imported by the fixtures that need them.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from .broker import Broker
    from .inline import InlineSubscription
    from .message import Message

__all__ = [
    "MessageCapture",
    "RunningBroker",
    "TestClient",
    "midge_broker",
    "midge_broker_factory",
    "midge_capture",
    "midge_client",
]

#: seconds a stopping broker gets to finish before teardown fails
STOP_TIMEOUT = 15.0
_PAHO_MISSING = (
    "midge_client needs paho-mqtt, which is not installed: "
    "pip install paho-mqtt (or 'midge[test]')"
)


class RunningBroker:
    """A broker serving in a background thread; ``host`` and ``port`` are where it listens."""

    def __init__(self, broker: Broker, portal: BlockingPortal,
                 portal_cm: AbstractContextManager[BlockingPortal], future: Future[Any]) -> None:
        self.broker = broker
        self.portal = portal
        self.host, self.port = broker.addresses[0]
        #: every listener's bound (host, port), in settings order ((path, 0) for unix)
        self.addresses = list(broker.addresses)
        self._portal_cm = portal_cm
        self._future = future
        self.stopped = False

    def __repr__(self) -> str:
        return f"<RunningBroker {self.host}:{self.port}{' stopped' if self.stopped else ''}>"

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` (a function or coroutine function) in the broker's event
        loop and return its result; the way to touch broker state from a test."""
        if self.stopped:
            raise RuntimeError("the broker is stopped")
        return self.portal.call(func, *args)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                retain: bool = False) -> int:
        """Publish as the broker itself (inline); returns the number of recipients."""
        broker = self.broker

        async def publish() -> int:
            return await broker.publish(topic, payload, qos, retain)

        result: int = self.call(publish)
        return result

    def stop(self) -> None:
        """Shut the broker down gracefully and wait until its ``run`` has returned:
        listeners closed, clients disconnected (v5 ones get DISCONNECT 0x8B), plugin tasks
        cancelled, deferred hook calls drained (each step within ``shutdown_timeout``)
        and ``on_stopped`` done. Raises ``TimeoutError`` after ``STOP_TIMEOUT`` seconds,
        and what ``run`` raised, if anything. Again: no effect."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.portal.call(self.broker.shutdown)
            self._future.result(timeout=STOP_TIMEOUT)
        finally:
            self._portal_cm.__exit__(None, None, None)


def _authenticates(objects: Iterable[Any], tables: Mapping[str, Any]) -> bool:
    from .hooks import discover, implemented_hooks

    targets = list(objects)
    if tables:
        found = discover()
        targets += [found[name].load() for name in tables if name in found]
    return any("on_connect_authenticate" in implemented_hooks(t) for t in targets)


def _named(objects: Iterable[Any]) -> list[tuple[str, Any]]:
    named = []
    for index, item in enumerate(objects):
        if isinstance(item, tuple):
            named.append((str(item[0]), item[1]))
        else:
            named.append((f"{type(item).__name__.lower()}-{index}", item))
    return named


@pytest.fixture
def midge_broker_factory() -> Iterator[Callable[..., RunningBroker]]:
    """Start brokers on free 127.0.0.1 ports; each is stopped at teardown.

    ``factory(plugins=None, *, objects=(), allow_anonymous=None, listeners=(),
    **limits)``: ``plugins`` maps entry-point plugin names to their config tables (as
    ``[plugins.NAME]`` would), ``objects`` are plugin objects or ``(name, object)``
    pairs (called before the entry-point plugins), ``listeners`` are more
    ``ListenerSettings`` (a tls or ws listener, say; port 0 picks a free one) served
    beside the first, plain TCP one, their bound addresses in ``handle.addresses``;
    ``limits`` are ``BrokerSettings`` fields.
    """
    import anyio.from_thread

    from .broker import Broker
    from .config import BrokerSettings, ListenerSettings, Settings

    running: list[RunningBroker] = []

    def start(plugins: Mapping[str, Mapping[str, Any]] | None = None, *,
              objects: Iterable[Any] = (), allow_anonymous: bool | None = None,
              listeners: Iterable[ListenerSettings] = (), **limits: Any) -> RunningBroker:
        tables = {name: dict(table) for name, table in (plugins or {}).items()}
        named = _named(objects)
        if allow_anonymous is None:
            allow_anonymous = not _authenticates((obj for _, obj in named), tables)
        settings = Settings(
            broker=BrokerSettings(**limits),
            listeners=(
                ListenerSettings(host="127.0.0.1", port=0, allow_anonymous=allow_anonymous),
                *listeners,
            ),
            plugins=tables,
            source="<midge_broker_factory>",
        )
        broker = Broker(settings, plugins=named)
        portal_cm = anyio.from_thread.start_blocking_portal()
        portal = portal_cm.__enter__()
        try:
            future, _ = portal.start_task(broker.run, name="midge broker")
        except BaseException:
            portal_cm.__exit__(None, None, None)
            raise
        handle = RunningBroker(broker, portal, portal_cm, future)
        running.append(handle)
        return handle

    yield start
    errors = []
    for handle in reversed(running):
        try:
            handle.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def midge_broker(midge_broker_factory: Callable[..., RunningBroker]) -> RunningBroker:
    """A broker with the defaults: no plugins, anonymous clients allowed."""
    return midge_broker_factory()


class TestClient:
    """A connected paho-mqtt client on its own network thread, recording what it gets."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, paho_client: Any, client_id: str, protocol: int) -> None:
        #: the paho ``Client``, for anything this wrapper does not cover
        self.paho = paho_client
        self.client_id = client_id
        self.protocol = protocol
        #: received messages (paho ``MQTTMessage``), oldest first
        self.messages: queue.Queue[Any] = queue.Queue()
        #: CONNACK reason code as paho reports it: for v3 clients the v5-style code paho
        #: maps the return code to (4 -> 0x86, 5 -> 0x87, 1 -> 0x84, 2 -> 0x85, 3 -> 0x88)
        self.reason_code: int | None = None
        self.session_present = False
        self.connack_properties: Any = None
        self._connack = threading.Event()
        self._acks: dict[int, tuple[list[int], Any]] = {}
        self._acked = threading.Condition()
        self.disconnects: queue.Queue[int] = queue.Queue()

    # paho callbacks (VERSION2), called on paho's thread
    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.reason_code = int(rc.value)
        self.session_present = bool(flags.session_present)
        self.connack_properties = props
        self._connack.set()

    def _on_ack(self, _c: Any, _u: Any, mid: int, codes: Any, props: Any) -> None:
        values = [int(c.value) for c in (codes if isinstance(codes, list) else [codes])]
        with self._acked:
            self._acks[mid] = (values, props)
            self._acked.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _props: Any) -> None:
        self.disconnects.put(int(rc.value))

    def _wait_ack(self, mid: int, what: str, timeout: float) -> list[int]:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise AssertionError(f"no {what} acknowledgement within {timeout}s")
            return self._acks.pop(mid)[0]

    def subscribe(self, topic: str, qos: int = 0, *, check: bool = True,
                  timeout: float = 3.0, **kwargs: Any) -> list[int]:
        """Subscribe and wait for SUBACK; returns its reason codes (granted QoS or
        >= 0x80). With ``check`` (the default) a refusal fails the test."""
        result, mid = self.paho.subscribe(topic, qos, **kwargs)
        if result != 0:
            raise AssertionError(f"paho could not send SUBSCRIBE: {result!r}")
        codes = self._wait_ack(mid, "SUBACK", timeout)
        if check and any(code >= 0x80 for code in codes):
            raise AssertionError(f"subscription to {topic!r} refused: "
                                 + ", ".join(f"0x{code:02X}" for code in codes))
        return codes

    def unsubscribe(self, topic: str, timeout: float = 3.0) -> list[int]:
        """Unsubscribe and wait for UNSUBACK; returns its reason codes."""
        _result, mid = self.paho.unsubscribe(topic)
        return self._wait_ack(mid, "UNSUBACK", timeout)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                retain: bool = False, *, timeout: float = 3.0, **kwargs: Any) -> int:
        """Publish and wait until it is sent (QoS 0) or its flow is complete (QoS 1:
        PUBACK, QoS 2: PUBCOMP); returns that packet's reason code: 0 for QoS 0 and v3,
        which carry none. (paho ignores a PUBREC's reason code and sends PUBREL anyway, so
        a QoS 2 rejection shows as PUBCOMP 0x92.)"""
        info = self.paho.publish(topic, payload, qos, retain, **kwargs)
        if info.rc != 0:
            raise AssertionError(f"paho could not send PUBLISH: {info.rc!r}")
        return self._wait_ack(info.mid, "PUBLISH", timeout)[0]

    def expect(self, timeout: float = 3.0) -> Any:
        """The next received message (paho ``MQTTMessage``); fails the test if none
        arrives within ``timeout`` seconds."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"client {self.client_id!r} received no message within {timeout}s"
            ) from None

    def expect_none(self, wait: float = 0.5) -> None:
        """Fail the test if a message arrives within ``wait`` seconds."""
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(
            f"client {self.client_id!r} received an unexpected message on "
            f"{message.topic!r}: {message.payload!r}"
        )

    def disconnect(self) -> None:
        """Send DISCONNECT and stop the network thread (again: no effect)."""
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def midge_client(
    request: pytest.FixtureRequest, midge_broker_factory: Callable[..., RunningBroker]
) -> Iterator[Callable[..., TestClient]]:
    """Connect paho-mqtt clients; each is disconnected at teardown.

    ``factory(broker=None, *, client_id=None, protocol=4, username=None, password=None,
    clean=True, keepalive=60, will=None, properties=None, check=True, timeout=5.0)``:
    ``broker`` defaults to ``midge_broker``; ``protocol`` is 3 (3.1), 4 (3.1.1) or 5;
    ``will`` is ``(topic, payload, qos, retain)``; ``properties`` are v5 CONNECT
    properties (a paho ``Properties``). With ``check`` a refused CONNECT fails the test;
    without, the refused client is returned with its ``reason_code``.
    """
    try:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    except ImportError:
        pytest.skip(_PAHO_MISSING)

    made: list[TestClient] = []

    def make(broker: RunningBroker | None = None, *, client_id: str | None = None,
             protocol: int = 4, username: str | None = None, password: str | None = None,
             clean: bool = True, keepalive: int = 60,
             will: tuple[str, bytes | str, int, bool] | None = None,
             properties: Any = None, check: bool = True, timeout: float = 5.0) -> TestClient:
        if protocol not in (3, 4, 5):
            raise ValueError(f"protocol must be 3 (3.1), 4 (3.1.1) or 5, not {protocol!r}")
        if broker is None:
            broker = request.getfixturevalue("midge_broker")
        cid = client_id if client_id is not None else f"midge-test-{uuid.uuid4().hex[:8]}"
        extra: dict[str, Any] = {} if protocol == 5 else {"clean_session": clean}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=MQTTProtocolVersion(protocol), **extra)
        record = TestClient(client, cid, protocol)
        client.on_message = lambda _c, _u, message: record.messages.put(message)
        client.on_connect = record._on_connect
        client.on_disconnect = record._on_disconnect
        client.on_publish = record._on_ack
        client.on_subscribe = record._on_ack
        client.on_unsubscribe = record._on_ack
        if username is not None or password is not None:
            client.username_pw_set(username or "", password)
        if will is not None:
            client.will_set(*will)
        connect_kwargs: dict[str, Any] = {"keepalive": keepalive}
        if protocol == 5:
            connect_kwargs["clean_start"] = clean
            if properties is not None:
                connect_kwargs["properties"] = properties
        client.connect(broker.host, broker.port, **connect_kwargs)
        client.loop_start()
        made.append(record)
        if not record._connack.wait(timeout):
            record.disconnect()
            raise AssertionError(f"client {cid!r}: no CONNACK within {timeout}s")
        assert record.reason_code is not None
        if record.reason_code >= 0x80:
            record.disconnect()  # or paho keeps reconnecting
            if check:
                raise AssertionError(
                    f"client {cid!r} was refused: CONNACK 0x{record.reason_code:02X}"
                )
        return record

    yield make
    for record in made:
        record.disconnect()


class MessageCapture:
    """The messages routed on one topic filter, collected through an inline subscription."""

    def __init__(self, broker: RunningBroker, topic_filter: str) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self._messages: list[Message] = []
        self._changed = threading.Condition()
        self._subscription: InlineSubscription | None = None

    def _start(self) -> None:
        def subscribe() -> InlineSubscription:
            return self.broker.broker.subscribe(self.topic_filter, callback=self._put)

        self._subscription = self.broker.call(subscribe)

    def _put(self, message: Message) -> None:  # in the broker's thread
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    @property
    def messages(self) -> list[Message]:
        """Every message captured so far (a copy), oldest first."""
        with self._changed:
            return list(self._messages)

    @property
    def payloads(self) -> list[bytes]:
        return [message.payload for message in self.messages]

    def wait_for(self, n: int = 1, timeout: float = 3.0) -> list[Message]:
        """The first ``n`` captured messages, waiting up to ``timeout`` seconds for them
        to arrive; fails the test with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = ", ".join(f"{m.topic}={m.payload[:40]!r}" for m in self._messages)
                    raise AssertionError(
                        f"captured {len(self._messages)} of {n} messages on "
                        f"{self.topic_filter!r} within {timeout}s: [{got}]"
                    )
                self._changed.wait(left)
            return self._messages[:n]

    def clear(self) -> None:
        with self._changed:
            self._messages.clear()

    def close(self) -> None:
        """Stop capturing (again, or once the broker is stopped: no effect)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None and not self.broker.stopped:
            self.broker.call(subscription.close)


@pytest.fixture
def midge_capture(
    request: pytest.FixtureRequest, midge_broker_factory: Callable[..., RunningBroker]
) -> Iterator[Callable[..., MessageCapture]]:
    """Capture routed messages: ``factory(topic_filter="#", broker=None)``, ``broker``
    defaulting to ``midge_broker``. Retained messages that match are captured first."""
    made: list[MessageCapture] = []

    def make(topic_filter: str = "#", broker: RunningBroker | None = None) -> MessageCapture:
        if broker is None:
            broker = request.getfixturevalue("midge_broker")
        capture = MessageCapture(broker, topic_filter)
        capture._start()
        made.append(capture)
        return capture

    yield make
    for capture in made:
        capture.close()
