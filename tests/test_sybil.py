"""A Sybil flood cannot hide honest peers (issue 13, item 1).

Keys are free, so an admitted neighbour can offer any number of self-signed
peers. The peer table is bounded (``max_peers``, ``max_held_bytes``); the policy
(:mod:`agent.core.occupancy`) decides who gives up a place when it is full: a
newcomer brought by any other neighbour takes one of the flood's places, the
flood's own newcomers are refused once it holds the most, a nearer reachable
peer outranks farther fake ones, and a forgery displaces nobody. Real engines
on the in-memory wire of ``test_engine``, small tables so the floods are small.
"""

from __future__ import annotations

import logging
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_engine import DAY, LAN, NOW, Node, Wire, deliver, make_node, raw_key, records_message

from agent.core import cose
from agent.core.engine import EngineConfig
from agent.core.limits import MAX_CONNECTIONS_PER_RECORD
from agent.core.records import LinkEntry, Links, make_card, sign_record

TABLE = 40  # peers a small agent holds, itself included
CONFIG = EngineConfig(max_peers=TABLE, dead_interval=60.0)


def sybil_cards(count: int, metadata_bytes: int = 0) -> list[bytes]:
    """Cards of fresh keys that live until 2106, as a flooder makes them."""
    metadata = {"x": "y" * metadata_bytes} if metadata_bytes else {}
    out = []
    for i in range(count):
        key = Ed25519PrivateKey.generate()
        card = make_card(f"sybil-{i}", "x", "1", metadata)
        out.append(sign_record(key, raw_key(key), 1, 2**32 - 1, card).raw)
    return out


def flood(wire: Wire, target: Node, link: int, raws: list[bytes]) -> None:
    """Hand ``target`` the records on ``link`` eight to a message, then let the mesh settle."""
    for i in range(0, len(raws), 8):
        deliver(target, link, records_message(*raws[i : i + 8]), wire.now)
    wire.pump()


def shows(node: Node, other: Node, wire: Wire) -> bool:
    return other.engine.peer_key_string in {p.peer_key_string for p in node.engine.graph(wire.now).peers()}


def held_peers(node: Node) -> int:
    return node.engine.table_usage()[0]


def flooded_triangle() -> tuple[Wire, Node, Node, Node, int]:
    """``a`` linked to a flooder ``f`` and to an honest ``b``; ``f`` has filled ``a``'s table."""
    a, f, b = make_node("a", config=CONFIG), make_node("f", config=CONFIG), make_node("b", config=CONFIG)
    wire = Wire(a, f, b)
    fa = wire.connect(f, a)
    wire.connect(a, b)
    wire.run(0.5)
    flood(wire, a, fa, sybil_cards(3 * TABLE))
    assert held_peers(a) == TABLE
    return wire, a, f, b, fa


def test_the_flood_fills_the_table_and_its_own_newcomers_are_then_refused() -> None:
    _, a, _, _, _ = flooded_triangle()
    assert a.engine.stats["records.rejected.capacity"] >= 2 * TABLE
    assert a.engine.stats["peers.evicted"] == 0  # the flood only ever displaces itself: it is refused


def test_a_new_honest_peer_joins_a_flooded_mesh_and_stays_while_the_flood_goes_on() -> None:
    wire, a, f, b, fa = flooded_triangle()
    h = make_node("h", config=CONFIG)
    wire.connect(h, b)
    assert wire.run_until(lambda: shows(a, h, wire) and shows(h, a, wire) and shows(b, h, wire), 3.0)
    assert a.engine.stats["peers.evicted"] >= 1
    flood(wire, a, fa, sybil_cards(3 * TABLE))
    wire.run(1.0)
    assert shows(a, h, wire) and shows(a, b, wire) and shows(a, f, wire)
    assert held_peers(a) <= TABLE


def test_a_peer_behind_the_only_neighbour_still_earns_its_place_by_being_reachable() -> None:
    """``d`` hears everything, the flood included, through ``a``: the honest newcomer is told from
    the flood by its links record, which a reachable peer claims back."""
    a, f, b, d = (make_node(n, config=CONFIG) for n in "afbd")
    wire = Wire(a, f, b, d)
    fa = wire.connect(f, a)
    wire.connect(a, b)
    wire.connect(a, d)
    wire.run(0.5)
    flood(wire, a, fa, sybil_cards(3 * TABLE))
    assert held_peers(d) == TABLE
    h = make_node("h", config=CONFIG)
    wire.connect(h, b)
    assert wire.run_until(lambda: shows(d, h, wire), 3.0)
    assert d.engine.stats["peers.evicted"] >= 1


