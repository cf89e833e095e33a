"""The presence graph as one peer sees it: built from its holdings, its own links and who is shown.

Pure: given the shown peers with their hop counts (:mod:`agent.core.reachability`),
the held cards and claims (:mod:`agent.core.holdings`) and the local peer's own
established links, build the immutable :class:`PresenceGraph`. The local links
count as they are; a connection between two remote peers counts only when both
claim it (:func:`~agent.core.reachability.mutual_edges`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from agent.core.graph import Connection, Peer, PresenceGraph, sorted_peers
from agent.core.holdings import Holdings
from agent.core.keys import peer_key_string
from agent.core.reachability import Edges, mutual_edges
from agent.core.records import CONNECTION_TYPE_BY_CODE, EMPTY_METADATA, Card, Metadata, RecordKind

#: A local link as the graph needs it: (remote peer id, type code, distance in dm).
LocalEdge = tuple[bytes, int, int | None]


def edges_among(
    local_id: bytes, local_edges: Iterable[LocalEdge], held: Holdings, shown: Mapping[bytes, int]
) -> Edges:
    """Connections among ``shown`` peers: the local links as they are, remote ones if both claim them."""
    edges: Edges = {}
    for nid, code, distance in local_edges:
        if nid in shown:
            low, high = sorted((local_id, nid))
            edges[(low, high, code)] = distance
    edges.update(mutual_edges(held.claims, shown))
    return edges


def no_identity(pid: bytes) -> Metadata:
    """Fleet trust off: no peer has identity metadata."""
    return EMPTY_METADATA


def build_graph(
    local_id: bytes,
    local_edges: Iterable[LocalEdge],
    held: Holdings,
    shown: Mapping[bytes, int],
    identity: Callable[[bytes], Metadata] = no_identity,
) -> PresenceGraph:
    """The graph of the ``shown`` peers (peer id -> hops; the local peer among them).

    ``identity(peer id)`` is a peer's ``identity_service_metadata``: what its verified
    certificate says (fleet trust, :mod:`agent.core.trust`), else nothing.
    """
    keys = {pid: peer_key_string(held.keys[pid]) for pid in shown}
    conns: dict[bytes, list[Connection]] = {pid: [] for pid in shown}
    for (a, b, code), dist in edges_among(local_id, local_edges, held, shown).items():
        metres = None if dist is None else dist / 10.0
        conn = Connection.between(keys[a], keys[b], CONNECTION_TYPE_BY_CODE[code], metres)
        conns[a].append(conn)
        conns[b].append(conn)
    peers = []
    local: Peer | None = None
    for pid, hops in shown.items():
        card_record = held.get(pid, RecordKind.CARD)
        card = card_record.body if card_record is not None else None
        assert card is None or isinstance(card, Card)
        peer = Peer(
            peer_key_string=keys[pid],
            device_name=card.device_name if card else "",
            os=card.os if card else "",
            connections=tuple(sorted(conns[pid], key=lambda c: c.id)),
            peer_metadata=card.metadata if card else EMPTY_METADATA,
            identity_service_metadata=identity(pid),
            hops=hops,
            agent_version=card.agent_version if card else "",
        )
        if pid == local_id:
            local = peer
        else:
            peers.append(peer)
    assert local is not None, "the local peer is always shown"
    return PresenceGraph(local, sorted_peers(peers))
