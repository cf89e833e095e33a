"""``[lan]``: the LAN transport's settings (UDP multicast beacons, TCP links).

Owned by :mod:`agent.transports.lan`; :mod:`agent.config` fills it from the
TOML file and checks the rules attached to each field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from agent.core.limits import MAX_MESSAGE_BYTES, MIN_LINK_MTU
from agent.core.settings import positive, rule

__all__ = ["LanSettings"]

#: Linux interface names are at most IFNAMSIZ - 1 bytes.
_MAX_INTERFACE_NAME_BYTES: Final = 15


def _is_ipv4_multicast(text: str) -> bool:
    try:
        return ipaddress.IPv4Address(text).is_multicast
    except ValueError:
        return False


def _is_interface(text: str) -> bool:
    """A Linux interface name (the kernel's rules) or an IPv4 address."""
    if text.replace(".", "").isdigit():  # looks like an address, so it must be one
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    return (
        0 < len(text.encode()) <= _MAX_INTERFACE_NAME_BYTES
        and text not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in text)
    )


@dataclass(frozen=True, slots=True)
class LanSettings:
    """``[lan]``: the LAN transport (UDP multicast beacons, TCP links). Times are seconds."""

    enabled: bool = True
    #: Interface names or IPv4 addresses to beacon and listen on; empty means all (the default route).
    interfaces: tuple[str, ...] = rule(
        (), "a list of interface names or IPv4 addresses", lambda v: all(map(_is_interface, v))
    )
    multicast_group: str = rule(
        "239.255.77.77", "an IPv4 multicast address (224.0.0.0/4)", _is_ipv4_multicast
    )
    multicast_port: int = rule(47777, "an integer in 1..65535", lambda v: 1 <= v <= 65535)
    #: TCP listening port; 0 means ephemeral (beacons carry the actual port).
    tcp_port: int = rule(0, "an integer in 0..65535", lambda v: 0 <= v <= 65535)
    beacon_interval: float = positive(0.5)
    keepalive_interval: float = positive(0.5)
    #: A link silent this long is down; a vanished peer leaves every graph within
    #: ``dead_interval + presence.departure_grace``.
    dead_interval: float = positive(2.0)
    #: The MTU reported to the engine for TCP links.
    max_frame_bytes: int = rule(
        16384,
        f"an integer in {MIN_LINK_MTU}..{MAX_MESSAGE_BYTES}",
        lambda v: MIN_LINK_MTU <= v <= MAX_MESSAGE_BYTES,
    )
    dial_backoff_initial: float = positive(0.5)
    dial_backoff_max: float = positive(30.0)
    #: Transport level: a connection that has not completed the handshake by then is closed.
    handshake_timeout: float = positive(5.0)
    #: Inbound connections not yet admitted, at most; a newcomer beyond it closes the oldest of them.
    max_pending_connections: int = rule(64, "an integer >= 1", lambda v: v >= 1)
    #: A connection whose remote has not proved its key this long after it opened is closed.
    #: Far below the engine's 30 s handshake deadline; a proven one waits for the handler.
    admission_timeout: float = positive(3.0)
    #: Admitted links (both directions), at most; beyond it new inbound connections are refused.
    max_links: int = rule(64, "an integer >= 1", lambda v: v >= 1)
    #: Our own dials not yet admitted, at most (a budget apart from inbound connections and
    #: links); beacons that would start one more are dropped and counted.
    max_dials_in_flight: int = rule(8, "an integer >= 1", lambda v: v >= 1)
    #: Per link; a peer sending faster is disconnected.
    max_receive_bytes_per_second: int = rule(1_000_000, "an integer >= 1", lambda v: v >= 1)