def test_a_restarted_agent_reloading_a_flood_from_its_store_admits_honest_peers() -> None:
    """Peers reloaded from the store that no neighbour vouches for are the first to go."""
    stored = sybil_cards(TABLE)
    a = make_node("a", config=CONFIG, held_records=stored)
    assert held_peers(a) == TABLE  # the flood, reloaded: the table is full before any link
    b, h = make_node("b", config=CONFIG), make_node("h", config=CONFIG)
    wire = Wire(a, b, h)
    wire.connect(b, h)
    wire.connect(a, b)
    assert wire.run_until(lambda: shows(a, b, wire) and shows(a, h, wire), 3.0)
    assert held_peers(a) == TABLE


def test_fake_peers_made_reachable_behind_the_flooder_give_way_to_a_nearer_honest_peer() -> None:
    """The flooder claims fake peers that claim it back, and they claim more: a tree of reachable
    fakes. They are never nearer than one hop beyond the flooder, so an honest peer at two hops
    outranks the fakes at three."""
    a, f, b = make_node("a", config=CONFIG), make_node("f", config=CONFIG), make_node("b", config=CONFIG)
    wire = Wire(a, f, b)
    fa = wire.connect(f, a)
    wire.connect(a, b)
    wire.run(0.5)
    wire.muted.add(fa)  # from here on, only what the test forges comes from f
    flood(wire, a, fa, fake_tree(f, a, tier1=10, fanout=6))
    assert held_peers(a) == TABLE
    assert len(list(a.engine.graph(wire.now).peers())) == TABLE  # every fake held is reachable
    h = make_node("h", config=CONFIG)
    wire.connect(h, b)
    assert wire.run_until(lambda: shows(a, h, wire), 3.0)
    assert shows(a, f, wire)


def test_forged_records_displace_nobody() -> None:
    wire, a, _, b, _ = flooded_triangle()
    forged = [cose.envelope(cose.open_envelope(raw)[0], os.urandom(64)) for raw in sybil_cards(TABLE)]
    ab = next(link for link, (x, y) in wire.ends.items() if {x, y} == {a, b})
    flood(wire, a, ab, forged)
    assert a.engine.stats["records.rejected.bad_signature"] == TABLE
    assert a.engine.stats["peers.evicted"] == 0


def test_large_cards_are_bounded_by_the_byte_budget_and_an_honest_peer_still_joins() -> None:
    config = EngineConfig(max_peers=1000, max_held_bytes=64 * 1024, dead_interval=60.0)
    a, f, b = make_node("a", config=config), make_node("f", config=config), make_node("b", config=config)
    wire = Wire(a, f, b)
    fa = wire.connect(f, a)
    wire.connect(a, b)
    wire.run(0.5)
    flood(wire, a, fa, sybil_cards(60, metadata_bytes=3800))
    assert a.engine.table_usage()[1] <= config.max_held_bytes
    assert a.engine.stats["records.rejected.capacity"] >= 40
    h = make_node("h", metadata={"note": "z" * 3000}, config=config)
    wire.connect(h, b)
    assert wire.run_until(lambda: shows(a, h, wire), 3.0)
    assert a.engine.table_usage()[1] <= config.max_held_bytes


def test_a_full_table_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.core.engine"):
        flooded_triangle()
    full = [r for r in caplog.records if "peer table full" in r.getMessage()]
    assert len(full) == 1


# ---------------------------------------------------------------- the reachable fake tree


def fake_tree(f: Node, a: Node, tier1: int, fanout: int) -> list[bytes]:
    """Records of fakes in two tiers, all reachable from ``a`` through ``f``: ``f`` (forged with its
    own key, with a counter its engine never reaches) claims ``a`` and the first tier, each of which
    claims ``f`` and its ``fanout`` children, which claim it back."""
    expiry = 2**32 - 1
    first = [Ed25519PrivateKey.generate() for _ in range(tier1)]
    second = [[Ed25519PrivateKey.generate() for _ in range(fanout)] for _ in first]
    assert tier1 + 1 <= MAX_CONNECTIONS_PER_RECORD

    def links(*keys: bytes) -> Links:
        return Links(tuple(LinkEntry(k[:8], LAN) for k in keys))

    out = [sign_record(f.private_key, f.key, 10**6, int(NOW + DAY), links(a.key, *map(raw_key, first))).raw]
    for parent, children in zip(first, second, strict=True):
        pkey = raw_key(parent)
        out.append(sign_record(parent, pkey, 1, expiry, make_card("fake", "x", "1", {})).raw)
        out.append(sign_record(parent, pkey, 2, expiry, links(f.key, *map(raw_key, children))).raw)
        for child in children:
            ckey = raw_key(child)
            out.append(sign_record(child, ckey, 1, expiry, make_card("fake", "x", "1", {})).raw)
            out.append(sign_record(child, ckey, 2, expiry, links(pkey)).raw)
    return out
