"""Signed records (``agent.core.cose``, ``records``, ``layout``, ``codec``, ``Holdings.check``).

``record``: the bytes of a RECORDS entry (or a stored row, or an MQTT record
payload) go through what the engine's ``_merge`` runs: ``PlainCodec.open``,
``Holdings.check`` against holdings of a few peers, ``PlainCodec.verify``.
Each raises only ``RecordError``. What verifies carries exactly the bytes
given, and only what a sender could have signed: its values re-encode (with
the encoders ``sign_record`` uses) to the signed payload, and a card's
metadata is at most 4096 bytes as JSON. The fast path (``agent.core.layout``) agrees with the general decoder:
whatever it reads, the general decode and re-encode reads with the same values.

``record_payload``: the same for a payload signed here by stranger 3's key, so
mutated payloads whose key field is still that key pass the signature and
reach the body checks (metadata, strings, connections) that come after it.
"""

from __future__ import annotations

import functools

from agent.core import cose
from agent.core.codec import PlainCodec
from agent.core.errors import RecordError
from agent.core.holdings import Holdings
from agent.core.limits import MAX_METADATA_JSON_BYTES
from agent.core.records import (
    Card,
    Envelope,
    Record,
    _open_fast,
    _open_general,
    card_payload,
    links_payload,
    metadata_json,
)

from . import world
from .contract import Target, require

_CODEC = PlainCodec()


@functools.cache
def _held() -> tuple[Record, ...]:
    """What the holdings hold: the remote's card and links, stranger 3's card at counter 5."""
    return (
        world.card(world.REMOTE),
        world.links(world.REMOTE, 2, [world.LOCAL, 3]),
        world.card(3, counter=5),
    )


def _holdings() -> Holdings:
    holdings = Holdings(world.key(world.LOCAL).public, max_peers=4, max_bytes=1 << 20)
    for record in _held():
        holdings.put(record)
    return holdings


def _same(a: Envelope, b: Envelope) -> bool:
    """Equal fields; bodies compared as values (a ``RecordError`` body equals none)."""
    return a[:4] == b[:4] and a[5:] == b[5:] and a.body == b.body


def _check(raw: bytes) -> None:
    envelope = _CODEC.open(raw)
    payload, signature = envelope.payload, envelope.signature
    if _open_fast(payload, signature) is not None:
        general = _open_general(payload, signature)  # must not raise: the fast path accepted it
        require(_same(general, envelope), f"fast path {envelope!r} != general {general!r}")
    holdings = _holdings()
    try:
        holdings.check(envelope, world.NOW, len(raw))
        admissible = True
    except RecordError:
        admissible = False
    record = _CODEC.verify(envelope, raw)
    require(record.raw == raw and record.kind is envelope.kind, "the record is not the bytes verified")
    # What a receiver accepts, a sender could have signed: the values re-encode to the payload.
    body = record.body
    if isinstance(body, Card):
        again = card_payload(record.public_key, record.counter, record.expiry, body)
        size = len(metadata_json(body.metadata).encode("utf-8"))
        require(size <= MAX_METADATA_JSON_BYTES, f"a card with {size} bytes of metadata JSON accepted")
    else:
        again = links_payload(record.public_key, record.counter, record.expiry, body)
    require(again == payload, "the decoded values do not re-encode to the signed payload")
    if admissible:
        holdings.put(record)
        require(holdings.get(record.peer_id, record.kind) is record, "an admitted record is not held")


def record(data: bytes) -> None:
    _check(data)


def record_payload(data: bytes) -> None:
    _check(cose.sign(world.key(3).private, data))


TARGETS = (
    Target("record", record, (RecordError,)),
    Target("record_payload", record_payload, (RecordError,)),
)
