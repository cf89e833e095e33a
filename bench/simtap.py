"""The simulator with two additions the benchmarks need: a frame tap and redialling.

Both use the simulator's public observers (:meth:`agent.sim.Simulation.on_transmit`
and :meth:`~agent.sim.Simulation.on_close`), so they see the wires without
changing what they do.

* **Frame tap.** Every frame an engine hands to a wire is kept as an
  :class:`agent.sim.Transmission` (time, wire, sender, receiver, bytes, link
  model, airtime), lost frames included: a lost frame still used the air.
* **Redialling.** A link that an engine closes for a reason other than a
  denial (a handshake that did not complete, a dead link) is dialled again
  ``redial_after`` seconds later, as a radio transport would. Without it a
  lossy LoRa line falls apart: a link whose keepalives are lost stays down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.core.records import RecordKind, open_record
from agent.core.wire import (
    FRAGMENT_HEADER_BYTES,
    FRAME_AUTHENTICATED,
    FRAME_FRAGMENT,
    FRAME_SEALED,
    FRAME_WHOLE,
    SEALED_HEADER_BYTES,
    SEALED_TAG_BYTES,
    MessageType,
    decode_hello,
    decode_message,
)
from agent.sim import ClosedLink, Simulation, Transmission


class BenchSimulation(Simulation):
    """A :class:`Simulation` with a frame tap and redialling (see the module docstring)."""

    def __init__(
        self, *args: Any, tap: bool = False, redial_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tapped: list[Transmission] = []
        self.redial_after = redial_after
        self.redials = 0
        if tap:
            self.on_transmit(self.tapped.append)
        if redial_after is not None:
            self.on_close(self._redial)

    def _redial(self, closed: ClosedLink) -> None:
        if closed.event.retry_at is None and self.redial_after is not None:
            self.redials += 1
            self.dial_at(self.now + self.redial_after, closed.closer, closed.other, closed.model)


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


def _carries_card(hello: bytes) -> bool:
    """Whether a HELLO carries its sender's card (by value), not a reference to it."""
    return decode_hello(decode_message(hello)[1]).reference is None


def summarize(frames: Iterable[Transmission]) -> FrameSummary:
    """Count frames, bytes and airtime by message type, and the records RECORDS carried (by kind)
    and the cards HELLOs carried (by value, not by reference)."""
    count = 0
    total = 0
    airtime = 0.0
    bytes_by_type: dict[str, int] = {}
    airtime_by_type: dict[str, float] = {}
    records: dict[str, int] = {"CARD": 0, "LINKS": 0, "CARD_IN_HELLO": 0}
    partial_types: dict[tuple[int, int, int], str] = {}
    partials: dict[tuple[int, int, int], dict[int, bytes]] = {}
    for tapped in frames:
        count += 1
        total += len(tapped.frame)
        airtime += tapped.airtime
        # A sealed frame without encryption (trust off) is counted as the frame it carries,
        # its seal's bytes included; an encrypted one cannot be read ("sealed").
        frame = tapped.frame
        if frame[:1] == bytes([FRAME_AUTHENTICATED]):
            frame = frame[SEALED_HEADER_BYTES:-SEALED_TAG_BYTES]
        message: bytes | None = None
        if frame[:1] == bytes([FRAME_WHOLE]):
            message = frame[1:]
            kind = _message_type(message)
        elif frame[:1] == bytes([FRAME_FRAGMENT]) and len(frame) > FRAGMENT_HEADER_BYTES:
            msg_id, index, parts = frame[1], frame[2], frame[3]
            key = (tapped.wire, tapped.sender.index, msg_id)
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
        elif frame[:1] == bytes([FRAME_SEALED]):
            kind = "sealed"
        else:
            kind = "unknown"
        bytes_by_type[kind] = bytes_by_type.get(kind, 0) + len(tapped.frame)
        airtime_by_type[kind] = airtime_by_type.get(kind, 0.0) + tapped.airtime
        if message is not None and kind == MessageType.RECORDS.name:
            _, fields = decode_message(message)
            for raw in fields:
                name = RecordKind(open_record(raw).kind).name
                records[name] = records.get(name, 0) + 1
        elif message is not None and kind == MessageType.HELLO.name and _carries_card(message):
            records["CARD_IN_HELLO"] += 1
    return FrameSummary(count, total, airtime, bytes_by_type, airtime_by_type, records)
