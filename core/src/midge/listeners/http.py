"""The http listener: health, readiness, Prometheus metrics, JSON stats, clients, status page.

The rule: HTTP/1.1 is parsed by h11 (sans-I/O, like the codec) and served from the broker's
own event loop through anyio streams; no web framework. With ``certfile`` and ``keyfile`` it
serves HTTPS through the tls listener's own TLS layer and contexts (the same checks, the
same reload on SIGHUP). The listener reads the broker only through the read-only
``midge.api.Observer`` (``Acceptor.observer``) and computes every figure when it is asked,
so MQTT traffic pays nothing for being observed. Every request is bounded: its headers in
size, its arrival (and its TLS handshake) in time, the connections in number; bad input
gets its status code (400, 401, 404, 405, 408, 413, 431) or a TLS alert, and never a
traceback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http
import importlib.resources
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.to_thread
import h11
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from .._version import __version__
from ..api import CLIENT_STATES, Observer
from ..config import HttpAuth, ListenerSettings, is_loopback
from ._base import Acceptor, Listener, bind_error
from ._layers import TransportError
from .tls import Contexts, TlsLayer

log = logging.getLogger("midge.http")

#: seconds a client has to send a whole request (and to start the next one on a kept-alive
#: connection) before it is answered 408 and closed
REQUEST_TIMEOUT = 10.0
#: largest request head (request line and headers), bytes; beyond it: 431
MAX_HEAD_BYTES = 16 * 1024
#: largest request body read (GET needs none), bytes; beyond it: 413
MAX_BODY_BYTES = 64 * 1024
#: simultaneous HTTP connections; further ones are closed at once
MAX_CONNECTIONS = 64
#: clients per page of /api/clients, by default and at most
PAGE_DEFAULT = 100
PAGE_MAX = 1000
#: paths answered without authentication: probes reveal nothing but up/ready
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_RECEIVE = 65536
_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_SERVER = f"midge/{__version__}".encode()
#: how a plain HTTP request starts (a TLS record starts with the byte 0x16)
_PLAIN_HTTP = re.compile(rb"[A-Z]{3,10} ")
#: the status page's headers: its own inline script and style only, data from this origin
_PAGE_POLICY = (b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                b"connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'")


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind ``spec``'s address (serving starts with ``start``)."""
    observer = acceptor.observer
    if observer is None:
        raise RuntimeError("an http listener needs the broker's observer (run it in a Broker)")
    if spec.auth is None and not spec.public and not is_loopback(spec.host):
        raise ValueError(f"http listener on {spec.host}: without auth it binds only a loopback "
                         "address unless public = true")
    # certificates first: a file that cannot be used stops startup, naming it
    contexts = Contexts(spec) if spec.tls else None
    try:
        multi = await anyio.create_tcp_listener(local_host=spec.host, local_port=spec.port)
    except OSError as exc:
        raise bind_error(exc, spec.host, spec.port) from exc
    return HttpListener(spec, multi, observer, contexts)


