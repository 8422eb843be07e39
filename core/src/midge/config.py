"""Configuration: a TOML file (or nothing) turned into typed, frozen settings.

The rule: everything is validated when the file is read. An unknown key or a bad value is
a ConfigError naming the file, the key and what is allowed; nothing is silently ignored
or coerced.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MAX_PACKET_SIZE = 268_435_455
LISTENER_TYPES = ("tcp",)


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
    max_inflight_messages: int = _limit(
        20, 0, 65535,
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


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """One ``[[listeners]]`` entry."""

    type: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 1883
    #: clients without credentials may connect on this listener
    allow_anonymous: bool = False
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.type}://{self.host}:{self.port}"


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
        listener = _table(ListenerSettings, raw, source, where)
        if listener.type not in LISTENER_TYPES:
            raise ConfigError(
                source, f"{where}.type",
                f"{listener.type!r} is not a listener type; allowed: {', '.join(LISTENER_TYPES)}",
            )
        if not 0 <= listener.port <= 65535:
            raise ConfigError(source, f"{where}.port", f"{listener.port} is not in 0..65535")
        if not listener.host:
            raise ConfigError(source, f"{where}.host", "must not be empty")
        listeners.append(listener)
    if not listeners:
        raise ConfigError(source, "listeners", "at least one [[listeners]] table is required")
    seen: set[tuple[str, int]] = set()
    for index, listener in enumerate(listeners):
        key = (listener.host, listener.port)
        if key in seen and listener.port:
            raise ConfigError(
                source, f"listeners[{index}]", f"{listener.host}:{listener.port} is used twice"
            )
        seen.add(key)
    return Settings(broker=broker, listeners=tuple(listeners), plugins=dict(plugins),
                    source=source)


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
    specs = {f.name: f for f in fields(cls)}
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
        values[key] = value
    return cls(**values)

