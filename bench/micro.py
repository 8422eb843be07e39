"""Micro-benchmarks of the sans-I/O hot paths: PUBLISH decode/encode and trie matching.

The rule: numbers from this file are for comparing two versions of midge on one machine;
they are never asserted anywhere. Run: ``python bench/micro.py`` (a few seconds).
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable

from midge.codec import Decoder, Publish, Role, Subscription, encode
from midge.message import Message
from midge.topics import SubscriptionTrie


def _rate(func: Callable[[], object], number: int) -> float:
    """Best of five: operations per second."""
    best = min(timeit.repeat(func, number=number, repeat=5))
    return number / best


def codec() -> list[tuple[str, float]]:
    one = encode(Publish("bench/7", b"x" * 64, 0), 4)
    batch = one * 100
    decoder = Decoder(Role.SERVER, protocol_level=4)

    def decode_batch() -> None:
        decoder.feed(batch)
        while decoder.next_packet() is not None:
            pass

    message = Message("bench/7", b"x" * 64, 1)

    def frame_qos1() -> None:
        message.frame(4, 1, False, 17)

    return [
        ("decode PUBLISH 64 B (packets/s)", _rate(decode_batch, 200) * 100),
        ("encode PUBLISH 64 B (packets/s)", _rate(lambda: encode(
            Publish("bench/7", b"x" * 64, 1, packet_id=3), 4), 20000)),
        ("frame a routed QoS 1 delivery (frames/s)", _rate(frame_qos1, 20000)),
    ]


def trie() -> list[tuple[str, float]]:
    subs = SubscriptionTrie()
    for client in range(1000):
        subs.add(f"c{client}", Subscription(f"site/{client % 50}/+/temp", 1))
        subs.add(f"c{client}", Subscription(f"site/{client % 50}/#", 0))
    topics = [f"site/{n % 50}/dev{n}/temp" for n in range(500)]

    def cold() -> None:
        subs._cache.clear()
        for topic in topics:
            subs.match(topic)

    def warm() -> None:
        for topic in topics:
            subs.match(topic)

    warm()
    return [
        ("trie match, 2000 filters, uncached (topics/s)", _rate(cold, 20) * len(topics)),
        ("trie match, cached (topics/s)", _rate(warm, 200) * len(topics)),
    ]


def main() -> int:
    for name, rate in [*codec(), *trie()]:
        sys.stdout.write(f"{name:50} {rate:>14,.0f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
