"""Stored passwords: parse the self-describing formats, verify a password, make a hash.

The rule: a stored password is a string whose prefix names its scheme, and every check
ends in ``hmac.compare_digest``. The formats (base64 is the standard alphabet, padding
optional on input, written with padding):

- ``pbkdf2_sha256$ITERATIONS$SALT$HASH`` and ``pbkdf2_sha512$ITERATIONS$SALT$HASH``
- ``scrypt$N$R$P$SALT$HASH``
- ``$7$ITERATIONS$SALT$HASH`` (Mosquitto 2: PBKDF2-HMAC-SHA512)
- ``$6$SALT$HASH`` (Mosquitto 1.x: SHA-512 of the password followed by the salt)
- ``plain$TEXT`` plain text, said explicitly; any other string without a ``$`` scheme
  prefix is plain text too. A string that starts like a scheme this module does not know
  (``word$`` or ``$id$``) is an error rather than a password, so that a hash pasted from
  elsewhere never silently becomes a plain-text password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

SCHEMES = ("pbkdf2_sha256", "pbkdf2_sha512", "scrypt")

DEFAULT_ITERATIONS = {"pbkdf2_sha256": 600_000, "pbkdf2_sha512": 210_000}
DEFAULT_SCRYPT = (2**14, 8, 1)
SALT_BYTES = 16
MAX_ITERATIONS = 100_000_000
MAX_SCRYPT_MEMORY = 1 << 30

_SCHEME_PREFIX = re.compile(r"^(?:[a-z][a-z0-9_]*\$|\$[0-9a-z]+\$)")


@dataclass(frozen=True, slots=True)
class StoredPassword:
    """A parsed stored password; ``verify`` is constant-time in the compared bytes."""

    scheme: str  # "plain", "pbkdf2_sha256", "pbkdf2_sha512", "scrypt", "sha512"
    digest: bytes
    salt: bytes = b""
    iterations: int = 0
    scrypt: tuple[int, int, int] = (0, 0, 0)

    @property
    def hashed(self) -> bool:
        return self.scheme != "plain"

    def verify(self, password: bytes) -> bool:
        return hmac.compare_digest(self._derive(password), self.digest)

    def _derive(self, password: bytes) -> bytes:
        if self.scheme == "plain":
            return password
        if self.scheme == "sha512":
            return hashlib.sha512(password + self.salt).digest()
        if self.scheme == "scrypt":
            n, r, p = self.scrypt
            return hashlib.scrypt(password, salt=self.salt, n=n, r=r, p=p,
                                  maxmem=_scrypt_memory(n, r, p), dklen=len(self.digest))
        name = self.scheme.removeprefix("pbkdf2_")
        return hashlib.pbkdf2_hmac(name, password, self.salt, self.iterations,
                                   dklen=len(self.digest))


def dummy_like(stored: list[StoredPassword]) -> StoredPassword | None:
    """A password no one knows, hashed like the most common of ``stored`` (same
    scheme and cost, its own salt); None when none of them is hashed."""
    costs: dict[tuple[str, int, tuple[int, int, int], int], int] = {}
    for item in stored:
        if item.hashed:
            key = (item.scheme, item.iterations, item.scrypt, len(item.digest))
            costs[key] = costs.get(key, 0) + 1
    if not costs:
        return None
    scheme, iterations, cost, size = max(costs, key=lambda k: costs[k])
    return StoredPassword(scheme, os.urandom(size), os.urandom(SALT_BYTES), iterations, cost)


def parse_password(text: str) -> StoredPassword:
    """Parse a stored password; ``ValueError`` says what is wrong with a malformed one."""
    if text.startswith("plain$"):
        return StoredPassword("plain", text.removeprefix("plain$").encode())
    if not _SCHEME_PREFIX.match(text):
        return StoredPassword("plain", text.encode())
    scheme, _, rest = text.lstrip("$").partition("$")
    fields = rest.split("$")
    label = f"${scheme}$" if scheme.isdigit() else scheme
    if scheme in ("pbkdf2_sha256", "pbkdf2_sha512", "7"):
        _expect(fields, 3, label, "ITERATIONS$SALT$HASH")
        iterations = _number(fields[0], "iterations", 1, MAX_ITERATIONS)
        name = "pbkdf2_sha512" if scheme == "7" else scheme
        return StoredPassword(name, _b64(fields[2], "hash"), _b64(fields[1], "salt"), iterations)
    if scheme == "scrypt":
        _expect(fields, 5, label, "N$R$P$SALT$HASH")
        cost = _scrypt_cost(fields[0], fields[1], fields[2])
        return StoredPassword("scrypt", _b64(fields[4], "hash"), _b64(fields[3], "salt"),
                              scrypt=cost)
    if scheme == "6":
        _expect(fields, 2, label, "SALT$HASH")
        return StoredPassword("sha512", _b64(fields[1], "hash"), _b64(fields[0], "salt"))
    # The value is not echoed: it may be a plain-text password after all.
    raise ValueError(
        f"looks like a password hash of an unknown scheme: use one of {', '.join(SCHEMES)}, "
        "$7$ or $6$, or write 'plain$' before a plain-text password that contains '$'"
    )


def hash_password(password: str, scheme: str = "pbkdf2_sha256", *,
                  iterations: int | None = None,
                  n: int | None = None, r: int | None = None, p: int | None = None) -> str:
    """Hash ``password`` with a fresh random salt into the stored-password format.

    ``iterations`` applies to the PBKDF2 schemes, ``n``, ``r`` and ``p`` to scrypt; the
    defaults are 600000 (SHA-256), 210000 (SHA-512) and N=2**14, R=8, P=1.
    """
    salt = os.urandom(SALT_BYTES)
    secret = password.encode()
    if scheme in DEFAULT_ITERATIONS:
        if n is not None or r is not None or p is not None:
            raise ValueError(f"{scheme} takes iterations, not n, r or p")
        rounds = DEFAULT_ITERATIONS[scheme] if iterations is None else iterations
        _number(str(rounds), "iterations", 1, MAX_ITERATIONS)
        digest = hashlib.pbkdf2_hmac(scheme.removeprefix("pbkdf2_"), secret, salt, rounds)
        return f"{scheme}${rounds}${_enc(salt)}${_enc(digest)}"
    if scheme == "scrypt":
        if iterations is not None:
            raise ValueError("scrypt takes n, r and p, not iterations")
        dn, dr, dp = DEFAULT_SCRYPT
        cost = _scrypt_cost(str(dn if n is None else n), str(dr if r is None else r),
                            str(dp if p is None else p))
        digest = StoredPassword("scrypt", b"\0" * 64, salt, scrypt=cost)._derive(secret)
        n, r, p = cost
        return f"scrypt${n}${r}${p}${_enc(salt)}${_enc(digest)}"
    raise ValueError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")


def _scrypt_cost(n_text: str, r_text: str, p_text: str) -> tuple[int, int, int]:
    n = _number(n_text, "N", 2, 1 << 30)
    r = _number(r_text, "R", 1, 1 << 16)
    p = _number(p_text, "P", 1, 1 << 16)
    if n & (n - 1):
        raise ValueError("scrypt N must be a power of 2")
    if _scrypt_memory(n, r, p) > MAX_SCRYPT_MEMORY:
        raise ValueError("scrypt N, R and P need more than 1 GiB of memory")
    return n, r, p


def _scrypt_memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + 2 + p) + (1 << 16)


def _expect(fields: list[str], count: int, what: str, shape: str) -> None:
    if len(fields) != count:
        raise ValueError(f"malformed {what} password hash: expected {shape}")


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"password hash {name} must be an integer from {low} to {high}")
    return int(text)


def _b64(text: str, name: str) -> bytes:
    try:
        value = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"password hash {name} is not valid base64") from None
    if not value:
        raise ValueError(f"password hash {name} is empty")
    return value


def _enc(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
