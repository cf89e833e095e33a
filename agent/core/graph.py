"""Immutable presence graph values, their diff, and JSON / DOT exports.

Field names follow the reference Presence API so code written against it reads
the same here: ``PresenceGraph(local_peer, remote_peers)``, ``Peer`` and
``Connection``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.core.records import ConnectionType, Metadata, thaw_metadata


def connection_id(key1: str, key2: str, connection_type: ConnectionType) -> str:
    """Deterministic id of a connection: ``"<lower key><-><higher key>:<Type>"``."""
    low, high = sorted((key1, key2))
    return f"{low}<->{high}:{connection_type.value}"


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection between two peers. ``peer_key_string1`` sorts before ``peer_key_string2``."""

    id: str
    peer_key_string1: str
    peer_key_string2: str
    connection_type: ConnectionType
    approximate_distance_in_meters: float | None = None

    @classmethod
    def between(
        cls,
        key_a: str,
        key_b: str,
        connection_type: ConnectionType,
        approximate_distance_in_meters: float | None = None,
    ) -> Connection:
        low, high = sorted((key_a, key_b))
        return cls(
            connection_id(low, high, connection_type),
            low,
            high,
            connection_type,
            approximate_distance_in_meters,
        )

    def other(self, peer_key_string: str) -> str:
        """The key at the far end of this connection from ``peer_key_string``."""
        return self.peer_key_string2 if peer_key_string == self.peer_key_string1 else self.peer_key_string1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peer_key_string1": self.peer_key_string1,
            "peer_key_string2": self.peer_key_string2,
            "connection_type": self.connection_type.value,
            "approximate_distance_in_meters": self.approximate_distance_in_meters,
        }


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer as the local peer sees it.

    ``hops`` is 0 for the local peer, 1 for a direct neighbour, and so on;
    ``is_direct`` is ``hops == 1``. ``peer_metadata`` and
    ``identity_service_metadata`` are read-only mappings.
    """

    peer_key_string: str
    device_name: str
    os: str
    connections: tuple[Connection, ...]
    peer_metadata: Metadata
    identity_service_metadata: Metadata
    hops: int
    agent_version: str = ""

    @property
    def is_direct(self) -> bool:
        return self.hops == 1

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_key_string": self.peer_key_string,
            "device_name": self.device_name,
            "os": self.os,
            "agent_version": self.agent_version,
            "hops": self.hops,
            "is_direct": self.is_direct,
            "connections": [c.to_json() for c in self.connections],
            "peer_metadata": thaw_metadata(self.peer_metadata),
            "identity_service_metadata": thaw_metadata(self.identity_service_metadata),
        }


@dataclass(frozen=True, slots=True)
class GraphDiff:
    """What changed between two graphs (``new.diff(old)``)."""

    joined: tuple[Peer, ...] = ()
    left: tuple[Peer, ...] = ()
    changed: tuple[Peer, ...] = ()
    connections_added: tuple[Connection, ...] = ()
    connections_removed: tuple[Connection, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.joined or self.left or self.changed or self.connections_added or self.connections_removed
        )


@dataclass(frozen=True, slots=True)
class PresenceGraph:
    """An immutable snapshot of the mesh as the local peer sees it now."""

    local_peer: Peer
    remote_peers: tuple[Peer, ...] = field(default=())

    def peers(self) -> tuple[Peer, ...]:
        """The local peer followed by every remote peer."""
        return (self.local_peer, *self.remote_peers)

    def peer(self, peer_key_string: str) -> Peer | None:
        """The peer with this key, or ``None``."""
        for p in self.peers():
            if p.peer_key_string == peer_key_string:
                return p
        return None

    def connections(self) -> tuple[Connection, ...]:
        """Every connection in the graph once, sorted by id."""
        seen = {c.id: c for p in self.peers() for c in p.connections}
        return tuple(seen[k] for k in sorted(seen))

    def diff(self, previous: PresenceGraph | None) -> GraphDiff:
        """Peers that joined, left or changed and connections added or removed since ``previous``."""
        old = {p.peer_key_string: p for p in (previous.remote_peers if previous else ())}
        new = {p.peer_key_string: p for p in self.remote_peers}
        old_conns = {c.id: c for c in previous.connections()} if previous else {}
        new_conns = {c.id: c for c in self.connections()}
        return GraphDiff(
            joined=tuple(new[k] for k in sorted(new.keys() - old.keys())),
            left=tuple(old[k] for k in sorted(old.keys() - new.keys())),
            changed=self._local_change(previous)
            + tuple(new[k] for k in sorted(new.keys() & old.keys()) if new[k] != old[k]),
            connections_added=tuple(new_conns[k] for k in sorted(new_conns.keys() - old_conns.keys())),
            connections_removed=tuple(old_conns[k] for k in sorted(old_conns.keys() - new_conns.keys())),
        )

    def _local_change(self, previous: PresenceGraph | None) -> tuple[Peer, ...]:
        if previous is None or previous.local_peer == self.local_peer:
            return ()
        return (self.local_peer,)

    def to_json(self) -> dict[str, Any]:
        """``{"local_peer": {...}, "remote_peers": [...]}`` with the API's field names."""
        return {
            "local_peer": self.local_peer.to_json(),
            "remote_peers": [p.to_json() for p in self.remote_peers],
        }

    def to_json_str(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent, ensure_ascii=False, sort_keys=False)

    def to_dot(self) -> str:
        """Graphviz DOT text: one node per peer (labelled with its name), one edge per connection."""
        lines = ["graph presence {", "  node [shape=box];"]
        for p in self.peers():
            # "\\n" is DOT's line break inside a label, so only the name is escaped.
            label = f"{_dot_escape(p.device_name or '?')}\\n{p.peer_key_string[:10]}…"
            style = ", style=bold" if p.hops == 0 else ""
            lines.append(f'  "{p.peer_key_string}" [label="{label}"{style}];')
        for c in self.connections():
            dist = (
                f" ~{c.approximate_distance_in_meters:g} m"
                if c.approximate_distance_in_meters is not None
                else ""
            )
            lines.append(
                f'  "{c.peer_key_string1}" -- "{c.peer_key_string2}" '
                f'[label="{c.connection_type.value}{dist}"];'
            )
        lines.append("}")
        return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def sorted_peers(peers: Iterable[Peer]) -> tuple[Peer, ...]:
    """Remote peers in display order: nearest first, then by key."""
    return tuple(sorted(peers, key=lambda p: (p.hops, p.peer_key_string)))
