"""The fan-in hot path without sockets: 10 publishers -> 1 subscriber through the engine.

The rule: CPU time (``time.process_time``) per message, best of many short measurements, so
a busy machine moves the figure little; for comparing two versions of midge side by side,
``PYTHONPATH=old/core/src python bench/engine_fanin.py`` against the working tree. On a
machine too busy even for that, count instructions instead:
``ENGINE_FANIN_REPEAT=1 ENGINE_FANIN_ROUNDS=N valgrind --tool=callgrind python ...`` for
two values of N; the difference is the cost of the extra messages. Nothing here is
asserted anywhere.
"""

from __future__ import annotations

import os
import sys
import time

from midge.codec import Connect, Publish, Subscribe, Subscription, encode
from midge.config import BrokerSettings, ListenerSettings
from midge.engine import Engine
from midge.hooks import Hooks
from midge.hooks.builtin import ListenerAccess

PUBLISHERS = 10
BATCH = 100  # PUBLISHes per read, as a socket read of a busy publisher holds many
#: per measurement: ROUNDS * PUBLISHERS * BATCH messages
ROUNDS = int(os.environ.get("ENGINE_FANIN_ROUNDS", "20"))
#: measurements; the best one is the least disturbed by other processes
REPEAT = int(os.environ.get("ENGINE_FANIN_REPEAT", "40"))


class Driver:
    backlog = 0

    def schedule_flush(self) -> None:
        pass


def run() -> float:
    """Messages delivered per CPU second, best of REPEAT measurements."""
    hooks = Hooks([("midge.access", ListenerAccess())])
    engine = Engine(BrokerSettings(max_queued_messages=10_000_000), hooks, time.monotonic)
    spec = ListenerSettings(allow_anonymous=True)
    sub = engine.open(Driver(), spec, "127.0.0.1", 1)
    sub.feed(encode(Connect("sub", 4), 4)
             + encode(Subscribe(1, [Subscription("bench/#", 0)]), 4))
    sub.take_output()
    pubs = []
    for index in range(PUBLISHERS):
        pub = engine.open(Driver(), spec, "127.0.0.1", 100 + index)
        pub.feed(encode(Connect(f"pub{index}", 4), 4))
        pub.take_output()
        batch = encode(Publish(f"bench/{index}", b"x" * 64, 0), 4) * BATCH
        pubs.append((pub, batch))
    best = float("inf")
    for _ in range(REPEAT):
        started = time.process_time()
        for _ in range(ROUNDS):
            for pub, batch in pubs:
                pub.feed(batch)
            sub.take_output()
        best = min(best, time.process_time() - started)
    return ROUNDS * PUBLISHERS * BATCH / best


if __name__ == "__main__":
    rate = run()
    sys.stdout.write(f"fan-in through the engine: {rate:,.0f} messages per CPU second\n")
