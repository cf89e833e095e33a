"""Specification of what the MQTT mirror publishes (agent.mqtt.messages.build_messages).

From one snapshot of the agent's view (its graph and the signed records it holds)
the mirror builds every retained topic it should hold on the broker, with its
payload: its status, its whole graph, one state per peer shown (the local peer
included) and each peer's signed records as the exact bytes that were signed.
With Home Assistant discovery on, each peer also becomes a ``presence`` binary
sensor per agent, on one device per peer shared by all agents; peers that left
stay there as absent. Every JSON payload is compact UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hypothesis import given
from strategies import QUICK, key_pair, presence_graphs

from agent.core.graph import Connection, Peer, PresenceGraph
from agent.core.keys import peer_id, peer_key_string
from agent.core.records import (
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    decode_record,
    make_card,
    sign_record,
)
from agent.mqtt.messages import MirrorOptions, MirrorSnapshot, build_messages
from agent.mqtt.topics import ABSENT, OFFLINE, ONLINE, PRESENT, TopicKind, TopicLayout

NOW = 1_750_000_000.25
EXPIRY = int(NOW) + 3600
LAYOUT = TopicLayout()
PLAIN = MirrorOptions()
WITH_HA = MirrorOptions(homeassistant=True)
STATUS, GRAPH, STATE, CARD, LINKS, PRESENCE = (
    TopicKind.STATUS,
    TopicKind.GRAPH,
    TopicKind.STATE,
    TopicKind.CARD,
    TopicKind.LINKS,
    TopicKind.PRESENCE,
)


class Node:
    """A peer's identity: its key, its short id and the records it signs."""

    def __init__(self, seed: int, name: str) -> None:
        self.private, self.public = key_pair(seed)
        self.key = peer_key_string(self.public)
        self.id = peer_id(self.public).hex()
        self.name = name

    def card(self, counter: int = 1) -> Record:
        body = make_card(self.name, "Linux", "1.2.3", {"room": self.name})
        return sign_record(self.private, self.public, counter, EXPIRY, body)

    def links(self, *neighbours: Node, counter: int = 2) -> Record:
        entries = tuple(LinkEntry(peer_id(n.public), ConnectionType.BLUETOOTH, 15) for n in neighbours)
        return sign_record(self.private, self.public, counter, EXPIRY, Links(entries))

    def peer(self, hops: int, *connections: Connection, agent_version: str = "1.2.3") -> Peer:
        return Peer(
            peer_key_string=self.key,
            device_name=self.name,
            os="Linux",
            connections=connections,
            peer_metadata={"room": self.name},
            identity_service_metadata={},
            hops=hops,
            agent_version=agent_version,
        )


A, B, C, D = Node(1, "kitchen"), Node(2, "hall"), Node(3, "garden"), Node(4, "attic")
AB = Connection.between(A.key, B.key, ConnectionType.BLUETOOTH, 1.5)
BC = Connection.between(B.key, C.key, ConnectionType.BLUETOOTH, 1.5)


def graph_seen_by(local: Node) -> PresenceGraph:
    """The chain A - B - C, seen from ``local``."""
    hops = {A: {A: 0, B: 1, C: 2}, B: {A: 1, B: 0, C: 1}, C: {A: 2, B: 1, C: 0}}[local]
    connections = {A: (AB,), B: (AB, BC), C: (BC,)}
    peers = {node: node.peer(hops[node], *connections[node]) for node in (A, B, C)}
    return PresenceGraph(peers[local], tuple(p for node, p in peers.items() if node is not local))


#: A holds both records of itself and of B, and only C's card.
RECORDS: dict[str, tuple[Record, ...]] = {
    A.key: (A.card(), A.links(B)),
    B.key: (B.card(), B.links(A, C)),
    C.key: (C.card(),),
}


def build(
    options: MirrorOptions = PLAIN,
    *,
    local: Node = A,
    graph: PresenceGraph | None = None,
    records: Mapping[str, tuple[Record, ...]] = RECORDS,
    last_change: Mapping[str, float] | None = None,
    departed: Mapping[str, Peer] | None = None,
) -> dict[str, bytes]:
    snapshot = MirrorSnapshot(graph or graph_seen_by(local), records, taken_at=NOW)
    return build_messages(options, snapshot, last_change=last_change or {}, departed=departed or {})


def state_of(messages: Mapping[str, bytes], peer: Node, *, agent: Node = A) -> Any:
    return json.loads(messages[LAYOUT.peer_topic(agent.key, peer.key, STATE)])


def discovery_config(messages: Mapping[str, bytes], peer: Node, *, agent: Node = A) -> Any:
    return json.loads(messages[LAYOUT.discovery_topic(agent.key, peer.key)])


def is_json_topic(topic: str) -> bool:
    return topic.rsplit("/", 1)[-1] in ("graph", "state", "config")


# ================================================================ status and graph


def test_the_status_topic_says_online() -> None:
    assert build()[LAYOUT.agent_topic(A.key, STATUS)] == ONLINE == b"online"


