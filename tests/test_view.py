"""Specification of the graph as one peer sees it (agent.core.view), alone.

Rules covered: the local peer's own links count as they are; two remote peers
are connected only when both claim it with the same type, with the mean
distance in metres; only shown peers appear, each with its hops and its card's
fields (a peer without a held card shows empty strings); the local peer is
the graph's ``local_peer``.
"""

from __future__ import annotations

import functools

from strategies import key_pair

from agent.core.holdings import Holdings
from agent.core.keys import peer_id, peer_key_string
from agent.core.records import (
    CONNECTION_TYPE_CODES,
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    make_card,
    sign_record,
)
from agent.core.view import build_graph

EXPIRY = 2_000_000_000
BT = ConnectionType.BLUETOOTH
LOCAL = 1


@functools.cache
def public(seed: int) -> bytes:
    return key_pair(seed)[1]


def pid(seed: int) -> bytes:
    return peer_id(public(seed))


def card(seed: int, name: str) -> Record:
    private, pub = key_pair(seed)
    return sign_record(private, pub, 1, EXPIRY, make_card(name, "Linux", "0.1.0", {"n": seed}))


def links(seed: int, *to: tuple[int, int | None]) -> Record:
    private, pub = key_pair(seed)
    body = Links(tuple(LinkEntry(pid(n), BT, dm) for n, dm in to))
    return sign_record(private, pub, 2, EXPIRY, body)


def holdings(*records: Record) -> Holdings:
    held = Holdings(public(LOCAL), 100, 1 << 20)
    held.put(card(LOCAL, "me"))
    for record in records:
        held.put(record)
    return held


def test_local_links_count_as_they_are_and_remote_ones_need_both_ends() -> None:
    held = holdings(card(2, "two"), card(3, "three"), links(2, (3, 40)), links(3, (2, 20)), card(4, "four"))
    local_edge = (pid(2), CONNECTION_TYPE_CODES[BT], None)
    shown = {pid(LOCAL): 0, pid(2): 1, pid(3): 2, pid(4): 3}
    graph = build_graph(pid(LOCAL), [local_edge], held, shown)

    assert graph.local_peer.device_name == "me"
    two = graph.peer(peer_key_string(public(2)))
    assert two is not None and two.hops == 1 and two.peer_metadata == {"n": 2}
    assert {c.approximate_distance_in_meters for c in two.connections} == {
        None,
        3.0,
    }  # local link; mean of 4 m and 2 m
    four = graph.peer(peer_key_string(public(4)))
    assert four is not None and four.connections == ()  # 4 claims nothing, nobody claims 4


def test_a_one_sided_claim_is_no_connection() -> None:
    held = holdings(card(2, "two"), card(3, "three"), links(2, (3, None)))
    graph = build_graph(pid(LOCAL), [], held, {pid(LOCAL): 0, pid(2): 1, pid(3): 1})
    assert graph.connections() == ()


def test_only_shown_peers_appear_and_one_without_a_card_shows_empty_fields() -> None:
    held = holdings(card(2, "two"), links(3, (2, None)))  # 3: links held, no card
    graph = build_graph(pid(LOCAL), [], held, {pid(LOCAL): 0, pid(3): 2})
    assert [p.peer_key_string for p in graph.remote_peers] == [peer_key_string(public(3))]
    three = graph.remote_peers[0]
    assert (three.device_name, three.os, three.agent_version, three.hops) == ("", "", "", 2)
