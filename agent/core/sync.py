"""Anti-entropy between two linked peers: when to send a DIGEST, how to split it, what to push back.

The keepalive is the 8-byte summary of everything held. On a mismatch a side
sends DIGEST at once the first time on a link (on a broadcast medium only at
the second mismatch in a row); later only after two consecutive mismatches,
no RECORDS for a keepalive interval (records may still be in flight), and
``min_interval`` since its last. A DIGEST lists
sorted 13-byte entries for ``[lo, hi]``, split so each message carries at
most ``min(max_digest_bytes, max_message - 40)`` bytes of entries (on a
broadcast medium also at most a frame's less 40, so each goes in one frame). The
receiver pushes every record in range that the sender lacks or holds older,
the sender's own included (a peer that lost its store gets its newer record
back and re-signs past it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Final

from agent.core.records import Record, RecordKind
from agent.core.wire import DIGEST_ENTRY_BYTES, Digest, max_message_bytes

_ID_LOW: Final = b"\x00" * 8
_ID_HIGH: Final = b"\xff" * 8
#: Room a DIGEST message keeps for its own headers and lo/hi ids.
DIGEST_HEADROOM: Final = 40

RecordKey = tuple[bytes, RecordKind]


class SyncState:
    """One link's digest policy."""

    def __init__(self, keepalive: float, min_interval: float, *, first_at_once: bool = True) -> None:
        self.keepalive = keepalive
        self.min_interval = min_interval
        #: The first mismatch on the link sends a DIGEST at once. Not on a medium: there a
        #: neighbour that can explain the difference sends the records for a frame or two
        #: (Holdings.explain), and a DIGEST after the first mismatch was mostly moot by the time
        #: the airtime let it go. Waiting for a second, figure 8's three runs of 30 Pis at SF10
        #: with 10 % loss had quiet hours of 2.59 s (8.55 / 2.59 / 4.15 s before: a DIGEST in the
        #: hour); over 8 runs its median link change went from 4.9x to 2.95x the hop-optimal time.
        self.first_at_once = first_at_once
        self.mismatches = 0
        self.digest_sent_at: float | None = None
        self.last_record_rx = 0.0
        #: The remote's last SUMMARY (``None``: none heard yet).
        self.heard: bytes | None = None

    def on_summary(self, matches: bool, now: float) -> bool:
        """The remote's SUMMARY arrived: ``True`` if a DIGEST should go now."""
        if matches:
            self.mismatches = 0
            return False
        self.mismatches += 1
        if self.digest_sent_at is None:
            return self.first_at_once or self.mismatches >= 2
        settled = self.mismatches >= 2 and now - self.last_record_rx >= self.keepalive
        return settled and now - self.digest_sent_at >= self.min_interval

    def digest_sent(self, now: float) -> None:
        self.digest_sent_at = now
        self.mismatches = 0


def digest_messages(entries: list[bytes], mtu: int, max_digest_bytes: int) -> list[Digest]:
    """``entries`` (sorted) as DIGEST messages covering the whole id space between them.

    A split falls only between two peers, never between one peer's entries: a
    range holds all of a peer's entries or none (a peer's entries may push one
    message one entry over ``room``; the headroom covers it).
    """
    room = min(max_digest_bytes, max_message_bytes(mtu) - DIGEST_HEADROOM)
    per_message = max(1, room // DIGEST_ENTRY_BYTES)
    chunks: list[list[bytes]] = [[]]
    for _, group in itertools.groupby(entries, key=lambda e: e[:8]):
        run = list(group)
        if chunks[-1] and len(chunks[-1]) + len(run) > per_message:
            chunks.append([])
        chunks[-1].extend(run)
    out = []
    for i, chunk in enumerate(chunks):
        lo = _ID_LOW if i == 0 else chunk[0][:8]
        hi = _ID_HIGH if i == len(chunks) - 1 else _prev_id(chunks[i + 1][0][:8])
        out.append(Digest(lo, hi, b"".join(chunk)))
    return out


def records_to_offer(
    digest: Digest, held: Iterable[tuple[RecordKey, Record]]
) -> list[tuple[RecordKey, Record]]:
    """Held records in the digest's range that its sender lacks or holds older."""
    theirs = digest.counters()
    return [
        ((pid, kind), record)
        for (pid, kind), record in held
        if digest.lo <= pid <= digest.hi and theirs.get((pid, int(kind)), -1) < record.counter
    ]


def _prev_id(pid: bytes) -> bytes:
    value = int.from_bytes(pid, "big")
    return max(0, value - 1).to_bytes(8, "big")
