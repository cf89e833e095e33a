"""One link's outgoing side: priority queues, record batching, fragmentation, the send budget.

Priorities, highest first: control messages (handshake, SUMMARY), links
records, DIGEST, cards. Records are queued by (peer id, kind), so a newer
version replaces a queued one, and packed into RECORDS messages of at most
``MTU - 5`` bytes (a record bigger than that goes alone, fragmented).
Batching is Nagle-like: a link that sent no RECORDS within ``flood_delay``
sends at once; a busy one waits until ``last RECORDS + flood_delay`` (only
RECORDS count: a keepalive just sent must not hold back the next flood hop).
Every frame is paid for from the link's :class:`~agent.core.pacing.TokenBucket`
at its length plus the link's per-frame overhead; on a broadcast interface from
its airtime budget, where the frames after a message's first pay with
``try_take_rest`` (the duty-cycle ledgers, not the pace), so a fragmented card
goes together instead of one fragment per refill.

Once the link's handshake agreed a session (:meth:`Outbox.seal_with`), every
message but HELLO, PROOF and CARD_REQUEST (``wire.BEFORE_SESSION``) is cut into
frames 25 bytes shorter than the MTU and each is sealed as it leaves, so
counters go out in the order they were drawn.

A control message or DIGEST already waiting is not queued again: a
retransmission (HELLO, PROOF, ``ACCEPT 1``) or a repeated DIGEST that finds its
twin still unsent adds nothing. On a LAN nothing waits long enough to matter;
on a broadcast interface whose airtime is spent, every resend timer would
otherwise add one more copy each round, and the backlog, not the channel,
would decide what goes next once airtime frees up.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from agent.core.framing import Fragmenter
from agent.core.linkspec import LinkSpec
from agent.core.pacing import TokenBucket
from agent.core.records import LINKS, RecordKind
from agent.core.wire import BEFORE_SESSION, FRAGMENT_HEADER_BYTES, MessageType, Records, message_type

if TYPE_CHECKING:
    from agent.core.session import Session

RecordKey = tuple[bytes, RecordKind]

#: A RECORDS message's own bytes around its records: frame byte, array and type headers.
_RECORDS_HEADROOM = 5
#: CBOR byte-string header of a record (at most 4096 bytes: three header bytes).
_RECORD_HEADER = 3
#: A RECORDS message carrying one record is at most this much longer than the record.
ONE_RECORD_OVERHEAD = _RECORDS_HEADROOM + _RECORD_HEADER


def transfer_time(spec: LinkSpec, size: int) -> float:
    """Seconds the link's send budget needs to carry ``size`` bytes in full frames."""
    if spec.bytes_per_second is None:
        return 0.0
    frames = -(-size // (spec.mtu - FRAGMENT_HEADER_BYTES))
    return (size + frames * (FRAGMENT_HEADER_BYTES + 1 + spec.frame_overhead_bytes)) / spec.bytes_per_second


@dataclass(slots=True)
class _Cut:
    """One message's frames not yet sent (each with whether it is sealed as it leaves), its
    message type, and whether its first frame has gone (the rest pay with ``try_take_rest``)."""

    frames: deque[tuple[bytes, bool]] = field(default_factory=deque)
    kind: int | None = None
    started: bool = False


class SendBudget(Protocol):
    """What an outbox pays its frames from: a link's token bucket, or a medium's airtime."""

    def try_take(self, cost: float, now: float) -> bool: ...

    def ready_at(self, cost: float, now: float) -> float: ...

    def try_take_rest(self, cost: float, now: float) -> bool:
        """A later frame of a message whose first frame was paid with :meth:`try_take`."""
        ...

    def ready_at_rest(self, cost: float, now: float) -> float: ...


class Outbox:
    """Everything queued on one link and the budget it is sent under.

    ``budget`` is shared by the outboxes of one broadcast interface (its airtime); by
    default each link has its own token bucket from ``spec``.
    """

    def __init__(
        self, spec: LinkSpec, now: float, flood_delay: float, budget: SendBudget | None = None
    ) -> None:
        self.spec = spec
        self._flood_delay = flood_delay
        if budget is None:
            # Never below one full frame, or a full frame could never be paid for.
            capacity = float(max(spec.burst_bytes or 0, spec.mtu + spec.frame_overhead_bytes))
            budget = TokenBucket(spec.bytes_per_second, capacity, now)
        self.budget = budget
        self._fragmenter = Fragmenter(spec.mtu)
        self._control: deque[bytes] = deque()
        self._digests: deque[bytes] = deque()
        self._links: dict[RecordKey, bytes] = {}
        self._cards: dict[RecordKey, bytes] = {}
        #: The control message and the other message being sent, cut into frames: a control
        #: message goes before the rest of one already cut (a PROOF does not wait for a card).
        self._control_cut = _Cut()
        self._data_cut = _Cut()
        self._session: Session | None = None
        self.records_due = 0.0
        #: When the last RECORDS message left (never: minus infinity).
        self.last_records_tx = -math.inf
        self.last_tx = now
        #: When to drain again though nothing else happens (records due, budget refilled).
        self.wake_at: float | None = None
        #: The last drain stopped because the budget refused a frame.
        self.starved = False

    def set_mtu(self, mtu: int) -> None:
        """The transport negotiated another MTU (a BLE MTU exchange). Frames already cut for a
        larger MTU are dropped: their message is lost on this link, as on any lossy link, and
        the protocol's retransmissions and sync repair it."""
        if mtu < self.spec.mtu:
            self._control_cut = _Cut()
            self._data_cut = _Cut()
        self.spec = replace(self.spec, mtu=mtu)
        self._fragmenter.mtu = mtu

    def seal_with(self, session: Session) -> None:
        """The handshake agreed ``session``: seal every later message but the handshake's own."""
        self._session = session

    @property
    def frame_mtu(self) -> int:
        """The largest frame a message is cut into: the MTU, less a seal's bytes once sealed."""
        return self.spec.mtu - (self._session.overhead if self._session is not None else 0)

    # ---------------------------------------------------------------- queueing

    def send_control(self, message: bytes) -> None:
        if message not in self._control:
            self._control.append(message)

    def send_digests(self, messages: list[bytes]) -> None:
        self._digests.extend(m for m in messages if m not in self._digests)

    def queue_record(self, key: RecordKey, raw: bytes, now: float, delay: float | None = None) -> None:
        """Queue a record; ``delay`` (a broadcast interface's rebroadcast delay) replaces the
        Nagle-like batching: the queue goes when its earliest record is due."""
        links, cards = self._links, self._cards
        if delay is not None:
            due = now + delay
            self.records_due = min(self.records_due, due) if (links or cards) else due
        elif not (links or cards):
            self.records_due = max(now, self.last_records_tx + self._flood_delay)
        (links if key[1] is LINKS else cards)[key] = raw

    def holds_record(self, key: RecordKey) -> bool:
        return key in self._queue(key)

    def drop_record(self, key: RecordKey, raw: bytes | None = None) -> bool:
        """Unqueue ``key`` (only if it is ``raw``, when given); ``True`` if something was unqueued."""
        queue = self._links if key[1] is LINKS else self._cards  # _queue, inlined: runs per record
        if key in queue and (raw is None or queue[key] == raw):
            del queue[key]
            return True
        return False

    def drop_digests(self) -> int:
        """Unqueue every DIGEST not yet sent, one cut and waiting for airtime included (the
        remote's SUMMARY now matches: they are moot); how many were dropped."""
        dropped = len(self._digests)
        self._digests.clear()
        return dropped + self._drop_waiting_cut(MessageType.DIGEST)

    def drop_records(self) -> int:
        """Unqueue every record not yet sent, a RECORDS message cut and waiting for airtime
        included (everyone it would reach holds them); how many messages and records."""
        dropped = len(self._links) + len(self._cards)
        self._links.clear()
        self._cards.clear()
        return dropped + self._drop_waiting_cut(MessageType.RECORDS)

    def _drop_waiting_cut(self, kind: MessageType) -> int:
        """Drop the data message cut but not started, if it is of ``kind`` (1 if it was)."""
        cut = self._data_cut
        if cut.frames and not cut.started and cut.kind == kind:
            self._data_cut = _Cut()
            return 1
        return 0

    def clear_data(self) -> None:
        """Forget queued records and digests: only control messages go out any more."""
        self._links.clear()
        self._cards.clear()
        self._digests.clear()

    def has_output(self) -> bool:
        return bool(
            self._control
            or self._control_cut.frames
            or self._data_cut.frames
            or self._links
            or self._digests
            or self._cards
        )

    def control_waiting(self) -> bool:
        """A control message (handshake, SUMMARY) is queued or partly sent."""
        return bool(self._control or self._control_cut.frames)

    def only_records_waiting(self, now: float) -> bool:
        """Only records are queued and they are not due yet."""
        if self.control_waiting() or self._data_cut.frames or self._digests:
            return False
        return bool(self._links or self._cards) and now < self.records_due

    # ---------------------------------------------------------------- sending

    def drain(self, now: float, *, control_only: bool = False) -> list[bytes]:
        """The frames the budget allows now; sets :attr:`wake_at` if more wait, and
        :attr:`starved` if the budget refused one. ``control_only``: control messages only (a
        medium sends every neighbour's handshake before any queue's records)."""
        self.wake_at = None
        self.starved = False
        out: list[bytes] = []
        overhead = self.spec.frame_overhead_bytes
        budget = self.budget
        while True:
            if self.control_waiting():
                cut = self._control_cut
            elif control_only:
                break
            else:
                cut = self._data_cut
            if not cut.frames:
                message = self._control.popleft() if cut is self._control_cut else self._next_message(now)
                if message is None:
                    break
                self._cut(cut, message)
            frame, sealed = cut.frames[0]
            cost = len(frame) + overhead + (self._session.overhead if sealed and self._session else 0)
            rest = cut.started
            if not (budget.try_take_rest(cost, now) if rest else budget.try_take(cost, now)):
                ready = budget.ready_at_rest(cost, now) if rest else budget.ready_at(cost, now)
                # At least a millisecond on: a driver's timer may not be finer.
                self.wake_at = max(now + 0.001, ready)
                self.starved = True
                break
            cut.frames.popleft()
            cut.started = True
            out.append(self._session.seal(frame) if sealed and self._session else frame)
            self.last_tx = now
        return out

    def _cut(self, cut: _Cut, message: bytes) -> None:
        cut.started = False
        cut.kind = message_type(message)
        if self._session is not None and cut.kind not in BEFORE_SESSION:
            cut.frames.extend((frame, True) for frame in self._fragmenter.frames(message, self.frame_mtu))
        else:
            cut.frames.extend((frame, False) for frame in self._fragmenter.frames(message))

    def _next_message(self, now: float) -> bytes | None:
        """The next message but a control one (those go first, from :attr:`_control`)."""
        due = now >= self.records_due
        if self._links and due:
            self.last_records_tx = now
            return self._records_message(self._links)
        if self._digests:
            return self._digests.popleft()
        if self._cards and due:
            self.last_records_tx = now
            return self._records_message(self._cards)
        if self._links or self._cards:
            self.wake_at = self.records_due
        return None

    def _records_message(self, queue: dict[RecordKey, bytes]) -> bytes:
        # Pack as many records as fit one frame; a record bigger than a frame goes alone.
        room = self.frame_mtu - _RECORDS_HEADROOM
        batch: list[bytes] = []
        used = 0
        for key in list(queue):
            raw = queue[key]
            size = len(raw) + _RECORD_HEADER
            if batch and used + size > room:
                break
            batch.append(raw)
            used += size
            del queue[key]
            if used > room:
                break
        return Records(tuple(batch)).encode()

    def _queue(self, key: RecordKey) -> dict[RecordKey, bytes]:
        return self._links if key[1] is LINKS else self._cards
