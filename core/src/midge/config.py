"""Configuration: a TOML file (or nothing) turned into typed, frozen settings.

The rule: everything is validated when the file is read. An unknown key or a bad value is
a ConfigError naming the file, the key and what is allowed; nothing is silently ignored
or coerced.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MAX_PACKET_SIZE = 268_435_455
LISTENER_TYPES = ("tcp", "tls", "ws", "wss", "unix", "http")
#: listener types that terminate TLS (and take the TLS keys)
TLS_TYPES = ("tls", "wss")
#: listener types that speak WebSocket
WS_TYPES = ("ws", "wss")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
#: certificate fields ``identity_field`` may name: the subject's attributes by their
#: short names, the whole subject as an RFC 4514 string, or the SHA-256 fingerprint
IDENTITY_FIELDS = ("CN", "O", "OU", "emailAddress", "serialNumber", "UID", "DN", "fingerprint")
#: the TLS keys an http listener takes too (it serves HTTPS with certfile and keyfile)
HTTP_TLS_KEYS = ("certfile", "keyfile", "cafile", "capath", "require_certificate",
                 "ciphers", "min_version")
#: keys that only some listener types take: key -> those types
_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    **{key: (*TLS_TYPES, "http") for key in HTTP_TLS_KEYS},
    **{key: TLS_TYPES for key in ("use_identity_as_username", "identity_field")},
    **{key: WS_TYPES for key in (
        "max_frame_size", "allowed_origins", "trust_forwarded")},
    "mode": ("unix",),
    "path": ("unix", *WS_TYPES),
    "proxy_protocol": ("tcp", "tls", "ws", "wss"),
    "auth": ("http",),
    "public": ("http",),
}
#: the http listener's port when the configuration names none
HTTP_PORT = 8080
#: stored password schemes the http listener verifies (the auth_ledger's formats)
PASSWORD_SCHEMES = ("pbkdf2_sha256", "pbkdf2_sha512", "scrypt")


class ConfigError(Exception):
    """A configuration file that cannot be used, with the file and key at fault."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key


