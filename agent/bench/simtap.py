"""The simulator with two additions the benchmarks need: a frame tap and redialling.

:class:`agent.sim.Simulation` has no public hook for either, so
:class:`BenchSimulation` overrides two of its private methods (``_transmit``
and ``_close_from``) and calls the originals. If those change, the benchmark
suite's test fails loudly rather than measuring the wrong thing.

* **Frame tap.** Every frame an engine hands to a wire is recorded with its
  time, wire, sender and the wire's link model, before the wire decides
  whether to lose it (a lost frame still used the air).
* **Redialling.** A link that an engine closes for a reason other than a
  denial (a handshake that did not complete, a dead link) is dialled again
  ``redial_after`` seconds later, as a radio transport would. Without it a
  lossy LoRa line falls apart: a lost HELLO or ACCEPT ends that link for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.core.events import CloseLink
from agent.core.records import RecordKind, open_record
from agent.core.wire import FRAGMENT_HEADER_BYTES, FRAME_FRAGMENT, FRAME_WHOLE, MessageType, decode_message
from agent.sim import LinkModel, SimPeer, Simulation
from agent.sim.network import _Wire


@dataclass(frozen=True, slots=True)
class TappedFrame:
    """One frame as it went onto a wire."""

    time: float
    wire: int
    sender: int
    receiver: int
    frame: bytes
    model: LinkModel

    @property
    def airtime(self) -> float:
        """Seconds on the air: (frame + overhead) x airtime per byte (0 on wired links)."""
        return (len(self.frame) + self.model.frame_overhead_bytes) * self.model.airtime_per_byte


class BenchSimulation(Simulation):
    """A :class:`Simulation` with a frame tap and redialling (see the module docstring)."""

    def __init__(
        self, *args: Any, tap: bool = False, redial_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tap = tap
        self.tapped: list[TappedFrame] = []
        self.redial_after = redial_after
        self.redials = 0

    def _transmit(self, wire: _Wire, sender: SimPeer, frame: bytes) -> None:
        if self.tap:
            receiver = wire.other(sender)
            self.tapped.append(
                TappedFrame(self.now, wire.id, sender.index, receiver.index, frame, wire.model)
            )
        super()._transmit(wire, sender, frame)

    def _close_from(self, peer: SimPeer, event: CloseLink) -> None:
        wire = self._wires.get(event.link)  # type: ignore[call-overload]
        was_up = wire is not None and wire.up
        super()._close_from(peer, event)
        if wire is not None and was_up and event.retry_at is None and self.redial_after is not None:
            self.redials += 1
            self._push(self.now + self.redial_after, "dial", peer, wire.other(peer), wire.model)


@dataclass(frozen=True, slots=True)
class FrameSummary:
    """What a stretch of tapped frames carried, by message type."""

    frames: int
    bytes: int
    airtime_s: float
    bytes_by_type: dict[str, int]
    airtime_by_type: dict[str, float]
    records_by_kind: dict[str, int]


def _message_type(message: bytes) -> str:
    """The type of a message from its first bytes (a CBOR array whose first item is the type)."""
    if not message:
        return "unknown"
    header = message[0]
    offset = {0x98: 2, 0x99: 3}.get(header, 1) if header >= 0x80 else 0
    if not 0x80 <= header <= 0x99 or len(message) <= offset:
        return "unknown"
    try:
        return MessageType(message[offset]).name
    except ValueError:
        return "unknown"


def summarize(frames: Iterable[TappedFrame]) -> FrameSummary:
    """Count frames, bytes and airtime by message type, and the records RECORDS carried (by kind)
    and the cards HELLOs carried."""
    count = 0
    total = 0
    airtime = 0.0
    bytes_by_type: dict[str, int] = {}
    airtime_by_type: dict[str, float] = {}
    records: dict[str, int] = {"CARD": 0, "LINKS": 0, "CARD_IN_HELLO": 0}
    partial_types: dict[tuple[int, int, int], str] = {}
    partials: dict[tuple[int, int, int], dict[int, bytes]] = {}
    for tapped in frames:
        frame = tapped.frame
        count += 1
        total += len(frame)
        airtime += tapped.airtime
        message: bytes | None = None
        if frame[:1] == bytes([FRAME_WHOLE]):
            message = frame[1:]
            kind = _message_type(message)
        elif frame[:1] == bytes([FRAME_FRAGMENT]) and len(frame) > FRAGMENT_HEADER_BYTES:
            msg_id, index, parts = frame[1], frame[2], frame[3]
            key = (tapped.wire, tapped.sender, msg_id)
            chunk = frame[FRAGMENT_HEADER_BYTES:]
            if index == 0:
                partial_types[key] = _message_type(chunk)
                partials[key] = {}
            kind = partial_types.get(key, "unknown")
            held = partials.setdefault(key, {})
            held[index] = chunk
            if len(held) == parts:
                message = b"".join(held[i] for i in range(parts))
                del partials[key]
        else:
            kind = "unknown"
        bytes_by_type[kind] = bytes_by_type.get(kind, 0) + len(frame)
        airtime_by_type[kind] = airtime_by_type.get(kind, 0.0) + tapped.airtime
        if message is not None and kind == MessageType.RECORDS.name:
            _, fields = decode_message(message)
            for raw in fields:
                name = RecordKind(open_record(raw).kind).name
                records[name] = records.get(name, 0) + 1
        elif message is not None and kind == MessageType.HELLO.name:
            records["CARD_IN_HELLO"] += 1  # every HELLO carries the sender's signed card
    return FrameSummary(count, total, airtime, bytes_by_type, airtime_by_type, records)
