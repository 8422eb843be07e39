"""MQTT 5 enhanced authentication (section 4.12), driven by the on_auth_packet hook: a real
SCRAM-SHA-256 (RFC 5802 / RFC 7677) plugin against a test credential store, spoken to by a
raw-packet SCRAM client; challenge-response, a wrong password, re-authentication, an
unknown method."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from midge import Refuse, hookimpl
from midge.codec import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Property,
    Publish,
    ReasonCode,
    SubAck,
    Subscribe,
    Subscription,
)

Factory = Callable[..., Any]
SCRAM = "SCRAM-SHA-256"
METHOD = Property.AUTHENTICATION_METHOD
DATA = Property.AUTHENTICATION_DATA
ITERATIONS = 4096

# -- SCRAM-SHA-256 ---------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ValueError(f"bad SCRAM attribute {part!r}")
        out[key] = value
    return out


def credential(password: str) -> tuple[bytes, int, bytes, bytes]:
    """What a server stores for a user (RFC 5802 section 3): salt, iteration count,
    StoredKey, ServerKey; never the password."""
    salt = secrets.token_bytes(16)
    salted = _salted(password, salt, ITERATIONS)
    client_key = _hmac(salted, b"Client Key")
    return salt, ITERATIONS, _h(client_key), _hmac(salted, b"Server Key")


class ScramServer:
    """An enhanced-authentication plugin: SCRAM-SHA-256 over AUTH packets, and a vote
    for the clients it authenticated (async, as a plugin checking a database would be)."""

    def __init__(self, store: dict[str, tuple[bytes, int, bytes, bytes]]) -> None:
        self.store = store
        #: client -> (user, client-first-message-bare, server-first-message, nonce)
        self.exchanges: dict[Any, tuple[str, str, str, str]] = {}
        self.authenticated: dict[Any, str] = {}
        self.steps: list[int] = []

    @hookimpl
    async def on_auth_packet(self, client: Any, packet: Auth) -> Auth | None:
        if packet.properties.get(METHOD) != SCRAM:
            return None  # not ours: another plugin may know the method
        self.steps.append(packet.reason_code)
        data = bytes(packet.properties.get(DATA, b"")).decode()
        state = self.exchanges.pop(client, None)
        if state is None or packet.reason_code == ReasonCode.REAUTHENTICATE:
            return self._first(client, data)
        return self._final(client, state, data)

    def _first(self, client: Any, message: str) -> Auth:
        if not message.startswith("n,,"):
            raise Refuse(ReasonCode.NOT_AUTHORIZED, "channel binding is not supported")
        bare = message[3:]
        attrs = _attributes(bare)
        user = attrs.get("n", "")
        if user not in self.store:
            raise Refuse(ReasonCode.BAD_USERNAME_OR_PASSWORD)
        salt, iterations, _, _ = self.store[user]
        nonce = attrs["r"] + secrets.token_urlsafe(18)
        server_first = f"r={nonce},s={_b64(salt)},i={iterations}"
        self.exchanges[client] = (user, bare, server_first, nonce)
        return Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                    {METHOD: SCRAM, DATA: server_first.encode()})

    def _final(self, client: Any, state: tuple[str, str, str, str], message: str) -> Auth:
        user, client_first_bare, server_first, nonce = state
        attrs = _attributes(message)
        if attrs.get("r") != nonce or attrs.get("c") != _b64(b"n,,"):
            raise Refuse(ReasonCode.NOT_AUTHORIZED, "nonce or channel binding mismatch")
        _, _, stored_key, server_key = self.store[user]
        without_proof = message[: message.rindex(",p=")]
        auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
        client_key = _xor(base64.b64decode(attrs["p"]), _hmac(stored_key, auth_message))
        if not hmac.compare_digest(_h(client_key), stored_key):
            raise Refuse(ReasonCode.BAD_USERNAME_OR_PASSWORD, "wrong password")
        self.authenticated[client] = user
        client.username = user
        signature = _hmac(server_key, auth_message)
        return Auth(ReasonCode.SUCCESS, {METHOD: SCRAM, DATA: f"v={_b64(signature)}".encode()})

    @hookimpl
    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | None:
        return True if client in self.authenticated else None

    @hookimpl
    def on_acl_check(self, client: Any, topic: str, write: bool) -> bool | None:
        return True if client in self.authenticated else None

    @hookimpl
    def on_disconnect(self, client: Any) -> None:
        self.authenticated.pop(client, None)
        self.exchanges.pop(client, None)


class ScramClient:
    """The client side of SCRAM-SHA-256, over a raw MQTT 5 connection."""

    def __init__(self, raw: Any, user: str, password: str) -> None:
        self.raw = raw
        self.user = user
        self.password = password
        self.first_bare = ""
        self.server_signature = b""

    def first(self) -> bytes:
        self.first_bare = f"n={self.user},r={secrets.token_urlsafe(18)}"
        return f"n,,{self.first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attributes(text)
        assert attrs["r"].startswith(_attributes(self.first_bare)["r"])
        salted = _salted(self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c={_b64(b'n,,')},r={attrs['r']}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth_message))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        assert server_final.decode() == f"v={_b64(self.server_signature)}", "server not proven"

    def connect(self, client_id: str) -> Any:
        """CONNECT with SCRAM; the packet that ends the exchange (CONNACK)."""
        challenge = self.raw.connect(client_id, 5, properties={METHOD: SCRAM, DATA: self.first()})
        if not isinstance(challenge, Auth):
            return challenge
        assert challenge.reason_code == ReasonCode.CONTINUE_AUTHENTICATION, challenge
        assert challenge.properties[METHOD] == SCRAM
        self.raw.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                           {METHOD: SCRAM, DATA: self.final(challenge.properties[DATA])}))
        return self.raw.recv()

    def reauthenticate(self) -> Any:
        """AUTH 0x19 with SCRAM; the packet that ends the exchange (AUTH 0x00)."""
        self.raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: SCRAM, DATA: self.first()}))
        challenge = self.raw.recv()
        assert isinstance(challenge, Auth), challenge
        assert challenge.reason_code == ReasonCode.CONTINUE_AUTHENTICATION, challenge
        self.raw.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION,
                           {METHOD: SCRAM, DATA: self.final(challenge.properties[DATA])}))
        return self.raw.recv()


@pytest.fixture
def scram() -> ScramServer:
    return ScramServer({"alice": credential("wonderland"), "bob": credential("builder")})


@pytest.fixture
def secured(broker_factory: Factory, scram: ScramServer) -> Any:
    """A broker that lets nobody in but through SCRAM."""
    return broker_factory(allow_anonymous=False, plugins=[("scram", scram)])


# -- the CONNECT exchange --------------------------------------------------------------------


def test_scram_challenge_response_connects(
    secured: Any, raw_factory: Factory, scram: ScramServer
) -> None:
    raw = raw_factory(port=secured.port, level=5)
    client = ScramClient(raw, "alice", "wonderland")
    connack = client.connect("scram-ok")
    assert isinstance(connack, ConnAck) and connack.reason_code == 0, connack
    assert connack.properties[METHOD] == SCRAM
    client.verify(connack.properties[DATA])  # the server proved it knows the credential
    # the broker built AUTH 0x18 from the CONNECT, then the client's AUTH 0x18 followed
    assert scram.steps == [0x18, 0x18]
    raw.send(Subscribe(1, [Subscription("scram/t", 1)]))
    assert raw.recv() == SubAck(1, [1])
    raw.send(Publish("scram/t", b"hello", 1, packet_id=2))
    received = [raw.recv(), raw.recv()]
    assert any(isinstance(p, Publish) and p.payload == b"hello" for p in received), received


def test_scram_wrong_password_gets_connack_0x86(secured: Any, raw_factory: Factory) -> None:
    raw = raw_factory(port=secured.port, level=5)
    connack = ScramClient(raw, "alice", "looking-glass").connect("scram-bad")
    assert isinstance(connack, ConnAck)
    assert connack.reason_code == ReasonCode.BAD_USERNAME_OR_PASSWORD
    assert raw.closed()


def test_scram_unknown_user_is_refused_at_the_first_step(
    secured: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(port=secured.port, level=5)
    connack = ScramClient(raw, "mallory", "x").connect("scram-who")
    assert connack == ConnAck(ReasonCode.BAD_USERNAME_OR_PASSWORD)
    assert raw.closed()


def test_unknown_method_gets_connack_0x8c(secured: Any, raw_factory: Factory) -> None:
    raw = raw_factory(port=secured.port, level=5)
    connack = raw.connect("kerb", 5, properties={METHOD: "GS2-KRB5", DATA: b"x"})
    assert connack == ConnAck(ReasonCode.BAD_AUTHENTICATION_METHOD)
    assert raw.closed()


def test_no_plugin_for_enhanced_auth_gets_connack_0x8c(
    broker: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(level=5)
    connack = raw.connect("nobody", 5, properties={METHOD: SCRAM})
    assert connack == ConnAck(ReasonCode.BAD_AUTHENTICATION_METHOD)


def test_the_vote_still_applies_after_a_successful_exchange(
    broker_factory: Factory, raw_factory: Factory, scram: ScramServer
) -> None:
    class Deny:
        @hookimpl
        def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
            return False

    running = broker_factory(allow_anonymous=False,
                             plugins=[("deny", Deny()), ("scram", scram)])
    raw = raw_factory(port=running.port, level=5)
    connack = ScramClient(raw, "bob", "builder").connect("voted-out")
    assert isinstance(connack, ConnAck) and connack.reason_code == ReasonCode.NOT_AUTHORIZED


def test_other_packets_during_the_exchange_are_a_protocol_error(
    secured: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(port=secured.port, level=5)
    client = ScramClient(raw, "alice", "wonderland")
    challenge = raw.connect("eager", 5, properties={METHOD: SCRAM, DATA: client.first()})
    assert isinstance(challenge, Auth)
    raw.send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, {METHOD: "PLAIN", DATA: b"x"}))
    packets = raw.packets_until_close()
    assert packets == [ConnAck(ReasonCode.PROTOCOL_ERROR)]


# -- re-authentication -----------------------------------------------------------------------


def test_scram_reauthentication(secured: Any, raw_factory: Factory,
                                scram: ScramServer) -> None:
    raw = raw_factory(port=secured.port, level=5)
    client = ScramClient(raw, "alice", "wonderland")
    assert client.connect("re").reason_code == 0
    done = client.reauthenticate()
    assert isinstance(done, Auth) and done.reason_code == ReasonCode.SUCCESS, done
    assert done.properties[METHOD] == SCRAM
    client.verify(done.properties[DATA])
    assert scram.steps == [0x18, 0x18, 0x19, 0x18]
    raw.send(PingReq())
    assert raw.recv() == PingResp()  # still connected


def test_scram_reauthentication_with_a_wrong_password_disconnects(
    secured: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(port=secured.port, level=5)
    client = ScramClient(raw, "alice", "wonderland")
    assert client.connect("re-bad").reason_code == 0
    client.password = "guess"
    done = client.reauthenticate()
    assert isinstance(done, Disconnect)
    assert done.reason_code == ReasonCode.BAD_USERNAME_OR_PASSWORD
    assert raw.closed()


def test_reauthentication_with_another_method_is_a_protocol_error(
    secured: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(port=secured.port, level=5)
    assert ScramClient(raw, "bob", "builder").connect("re-other").reason_code == 0
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: "SCRAM-SHA-1", DATA: b"n,,n=bob,r=x"}))
    packets = raw.packets_until_close()
    assert [type(p) for p in packets] == [Disconnect]
    assert packets[0].reason_code == ReasonCode.PROTOCOL_ERROR


def test_auth_without_a_method_in_connect_is_a_protocol_error(
    broker: Any, raw_factory: Factory
) -> None:
    raw = raw_factory(level=5)
    assert raw.connect("plain", 5).reason_code == 0
    raw.send(Auth(ReasonCode.REAUTHENTICATE, {METHOD: SCRAM}))
    packets = raw.packets_until_close()
    assert [(type(p), p.reason_code) for p in packets] == [
        (Disconnect, ReasonCode.PROTOCOL_ERROR)
    ]