def _limit(default: int, low: int, high: int, doc: str) -> Any:
    return field(default=default, metadata={"range": (low, high), "doc": doc})


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Limits and behaviour of the broker as a whole (the ``[broker]`` table)."""

    max_packet_size: int = _limit(
        16 * 1024 * 1024, 64, MAX_PACKET_SIZE,
        "largest packet accepted, in bytes, header included (safe default; up to 268435455)",
    )
    receive_maximum: int = _limit(
        1024, 1, 65535, "QoS 1/2 PUBLISHes a v5 client may have unacknowledged towards the broker"
    )
    # a subscriber's window refills once per loop turn (its PUBACKs arrive in one read,
    # the deliveries they free go out at the turn's end): with 20, a busy broker's turns
    # capped a healthy QoS 1 subscriber near 15,000 msg/s while its publishers were
    # accepted three times as fast; 100 lets it keep up
    max_inflight_messages: int = _limit(
        100, 0, 65535,
        "QoS 1/2 deliveries unacknowledged towards one client (0: as many as packet ids allow)",
    )
    max_queued_messages: int = _limit(
        1000, 1, 10_000_000,
        "deliveries waiting per client: QoS 1/2 in its session queue, QoS 0 in its socket "
        "(frames the socket has not taken)",
    )
    max_queued_bytes: int = _limit(
        64 * 1024 * 1024, 1024, 1 << 40,
        "bytes of QoS 0 deliveries waiting for one client (written and not yet taken by its "
        "socket); beyond it QoS 0 messages to that client are dropped and counted",
    )
    packets_per_turn: int = _limit(
        16, 0, 1_000_000,
        "most packets handled from one connection before the others get a turn (0: all "
        "that one read brought); keeps a flooding publisher from starving acknowledgements",
    )
    flap_max_drops: int = _limit(
        0, 0, 1_000_000,
        "flapping detection: connection ends a client id may have within flap_window "
        "seconds; one more and it is refused with CONNACK 0x9F for flap_ban seconds (0: off)",
    )
    flap_window: int = _limit(60, 1, 86400, "seconds over which flap_max_drops counts")
    flap_ban: int = _limit(60, 1, 86400, "seconds a flapping client is refused")
    flap_by_address: bool = field(default=False, metadata={
        "doc": "flapping is also counted per remote address (every client behind one NAT "
               "counts together)"})
    queue_full: str = field(default="drop", metadata={
        "choices": ("drop", "backpressure"),
        "doc": "what happens when a connected subscriber's QoS 1/2 queue is full: \"drop\" "
               "(drop and count) or \"backpressure\" (the publishers feeding it are read "
               "no further until it catches up; a stuck subscriber is still dropped)"})
    stuck_timeout: int = _limit(
        10, 1, 86400,
        "backpressure: seconds a subscriber with a full queue may go without acknowledging "
        "before it counts as stuck (its messages are then dropped, nobody waits for it)",
    )
    max_inbound_rate: int = _limit(
        0, 0, 10_000_000,
        "PUBLISHes per second one connection may send (bursts of as many); beyond it the "
        "connection is read no further until it is within the rate again (0: no limit)",
    )
    session_expiry_max: int = _limit(
        4_294_967_295, 0, 4_294_967_295, "cap on a v5 session expiry interval, in seconds"
    )
    persistent_session_expiry: int = _limit(
        0, 0, 4_294_967_295,
        "seconds a v3 clean_session=0 session outlives its connection (0: forever)",
    )
    connect_timeout: int = _limit(
        10, 1, 3600, "seconds a new connection has to send its CONNECT"
    )
    max_keepalive: int = _limit(
        65535, 0, 65535, "largest keepalive accepted, in seconds (0 in CONNECT is always allowed)"
    )
    max_connections: int = _limit(
        100_000, 1, 10_000_000, "simultaneous network connections; further ones are closed"
    )
    max_topic_length: int = _limit(65535, 1, 65535, "longest topic name or filter, in bytes")
    max_topic_levels: int = _limit(128, 1, 65535, "most levels in a topic name or filter")
    max_client_id_length: int = _limit(65535, 1, 65535, "longest client identifier, in bytes")
    topic_alias_maximum: int = _limit(
        10, 0, 65535, "topic aliases a v5 client may set per connection (0: none)"
    )
    sys_interval: int = _limit(
        10, 0, 86400, "seconds between $SYS updates and on_sys_info_tick (0: never)"
    )
    refused_subscription_code: int = _limit(
        0x87, 0x80, 0x87,
        "compatibility: the v5 SUBACK code for a subscription the ACL refuses, 135 (0x87 "
        "Not authorized, the default) or 128 (0x80 Unspecified error, which the Paho "
        "interoperability suite insists on)",
    )
    maximum_qos: int = _limit(
        2, 0, 2,
        "highest QoS accepted and granted (below 2: told to v5 clients; a PUBLISH above it: "
        "DISCONNECT 0x9B)",
    )
    retain_available: bool = field(default=True, metadata={
        "doc": "retained messages are supported (false: told to v5 clients; a retained "
               "PUBLISH: DISCONNECT 0x9A)"})
    wildcard_subscriptions: bool = field(default=True, metadata={
        "doc": "filters with + or # are accepted (false: told to v5 clients; using one: "
               "DISCONNECT 0xA2, v3: SUBACK failure)"})
    subscription_identifiers: bool = field(default=True, metadata={
        "doc": "v5 subscription identifiers are accepted (false: told to v5 clients; using "
               "one: DISCONNECT 0xA1)"})
    shared_subscriptions: bool = field(default=True, metadata={
        "doc": "$share/{group}/{filter} subscriptions are accepted (false: told to v5 clients; "
               "using one: DISCONNECT 0x9E, v3: SUBACK failure)"})
    shutdown_timeout: int = _limit(
        5, 0, 3600,
        "seconds each shutdown step may take: connections closing, deferred async hook "
        "calls draining, on_stopped",
    )
    response_information: str = field(default="", metadata={
        "doc": "Response Information for v5 clients that request it (\"\": none)"})
    # -- security: what a client that has not logged in, or one tenant, may cost --------
    max_connect_packet_size: int = _limit(
        65536, 64, MAX_PACKET_SIZE,
        "largest packet accepted before CONNACK (CONNECT, AUTH), in bytes; after CONNACK "
        "max_packet_size applies",
    )
    max_pending_per_address: int = _limit(
        128, 0, 10_000_000,
        "connections from one address that have not been sent CONNACK yet; further ones "
        "are closed at once (0: no limit)",
    )
    foreign_session_code: int = _limit(
        0x87, 0, 0x87,
        "CONNACK code for a client id whose session belongs to another user: 135 (0x87 "
        "Not authorized) or 133 (0x85 Client Identifier not valid); 0 lets any user take "
        "any session",
    )
    max_connections_per_user: int = _limit(
        0, 0, 10_000_000, "connected clients per user name (0: no limit); beyond: 0x97"
    )
    max_connections_per_address: int = _limit(
        0, 0, 10_000_000, "connected clients per remote address (0: no limit); beyond: 0x97"
    )
    max_sessions_per_user: int = _limit(
        0, 0, 10_000_000,
        "sessions (online or not) owned by one user name (0: no limit); beyond: 0x97",
    )
    max_subscriptions_per_client: int = _limit(
        10_000, 0, 10_000_000,
        "subscriptions one session may hold (0: no limit); beyond: SUBACK 0x97 (v3: 0x80)",
    )
    max_filters_per_subscribe: int = _limit(
        1000, 1, 268_435_455,
        "topic filters one SUBSCRIBE may carry; those beyond get SUBACK 0x97 (v3: 0x80) "
        "unexamined",
    )
    max_retained_messages: int = _limit(
        100_000, 0, 1_000_000_000,
        "retained messages kept (0: no limit); a new retained topic beyond it: 0x97",
    )
    max_retained_bytes: int = _limit(
        128 * 1024 * 1024, 0, 1 << 50,
        "payload bytes of all retained messages (0: no limit); beyond it: 0x97",
    )


@dataclass(frozen=True, slots=True)
class HttpAuth:
    """``[listeners.auth]`` of an http listener: basic authentication with a user name
    and a stored password hash, and/or a bearer token."""

    username: str = ""
    #: ``pbkdf2_sha256$...``, ``pbkdf2_sha512$...`` or ``scrypt$...`` (``midge passwd``)
    password_hash: str = ""
    token: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class ListenerSettings:
    """One ``[[listeners]]`` entry (``parse`` checks which keys a type takes).

    Compared and hashed by identity: the engine counts connections per listener with it
    as the key, once per accept and close (a field-by-field hash of every key would be
    paid each time), and two listeners are never the same one."""

    type: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 1883
    #: clients without credentials may connect on this listener
    allow_anonymous: bool = False
    name: str = ""
    max_connections: int = _limit(
        10_000_000, 1, 10_000_000,
        "simultaneous connections on this listener (the broker-wide limit applies too)",
    )
    #: a PROXY protocol v1/v2 header is read first (tcp, tls, ws, wss)
    proxy_protocol: bool = False
    # -- TLS (tls, wss; http with certfile and keyfile serves HTTPS)
    certfile: str = ""
    keyfile: str = ""
    cafile: str = ""
    capath: str = ""
    #: mutual TLS: a client without a certificate the CAs trust is refused
    require_certificate: bool = False
    #: the certificate's ``identity_field`` becomes the username hooks see
    use_identity_as_username: bool = False
    identity_field: str = "CN"
    #: OpenSSL cipher list for TLS 1.2 ("": OpenSSL's defaults)
    ciphers: str = ""
    min_version: str = "TLSv1.2"
    # -- WebSocket (ws, wss); ``path`` is also the unix listener's socket file
    path: str = ""
    max_frame_size: int = _limit(
        1024 * 1024, 2, 2**31, "largest WebSocket frame accepted, in bytes"
    )
    #: Origin header values allowed (empty: any)
    allowed_origins: tuple[str, ...] = ()
    #: the client address is X-Forwarded-For's (only behind a trusted proxy)
    trust_forwarded: bool = False
    # -- unix
    mode: int = _limit(0o660, 0, 0o777, "permissions of the socket file")
    #: http: serve a non-loopback address without ``auth`` (an explicit choice)
    public: bool = False
    #: http: who may read it (None: anyone who can reach it)
    auth: HttpAuth | None = None
    #: how logs, metrics and $SYS name it: ``name``, else its type and address
    label: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.name:
            label = self.name
        elif self.type == "unix":
            label = f"unix:{self.path}"
        else:
            label = f"{self.type}://{self.host}:{self.port}"
        object.__setattr__(self, "label", label)

    @property
    def tls(self) -> bool:
        """The listener terminates TLS (an http listener when it has a certificate)."""
        if self.type == "http":
            return bool(self.certfile or self.keyfile)
        return self.type in TLS_TYPES

    @property
    def websocket(self) -> bool:
        return self.type in WS_TYPES


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Broker needs to run."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    listeners: tuple[ListenerSettings, ...] = ()
    #: plugin name -> its configuration table, in file order (presence activates it)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: where the settings came from, for messages ("<defaults>" without a file)
    source: str = "<defaults>"

    @classmethod
    def default(cls, port: int = 1883) -> Settings:
        """No config file: loopback TCP only, anonymous clients allowed there (Mosquitto 2)."""
        listener = ListenerSettings(host="127.0.0.1", port=port, allow_anonymous=True)
        return cls(listeners=(listener,))

    def with_port(self, port: int) -> Settings:
        """Replace the port of the first TCP listener (``midge -c FILE --port N``)."""
        listeners = list(self.listeners)
        for index, listener in enumerate(listeners):
            if listener.type == "tcp":
                listeners[index] = replace(listener, port=port)
                break
        else:
            raise ConfigError(self.source, "listeners", "--port needs a tcp listener to change")
        return replace(self, listeners=tuple(listeners))


def load(path: str | Path) -> Settings:
    """Read and validate a TOML configuration file."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse(data, source)


