"""Leaf peers (protocol 3, issue 10): a leaf holds only its own records.

A leaf says so in its HELLO (role 1). It is sent no floods; its SUMMARY and
DIGEST cover only its own records, and a router's SUMMARY and DIGEST to it
cover only the leaf's records as the router holds them; the router floods the
leaf's signed records unchanged to the rest of the mesh. A leaf's connection
counts when both ends list it, and a leaf may attach to several routers.
Links work down to BLE's 20-byte payload; a transport may update a link's MTU
and distance once it is up; an expected peer may be named by its 8-byte id.
Real engines on the in-memory wire of ``test_engine``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_engine import (
    LAN,
    NOW,
    Node,
    Wire,
    decode_frames,
    deliver,
    make_node,
    records_message,
    stranger_records,
)

from agent.core.engine import EngineConfig
from agent.core.linkspec import LinkSpec
from agent.core.records import ConnectionType, Links, RecordKind, open_record
from agent.core.wire import Capabilities, MessageType, Role, decode_hello

LEAF = EngineConfig(role=Role.LEAF)
BLE = ConnectionType.BLUETOOTH


def keys_in_graph(node: Node, wire: Wire) -> set[str]:
    return {p.peer_key_string for p in node.engine.graph(wire.now).peers()}


def records_sent_to(wire: Wire, receiver: Node) -> list[bytes]:
    """Every record any engine sent over a link whose far end is ``receiver``."""
    out = []
    for sent in wire.log:
        if sent.link in wire.ends and wire.other(sent.sender, sent.link) is receiver:
            for kind, fields in decode_frames([sent.frame]):
                if kind is MessageType.RECORDS:
                    out.extend(fields)
    return out


def leaf_mesh() -> tuple[Wire, Node, Node, Node, int]:
    """Routers ``r1`` and ``r2`` linked; a leaf attached to ``r1`` over Bluetooth."""
    r1, r2 = make_node("r1"), make_node("r2")
    leaf = make_node("leaf", config=LEAF, metadata={"kind": "sensor"})
    wire = Wire(r1, r2, leaf)
    wire.connect(r1, r2)
    wire.run(0.5)
    link = wire.connect(r1, leaf, LinkSpec(BLE, mtu=244))
    wire.run(1.0)
    return wire, r1, r2, leaf, link


def test_a_leaf_says_what_it_is_in_its_hello() -> None:
    wire, r1, _, leaf, _ = leaf_mesh()
    hellos = [
        decode_hello(fields)
        for kind, fields in decode_frames(wire.sent_by(leaf))
        if kind is MessageType.HELLO
    ]
    assert hellos and all(h.capabilities == Capabilities(Role.LEAF) for h in hellos)
    routers = [
        decode_hello(fields) for kind, fields in decode_frames(wire.sent_by(r1)) if kind is MessageType.HELLO
    ]
    assert all(h.capabilities.role is Role.ROUTER for h in routers)


def test_a_leaf_is_in_every_routers_graph_with_its_connection_and_its_records_unchanged() -> None:
    wire, r1, r2, leaf, _ = leaf_mesh()
    for router in (r1, r2):
        assert leaf.engine.peer_key_string in keys_in_graph(router, wire)
        held = {r.raw for r in router.engine.records_of(leaf.key)}
        assert held == {r.raw for r in leaf.engine.own_records}  # flooded unchanged, signed by the leaf
    connections = {c.connection_type for c in r2.engine.graph(wire.now).connections()}
    assert BLE in connections


def test_a_leaf_never_receives_another_peers_record_and_holds_only_its_own() -> None:
    wire, r1, _, leaf, _ = leaf_mesh()
    r1_link = next(link for link, (x, y) in wire.ends.items() if {x.name, y.name} == {"r1", "r2"})
    deliver(r1, r1_link, records_message(*stranger_records(20)), wire.now)  # the mesh grows
    wire.run(3.0)
    assert r1.engine.held_record_count() > 40
    sent = records_sent_to(wire, leaf)
    assert all(open_record(raw).public_key == leaf.key for raw in sent)
    assert leaf.engine.held_record_count() == 2
    assert leaf.engine.stats["records.rejected.not_for_leaf"] == 0  # nothing was even offered


def test_sync_with_a_leaf_covers_only_its_records_and_settles() -> None:
    wire, r1, _, leaf, _ = leaf_mesh()
    wire.run(5.0)
    before = (r1.engine.stats["sync.digests_sent"], leaf.engine.stats["sync.digests_sent"])
    wire.run(5.0)
    # In sync: the router's summary of the leaf's records equals the leaf's own summary.
    assert (r1.engine.stats["sync.digests_sent"], leaf.engine.stats["sync.digests_sent"]) == before
    summaries = [
        fields[0]
        for kind, fields in decode_frames(wire.sent_by(r1, since=wire.now - 2.0))
        if kind is MessageType.SUMMARY
    ]
    assert leaf.engine.summary in summaries


def test_a_leaf_that_lost_a_record_gets_only_its_own_back_through_digest() -> None:
    wire, r1, _, leaf, link = leaf_mesh()
    # The router holds a newer links record of the leaf than the leaf sent it last: make the
    # leaf's view differ by a metadata change, then check the DIGEST exchange stays on its records.
    leaf.engine.set_card(replace(leaf.engine.card, metadata={"kind": "sensor", "battery": 80}), wire.now)
    wire.run(3.0)
    digests = [fields for kind, fields in decode_frames(wire.sent_by(r1, link)) if kind is MessageType.DIGEST]
    for lo, hi, _ in digests:
        assert lo == hi == leaf.key[:8]
    card = next(r for r in r1.engine.records_of(leaf.key) if r.kind is RecordKind.CARD)
    assert card.body.metadata["battery"] == 80  # type: ignore[union-attr]


def test_a_leaf_may_attach_to_several_routers_and_both_connections_count() -> None:
    wire, r1, r2, leaf, _ = leaf_mesh()
    wire.connect(r2, leaf, LinkSpec(BLE, mtu=244))
    wire.run(1.0)
    own_links = next(r for r in leaf.engine.own_records if r.kind is RecordKind.LINKS)
    assert isinstance(own_links.body, Links)
    assert {e.peer_id for e in own_links.body.entries} == {r1.key[:8], r2.key[:8]}
    leaf_connections = [
        c
        for c in r1.engine.graph(wire.now).connections()
        if leaf.engine.peer_key_string in (c.peer_key_string1, c.peer_key_string2)
    ]
    assert len(leaf_connections) == 2


def test_a_leaf_leaves_every_graph_when_its_links_go() -> None:
    wire, r1, r2, leaf, link = leaf_mesh()
    wire.muted.add(link)  # switched off: nothing more is heard from it
    wire.run(5.0)
    for router in (r1, r2):
        assert leaf.engine.peer_key_string not in keys_in_graph(router, wire)


@pytest.mark.parametrize("mtu", [20, 23, 244])
def test_a_leaf_attaches_over_small_mtus_end_to_end(mtu: int) -> None:
    r1 = make_node("r1")
    leaf = make_node("leaf", config=LEAF, metadata={"note": "x" * 300})
    wire = Wire(r1, leaf)
    wire.connect(r1, leaf, LinkSpec(BLE, mtu=mtu))
    assert wire.run_until(lambda: leaf.engine.peer_key_string in keys_in_graph(r1, wire), 10.0)
    assert all(len(s.frame) <= mtu for s in wire.log)


def test_a_transport_may_raise_the_mtu_and_update_the_distance_of_an_up_link() -> None:
    wire, r1, r2, leaf, link = leaf_mesh()
    r1.engine.update_link(link, wire.now, mtu=100)
    leaf.engine.update_link(link, wire.now, mtu=100)
    counter = next(r for r in r1.engine.own_records if r.kind is RecordKind.LINKS).counter
    r1.engine.update_link(link, wire.now, distance_dm=35)
    wire.run(1.0)
    links = next(r for r in r1.engine.own_records if r.kind is RecordKind.LINKS)
    assert links.counter > counter  # re-signed: an update of the link, not a new link
    assert isinstance(links.body, Links)
    assert {e.distance_dm for e in links.body.entries if e.peer_id == leaf.key[:8]} == {35}
    assert r1.engine.stats["links.established"] == 2  # no new link
    distances = {
        c.approximate_distance_in_meters
        for c in r2.engine.graph(wire.now).connections()
        if c.connection_type is BLE
    }
    assert distances and all(d is not None for d in distances)
    assert all(len(s.frame) <= 100 for s in wire.log if s.time >= wire.now - 0.9 and s.link == link)


def test_an_expected_peer_may_be_named_by_its_8_byte_id() -> None:
    r1, leaf = make_node("r1"), make_node("leaf", config=LEAF)
    wire = Wire(r1, leaf)
    link = 99
    wire.ends[link] = (r1, leaf)
    r1.engine.link_up(link, LinkSpec(BLE, expected_peer=leaf.key[:8]), NOW)
    leaf.engine.link_up(link, LinkSpec(BLE, expected_peer=r1.key), NOW)
    assert wire.run_until(lambda: bool(r1.engine.established_links()), 5.0)
    stranger = make_node("stranger")
    with pytest.raises(ValueError, match="8-byte peer id"):
        r1.engine.link_up(100, LinkSpec(BLE, expected_peer=stranger.key[:5]), NOW)


def test_a_wrong_8_byte_id_refuses_the_hello() -> None:
    r1, leaf, other = make_node("r1"), make_node("leaf", config=LEAF), make_node("other")
    wire = Wire(r1, leaf)
    link = 7
    wire.ends[link] = (r1, leaf)
    r1.engine.link_up(link, LinkSpec(LAN, expected_peer=other.key[:8]), NOW)
    leaf.engine.link_up(link, LinkSpec(LAN), NOW)
    wire.run(2.0)
    assert not r1.engine.established_links()
    assert r1.engine.stats["handshake.rejected.key_mismatch"] >= 1
