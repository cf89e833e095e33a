"""Specification of the fleet view (agent.mqtt.fleet).

Every agent mirrors, retained, its status and the signed card and links record
of each peer it sees under ``<root>/agents/<agent>/``. The fleet view takes those
messages in any order and merges the views of the agents that are online into
one graph. A record is believed only if it verifies against the peer key in its
topic, is of the topic's kind, has not expired and does not roll a counter back;
anything else is reported as a rejection and changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import THOROUGH, key_pair

from agent.core.certs import FleetTrust, issue_certificate, raw_public_key, sign_revocation_list
from agent.core.keys import peer_id, peer_key_string
from agent.core.records import ConnectionType, LinkEntry, Links, make_card, sign_record
from agent.mqtt.fleet import CertificateCheck, FleetGraph, FleetState, render_table
from agent.mqtt.topics import OFFLINE, ONLINE, TopicKind, TopicLayout

NOW = 1_750_000_000.0
HOUR = 3600
LAYOUT = TopicLayout()
CARD, LINKS, STATUS = TopicKind.CARD, TopicKind.LINKS, TopicKind.STATUS


class Node:
    """A peer's identity, signing its records with a counter that only grows."""

    def __init__(self, seed: int, name: str) -> None:
        self.private, self.public = key_pair(seed)
        self.key = peer_key_string(self.public)
        self.name = name
        self.counter = 0

    def _next(self, counter: int | None) -> int:
        self.counter = counter if counter is not None else self.counter + 1
        return self.counter

    def card(
        self,
        *,
        name: str | None = None,
        counter: int | None = None,
        expiry: float = NOW + HOUR,
        metadata: dict[str, object] | None = None,
        certificate: bytes = b"",
    ) -> bytes:
        body = make_card(name if name is not None else self.name, "Linux", "1.0", metadata or {})
        body = dataclasses.replace(body, certificate=certificate)
        return sign_record(self.private, self.public, self._next(counter), int(expiry), body).raw

    def links(
        self,
        *neighbours: Node,
        kind: ConnectionType = ConnectionType.BLUETOOTH,
        distance_dm: int | None = None,
        counter: int | None = None,
        expiry: float = NOW + HOUR,
    ) -> bytes:
        body = Links(tuple(LinkEntry(peer_id(n.public), kind, distance_dm) for n in neighbours))
        return sign_record(self.private, self.public, self._next(counter), int(expiry), body).raw


ALPHA, BRAVO = Node(1, "alpha-agent"), Node(2, "bravo-agent")
P1, P2, P3, P4 = Node(11, "pi-one"), Node(12, "pi-two"), Node(13, "pi-three"), Node(14, "pi-four")
MALLORY = Node(99, "mallory")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet(clock: Clock) -> FleetState:
    return FleetState(LAYOUT, clock=clock)


def status(fleet: FleetState, agent: Node, payload: bytes) -> None:
    fleet.handle(LAYOUT.agent_topic(agent.key, STATUS), payload)


def put(fleet: FleetState, agent: Node, peer: Node, kind: TopicKind, payload: bytes) -> None:
    fleet.handle(LAYOUT.peer_topic(agent.key, peer.key, kind), payload)


def lists(fleet: FleetState, agent: Node, *peers: Node) -> None:
    """``agent`` comes online and mirrors a fresh card and an empty links record of each peer."""
    status(fleet, agent, ONLINE)
    for peer in peers:
        put(fleet, agent, peer, CARD, peer.card())
        put(fleet, agent, peer, LINKS, peer.links())


def shown(fleet: FleetState) -> list[str]:
    return [p.device_name for p in fleet.graph().peers]


def names(*nodes: Node) -> list[str]:
    return [n.name for n in sorted(nodes, key=lambda n: n.key)]


# ================================================================ merging


def test_the_peers_of_two_online_agents_merge_into_one_graph_sorted_by_key(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)
    lists(fleet, BRAVO, P2, P3)

    graph = fleet.graph()
    assert [p.peer_key_string for p in graph.peers] == sorted(p.key for p in (P1, P2, P3))
    assert shown(fleet) == names(P1, P2, P3)
    assert [(a.peer_key_string, a.online, a.peer_count) for a in graph.agents] == sorted(
        [(ALPHA.key, True, 2), (BRAVO.key, True, 2)]
    )