def parse(data: dict[str, Any], source: str = "<config>") -> Settings:
    """Validate an already parsed configuration mapping."""
    _only(data, {"broker", "listeners", "plugins"}, source, "")
    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict) or not all(isinstance(t, dict) for t in plugins.values()):
        raise ConfigError(source, "plugins", "must hold one table per plugin ([plugins.NAME])")
    broker = _table(BrokerSettings, data.get("broker", {}), source, "broker")
    if broker.refused_subscription_code not in (0x80, 0x87):
        raise ConfigError(
            source, "broker.refused_subscription_code",
            f"{broker.refused_subscription_code} is not allowed; allowed: 135 or 128",
        )
    if broker.foreign_session_code not in (0, 0x85, 0x87):
        raise ConfigError(
            source, "broker.foreign_session_code",
            f"{broker.foreign_session_code} is not allowed; allowed: 135, 133 or 0",
        )
    raw_listeners = data.get("listeners", [])
    if not isinstance(raw_listeners, list) or not all(isinstance(x, dict) for x in raw_listeners):
        raise ConfigError(source, "listeners", "must be an array of tables ([[listeners]])")
    listeners = []
    for index, raw in enumerate(raw_listeners):
        where = f"listeners[{index}]"
        if "allow_anonymous" in raw:
            raise ConfigError(
                source, f"{where}.allow_anonymous",
                "not a configuration key: with a configuration file, access is decided by "
                "plugins; activate [plugins.auth_allow] to let every client in",
            )
        raw = dict(raw)
        raw_auth = raw.pop("auth", None)
        listener = _table(ListenerSettings, raw, source, where)
        if raw_auth is not None:
            raw["auth"] = raw_auth  # for the check of which type takes which key
            listener = replace(listener, auth=_http_auth(raw_auth, source, f"{where}.auth"))
        if listener.type == "http" and "port" not in raw:
            listener = replace(listener, port=HTTP_PORT)
        listener = _check_listener(listener, raw, source, where)
        if (listener.type == "http" and listener.auth is None and not listener.public
                and not is_loopback(listener.host)):
            raise ConfigError(
                source, f"{where}.host",
                f"an http listener on {listener.host} without [listeners.auth] would show "
                "every client to anyone who can reach it; add an auth table, bind "
                "127.0.0.1, or set public = true",
            )
        listeners.append(listener)
    if not listeners:
        raise ConfigError(source, "listeners", "at least one [[listeners]] table is required")
    seen: set[tuple[str, int]] = set()
    for index, listener in enumerate(listeners):
        key = (listener.path, -1) if listener.type == "unix" else (listener.host, listener.port)
        if key in seen and listener.port:
            raise ConfigError(
                source, f"listeners[{index}]", f"{listener.label} is used twice"
            )
        seen.add(key)
    return Settings(broker=broker, listeners=tuple(listeners), plugins=dict(plugins),
                    source=source)


