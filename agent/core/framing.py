"""Messages into frames and back, per link: the fragmenter and the reassembler.

The frame layout is :mod:`agent.core.wire`'s (``0x00`` whole, ``0x01`` +
msg_id + index + count + chunk). This module keeps the per-link state around
it. Bounds, so a remote cannot grow a link's memory: at most
:data:`~agent.core.limits.MAX_PARTIAL_MESSAGES_PER_LINK` partial messages
(the oldest is evicted), a fragment announcing a message of 64 KiB or more is
refused before anything is buffered, and :meth:`Reassembler.sweep` drops
partials older than their allowance.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.limits import MAX_MESSAGE_BYTES, MAX_PARTIAL_MESSAGES_PER_LINK
from agent.core.wire import FRAGMENT_HEADER_BYTES, FRAME_FRAGMENT, FRAME_WHOLE, frames_for


class Fragmenter:
    """Splits outgoing messages into frames of at most ``mtu`` bytes, numbering them per link."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self._next_id = 0

    def frames(self, message: bytes, mtu: int | None = None) -> list[bytes]:
        """``message``'s frames of at most ``mtu`` bytes (default: the link MTU; a sealed link
        cuts them shorter, to leave room for the seal)."""
        frames = frames_for(message, mtu or self.mtu, self._next_id)
        self._next_id = (self._next_id + 1) % 256
        return frames


@dataclass(slots=True)
class _Partial:
    count: int
    parts: dict[int, bytes]
    started: float


class Reassembler:
    """Turns received frames back into messages. Counts what it drops in ``stats``."""

    def __init__(self, mtu: int, stats: collections.Counter[str]) -> None:
        self.mtu = mtu
        self._stats = stats
        self._partials: dict[int, _Partial] = {}

    def __len__(self) -> int:
        return len(self._partials)

    def message(self, frame: bytes, now: float) -> bytes | None:
        """The message ``frame`` completes, or ``None`` (a fragment kept, or a frame dropped)."""
        if not frame or len(frame) > self.mtu:
            self._stats["frames.malformed"] += 1
            return None
        if frame[0] == FRAME_WHOLE:
            return frame[1:]
        if frame[0] != FRAME_FRAGMENT or len(frame) <= FRAGMENT_HEADER_BYTES:
            self._stats["frames.malformed"] += 1
            return None
        msg_id, index, count = frame[1], frame[2], frame[3]
        if (
            count < 2
            or index >= count
            or (count - 1) * (self.mtu - FRAGMENT_HEADER_BYTES) >= MAX_MESSAGE_BYTES
        ):
            self._stats["frames.malformed"] += 1
            return None
        partial = self._partials.get(msg_id)
        if partial is not None and partial.count != count:
            del self._partials[msg_id]  # the sender restarted this id: replace, evict nothing else
            partial = None
        if partial is None:
            if len(self._partials) >= MAX_PARTIAL_MESSAGES_PER_LINK:
                oldest = min(self._partials, key=lambda k: self._partials[k].started)
                del self._partials[oldest]
                self._stats["frames.reassembly_evicted"] += 1
            partial = self._partials[msg_id] = _Partial(count, {}, now)
        partial.parts[index] = frame[FRAGMENT_HEADER_BYTES:]
        if len(partial.parts) < count:
            return None
        del self._partials[msg_id]
        return b"".join(partial.parts[i] for i in range(count))

    def sweep(self, now: float, allowance: Callable[[int], float]) -> None:
        """Drop partials older than ``allowance(announced size)`` seconds."""
        for msg_id, partial in list(self._partials.items()):
            if partial.started + allowance(partial.count * self.mtu) < now:
                del self._partials[msg_id]
                self._stats["frames.reassembly_timeout"] += 1