def test_the_graph_topic_holds_the_agent_the_snapshot_time_and_the_whole_graph() -> None:
    graph = graph_seen_by(A)

    published = json.loads(build(graph=graph)[LAYOUT.agent_topic(A.key, GRAPH)])

    assert list(published) == ["agent", "updated_at", "local_peer", "remote_peers"]
    assert published == {"agent": A.key, "updated_at": NOW, **graph.to_json()}


# ================================================================ peer states


def test_every_shown_peer_has_a_state_topic_the_local_peer_included() -> None:
    states = {topic for topic in build() if LAYOUT.parse(topic) is not None and topic.endswith("/state")}

    assert states == {LAYOUT.peer_topic(A.key, node.key, STATE) for node in (A, B, C)}


def test_a_peer_state_uses_the_api_field_names() -> None:
    state = state_of(build(), C)

    assert {
        "peer_key_string",
        "device_name",
        "os",
        "agent_version",
        "hops",
        "is_direct",
        "connections",
        "peer_metadata",
        "identity_service_metadata",
    } <= state.keys()
    assert (state["peer_key_string"], state["device_name"], state["hops"], state["is_direct"]) == (
        C.key,
        "garden",
        2,
        False,
    )


def test_a_peer_state_is_the_peer_as_the_api_shows_it_plus_presence_last_change_and_observer() -> None:
    peer = graph_seen_by(A).peer(B.key)
    assert peer is not None

    state = state_of(build(last_change={B.key: NOW - 60}), B)

    assert state == {**peer.to_json(), "present": True, "last_change": NOW - 60, "observed_by": A.key}


def test_the_local_peer_state_is_observed_by_the_agent_itself_at_zero_hops() -> None:
    state = state_of(build(), A)

    assert (state["hops"], state["is_direct"], state["observed_by"]) == (0, False, A.key)


def test_a_peer_state_takes_its_last_change_from_the_mapping() -> None:
    messages = build(last_change={B.key: 1_700_000_000.5, C.key: 1_600_000_000.0})

    assert state_of(messages, B)["last_change"] == 1_700_000_000.5
    assert state_of(messages, C)["last_change"] == 1_600_000_000.0


def test_a_peer_without_a_recorded_change_last_changed_at_the_snapshot_time() -> None:
    messages = build(last_change={B.key: 1_700_000_000.5})

    assert state_of(messages, C)["last_change"] == NOW


# ================================================================ signed records


def test_card_and_links_topics_carry_exactly_the_records_bytes() -> None:
    messages = build()

    for node, records in ((A, RECORDS[A.key]), (B, RECORDS[B.key])):
        card, links = records
        assert messages[LAYOUT.peer_topic(A.key, node.key, CARD)] == card.raw
        assert messages[LAYOUT.peer_topic(A.key, node.key, LINKS)] == links.raw


def test_mirrored_records_decode_and_verify_against_the_key_in_their_topic() -> None:
    records = {topic: payload for topic, payload in build().items() if topic.endswith(("/card", "/links"))}

    assert len(records) == 5
    for topic, payload in records.items():
        parsed = LAYOUT.parse(topic)
        assert parsed is not None
        record = decode_record(payload)
        assert peer_key_string(record.public_key) == parsed.peer
        assert record.kind is {CARD: RecordKind.CARD, LINKS: RecordKind.LINKS}[parsed.kind]


def test_a_record_the_agent_does_not_hold_has_no_topic() -> None:
    messages = build()

    assert LAYOUT.peer_topic(A.key, C.key, CARD) in messages
    assert LAYOUT.peer_topic(A.key, C.key, LINKS) not in messages


def test_records_of_a_peer_the_graph_does_not_show_are_not_published() -> None:
    messages = build(records={**RECORDS, D.key: (D.card(), D.links(A))})

    assert not any(D.key in topic for topic in messages)


# ================================================================ without Home Assistant


def test_without_home_assistant_the_agent_publishes_status_graph_states_and_records_only() -> None:
    expected = {
        LAYOUT.agent_topic(A.key, STATUS),
        LAYOUT.agent_topic(A.key, GRAPH),
        *(LAYOUT.peer_topic(A.key, node.key, STATE) for node in (A, B, C)),
        *(LAYOUT.peer_topic(A.key, node.key, kind) for node in (A, B) for kind in (CARD, LINKS)),
        LAYOUT.peer_topic(A.key, C.key, CARD),
    }

    assert set(build(PLAIN)) == expected


def test_without_home_assistant_departed_peers_publish_nothing() -> None:
    assert build(PLAIN, departed={D.key: D.peer(1)}) == build(PLAIN)


# ================================================================ Home Assistant discovery


def test_with_home_assistant_every_shown_peer_has_a_discovery_config_named_by_short_ids() -> None:
    configs = {topic for topic in build(WITH_HA) if topic.endswith("/config")}

    assert configs == {f"homeassistant/binary_sensor/{A.id}/{node.id}/config" for node in (A, B, C)}