def _check_listener(listener: ListenerSettings, raw: dict[str, Any], source: str,
                    where: str) -> ListenerSettings:
    """The checks one listener's keys need beyond their types; fills type defaults."""
    kind = listener.type
    if kind not in LISTENER_TYPES:
        raise ConfigError(
            source, f"{where}.type",
            f"{kind!r} is not a listener type; allowed: {', '.join(LISTENER_TYPES)}",
        )
    for key in raw:
        types = _TYPE_KEYS.get(key)
        if types is not None and kind not in types:
            raise ConfigError(source, f"{where}.{key}",
                              f"not a key of a {kind} listener (only of: {', '.join(types)})")
    if kind == "unix":
        for key in ("host", "port"):
            if key in raw:
                raise ConfigError(source, f"{where}.{key}",
                                  "not a key of a unix listener (it has a path)")
        if not listener.path:
            raise ConfigError(source, f"{where}.path",
                              "a unix listener needs the path of its socket file")
        return listener
    if not 0 <= listener.port <= 65535:
        raise ConfigError(source, f"{where}.port", f"{listener.port} is not in 0..65535")
    if not listener.host:
        raise ConfigError(source, f"{where}.host", "must not be empty")
    if listener.websocket:
        if "path" not in raw:
            listener = replace(listener, path="/mqtt")
        elif not listener.path.startswith("/"):
            raise ConfigError(source, f"{where}.path",
                              f"{listener.path!r} is not a URL path (it starts with /)")
    if kind == "http" and not listener.tls:
        for key in HTTP_TLS_KEYS:
            if key in raw:
                raise ConfigError(source, f"{where}.{key}",
                                  "an http listener takes the TLS keys only with certfile "
                                  "and keyfile (it then serves HTTPS)")
    if listener.tls:
        for key in ("certfile", "keyfile"):
            if not getattr(listener, key):
                kinds = "an https" if kind == "http" else f"a {kind}"
                raise ConfigError(source, f"{where}.{key}",
                                  f"{kinds} listener needs {key} (PEM file)")
        if listener.min_version not in TLS_VERSIONS:
            raise ConfigError(source, f"{where}.min_version",
                              f"{listener.min_version!r} is not allowed; allowed: "
                              + ", ".join(TLS_VERSIONS))
        if listener.identity_field not in IDENTITY_FIELDS:
            raise ConfigError(source, f"{where}.identity_field",
                              f"{listener.identity_field!r} is not allowed; allowed: "
                              + ", ".join(IDENTITY_FIELDS))
        if listener.require_certificate and not (listener.cafile or listener.capath):
            raise ConfigError(source, f"{where}.require_certificate",
                              "needs cafile or capath: the CAs client certificates must "
                              "be signed by")
        if listener.use_identity_as_username and not listener.require_certificate:
            raise ConfigError(source, f"{where}.use_identity_as_username",
                              "needs require_certificate = true (without a certificate "
                              "there is no identity)")
    return listener