def test_a_peer_carries_its_card_and_the_online_agents_that_list_it(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)
    lists(fleet, BRAVO, P2)

    graph = fleet.graph()
    one, two = graph.peer(P1.key), graph.peer(P2.key)
    assert one is not None and two is not None
    assert one.seen_by == (ALPHA.key,)
    assert two.seen_by == tuple(sorted((ALPHA.key, BRAVO.key)))
    assert (two.device_name, two.os, two.agent_version) == ("pi-two", "Linux", "1.0")
    assert graph.peer(P3.key) is None


def test_metadata_is_the_cards_and_read_only(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card(metadata={"room": "lab", "tags": ["a"]}))

    peer = fleet.graph().peer(P1.key)
    assert peer is not None
    assert dict(peer.peer_metadata) == {"room": "lab", "tags": ("a",)}
    with pytest.raises(TypeError):
        peer.peer_metadata["room"] = "hall"  # type: ignore[index]


def test_across_agents_the_highest_counter_record_of_each_kind_is_shown(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    status(fleet, BRAVO, ONLINE)
    old_card, new_card = P1.card(name="old name"), P1.card(name="new name")
    put(fleet, BRAVO, P1, CARD, new_card)
    put(fleet, ALPHA, P1, CARD, old_card)  # alpha is behind: not a replay there, just older

    peer = fleet.graph().peer(P1.key)
    assert peer is not None
    assert (peer.device_name, peer.card_counter) == ("new name", P1.counter)
    assert fleet.rejections == ()


def test_a_peer_with_a_card_but_no_links_shows_without_connections(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card())

    graph = fleet.graph()
    peer = graph.peer(P1.key)
    assert peer is not None
    assert (peer.device_name, peer.links_counter) == ("pi-one", None)
    assert graph.connections == ()


def test_a_peer_with_links_but_no_card_yet_shows_unnamed(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links())

    peer = fleet.graph().peer(P1.key)
    assert peer is not None
    assert (peer.device_name, peer.os, peer.card_counter, peer.links_counter) == ("", "", None, P1.counter)


# ================================================================ agents online and offline


def test_an_agent_going_offline_takes_the_peers_only_it_lists(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)
    lists(fleet, BRAVO, P2, P3)

    status(fleet, ALPHA, OFFLINE)  # its last will

    graph = fleet.graph()
    assert shown(fleet) == names(P2, P3)
    two = graph.peer(P2.key)
    assert two is not None and two.seen_by == (BRAVO.key,)
    alpha = graph.agent(ALPHA.key)
    assert alpha is not None and (alpha.online, alpha.peer_count) == (False, 2)


def test_an_agent_coming_back_online_brings_its_retained_view_back(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    status(fleet, ALPHA, OFFLINE)
    assert shown(fleet) == []

    status(fleet, ALPHA, ONLINE)

    assert shown(fleet) == ["pi-one"]


def test_an_agent_without_a_status_is_not_yet_online(fleet: FleetState) -> None:
    put(fleet, ALPHA, P1, CARD, P1.card())

    graph = fleet.graph()
    assert graph.peers == ()
    alpha = graph.agent(ALPHA.key)
    assert alpha is not None and (alpha.online, alpha.peer_count) == (False, 1)

    status(fleet, ALPHA, ONLINE)
    assert shown(fleet) == ["pi-one"]


def test_a_cleared_status_makes_the_agent_unknown_again(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)

    status(fleet, ALPHA, b"")

    assert shown(fleet) == []


def test_only_the_exact_online_payload_means_online(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)

    status(fleet, ALPHA, b"Online")

    assert shown(fleet) == []


# ================================================================ clearing and expiry


def test_an_empty_payload_clears_the_record_from_that_agents_view(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)

    put(fleet, ALPHA, P1, CARD, b"")
    peer = fleet.graph().peer(P1.key)
    assert peer is not None and (peer.device_name, peer.card_counter) == ("", None)

    put(fleet, ALPHA, P1, LINKS, b"")
    assert shown(fleet) == []
    assert fleet.stats["cleared"] == 2


def test_a_peer_cleared_by_one_agent_stays_while_another_lists_it(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    lists(fleet, BRAVO, P1)

    put(fleet, ALPHA, P1, CARD, b"")
    put(fleet, ALPHA, P1, LINKS, b"")

    peer = fleet.graph().peer(P1.key)
    assert peer is not None and peer.seen_by == (BRAVO.key,)


def test_a_held_record_that_expires_drops_out_of_the_graph(fleet: FleetState, clock: Clock) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card(expiry=NOW + 10))
    assert shown(fleet) == ["pi-one"]

    clock.now = NOW + 10

    assert shown(fleet) == []
    assert fleet.rejections == ()  # expiring while held is not a rejection


# ================================================================ verification


def forged(victim: Node) -> tuple[TopicKind, bytes]:
    raw = bytearray(victim.card(name="evil"))
    raw[-1] ^= 0x01  # one bit of the signature
    return CARD, bytes(raw)


def signed_by_another_key(victim: Node) -> tuple[TopicKind, bytes]:
    return CARD, MALLORY.card(name="evil")


def naming_the_peer_but_signed_by_another(victim: Node) -> tuple[TopicKind, bytes]:
    body = make_card("evil", "Linux", "1.0", {})
    return CARD, sign_record(MALLORY.private, victim.public, victim.counter + 10, int(NOW + HOUR), body).raw


def card_on_the_links_topic(victim: Node) -> tuple[TopicKind, bytes]:
    return LINKS, victim.card(name="evil")


def garbage(victim: Node) -> tuple[TopicKind, bytes]:
    return CARD, b"\xd2\x84 not a record"


def expired(victim: Node) -> tuple[TopicKind, bytes]:
    return CARD, victim.card(name="evil", expiry=NOW - 1)


def replayed(victim: Node) -> tuple[TopicKind, bytes]:
    return CARD, victim.card(name="evil", counter=1)


BAD_RECORDS = [
    (forged, "bad_signature"),
    (signed_by_another_key, "wrong_key"),
    (naming_the_peer_but_signed_by_another, "bad_signature"),
    (card_on_the_links_topic, "wrong_kind"),
    (garbage, "malformed"),
    (expired, "expired"),
    (replayed, "replayed"),
]
BadRecord = Callable[[Node], tuple[TopicKind, bytes]]


@pytest.mark.parametrize(("make", "reason"), BAD_RECORDS, ids=[m.__name__ for m, _ in BAD_RECORDS])
def test_a_bad_record_is_reported_and_the_earlier_good_one_stays(
    fleet: FleetState, make: BadRecord, reason: str
) -> None:
    victim = Node(21, "pi-victim")
    victim.counter = 5
    lists(fleet, ALPHA, victim)
    before = fleet.graph()

    kind, payload = make(victim)
    put(fleet, ALPHA, victim, kind, payload)

    assert fleet.graph() == before
    [rejection] = fleet.rejections
    assert (rejection.agent, rejection.peer, rejection.reason) == (ALPHA.key, victim.key, reason)
    assert rejection.topic == LAYOUT.peer_topic(ALPHA.key, victim.key, kind)
    assert rejection.detail
    assert fleet.stats["rejected"] == fleet.stats[f"rejected.{reason}"] == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [r for r in BAD_RECORDS if r[1] != "replayed"],
    ids=[m.__name__ for m, r in BAD_RECORDS if r != "replayed"],
)
def test_a_bad_record_alone_never_shows_its_peer(fleet: FleetState, make: BadRecord, reason: str) -> None:
    victim = Node(21, "pi-victim")
    status(fleet, ALPHA, ONLINE)

    kind, payload = make(victim)
    put(fleet, ALPHA, victim, kind, payload)

    assert fleet.graph().peers == ()
    assert [r.reason for r in fleet.rejections] == [reason]


def test_a_lower_counter_is_replayed_and_a_higher_one_still_accepted(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    old = P1.card(name="old name")
    put(fleet, ALPHA, P1, CARD, P1.card(name="current name"))

    put(fleet, ALPHA, P1, CARD, old)
    assert shown(fleet) == ["current name"]
    assert [r.reason for r in fleet.rejections] == ["replayed"]

    put(fleet, ALPHA, P1, CARD, P1.card(name="newer name"))
    assert shown(fleet) == ["newer name"]


def test_a_replay_cannot_follow_a_clear(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    old = P1.card(name="old name")
    put(fleet, ALPHA, P1, CARD, P1.card(name="current name"))
    put(fleet, ALPHA, P1, CARD, b"")

    put(fleet, ALPHA, P1, CARD, old)

    assert shown(fleet) == []
    assert [r.reason for r in fleet.rejections] == ["replayed"]


def test_the_same_record_again_is_not_a_replay(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    card = P1.card()
    put(fleet, ALPHA, P1, CARD, card)

    put(fleet, ALPHA, P1, CARD, card)  # a retained message redelivered on reconnect
    assert fleet.stats["unchanged"] == 1

    put(fleet, ALPHA, P1, CARD, b"")  # the peer left the agent's view ...
    put(fleet, ALPHA, P1, CARD, card)  # ... and came back with the card it never re-signed
    assert shown(fleet) == ["pi-one"]
    assert fleet.rejections == ()


def test_a_topic_naming_no_peer_key_is_rejected(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    fleet.handle(LAYOUT.peer_topic(ALPHA.key, "not-a-key", CARD), P1.card())
    fleet.handle(LAYOUT.peer_topic("pkNOPE", P1.key, CARD), P1.card())
    fleet.handle(LAYOUT.agent_topic("pkNOPE", STATUS), ONLINE)

    assert [(r.agent, r.peer, r.reason) for r in fleet.rejections] == [
        (ALPHA.key, "not-a-key", "bad_topic_key"),
        ("pkNOPE", P1.key, "bad_topic_key"),
        ("pkNOPE", None, "bad_topic_key"),
    ]
    assert fleet.graph() == FleetGraph(agents=fleet.graph().agents)
    assert [a.peer_key_string for a in fleet.graph().agents] == [ALPHA.key]


def test_topics_the_fleet_does_not_read_are_ignored(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    for topic in (
        LAYOUT.agent_topic(ALPHA.key, TopicKind.GRAPH),
        LAYOUT.peer_topic(ALPHA.key, P1.key, TopicKind.STATE),
        LAYOUT.peer_topic(ALPHA.key, P1.key, TopicKind.PRESENCE),
        LAYOUT.discovery_topic(ALPHA.key, P1.key),
        TopicLayout(root="elsewhere").peer_topic(ALPHA.key, P1.key, CARD),
        f"{LAYOUT.peer_topic(ALPHA.key, P1.key, CARD)}/extra",
    ):
        fleet.handle(topic, P1.card())

    assert fleet.stats["ignored"] == 6
    assert fleet.graph().peers == ()
    assert fleet.rejections == ()


def test_rejections_keep_the_most_recent_up_to_the_bound(clock: Clock) -> None:
    fleet = FleetState(LAYOUT, clock=clock, max_rejections=2)
    for peer in (P1, P2, P3):
        put(fleet, ALPHA, peer, CARD, b"garbage")

    assert [r.peer for r in fleet.rejections] == [P2.key, P3.key]
    assert fleet.stats["rejected"] == 3


def test_the_stats_count_what_happened(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    put(fleet, ALPHA, P1, CARD, b"garbage")
    fleet.handle("unrelated/topic", b"x")

    assert {k: v for k, v in fleet.stats.items()} == {
        "status": 1,
        "accepted": 2,
        "rejected": 1,
        "rejected.malformed": 1,
        "ignored": 1,
    }


# ================================================================ connections


def test_a_connection_needs_both_sides_links(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    for peer in (P1, P2):
        put(fleet, ALPHA, peer, CARD, peer.card())
    put(fleet, ALPHA, P1, LINKS, P1.links(P2))
    put(fleet, ALPHA, P2, LINKS, P2.links())
    assert fleet.graph().connections == ()

    put(fleet, ALPHA, P2, LINKS, P2.links(P1))

    [conn] = fleet.graph().connections
    assert {conn.peer_key_string1, conn.peer_key_string2} == {P1.key, P2.key}
    assert conn.connection_type is ConnectionType.BLUETOOTH


def test_the_two_sides_may_come_from_different_agents(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    status(fleet, BRAVO, ONLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2))
    put(fleet, BRAVO, P2, LINKS, P2.links(P1))

    assert len(fleet.graph().connections) == 1


def test_a_connection_needs_the_same_type_on_both_sides(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2, kind=ConnectionType.RADIO))
    put(fleet, ALPHA, P2, LINKS, P2.links(P1, kind=ConnectionType.BLUETOOTH))

    assert fleet.graph().connections == ()


@pytest.mark.parametrize(
    ("one", "two", "metres"), [(40, 60, 5.0), (40, None, 4.0), (None, 25, 2.5), (None, None, None)]
)
def test_the_distance_is_the_mean_of_what_both_sides_measured(
    fleet: FleetState, one: int | None, two: int | None, metres: float | None
) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2, distance_dm=one))
    put(fleet, ALPHA, P2, LINKS, P2.links(P1, distance_dm=two))

    [conn] = fleet.graph().connections
    assert conn.approximate_distance_in_meters == metres


def test_connections_only_join_shown_peers(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    status(fleet, BRAVO, OFFLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2))
    put(fleet, BRAVO, P2, LINKS, P2.links(P1))  # only an offline agent lists P2

    assert fleet.graph().connections == ()


# ================================================================ diff


def test_a_diff_against_nothing_reports_everything_shown(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)

    diff = fleet.graph().diff(None)

    assert [p.peer_key_string for p in diff.joined] == sorted((P1.key, P2.key))
    assert diff.agents_online == (ALPHA.key,)
    assert not (diff.left or diff.changed or diff.agents_offline)


def test_a_diff_reports_joins_leaves_changes_links_and_agents(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)
    lists(fleet, BRAVO, P2)
    before = fleet.graph()

    status(fleet, ALPHA, OFFLINE)  # P1 leaves; P2 is now seen by bravo only
    status(fleet, P3, ONLINE)  # a new agent, listing P3 and P4
    put(fleet, P3, P3, CARD, P3.card())
    put(fleet, P3, P3, LINKS, P3.links(P4))
    put(fleet, P3, P4, LINKS, P4.links(P3))
    put(fleet, BRAVO, P2, CARD, P2.card(name="pi-two renamed"))
    diff = fleet.graph().diff(before)

    assert [p.peer_key_string for p in diff.joined] == sorted((P3.key, P4.key))
    assert [p.peer_key_string for p in diff.left] == [P1.key]
    [change] = diff.changed
    assert change.after.peer_key_string == P2.key
    assert change.fields == ("device_name", "seen_by")
    assert [c.id for c in diff.connections_added] == [c.id for c in fleet.graph().connections]
    assert diff.connections_removed == ()
    assert (diff.agents_online, diff.agents_offline) == ((P3.key,), (ALPHA.key,))


def test_a_re_signed_record_with_the_same_content_is_no_change(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    before = fleet.graph()

    put(fleet, ALPHA, P1, CARD, P1.card())
    put(fleet, ALPHA, P1, LINKS, P1.links())

    after = fleet.graph()
    assert after != before  # the counters moved ...
    assert not after.diff(before)  # ... which no person needs to hear about


def test_a_lost_connection_is_reported_removed(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2))
    put(fleet, ALPHA, P2, LINKS, P2.links(P1))
    before = fleet.graph()

    put(fleet, ALPHA, P2, LINKS, P2.links())

    assert fleet.graph().diff(before).connections_removed == before.connections


def test_the_diff_has_one_line_and_one_json_event_per_change(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    before = fleet.graph()
    status(fleet, ALPHA, OFFLINE)
    put(fleet, BRAVO, P1, LINKS, P1.links(P2))
    put(fleet, BRAVO, P2, LINKS, P2.links(P1))
    put(fleet, BRAVO, P3, CARD, P3.card(name="pi\x1b[2Jthree"))
    status(fleet, BRAVO, ONLINE)

    diff = fleet.graph().diff(before)
    events = diff.to_json()
    lines = diff.lines()

    assert [e["event"] for e in events] == [
        "agent_online",
        "agent_offline",
        "joined",
        "joined",
        "changed",
        "link_up",
    ]
    assert len(lines) == len(events)
    assert all(line.startswith(e["event"]) for line, e in zip(lines, events, strict=True))
    assert json.loads(json.dumps(events)) == events
    assert any("pi?[2Jthree" in line for line in lines)  # no escape sequence reaches a terminal
    assert all("\x1b" not in line for line in lines)


# ================================================================ output


def test_the_graph_as_json_uses_the_api_names_and_dumps(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1)
    put(fleet, ALPHA, P1, CARD, P1.card(metadata={"room": "lab", "tags": ["a", 1]}))
    put(fleet, ALPHA, P1, LINKS, P1.links(P2, distance_dm=30))
    put(fleet, ALPHA, P2, LINKS, P2.links(P1))

    document = json.loads(json.dumps(fleet.graph().to_json()))

    assert set(document) == {"agents", "peers", "connections"}
    assert document["agents"] == [{"peer_key_string": ALPHA.key, "online": True, "peer_count": 2}]
    one = next(p for p in document["peers"] if p["peer_key_string"] == P1.key)
    assert one == {
        "peer_key_string": P1.key,
        "device_name": "pi-one",
        "os": "Linux",
        "agent_version": "1.0",
        "peer_metadata": {"room": "lab", "tags": ["a", 1]},
        "seen_by": [ALPHA.key],
        "card_counter": P1.counter - 1,
        "links_counter": P1.counter,
        "identity_service_metadata": {},
        "certificate": "none",
        "certificate_reason": None,
    }
    [conn] = document["connections"]
    assert conn["approximate_distance_in_meters"] == 3.0
    assert conn == fleet.graph().connections[0].to_json()


def test_the_table_names_every_agent_and_peer(fleet: FleetState) -> None:
    lists(fleet, ALPHA, P1, P2)
    lists(fleet, BRAVO, P2, P3)
    status(fleet, BRAVO, OFFLINE)
    put(fleet, ALPHA, P1, LINKS, P1.links(P2))
    put(fleet, ALPHA, P2, LINKS, P2.links(P1))

    table = render_table(fleet.graph())

    for node in (P1, P2):
        assert node.name in table
        assert node.key[:12] + "…" in table
    assert "pi-three" not in table  # listed only by an offline agent
    assert ALPHA.key[:12] + "…" in table and BRAVO.key[:12] + "…" in table
    assert "1x Bluetooth" in table
    assert "2 agents, 1 online" in table
    assert table.splitlines()[-1] == "2 peers"


def test_the_table_of_an_empty_fleet_still_has_its_headings() -> None:
    table = render_table(FleetGraph())

    assert "AGENT" in table and "PEER" in table
    assert "0 agents" in table and "0 peers" in table


# ================================================================ fleet certificates

CA_PRIVATE = key_pair(50)[0]
CA = FleetTrust.of([raw_public_key(CA_PRIVATE)])


def certificate_of(node: Node, serial: int, metadata: dict[str, object], expiry: float = NOW + HOUR) -> bytes:
    return issue_certificate(CA_PRIVATE, serial, node.public, metadata, int(NOW - HOUR), int(expiry)).raw


def test_with_the_fleet_ca_each_peer_shows_its_verified_identity_metadata_or_why_not(clock: Clock) -> None:
    fleet = FleetState(LAYOUT, clock=clock, trust=CA)
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card(certificate=certificate_of(P1, 1, {"site": "depot-3", "role": "gw"})))
    put(fleet, ALPHA, P2, CARD, P2.card(certificate=certificate_of(P1, 2, {"site": "stolen"})))
    put(fleet, ALPHA, P3, CARD, P3.card(certificate=certificate_of(P3, 3, {"site": "old"}, expiry=NOW + 60)))
    put(fleet, ALPHA, P4, CARD, P4.card())
    clock.now = NOW + 120

    peers = {p.device_name: p for p in fleet.graph().peers}

    assert peers["pi-one"].certificate is CertificateCheck.VERIFIED
    assert dict(peers["pi-one"].identity_service_metadata) == {"site": "depot-3", "role": "gw"}
    assert (peers["pi-two"].certificate, str(peers["pi-two"].certificate_reason)) == ("refused", "wrong_key")
    assert (peers["pi-three"].certificate, str(peers["pi-three"].certificate_reason)) == (
        "refused",
        "expired",
    )
    assert peers["pi-four"].certificate is CertificateCheck.NONE
    for refused in ("pi-two", "pi-three", "pi-four"):
        assert dict(peers[refused].identity_service_metadata) == {}  # only what verifies is shown
    document = json.loads(json.dumps(fleet.graph().to_json()))
    one = next(p for p in document["peers"] if p["device_name"] == "pi-one")
    assert (one["certificate"], one["identity_service_metadata"]["site"]) == ("verified", "depot-3")
    table = render_table(fleet.graph())
    assert 'verified {"role":"gw","site":"depot-3"}' in table and "refused (expired)" in table


def test_a_revoked_certificate_is_refused_when_the_view_holds_the_list(clock: Clock) -> None:
    revocations = sign_revocation_list(CA_PRIVATE, 1, int(NOW), [7])
    trust, _ = CA.with_revocation_list(revocations.raw)
    fleet = FleetState(LAYOUT, clock=clock, trust=trust)
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card(certificate=certificate_of(P1, 7, {"site": "x"})))

    [peer] = fleet.graph().peers
    assert (peer.certificate, peer.certificate_reason) == (CertificateCheck.REFUSED, "revoked")


def test_without_a_ca_the_view_cannot_tell_and_shows_no_identity(fleet: FleetState) -> None:
    status(fleet, ALPHA, ONLINE)
    put(fleet, ALPHA, P1, CARD, P1.card(certificate=certificate_of(P1, 1, {"site": "depot-3"})))

    [peer] = fleet.graph().peers
    assert peer.certificate is CertificateCheck.UNCHECKED
    assert dict(peer.identity_service_metadata) == {}


# ================================================================ robustness

_KEYS = [n.key for n in (ALPHA, BRAVO, P1, P2)]
_VALID = [P1.card(), P1.links(P2), P2.links(P1), ONLINE, OFFLINE, b""]


def _flipped(payload: bytes, index: int) -> bytes:
    if not payload:
        return payload
    data = bytearray(payload)
    data[index % len(data)] ^= 1 << (index % 8)
    return bytes(data)


_segments = st.one_of(st.sampled_from([*_KEYS, "peers", "card", "links", "status", "+", ""]), st.text())
topics = st.one_of(
    st.text(),
    st.lists(_segments, max_size=6).map(lambda parts: "/".join(["presence", "agents", *parts])),
    st.builds(
        LAYOUT.peer_topic, st.sampled_from(_KEYS), st.sampled_from(_KEYS), st.sampled_from([CARD, LINKS])
    ),
    st.builds(LAYOUT.agent_topic, st.sampled_from(_KEYS), st.just(STATUS)),
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(_VALID),
    st.builds(_flipped, st.sampled_from(_VALID), st.integers(0, 10_000)),
)


@THOROUGH
@given(messages=st.lists(st.tuples(topics, payloads), max_size=12))
def test_any_topic_and_payload_is_handled_without_raising(messages: list[tuple[str, bytes]]) -> None:
    fleet = FleetState(LAYOUT, clock=lambda: NOW)
    for topic, payload in messages:
        fleet.handle(topic, payload)

    graph = fleet.graph()
    json.dumps(graph.to_json())
    render_table(graph)
    graph.diff(None).lines()
    # Only what someone signed can show, and only the peers who signed it.
    assert {p.peer_key_string for p in graph.peers} <= {P1.key, P2.key}