def test_discovery_configs_live_under_the_layouts_discovery_prefix() -> None:
    options = MirrorOptions(layout=TopicLayout(discovery_prefix="ha/site1"), homeassistant=True)
    configs = {topic for topic in build(options) if topic.endswith("/config")}

    assert configs == {f"ha/site1/binary_sensor/{A.id}/{node.id}/config" for node in (A, B, C)}


def test_a_discovery_config_is_a_presence_binary_sensor() -> None:
    assert discovery_config(build(WITH_HA), B)["device_class"] == "presence"


def test_a_discovery_config_reads_its_state_from_the_peers_presence_topic() -> None:
    messages = build(WITH_HA)
    config = discovery_config(messages, B)

    assert config["state_topic"] == LAYOUT.peer_topic(A.key, B.key, PRESENCE)
    assert config["state_topic"] in messages
    assert (config["payload_on"], config["payload_off"]) == (PRESENT.decode(), ABSENT.decode())


def test_a_discovery_config_is_available_while_the_agents_status_is_online() -> None:
    messages = build(WITH_HA)
    config = discovery_config(messages, B)

    assert config["availability_topic"] == LAYOUT.agent_topic(A.key, STATUS)
    assert config["payload_available"].encode() == messages[config["availability_topic"]] == ONLINE
    assert config["payload_not_available"].encode() == OFFLINE


def test_every_peer_and_agent_pair_has_its_own_unique_id() -> None:
    by_agent = {agent: build(WITH_HA, local=agent) for agent in (A, B, C)}

    unique_ids = [
        discovery_config(by_agent[agent], peer, agent=agent)["unique_id"]
        for agent in by_agent
        for peer in (A, B, C)
    ]

    assert len(set(unique_ids)) == len(unique_ids) == 9


def test_every_agents_entity_for_a_peer_is_on_the_same_device() -> None:
    by_agent = {agent: build(WITH_HA, local=agent) for agent in (A, B, C)}

    def identifiers(peer: Node) -> set[tuple[str, ...]]:
        return {
            tuple(discovery_config(messages, peer, agent=agent)["device"]["identifiers"])
            for agent, messages in by_agent.items()
        }

    devices = [identifiers(peer) for peer in (A, B, C)]
    assert all(len(device) == 1 for device in devices)
    assert len(set.union(*devices)) == 3


def test_the_device_of_a_peer_is_named_after_it() -> None:
    assert discovery_config(build(WITH_HA), C)["device"]["name"] == "garden"


def test_shown_peers_are_present() -> None:
    messages = build(WITH_HA)

    assert {messages[LAYOUT.peer_topic(A.key, node.key, PRESENCE)] for node in (A, B, C)} == {PRESENT}
    assert PRESENT == b"ON"


def test_departed_peers_are_absent() -> None:
    messages = build(WITH_HA, departed={D.key: D.peer(1)})

    assert messages[LAYOUT.peer_topic(A.key, D.key, PRESENCE)] == ABSENT == b"OFF"


def test_departed_peers_keep_their_discovery_config_but_no_state_or_records() -> None:
    messages = build(WITH_HA, records={**RECORDS, D.key: (D.card(),)}, departed={D.key: D.peer(1)})

    assert discovery_config(messages, D)["state_topic"] == LAYOUT.peer_topic(A.key, D.key, PRESENCE)
    assert {topic for topic in messages if D.key in topic} == {LAYOUT.peer_topic(A.key, D.key, PRESENCE)}


def test_a_peer_without_an_agent_version_gets_a_device_home_assistant_accepts() -> None:
    graph = PresenceGraph(A.peer(0), (B.peer(1, agent_version=""),))

    device = discovery_config(build(WITH_HA, graph=graph), B)["device"]

    assert all(value is not None for value in device.values())


# ================================================================ JSON encoding


@QUICK
@given(graph=presence_graphs())
def test_every_json_payload_is_compact_utf8(graph: PresenceGraph) -> None:
    snapshot = MirrorSnapshot(graph, {}, taken_at=NOW)
    messages = build_messages(WITH_HA, snapshot, last_change={})

    json_payloads = [payload for topic, payload in messages.items() if is_json_topic(topic)]

    assert len(json_payloads) == 1 + 2 * len(graph.peers())
    for payload in json_payloads:
        text = payload.decode("utf-8")
        assert payload == json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")).encode()


def test_non_ascii_names_stay_readable_in_every_json_payload() -> None:
    name = "Küche ☕ 台所"
    graph = PresenceGraph(A.peer(0), (Node(2, name).peer(1),))

    messages = build(WITH_HA, graph=graph)

    for topic in (
        LAYOUT.agent_topic(A.key, GRAPH),
        LAYOUT.peer_topic(A.key, B.key, STATE),
        LAYOUT.discovery_topic(A.key, B.key),
    ):
        assert name.encode("utf-8") in messages[topic]
        assert b"\\u" not in messages[topic]
