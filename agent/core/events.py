"""Events the engine hands to whatever drives it (the runtime or the simulator)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeAlias

from agent.core.reasons import CloseReason
from agent.core.records import ConnectionType, Metadata

#: Transports name their links with any hashable value (a socket id, a BLE address, ...).
LinkId: TypeAlias = Hashable


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """What a connection request handler sees about a remote peer asking to connect.

    The remote has already proven it holds the key for ``peer_key_string`` and
    its card (with ``peer_metadata``) is signed by that key.
    """

    peer_key_string: str
    peer_metadata: Metadata
    identity_service_metadata: Metadata
    connection_type: ConnectionType


@dataclass(frozen=True, slots=True)
class ConnectionRequested:
    """Ask the application whether to admit ``link``; answer with ``Engine.decide``."""

    link: LinkId
    request: ConnectionRequest


@dataclass(frozen=True, slots=True)
class CloseLink:
    """The engine is done with ``link``: the transport should close it.

    ``retry_at`` (the engine's monotonic time) is the earliest the transport
    should dial this peer again, or ``None`` when it may redial at will.
    ``reason`` is the text for the log; ``cause`` says why, as a value.
    """

    link: LinkId
    reason: str
    peer_key_string: str | None = None
    retry_at: float | None = None
    cause: CloseReason | None = None


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """``link`` passed the handshake and both sides admitted it."""

    link: LinkId
    peer_key_string: str
    connection_type: ConnectionType


Event: TypeAlias = ConnectionRequested | CloseLink | LinkEstablished
