"""What state costs: the memory of a queued delivery beyond its topic and payload.

A message is stored once however many sessions queue it; each queued delivery is one
``Outbound`` (its QoS, flags, packet id and subscription identifiers) and one slot of the
session's deque. The bound the issue asks for is 200 bytes per queued delivery.
"""

from __future__ import annotations

import gc
import tracemalloc

from engine_harness import Harness

from midge.codec import Publish

QUEUED = 5000


def test_a_queued_delivery_costs_under_200_bytes_beyond_topic_and_payload() -> None:
    harness = Harness(max_queued_messages=QUEUED * 2, max_inflight_messages=1)
    subscribers = []
    for i in range(4):
        sub = harness.client(f"s{i}", clean_start=False, properties={0x11: 3600})
        sub.subscribe("m/#", qos=1)
        subscribers.append(sub)
    for sub in subscribers:
        sub.conn.transport_lost()  # offline: everything queues
    pub = harness.client("pub")
    payload = b"x" * 1000
    pub.send(Publish("m/t", payload, qos=1, packet_id=1))  # warm caches, ACL, trie
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(QUEUED):
        pub.send(Publish("m/t", payload, qos=1, packet_id=i % 60000 + 2))
        pub.received()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    deliveries = QUEUED * len(subscribers)
    assert sum(len(s.pending) for s in harness.engine.sessions.values()) >= deliveries
    # per message: its topic and payload once (the bytes are the PUBLISH's), plus the
    # Message object; per delivery: what is left
    per_message = len(payload) + len("m/t")
    per_delivery = (after - before - QUEUED * per_message) / deliveries
    assert per_delivery < 200, f"{per_delivery:.0f} bytes per queued delivery"