class HttpListener:
    """A bound HTTP listener serving the broker's observability endpoints."""

    def __init__(self, spec: ListenerSettings, multi: Any, observer: Observer,
                 contexts: Contexts | None) -> None:
        self._spec = spec
        self._multi = multi
        #: the TLS contexts of an HTTPS listener (None: plain HTTP)
        self._contexts = contexts
        #: one per accept loop (a scope can be entered once)
        self._scopes: list[anyio.CancelScope] = []
        self.app = App(observer, spec.auth)
        self.addresses: list[tuple[str, int]] = []
        for sock in multi.listeners:
            local = sock.extra(SocketAttribute.local_address)
            self.addresses.append((str(local[0]), int(local[1])))
        self._open = 0

    async def start(self, task_group: TaskGroup) -> None:
        for sock in self._multi.listeners:
            task_group.start_soon(self._accept_loop, sock, task_group)

    def reload(self) -> None:
        """Reload the certificates of an HTTPS listener (its auth comes with the
        configuration)."""
        if self._contexts is not None:
            self._contexts.reload()

    async def aclose(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        await self._multi.aclose()

    async def _accept_loop(self, sock: Any, task_group: TaskGroup) -> None:
        scope = anyio.CancelScope()
        self._scopes.append(scope)
        with scope:
            while True:
                try:
                    stream = await sock.accept()
                except anyio.ClosedResourceError:
                    return
                except OSError as exc:
                    log.error("accept on %s failed: %s", self._spec.label, exc)
                    await anyio.sleep(0.1)
                    continue
                if self._open >= MAX_CONNECTIONS:
                    log.warning("http %s: %d connections open; closing a new one",
                                self._spec.label, MAX_CONNECTIONS)
                    await stream.aclose()
                    continue
                task_group.start_soon(self._serve, stream)

    async def _serve(self, raw: SocketStream) -> None:
        # open connections end with the broker's connection task group at shutdown
        self._open += 1
        stream: Stream = raw
        try:
            peer = raw.extra(SocketAttribute.remote_address)
            name = f"{peer[0]}:{peer[1]}"
        except Exception:
            name = "?"
        try:
            if self._contexts is not None:
                secured = TlsStream(raw, self._contexts.layer())
                stream = secured
                if not await secured.handshake(name):
                    return
            await HttpConnection(self.app, stream, name).run()
        finally:
            self._open -= 1
            with anyio.CancelScope(shield=True):
                await stream.aclose()


class Stream(Protocol):
    """What an HTTP connection reads and writes: a socket stream, or TLS over one."""

    async def receive(self, max_bytes: int = 65536) -> bytes: ...

    async def send(self, item: bytes) -> None: ...

    async def aclose(self) -> None: ...


class TlsStream:
    """HTTPS: the tls listener's TLS layer (sans-I/O) over a socket stream."""

    def __init__(self, raw: SocketStream, layer: TlsLayer) -> None:
        self.raw = raw
        self.layer = layer
        #: application data that came with the end of the handshake
        self._early = b""

    async def handshake(self, peer: str) -> bool:
        """Complete the TLS handshake (False: it failed or timed out, and is logged)."""
        layer = self.layer
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                first = True
                while not layer.established:
                    data = await self.raw.receive(_RECEIVE)
                    if first and _PLAIN_HTTP.match(data):
                        log.info("http client %s sent plain HTTP to an HTTPS listener; "
                                 "answered 400", peer)
                        await self.raw.send(_plain_http_refusal())
                        return False
                    first = False
                    try:
                        self._early += layer.receive(data)
                    finally:
                        # the handshake's next flight, or the alert that refuses it
                        await self._flush()
        except TransportError as exc:
            log.info("http client %s: %s", peer, exc)
            return False
        except TimeoutError:
            log.info("http client %s did not complete a TLS handshake within %s s; closing",
                     peer, REQUEST_TIMEOUT)
            return False
        except _CLOSED:
            return False
        return True

    async def receive(self, max_bytes: int = _RECEIVE) -> bytes:
        if self._early:
            data, self._early = self._early, b""
            return data
        while True:
            if self.layer.ended:
                raise anyio.EndOfStream
            data = await self.raw.receive(max_bytes)
            try:
                plain = self.layer.receive(data)
            except TransportError as exc:
                raise anyio.BrokenResourceError(str(exc)) from None
            await self._flush()
            if plain:
                return plain

    async def send(self, item: bytes) -> None:
        self.layer.send(item)
        await self._flush()

    async def aclose(self) -> None:
        try:
            if self.layer.established:
                self.layer.close()
                await self._flush()  # close_notify
        except _CLOSED:
            pass
        finally:
            await self.raw.aclose()

    async def _flush(self) -> None:
        data = self.layer.take()
        if data:
            await self.raw.send(data)


def _plain_http_refusal() -> bytes:
    body = json.dumps({"error": "this is an HTTPS listener: use https://"}).encode()
    headers = [*_headers(b"application/json", body), (b"connection", b"close")]
    return (b"HTTP/1.1 400 Bad Request\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            + b"\r\n" + body)


class HttpConnection:
    """One HTTP/1.1 connection: requests in, responses out, until either side closes."""

    def __init__(self, app: App, stream: Stream, peer: str) -> None:
        self.app = app
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.peer = peer

    async def run(self) -> None:
        while True:
            try:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    request, body = await self._read_request()
            except TimeoutError:
                if self.h11.their_state is h11.IDLE and not self.h11.trailing_data[0]:
                    return  # an idle kept-alive connection: closed without a word
                log.info("http client %s sent no complete request within %s s; closing",
                         self.peer, REQUEST_TIMEOUT)
                await self._error(408, "request timeout")
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                log.info("http client %s: bad request (%d): %s", self.peer, status, exc)
                await self._error(status, "request header fields too large" if status == 431
                                  else "bad request")
                return
            except _BodyTooLarge:
                await self._error(413, "request body too large")
                return
            except _Closed:
                return
            if request is None:
                return
            status, headers, payload = await self.app.respond(request, body)
            if request.method == b"HEAD":
                payload = b""
            # a client that does not read its answer is closed like one that does not send
            with anyio.move_on_after(REQUEST_TIMEOUT) as sending:
                try:
                    await self._send(h11.Response(status_code=status, headers=headers,
                                                  reason=_phrase(status)))
                    if payload:
                        await self._send(h11.Data(data=payload))
                    await self._send(h11.EndOfMessage())
                except _CLOSED:
                    return
            if sending.cancelled_caught:
                log.info("http client %s did not read its answer within %s s; closing",
                         self.peer, REQUEST_TIMEOUT)
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive(_RECEIVE)
                except _CLOSED:
                    data = b""
                if not data and request is None:
                    raise _Closed  # gone before (or in the middle of) a request head
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                # h11 bounds a head that arrives in pieces; one that came whole is
                # measured here
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > MAX_HEAD_BYTES:
                    raise h11.RemoteProtocolError("request head too large",
                                                  error_status_hint=431)
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                if request is None:
                    raise _Closed
                return None, b""
            elif event is h11.PAUSED:
                return None, b""

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send(data)

    async def _error(self, status: int, message: str) -> None:
        """Answer a request that could not be read, if the connection still allows it."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": message}).encode()
        headers = [*_headers(b"application/json", body), (b"connection", b"close")]
        with anyio.move_on_after(2):
            try:
                await self._send(h11.Response(status_code=status, headers=headers,
                                              reason=_phrase(status)))
                await self._send(h11.Data(data=body))
                await self._send(h11.EndOfMessage())
            except (*_CLOSED, h11.LocalProtocolError):
                pass


class _Closed(Exception):
    """The client went away before a request began."""


class _BodyTooLarge(Exception):
    """A request body beyond MAX_BODY_BYTES."""


Response = tuple[int, list[tuple[bytes, bytes]], bytes]
#: what answers one path: (path, query, request) -> response
Route = Callable[[str, dict[str, list[str]], h11.Request], Awaitable[Response]]


class App:
    """What each path answers; the transport is HttpConnection's business."""

    def __init__(self, observer: Observer, auth: HttpAuth | None) -> None:
        self.observer = observer
        self.auth = auth
        #: SHA-256 of Authorization headers already verified (a password hash is slow by
        #: design; a dashboard polling every second must not pay it each time)
        self._verified: set[bytes] = set()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(observer))
        self.registry.register(ProcessCollector(registry=None))
        self._page: bytes | None = None

    async def respond(self, request: h11.Request, body: bytes) -> Response:
        try:
            response: Response = await self._respond(request)
        except Exception:
            log.exception("http: internal error answering %s %s",
                          request.method.decode("ascii", "replace"),
                          request.target.decode("ascii", "replace"))
            return _json(500, {"error": "internal error"})
        return response

    async def _respond(self, request: h11.Request) -> Response:
        target = urlsplit(request.target.decode("ascii", "replace"))
        path = target.path
        route = self._route(path)
        if route is None:
            return _json(404, {"error": f"no such path: {path}"})
        if request.method not in (b"GET", b"HEAD"):
            status, headers, payload = _json(405, {"error": "only GET and HEAD are allowed"})
            return status, [*headers, (b"allow", b"GET, HEAD")], payload
        if path not in OPEN_PATHS and not await self._authorized(request):
            status, headers, payload = _json(401, {"error": "authentication required"})
            challenge = b'Basic realm="midge", charset="UTF-8"'
            if self.auth is not None and not self.auth.username:
                challenge = b'Bearer realm="midge"'
            return status, [*headers, (b"www-authenticate", challenge)], payload
        query = parse_qs(target.query)
        return await route(path, query, request)

    def _route(self, path: str) -> Route | None:
        if path == "/":
            return self._status_page
        if path == "/healthz":
            return self._healthz
        if path == "/readyz":
            return self._readyz
        if path == "/metrics":
            return self._metrics
        if path == "/stats":
            return self._stats
        if path == "/api/clients":
            return self._clients
        if path.startswith("/api/clients/") and len(path) > len("/api/clients/"):
            return self._client
        return None

    # -- authentication --------------------------------------------------------------------

    async def _authorized(self, request: h11.Request) -> bool:
        auth = self.auth
        if auth is None:
            return True
        header = b""
        for name, value in request.headers:
            if name == b"authorization":
                header = value
        if not header:
            return False
        scheme, _, credentials = header.partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"bearer" and auth.token:
            return hmac.compare_digest(credentials, auth.token.encode())
        if scheme != b"basic" or not auth.username:
            return False
        key = hashlib.sha256(header).digest()
        if key in self._verified:
            return True
        try:
            user, _, password = base64.b64decode(credentials, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = hmac.compare_digest(user, auth.username.encode())
        # the slow hash runs off the event loop, so a login does not stall MQTT traffic
        ok = await anyio.to_thread.run_sync(verify_password, auth.password_hash, password)
        if ok and user_ok:
            if len(self._verified) > 64:
                self._verified.clear()
            self._verified.add(key)
            return True
        return False

    # -- the paths -------------------------------------------------------------------------

    async def _healthz(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        return _json(200, {"status": "ok"})

    async def _readyz(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        reason = await self.observer.not_ready()
        if reason is None:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "not ready", "reason": reason})

    async def _metrics(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        accept = ""
        for name, value in request.headers:
            if name == b"accept":
                accept = value.decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        payload = encoder(self.registry)
        return 200, _headers(content_type.encode(), payload), payload

    async def _stats(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        return _json(200, self.observer.sys_info())

    async def _clients(self, path: str, query: dict[str, list[str]],
                       request: h11.Request) -> Response:
        unknown = set(query) - {"prefix", "state", "limit", "offset"}
        if unknown:
            return _json(400, {"error": f"unknown parameter {sorted(unknown)[0]!r}; allowed: "
                                        "prefix, state, limit, offset"})
        prefix = query.get("prefix", [""])[-1]
        state = query.get("state", ["all"])[-1]
        if state not in CLIENT_STATES:
            return _json(400, {"error": f"state must be one of {', '.join(CLIENT_STATES)}"})
        try:
            limit = int(query.get("limit", [str(PAGE_DEFAULT)])[-1])
            offset = int(query.get("offset", ["0"])[-1])
        except ValueError:
            return _json(400, {"error": "limit and offset must be integers"})
        if not 1 <= limit <= PAGE_MAX or offset < 0:
            return _json(400, {"error": f"limit must be in 1..{PAGE_MAX}, offset at least 0"})
        total, clients = self.observer.clients_info(prefix, state, offset, limit)
        return _json(200, {"total": total, "offset": offset, "limit": limit,
                           "clients": clients})

    async def _client(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        client_id = unquote(path[len("/api/clients/"):])
        info = self.observer.client_info(client_id)
        if info is None:
            return _json(404, {"error": f"no client or session {client_id!r}"})
        return _json(200, info)

    async def _status_page(self, path: str, query: dict[str, list[str]],
                  request: h11.Request) -> Response:
        if self._page is None:
            self._page = (importlib.resources.files("midge.listeners")
                          .joinpath("status.html").read_bytes())
        headers = _headers(b"text/html; charset=utf-8", self._page)
        headers.append((b"content-security-policy", _PAGE_POLICY))
        return 200, headers, self._page


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _headers(content_type: bytes, payload: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", content_type),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"server", _SERVER),
    ]


def _json(status: int, value: Any) -> Response:
    payload = json.dumps(value, separators=(",", ":")).encode()
    return status, _headers(b"application/json", payload), payload


# -- stored passwords: the auth_ledger's formats, verified with the standard library -------


def verify_password(stored: str, password: bytes) -> bool:
    """Check ``password`` against ``pbkdf2_sha256$ITER$SALT$HASH``,
    ``pbkdf2_sha512$ITER$SALT$HASH`` or ``scrypt$N$R$P$SALT$HASH`` (base64 fields)."""
    fields = stored.split("$")
    try:
        if fields[0] in ("pbkdf2_sha256", "pbkdf2_sha512") and len(fields) == 4:
            digest = _b64(fields[3])
            derived = hashlib.pbkdf2_hmac(fields[0][7:], password, _b64(fields[2]),
                                          int(fields[1]), len(digest))
        elif fields[0] == "scrypt" and len(fields) == 6:
            n, r, p = int(fields[1]), int(fields[2]), int(fields[3])
            digest = _b64(fields[5])
            derived = hashlib.scrypt(password, salt=_b64(fields[4]), n=n, r=r, p=p,
                                     maxmem=1 << 30, dklen=len(digest))
        else:
            return False
    except (ValueError, binascii.Error):
        log.error("http listener: the configured password_hash cannot be read")
        return False
    return hmac.compare_digest(derived, digest)


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# -- Prometheus: a collector that reads the broker when scraped ----------------------------


class BrokerCollector:
    """The broker's figures as Prometheus metrics, read at scrape time."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        observer = self.observer
        stats = observer.stats
        figures = observer.figures()
        info = GaugeMetricFamily("midge_build_info", "midge version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("midge_start_time_seconds",
                                "when the broker started, seconds since the epoch",
                                value=stats.started)
        now = GaugeMetricFamily("midge_connections", "open MQTT network connections",
                                labels=["listener"])
        total = CounterMetricFamily("midge_connections", "MQTT network connections accepted",
                                    labels=["listener"])
        for listener in figures["listeners"]:
            if listener["type"] == "http":
                continue
            now.add_metric([listener["name"]], listener["connections"])
            total.add_metric([listener["name"]], listener["connections_total"])
        yield now
        yield total
        yield GaugeMetricFamily("midge_clients_connected", "clients connected (CONNACK sent)",
                                value=figures["clients_connected"])
        yield GaugeMetricFamily("midge_clients_maximum", "most clients connected at once",
                                value=stats.clients_maximum)
        yield GaugeMetricFamily("midge_sessions", "sessions, connected or not",
                                value=figures["sessions"])
        refused = CounterMetricFamily("midge_connects_refused",
                                      "connections refused, by reason", labels=["reason"])
        for reason, count in sorted(stats.connects_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        for direction, counts, sizes in (
            ("received", stats.received_by_qos, stats.received_bytes_by_qos),
            ("sent", stats.sent_by_qos, stats.sent_bytes_by_qos),
        ):
            messages = CounterMetricFamily(
                f"midge_messages_{direction}", f"PUBLISH messages {direction}, by QoS",
                labels=["qos"])
            volume = CounterMetricFamily(
                f"midge_publish_bytes_{direction}",
                "payload bytes of PUBLISHes received, by QoS" if direction == "received"
                else "PUBLISH packet bytes sent, by QoS", labels=["qos"])
            for qos in range(3):
                messages.add_metric([str(qos)], counts[qos])
                volume.add_metric([str(qos)], sizes[qos])
            yield messages
            yield volume
        yield CounterMetricFamily("midge_bytes_received", "bytes read from MQTT clients",
                                  value=stats.bytes_received)
        yield CounterMetricFamily("midge_bytes_sent", "bytes written to MQTT clients",
                                  value=stats.bytes_sent)
        dropped = CounterMetricFamily("midge_messages_dropped",
                                      "deliveries dropped, by reason", labels=["reason"])
        for reason, count in sorted(stats.dropped_by_reason.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily("midge_inflight_dropped",
                                  "QoS 1/2 deliveries abandoned after being given a packet id",
                                  value=stats.inflight_dropped)
        yield GaugeMetricFamily("midge_retained_messages", "retained messages",
                                value=figures["retained"])
        yield GaugeMetricFamily("midge_subscriptions", "client subscriptions",
                                value=figures["subscriptions"])
        yield GaugeMetricFamily("midge_session_queue_depth",
                                "QoS 1/2 deliveries waiting in session queues, summed",
                                value=figures["queued"])
        yield GaugeMetricFamily("midge_session_queue_depth_max",
                                "the longest session queue", value=figures["queued_max"])
        yield GaugeMetricFamily("midge_inflight_messages",
                                "QoS 1/2 deliveries sent and not yet acknowledged",
                                value=figures["inflight"])
        for direction, table in (("received", stats.packets_by_type(True)),
                                 ("sent", stats.packets_by_type(False))):
            packets = CounterMetricFamily(f"midge_packets_{direction}",
                                          f"MQTT packets {direction}, by type", labels=["type"])
            for cls, count in table.items():
                packets.add_metric([cls.__name__.upper()], count)
            yield packets
        uptime = max(0.0, time.time() - stats.started)
        yield GaugeMetricFamily("midge_uptime_seconds", "seconds since the broker started",
                                value=math.floor(uptime))
        storage = observer.storage_info()
        if storage is not None:
            yield from storage_metrics(storage)


def storage_metrics(storage: dict[str, Any]) -> Iterator[Metric]:
    """The storage writer's figures (``Observer.storage_info``) as metrics."""
    info = GaugeMetricFamily("midge_storage_info", "the active storage backend",
                             labels=["backend", "durability"])
    info.add_metric([storage["backend"], storage["durability"]], 1)
    yield info
    yield GaugeMetricFamily("midge_storage_up",
                            "1 unless the last commit attempt failed", value=storage["reachable"])
    yield CounterMetricFamily("midge_storage_commits", "batches committed to the storage",
                              value=storage["commits"])
    yield CounterMetricFamily("midge_storage_commit_failures",
                              "commit attempts that failed (each retry counts)",
                              value=storage["commit_failures"])
    yield HistogramMetricFamily("midge_storage_commit_seconds",
                                "time a successful commit took",
                                buckets=list(storage["commit_seconds_buckets"].items()),
                                sum_value=storage["commit_seconds"])
    yield SummaryMetricFamily("midge_storage_batch_size", "changes per committed batch",
                              count_value=storage["commits"],
                              sum_value=storage["items_committed"])
    yield GaugeMetricFamily("midge_storage_pending_items",
                            "changes taken for a commit and not stored yet",
                            value=storage["pending_items"])

