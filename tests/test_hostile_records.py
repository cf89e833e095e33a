"""Hostile records leave nothing behind (issue 13, item 5: forged records grew the key cache).

A forged record is free to make: a fresh key and 64 random bytes of signature.
The engine must reject it as ``bad_signature`` and keep no per-key state for
it — no cached key object, no peer id → key entry, nothing that grows with the
number of forgeries. Measured with tracemalloc over the engine alone (no
timing): memory after 20,000 forged records from fresh keys is what it was
after the first 1,000.
"""

from __future__ import annotations

import os
import tracemalloc

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_engine import NOW, deliver, established_pair, raw_key, records_message

from agent.core import cose
from agent.core.records import make_card, sign_record


def forged_cards(count: int) -> list[bytes]:
    """Cards from fresh keys whose signature is random bytes (nothing signs them)."""
    template = Ed25519PrivateKey.generate()
    out = []
    for _ in range(count):
        public = raw_key(Ed25519PrivateKey.generate())
        genuine = sign_record(template, public, 1, int(NOW + 3600), make_card("sybil", "x", "1", {}))
        payload, _ = cose.open_envelope(genuine.raw)
        out.append(cose.envelope(payload, os.urandom(64)))
    return out


def feed(records: list[bytes], send: object) -> None:
    for i in range(0, len(records), 8):
        send(records_message(*records[i : i + 8]))  # type: ignore[operator]


def test_forged_records_from_fresh_keys_are_rejected_and_leave_no_state() -> None:
    wire, a, _, link = established_pair()
    held_before = a.engine.held_record_count()
    warmup, flood = forged_cards(1_000), forged_cards(20_000)

    def send(message: bytes) -> None:
        deliver(a, link, message, wire.now)

    feed(warmup, send)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        feed(flood, send)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert a.engine.stats["records.rejected.bad_signature"] == 21_000
    assert a.engine.held_record_count() == held_before
    assert a.engine.peer_count(wire.now) == 2
    # Stats counters and allocator noise only: far below one byte per forged record kept.
    assert end - start < 20_000, f"{end - start} bytes retained after 20,000 forged records"
