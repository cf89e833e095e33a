"""Frames and messages (``agent.core.framing``, ``agent.core.wire``).

``frames``: ``Reassembler.message`` on a link of a fuzzed MTU (32..287) takes
a sequence of frames, with the clock moving and ``sweep`` run between them.
It raises nothing; it never holds more than
``MAX_PARTIAL_MESSAGES_PER_LINK`` partial messages; every message it returns
is shorter than ``MAX_MESSAGE_BYTES`` plus one frame; and a message cut by
the ``Fragmenter`` comes back whole when delivered alone (``WireError`` only
when it needs more than 255 fragments; junk frames interleaved may evict it).

``message``: ``parse_message`` raises only ``WireError`` (with
``UnsupportedVersionError``); what it accepts re-encodes to a message that
parses to the same value (unless RECORDS entries are shared by reference),
and a DIGEST's ``counters()`` reads every entry.
"""

from __future__ import annotations

import collections

from agent.core.framing import Fragmenter, Reassembler
from agent.core.limits import MAX_MESSAGE_BYTES, MAX_PARTIAL_MESSAGES_PER_LINK, MIN_LINK_MTU
from agent.core.wire import DIGEST_ENTRY_BYTES, Digest, Records, WireError, parse_message

from .contract import Reader, Target, require


def _allowance(size: int) -> float:
    return 1.0 + size / 1000


def frames(data: bytes) -> None:
    reader = Reader(data)
    mtu = MIN_LINK_MTU + reader.u8()
    stats: collections.Counter[str] = collections.Counter()
    reassembler = Reassembler(mtu, stats)
    # The first chunk is a message sent through the fragmenter, its frames interleaved with the rest.
    message = reader.chunk()
    try:
        ours = Fragmenter(mtu).frames(message)
    except WireError:
        ours = []
    undisturbed = bool(ours) and not reader  # nothing else to deliver: the message must come back
    now = 0.0
    completed: list[bytes] = []
    while reader or ours:
        op = reader.u8()
        frame = ours.pop(0) if ours and (op & 1 or not reader) else reader.chunk()
        now += (op >> 1) / 16
        if op >= 0xF0:
            reassembler.sweep(now, _allowance)
        got = reassembler.message(frame, now)
        require(len(reassembler) <= MAX_PARTIAL_MESSAGES_PER_LINK, "partials over the bound")
        if got is not None:
            require(len(got) < MAX_MESSAGE_BYTES + mtu, f"a {len(got)}-byte message reassembled")
            completed.append(got)
    # Junk may evict or replace a partial message (a sender restarting its id): the
    # round trip is checked when nothing else is delivered.
    if undisturbed:
        require(completed == [message], "a message did not survive fragmentation")


def message(data: bytes) -> None:
    parsed = parse_message(data)
    if isinstance(parsed, Records) and sum(map(len, parsed.records)) > len(data):
        return  # entries shared by reference (value-sharing tags): their re-encoding can be huge
    again = parse_message(parsed.encode())
    require(again == parsed, f"{parsed!r} re-encodes as {again!r}")
    if isinstance(parsed, Digest):
        require(len(parsed.counters()) <= len(parsed.entries) // DIGEST_ENTRY_BYTES, "digest entries")


TARGETS = (
    Target("frames", frames, (WireError,)),
    Target("message", message, (WireError,)),
)
