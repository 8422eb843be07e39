"""TLS listeners (``type = "tls"``; ``wss`` uses the same layer): certificates, mutual
TLS, the client certificate as hooks see it, reload on SIGHUP.

The rule: TLS is a sans-I/O layer (``ssl.SSLObject`` over memory BIOs), so it stacks
over a PROXY header and under WebSocket, and the same driver moves its bytes on every
backend. The engine never sees ``ssl``: this module turns the verified certificate into
an ``api.PeerCertificate`` and, with ``use_identity_as_username``, the identity the
CONNECT flow uses as the username. A reload builds a whole new context first; if any
file fails, the old context stays and the reason is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from typing import Any

from ..api import PeerCertificate
from ..config import ListenerSettings
from ._base import Acceptor, Listener
from ._layers import Layer, TransportError
from .tcp import bind_stack, proxy_layers

log = logging.getLogger("midge.listeners")

#: the long attribute names Python's ``getpeercert`` gives -> the usual short ones
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "emailAddress": "emailAddress", "serialNumber": "serialNumber", "userId": "UID",
    "domainComponent": "DC", "streetAddress": "STREET", "givenName": "GN", "surname": "SN",
    "title": "title",
}
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
#: bytes decrypted per read call
READ_SIZE = 65536


def build_context(spec: ListenerSettings) -> ssl.SSLContext:
    """The server context for ``spec``; raises OSError naming the key and file at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[spec.min_version]
    # no renegotiation, no compression; one ticket is enough for MQTT clients
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(spec.certfile, spec.keyfile)
    except (OSError, ssl.SSLError) as exc:
        why = _describe(exc)
        if (isinstance(exc, ssl.SSLError) and not exc.reason) or "pem lib" in why:
            why = "not a PEM certificate chain with its matching private key"
        raise OSError(f"{spec.label}: certfile {spec.certfile!r} / keyfile {spec.keyfile!r} "
                      f"cannot be used: {why}") from None
    if spec.cafile or spec.capath:
        key = "cafile" if spec.cafile else "capath"
        try:
            context.load_verify_locations(cafile=spec.cafile or None,
                                          capath=spec.capath or None)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"{spec.label}: {key} {getattr(spec, key)!r} cannot be used: "
                          f"{_describe(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED if spec.require_certificate else ssl.CERT_OPTIONAL
    if spec.ciphers:
        try:
            context.set_ciphers(spec.ciphers)
        except ssl.SSLError:
            raise OSError(f"{spec.label}: ciphers {spec.ciphers!r} selects no cipher") from None
    return context


#: OpenSSL reasons that mean the peer does not speak TLS at all
_NOT_TLS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        if exc.reason in _NOT_TLS:
            return f"not TLS ({exc.reason.lower()}: plain MQTT or HTTP sent to a TLS port?)"
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


class Contexts:
    """A listener's current SSLContext; ``reload`` swaps it only for a working one."""

    __slots__ = ("context", "spec")

    def __init__(self, spec: ListenerSettings) -> None:
        self.spec = spec
        self.context = build_context(spec)

    def reload(self) -> None:
        try:
            context = build_context(self.spec)
        except OSError as exc:
            log.error("keeping the current certificates: %s", exc)
            return
        self.context = context
        log.info("%s: certificates reloaded (open connections keep theirs)", self.spec.label)

    def layer(self) -> TlsLayer:
        """A TLS layer for one new connection, with the context in force now."""
        return TlsLayer(self.context, self.spec)


def certificate_of(decoded: dict[str, Any], der: bytes) -> PeerCertificate:
    """An ``api.PeerCertificate`` from ``SSLObject.getpeercert()`` and its DER form."""
    subject: dict[str, list[str]] = {}
    rdns: list[str] = []
    for rdn in decoded.get("subject", ()):
        for name, value in rdn:
            short = _SHORT.get(name, name)
            subject.setdefault(short, []).append(value)
            rdns.append(f"{short}={_escape(value)}")
    issuer = ",".join(
        f"{_SHORT.get(name, name)}={_escape(value)}"
        for rdn in reversed(decoded.get("issuer", ())) for name, value in rdn
    )
    return PeerCertificate(
        dn=",".join(reversed(rdns)),
        subject={name: tuple(values) for name, values in subject.items()},
        issuer=issuer,
        fingerprint=hashlib.sha256(der).hexdigest(),
        serial_number=str(decoded.get("serialNumber", "")),
        not_before=str(decoded.get("notBefore", "")),
        not_after=str(decoded.get("notAfter", "")),
    )


def _escape(value: str) -> str:
    # RFC 4514 section 2.4
    out = "".join("\\" + ch if ch in ',+"\\<>;=' else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


class TlsLayer:
    """Server-side TLS over memory BIOs."""

    __slots__ = ("_in", "_out", "_spec", "_ssl", "certificate", "ended", "established",
                 "identity")

    address = None

    def __init__(self, context: ssl.SSLContext, spec: ListenerSettings) -> None:
        self._spec = spec
        #: the username ``use_identity_as_username`` gives (None: not configured)
        self.identity: str | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=True)
        self.established = False
        self.ended: str | None = None
        self.certificate: PeerCertificate | None = None

    def receive(self, data: bytes) -> bytes:
        self._in.write(data)
        if not self.established:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            except ssl.SSLError as exc:
                raise TransportError(f"TLS handshake failed: {_describe(exc)}") from None
            self.established = True
            der = self._ssl.getpeercert(binary_form=True)
            if der:
                self.certificate = certificate_of(self._ssl.getpeercert() or {}, der)
            self.identity = identity_of(self._spec, self.certificate)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.ended = "TLS closed by the client"
                break
            except ssl.SSLError as exc:
                raise TransportError(f"TLS error: {_describe(exc)}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self._ssl.write(view)
                view = view[written:]
        except ssl.SSLError:
            # the session is already shut down: nothing more can be said on it
            return

    def take(self) -> bytes:
        return self._out.read()

    def close(self) -> None:
        # want-read: our close_notify is queued; the peer's is not awaited
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._ssl.unwrap()


def identity_of(spec: ListenerSettings, certificate: PeerCertificate | None) -> str | None:
    """The username ``use_identity_as_username`` gives (None: not configured)."""
    if not spec.use_identity_as_username:
        return None
    if certificate is None:
        raise TransportError("no client certificate (use_identity_as_username)")
    value = certificate.field(spec.identity_field)
    if value is None:
        raise TransportError(
            f"the client certificate has no {spec.identity_field} (use_identity_as_username)"
        )
    return value


async def bind(acceptor: Acceptor, spec: ListenerSettings) -> Listener:
    """Bind a TLS listener (loading its certificates first)."""
    contexts = Contexts(spec)

    def make_layers() -> list[Layer]:
        return [*proxy_layers(spec), contexts.layer()]

    return await bind_stack(acceptor, spec, make_layers, contexts.reload)
