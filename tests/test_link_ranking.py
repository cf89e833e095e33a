"""Specification: which honest peer is never displaced by a newcomer (issue 13, item 4).

A links record lists at most 64 links. The ones listed are the links
established first: a newcomer never displaces a link listed before it, so
links with ground low peer ids, however many, cannot push an older honest link
out of the record, and the honest peers behind it stay in every graph. The
kept entries are sorted by (peer id, type) inside the record, so the record is
deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.core.limits import MAX_CONNECTIONS_PER_RECORD
from agent.core.records import Links, RecordKind
from tests.test_engine import Node, Wire, make_node

#: More hostile links than a links record can list.
HOSTILE_LINKS = MAX_CONNECTIONS_PER_RECORD + 6


def node_whose_id(name: str, wanted: Callable[[bytes], bool]) -> Node:
    """A node whose peer id (its key's first 8 bytes) was ground until ``wanted`` holds."""
    while True:
        node = make_node(name)
        if wanted(node.engine.peer_id):
            return node


def listed_ids(node: Node) -> list[bytes]:
    """The peer ids ``node``'s current links record lists, in record order."""
    (links,) = [r for r in node.engine.records_of(node.key) if r.kind is RecordKind.LINKS]
    assert isinstance(links.body, Links)
    return [e.peer_id for e in links.body.entries]


def hostile_nodes() -> list[Node]:
    return [node_whose_id(f"hostile-{i}", lambda pid: pid[0] < 0x10) for i in range(HOSTILE_LINKS)]


def high(pid: bytes) -> bool:
    return pid[0] >= 0xF0


def test_links_with_ground_low_ids_arriving_later_never_displace_two_honest_links() -> None:
    hub = make_node("hub")
    honest = [node_whose_id(f"honest-{i}", high) for i in range(2)]
    wire = Wire(hub, *honest)
    for peer in honest:
        wire.connect(hub, peer)
    wire.run(0.5)
    for peer in hostile_nodes():
        wire.connect(hub, peer)
    wire.run(1.0)

    listed = listed_ids(hub)
    assert len(hub.engine.established_links()) == 2 + HOSTILE_LINKS
    assert len(listed) == MAX_CONNECTIONS_PER_RECORD
    assert all(peer.engine.peer_id in listed for peer in honest)
    assert listed == sorted(listed)  # deterministic: the kept ones sorted by id inside the record
    assert hub.engine.stats["links.unlisted"] == HOSTILE_LINKS + 2 - MAX_CONNECTIONS_PER_RECORD


def test_two_honest_peers_behind_a_bridge_with_70_hostile_links_stay_in_each_others_graphs() -> None:
    bridge = make_node("bridge")
    left, right = node_whose_id("left", high), node_whose_id("right", high)
    wire = Wire(bridge, left, right)
    wire.connect(left, bridge)
    wire.connect(bridge, right)
    wire.run(0.5)
    assert left.engine.graph(wire.now).peer(right.engine.peer_key_string) is not None

    for peer in hostile_nodes():
        wire.connect(bridge, peer)
    wire.run(5.0)  # well past the departure grace

    assert left.engine.graph(wire.now).peer(right.engine.peer_key_string) is not None
    assert right.engine.graph(wire.now).peer(left.engine.peer_key_string) is not None
