"""A node's firmware leaf under CPython, behind a typed interface: what a virtual node runs.

The leaf is ``firmware_bridge/micropython/leaf.py``, the very file a node runs (loaded by
:mod:`agent.sim.firmware`), with the firmware's own pure-Python Ed25519 (``ed25519.py``) signing
its records and handshake proofs. :class:`LeafNode` adds only what the firmware's ``node_main``
adds around it on a board: the 32-byte key seed, an identity (name, OS, agent version, metadata),
a counter store (:class:`MemoryCounters`, or any :class:`CounterStore`) and a wall clock. Hosts
(a Bumble GATT peripheral in :mod:`agent.sim.ble`, the in-memory wire of the tests, benches)
drive it with frames and time::

    node = LeafNode(seed, NodeIdentity("leaf-kitchen", metadata={"room": "kitchen"}))
    node.link_up(link, mtu, now)               # a router connected: HELLO goes out
    node.receive(link, frame, now)             # a frame the router wrote
    node.tick(now)                             # at node.next_tick(now) or sooner
    for link, frame in node.take_output(): ... # frames to send, each within its link's MTU
    for event in node.take_events(): ...       # LeafEvent(UP/DOWN, link, router key / reason)

Link ids are the host's (any hashable). Signing is synchronous and costs milliseconds per
signature under CPython (seconds on an ESP32): it happens in ``link_up``/``receive``/``tick``/
``set_metadata`` only when a record or proof must change.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core.keys import peer_key_string
from agent.sim.firmware import load
from agent.state.store import MemoryCounter

#: The firmware's leaf and signer modules (the node's own sources).
_LEAF: Any = load("leaf")
_ED25519: Any = load("ed25519")

#: The OS a virtual node reports (a board reports ``MicroPython <version> <board>``).
VIRTUAL_OS = "MicroPython 1.27.0 virtual"
#: The version ``node_main.py`` reports as the agent version.
FIRMWARE_VERSION = "0.1.0"
#: The firmware's connection type number for Bluetooth (the leaf profile's).
BLUETOOTH: int = _LEAF.BLUETOOTH
SEED_BYTES = 32


class CounterStore(Protocol):
    """The node's record counters (on a board: ``node_store.CounterFile`` on flash)."""

    def next(self) -> int:
        """A fresh counter, durable before it is returned."""

    def advance_past(self, counter: int) -> None:
        """Make every later :meth:`next` return more than ``counter``."""


class MemoryCounters:
    """A :class:`CounterStore` in memory: a node that forgets its counter when switched off."""

    def __init__(self) -> None:
        self._memory = MemoryCounter()

    def next(self) -> int:
        return self._memory.next_counter()

    def advance_past(self, counter: int) -> None:
        self._memory.advance_past(counter)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What the node's card says about it (``node.json`` plus what the firmware reports)."""

    name: str
    os: str = VIRTUAL_OS
    agent_version: str = FIRMWARE_VERSION
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: The fleet CA's certificate for the node's key (node.cert on a board); ``b""``: an open mesh.
    certificate: bytes = b""


class LeafEventKind(enum.Enum):
    UP = "up"  # a router link is established; detail is the router's public key
    DOWN = "down"  # a link ended; detail is the reason ("dead", "transport", "bad card", ...)


@dataclass(frozen=True, slots=True)
class LeafEvent:
    kind: LeafEventKind
    link: Hashable
    detail: Any


class LeafNode:
    """One node's firmware leaf, its signer, counters, identity and wall clock (module docstring)."""

    def __init__(
        self,
        seed: bytes,
        identity: NodeIdentity,
        *,
        counters: CounterStore | None = None,
        wall: Callable[[], float] = time.time,
        urandom: Callable[[int], bytes] = os.urandom,
        keepalive_s: float = 1.0,
        dead_s: float = 3.0,
    ) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a node's key seed is {SEED_BYTES} bytes, not {len(seed)}")
        self.signer: Any = _ED25519.SigningKey(bytes(seed))
        described = {
            "name": identity.name,
            "os": identity.os,
            "agent_version": identity.agent_version,
            "metadata": dict(identity.metadata),
            "certificate": identity.certificate,
        }
        #: The firmware's ``Leaf`` itself (tests may inspect its records and stats).
        self.leaf: Any = _LEAF.Leaf(
            self.signer,
            counters or MemoryCounters(),
            described,
            wall,
            urandom,
            keepalive_s=keepalive_s,
            dead_s=dead_s,
        )
        self.public_key: bytes = bytes(self.signer.public_key)
        self.peer_id: bytes = self.public_key[:8]
        self.peer_key_string: str = peer_key_string(self.public_key)

    # ---------------------------------------------------------------- links

    def link_up(self, link: Hashable, mtu: int, now: float, expected: bytes | None = None) -> None:
        """A router connected over Bluetooth (``expected``: its key or peer id prefix, if provisioned)."""
        self.leaf.link_up(link, mtu, now, BLUETOOTH, expected)

    def receive(self, link: Hashable, frame: bytes, now: float) -> None:
        self.leaf.receive(link, bytes(frame), now)

    def link_down(self, link: Hashable, now: float) -> None:
        self.leaf.link_down(link, now)

    def set_mtu(self, link: Hashable, mtu: int) -> None:
        self.leaf.set_mtu(link, mtu)

    def set_distance(self, link: Hashable, distance_dm: int | None, now: float) -> None:
        self.leaf.set_distance(link, distance_dm, now)

    # ---------------------------------------------------------------- time and output

    def tick(self, now: float) -> None:
        self.leaf.tick(now)

    def next_tick(self, now: float) -> float:
        """The earliest time :meth:`tick` may have something to do, counted from ``now``: a later
        call may answer later (it assumes a keepalive from then), so a host keeps the earliest
        time it was given; a tick with nothing due is harmless (``node_main`` ticks every 100 ms)."""
        return float(self.leaf.next_tick(now))

    def take_output(self) -> list[tuple[Hashable, bytes]]:
        """The frames to send since the last call, in order, each within its link's MTU."""
        return [(link, bytes(frame)) for link, frame in self.leaf.take_output()]

    def take_events(self) -> list[LeafEvent]:
        """The link events since the last call, in order."""
        events, self.leaf.events = self.leaf.events, []
        return [LeafEvent(LeafEventKind(kind), link, detail) for kind, link, detail in events]

    # ---------------------------------------------------------------- own records

    def set_metadata(self, metadata: Mapping[str, Any], now: float) -> None:
        """New metadata: the card is re-signed and sent on every established link."""
        self.leaf.set_metadata(dict(metadata), now)

    @property
    def metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = self.leaf.identity.get("metadata") or {}
        return found

    def ensure_card(self) -> None:
        """Sign the card if it never was, so an advertisement can name its counter."""
        self.leaf.ensure_card()

    def newest_counter(self) -> int:
        """The highest counter of the node's own records (0 before any): what it advertises."""
        return int(self.leaf.newest_counter())

    @property
    def established(self) -> list[Hashable]:
        """The links whose handshake is complete."""
        return [link.id for link in self.leaf.links.values() if link.established]

    @property
    def stats(self) -> dict[str, int]:
        """The firmware's counters: signatures, frames/messages malformed, records ignored."""
        return dict(self.leaf.stats)
