"""``[ble]``: the BLE central transport's settings (bleak; nodes per docs/BLE_PROFILE.md).

Owned by :mod:`agent.transports.ble`; :mod:`agent.config` fills it from the TOML file and checks
the rules attached to each field. Off by default: it needs a Bluetooth adapter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from agent.core.settings import positive, rule

__all__ = ["BleSettings", "ScanMode"]

#: Linux adapter names: ``hci`` and a number (``hci0`` is the on-board one on a Pi).
_MAX_ADAPTER_NAME_BYTES: Final = 15


class ScanMode(enum.Enum):
    """How the adapter scans: ``active`` asks for scan responses (the node's name); ``passive``
    only listens, through BlueZ's advertisement monitor where it exists (else it falls back to
    active, with one warning)."""

    ACTIVE = "active"
    PASSIVE = "passive"


def _is_adapter(text: str) -> bool:
    return text == "" or (len(text.encode()) <= _MAX_ADAPTER_NAME_BYTES and text.isascii() and text.isalnum())


@dataclass(frozen=True, slots=True)
class BleSettings:
    """``[ble]``: scan for nodes, keep a bounded number of connections. Times are seconds."""

    enabled: bool = False
    #: The adapter (``hci0``, ``hci1`` for a USB one); ``""`` means the system's default.
    adapter: str = rule("", 'an adapter name such as "hci0", or ""', _is_adapter)
    #: Nodes connected at once, at most (BlueZ controllers allow 3 to 7); more wait their turn.
    max_connections: int = rule(4, "an integer in 1..32", lambda v: 1 <= v <= 32)
    scan_mode: str = rule(
        ScanMode.ACTIVE.value,
        " or ".join(f'"{m.value}"' for m in ScanMode),
        lambda v: v in {m.value for m in ScanMode},
    )
    #: RSSI samples older than this are forgotten; the distance comes from the rest (ESPresense: 15 s).
    rssi_window: float = positive(15.0)
    #: Wait after a failed or lost connection before trying that node again: doubling up to the max.
    reconnect_backoff_initial: float = positive(1.0)
    reconnect_backoff_max: float = positive(60.0)
    #: One connection attempt (bleak's connect and service discovery) gives up after this long.
    connect_timeout: float = positive(20.0)
    #: A node link's keepalive and dead interval: the leaf profile does not negotiate them, so they
    #: equal the node firmware's (``keepalive_s`` / ``dead_s`` in its node.json, defaults 5 s and
    #: 15 s: a node may sign for seconds on an ESP32 and must not be dropped meanwhile). A node
    #: switched off leaves sooner: its connection ends at the BLE supervision timeout.
    keepalive_interval: float = positive(5.0)
    dead_interval: float = positive(15.0)
