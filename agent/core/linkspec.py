"""What a transport tells the engine about a link when it comes up."""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.records import ConnectionType


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a transport knows about a link when it comes up.

    ``bytes_per_second`` is the send budget (``None``: unlimited); every frame
    costs its length plus ``frame_overhead_bytes`` (a radio's preamble and
    header, expressed in byte-equivalents of airtime). ``expected_peer`` is the
    raw public key (32 bytes) or the peer id (its first 8 bytes, what fits a BLE
    advertisement) a transport already believes is at the far end; a HELLO card
    for any other key is refused. A transport may change ``mtu`` and
    ``distance_dm`` once the link is up (:meth:`Engine.update_link`).
    ``keepalive_interval`` / ``dead_interval`` override the engine defaults
    for slow links.
    """

    connection_type: ConnectionType
    mtu: int = 1400
    bytes_per_second: float | None = None
    burst_bytes: int | None = None
    frame_overhead_bytes: int = 0
    distance_dm: int | None = None
    expected_peer: bytes | None = None
    keepalive_interval: float | None = None
    dead_interval: float | None = None
