"""One link as the engine keeps it: its parts, composed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.core.events import LinkId
from agent.core.framing import Reassembler
from agent.core.handshake import Handshake
from agent.core.linkspec import LinkSpec
from agent.core.outbox import Outbox
from agent.core.reasons import CloseReason
from agent.core.sync import SyncState
from agent.core.wire import ROUTER, Capabilities, Role

if TYPE_CHECKING:
    from agent.core.distance import LinkQuality
    from agent.core.medium import Interface
    from agent.core.session import Session


@dataclass(eq=False, slots=True)
class Link:
    """A link's identity, timers and parts. Compared by identity (links are dict keys)."""

    id: LinkId
    spec: LinkSpec
    keepalive: float
    dead: float
    handshake: Handshake
    outbox: Outbox
    reassembler: Reassembler
    sync: SyncState
    last_rx: float
    #: Rank among this engine's links by when each was established (0 until then): the
    #: links record lists the lowest first.
    established_order: int = 0
    close_reason: CloseReason | None = None
    close_detail: str = ""
    close_retry_at: float | None = None
    #: What the remote said it is in its HELLO (a router taking any message, until it says).
    remote_capabilities: Capabilities = ROUTER
    #: The broadcast interface this neighbour was heard on (``None``: a point-to-point link).
    medium: Interface | None = None
    #: RSSI, SNR and distance reports of a neighbour on a medium.
    quality: LinkQuality | None = None
    #: When we last answered this neighbour's repeated HELLO, and how often since its last new
    #: nonce (a medium answers a repeat after a HELLO gap, doubling with each answer).
    answered_at: float = -math.inf
    answers: int = 0
    #: The counter of the remote's links record held when the link came up: only a newer one
    #: that no longer lists us says it restarted (a stale one still in flight does not).
    links_counter_at_up: int = -1
    #: Times the handshake deadline was put off while our own frame waited for airtime.
    deferrals: int = 0
    #: Handshake answers held back a random moment (a medium): (when, message), in order.
    delayed: list[tuple[float, bytes]] = field(default_factory=list)
    #: The session the handshake agreed (``None``: a plain link, or not agreed yet).
    session: Session | None = None
    #: Reassembles the inner frames of sealed frames: apart from the plain frames' reassembler,
    #: so a plain fragment injected with a sealed message's id cannot spoil it.
    sealed_reassembler: Reassembler | None = None

    @property
    def established(self) -> bool:
        return self.handshake.established

    @property
    def remote_key(self) -> bytes | None:
        return self.handshake.remote_key

    @property
    def remote_id(self) -> bytes | None:
        return self.handshake.remote_id

    @property
    def to_leaf(self) -> bool:
        """The remote is a leaf: it gets no floods, and sync with it covers only its records."""
        return self.remote_capabilities.role is Role.LEAF