def is_loopback(host: str) -> bool:
    """``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(value: Any, source: str, name: str) -> str:
    """A string, or ``{env = "NAME"}`` / ``{file = "path"}`` naming where it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1 and "env" in value:
        found = os.environ.get(str(value["env"]))
        if found is None:
            raise ConfigError(source, name, f"environment variable {value['env']!r} is not set")
        return found
    if isinstance(value, dict) and len(value) == 1 and "file" in value:
        try:
            return Path(str(value["file"])).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(source, name, f"cannot read secret file {value['file']!r}: "
                              f"{exc.strerror}") from None
    raise ConfigError(source, name, 'must be a string, {env = "NAME"} or {file = "path"}')


def _http_auth(raw: Any, source: str, where: str) -> HttpAuth:
    if not isinstance(raw, dict):
        raise ConfigError(source, where, "must be a table ([listeners.auth])")
    _only(raw, {"username", "password_hash", "token"}, source, where)
    values = {key: _secret(value, source, f"{where}.{key}") for key, value in raw.items()}
    auth = HttpAuth(**values)
    if bool(auth.username) != bool(auth.password_hash):
        raise ConfigError(source, where, "username and password_hash go together")
    if not auth.username and not auth.token:
        raise ConfigError(source, where, "needs username and password_hash, or token")
    if auth.password_hash:
        scheme = auth.password_hash.split("$", 1)[0]
        if scheme not in PASSWORD_SCHEMES:
            raise ConfigError(
                source, f"{where}.password_hash",
                f"not a password hash this listener verifies; allowed schemes: "
                f"{', '.join(PASSWORD_SCHEMES)} (make one with 'midge passwd')",
            )
    return auth


def _only(table: dict[str, Any], allowed: set[str], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(
                source, name, f"unknown key; allowed here: {', '.join(sorted(allowed))}"
            )


def _table(cls: Any, raw: Any, source: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(source, where, "must be a table")
    specs = {f.name: f for f in fields(cls) if f.init}
    _only(raw, set(specs), source, where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = specs[key]
        name = f"{where}.{key}"
        expected = spec.type if isinstance(spec.type, str) else spec.type.__name__
        if expected == "bool":
            if not isinstance(value, bool):
                raise ConfigError(source, name, f"must be true or false, not {value!r}")
        elif expected == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(source, name, f"must be an integer, not {value!r}")
            bounds = spec.metadata.get("range")
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise ConfigError(
                    source, name, f"{value} is out of range; allowed: {bounds[0]}..{bounds[1]}"
                )
        elif expected == "str":
            if not isinstance(value, str):
                raise ConfigError(source, name, f"must be a string, not {value!r}")
            choices = spec.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(source, name,
                                  f"{value!r} is not allowed; allowed: {', '.join(choices)}")
        elif expected == "tuple[str, ...]":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(source, name, f"must be an array of strings, not {value!r}")
            value = tuple(value)
        values[key] = value
    return cls(**values)

