"""``midge passwd``: print a password hash for a ledger ``password`` field.

The rule: the password never comes from the command line (it would show in ``ps`` and
shell history): it is read from a prompt, asked twice, or from one line of standard
input with ``--stdin``. Only the hash is written to standard output.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from ._hashing import SCHEMES, hash_password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midge passwd",
        description="Hash a password for the 'password' field of an auth_ledger ledger.",
    )
    parser.add_argument("--scheme", choices=SCHEMES, default="pbkdf2_sha256",
                        help="hash scheme (default: %(default)s)")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="PBKDF2 iterations (default: 600000 for SHA-256, 210000 "
                             "for SHA-512)")
    parser.add_argument("--stdin", action="store_true",
                        help="read the password from one line of standard input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iterations is not None and args.scheme == "scrypt":
        parser.error("--iterations applies to the pbkdf2 schemes only")
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            sys.stderr.write("midge passwd: the passwords differ\n")
            return 1
    if not password:
        sys.stderr.write("midge passwd: empty password\n")
        return 1
    try:
        stored = hash_password(password, args.scheme, iterations=args.iterations)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(stored + "\n")
    return 0
