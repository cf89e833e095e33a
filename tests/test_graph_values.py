"""Specification of the presence graph values (agent.core.graph).

``PresenceGraph(local_peer, remote_peers)``, ``Peer`` and ``Connection`` follow
the reference Presence API's names; the graph diffs itself against an older
snapshot and exports to JSON (reference field names) and Graphviz DOT.
"""

from __future__ import annotations

import dataclasses
import json
import re
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    QUICK,
    THOROUGH,
    connection_types,
    key_pair,
    peer,
    peer_key_strings,
    presence_graphs,
    unicode_names,
)

from agent.core.graph import (
    Connection,
    GraphDiff,
    Peer,
    PresenceGraph,
    connection_id,
    sorted_peers,
)
from agent.core.keys import peer_key_string
from agent.core.records import ConnectionType


def key(seed: int) -> str:
    return peer_key_string(key_pair(seed)[1])


A, B, C, D = sorted(key(seed) for seed in (1, 2, 3, 4))


# ================================================================ connections


@THOROUGH
@given(a=peer_key_strings, b=peer_key_strings, kind=connection_types)
def test_a_connection_between_two_peers_is_the_same_whichever_end_is_named_first(
    a: str, b: str, kind: ConnectionType
) -> None:
    assert Connection.between(a, b, kind) == Connection.between(b, a, kind)


@THOROUGH
@given(a=peer_key_strings, b=peer_key_strings, kind=connection_types)
def test_a_connection_lists_the_lower_key_first(a: str, b: str, kind: ConnectionType) -> None:
    c = Connection.between(a, b, kind)

    assert (c.peer_key_string1, c.peer_key_string2) == tuple(sorted((a, b)))


@THOROUGH
@given(a=peer_key_strings, b=peer_key_strings, kind=connection_types)
def test_a_connection_id_is_deterministic_from_its_ends_and_type(
    a: str, b: str, kind: ConnectionType
) -> None:
    low, high = sorted((a, b))

    assert Connection.between(a, b, kind).id == f"{low}<->{high}:{kind.value}"
    assert connection_id(a, b, kind) == connection_id(b, a, kind) == Connection.between(b, a, kind).id


def test_two_peers_connected_two_ways_have_two_connection_ids() -> None:
    ids = {Connection.between(A, B, kind).id for kind in ConnectionType}

    assert len(ids) == len(ConnectionType)


def test_connections_to_different_peers_have_different_ids() -> None:
    assert (
        Connection.between(A, B, ConnectionType.RADIO).id != Connection.between(A, C, ConnectionType.RADIO).id
    )


def test_the_distance_does_not_change_a_connection_id() -> None:
    near = Connection.between(A, B, ConnectionType.RADIO, 1.5)
    far = Connection.between(A, B, ConnectionType.RADIO, 900.0)

    assert near.id == far.id
    assert near != far


def test_other_names_the_far_end_of_a_connection() -> None:
    c = Connection.between(B, A, ConnectionType.BLUETOOTH)

    assert c.other(A) == B
    assert c.other(B) == A


def test_a_connection_is_immutable() -> None:
    c = Connection.between(A, B, ConnectionType.BLUETOOTH)

    with pytest.raises(dataclasses.FrozenInstanceError):
        c.peer_key_string1 = C  # type: ignore[misc]


def test_connection_types_keep_the_reference_api_spellings() -> None:
    assert {kind.value for kind in ConnectionType} == {
        "Bluetooth",
        "AccessPoint",
        "P2PWiFi",
        "WebSocket",
        "Radio",
    }


# ================================================================ graph queries


def mesh() -> PresenceGraph:
    """A (local) -- B over the LAN, B -- C by radio at 12.5 m."""
    ab = Connection.between(A, B, ConnectionType.ACCESS_POINT)
    bc = Connection.between(B, C, ConnectionType.RADIO, 12.5)
    return PresenceGraph(
        peer(A, name="pi-kitchen-01", connections=(ab,), hops=0),
        (
            peer(B, name="pi-hall", connections=(ab, bc), metadata={"room": "hall"}, hops=1),
            peer(C, name="node-garden", connections=(bc,), hops=2),
        ),
    )


def test_peers_lists_the_local_peer_first() -> None:
    graph = mesh()

    assert [p.peer_key_string for p in graph.peers()] == [A, B, C]


def test_peer_finds_a_peer_by_key_or_returns_none() -> None:
    graph = mesh()

    assert graph.peer(C) is graph.remote_peers[1]
    assert graph.peer(A) is graph.local_peer
    assert graph.peer(D) is None


def test_a_connection_reported_by_both_ends_is_listed_once() -> None:
    connections = mesh().connections()

    assert [c.id for c in connections] == sorted(c.id for c in connections)
    assert len(connections) == 2


def test_a_peer_is_direct_exactly_when_it_is_one_hop_away() -> None:
    graph = mesh()

    assert [p.is_direct for p in graph.peers()] == [False, True, False]


def test_sorted_peers_puts_the_nearest_first_then_orders_by_key() -> None:
    far, near_d, near_b = peer(A, hops=3), peer(D, hops=1), peer(B, hops=1)

    assert sorted_peers([far, near_d, near_b]) == (near_b, near_d, far)


# ================================================================ diff


def test_the_first_graph_reports_every_remote_peer_as_joined() -> None:
    graph = mesh()

    diff = graph.diff(None)

    assert diff.joined == graph.remote_peers
    assert diff.connections_added == graph.connections()
    assert (diff.left, diff.changed, diff.connections_removed) == ((), (), ())


@QUICK
@given(graph=presence_graphs())
def test_a_graph_does_not_differ_from_itself(graph: PresenceGraph) -> None:
    diff = graph.diff(graph)

    assert diff == GraphDiff()
    assert not diff


def test_a_peer_that_appears_has_joined_with_its_connections() -> None:
    old = mesh()
    cd = Connection.between(C, D, ConnectionType.BLUETOOTH)
    c_now = dataclasses.replace(old.remote_peers[1], connections=(*old.remote_peers[1].connections, cd))
    new = PresenceGraph(old.local_peer, (old.remote_peers[0], c_now, peer(D, connections=(cd,))))

    diff = new.diff(old)

    assert [p.peer_key_string for p in diff.joined] == [D]
    assert diff.connections_added == (cd,)
    assert [p.peer_key_string for p in diff.changed] == [C]
    assert (diff.left, diff.connections_removed) == ((), ())
    assert diff


def test_a_peer_that_disappears_has_left_with_its_connections() -> None:
    old = mesh()
    b_now = dataclasses.replace(old.remote_peers[0], connections=old.remote_peers[0].connections[:1])
    new = PresenceGraph(old.local_peer, (b_now,))

    diff = new.diff(old)

    assert diff.left == (old.remote_peers[1],)
    assert [c.peer_key_string2 for c in diff.connections_removed] == [C]
    assert diff.changed == (b_now,)
    assert (diff.joined, diff.connections_added) == ((), ())


def test_a_peer_whose_metadata_changed_is_reported_as_changed() -> None:
    old = mesh()
    b_now = dataclasses.replace(old.remote_peers[0], peer_metadata={"room": "attic"})
    new = PresenceGraph(old.local_peer, (b_now, old.remote_peers[1]))

    diff = new.diff(old)

    assert diff.changed == (b_now,)
    assert (diff.joined, diff.left) == ((), ())
    assert (diff.connections_added, diff.connections_removed) == ((), ())


def test_a_peer_whose_name_changed_is_reported_as_changed() -> None:
    old = mesh()
    c_now = dataclasses.replace(old.remote_peers[1], device_name="node-orchard")
    new = PresenceGraph(old.local_peer, (old.remote_peers[0], c_now))

    assert new.diff(old).changed == (c_now,)


def test_a_connection_changing_type_is_one_removed_and_one_added() -> None:
    old = mesh()
    lan = old.local_peer.connections[0]
    ble = Connection.between(A, B, ConnectionType.BLUETOOTH)
    b_now = dataclasses.replace(old.remote_peers[0], connections=(ble, old.remote_peers[0].connections[1]))
    a_now = dataclasses.replace(old.local_peer, connections=(ble,))
    new = PresenceGraph(a_now, (b_now, old.remote_peers[1]))

    diff = new.diff(old)

    assert diff.connections_removed == (lan,)
    assert diff.connections_added == (ble,)
    assert diff.changed == (a_now, b_now)


def test_a_change_of_the_local_peer_alone_is_a_change() -> None:
    old = mesh()
    a_now = dataclasses.replace(old.local_peer, peer_metadata=MappingProxyType({"v": 2}))
    new = PresenceGraph(a_now, old.remote_peers)

    diff = new.diff(old)

    assert diff.changed == (a_now,)
    assert diff


def test_diff_lists_peers_in_key_order() -> None:
    new = PresenceGraph(peer(A, hops=0), (peer(D), peer(B), peer(C)))

    assert [p.peer_key_string for p in new.diff(None).joined] == [B, C, D]


@st.composite
def graph_pairs(draw: st.DrawFn) -> tuple[PresenceGraph, PresenceGraph]:
    """Two graphs over one pool of peers, sharing the local peer."""
    pool = draw(st.lists(peer_key_strings, min_size=2, max_size=7, unique=True))
    local, others = pool[0], pool[1:]

    def snapshot() -> PresenceGraph:
        present = draw(st.lists(st.sampled_from(others), unique=True, max_size=len(others)))
        ends = [local, *present]
        conns = {}
        if present:
            for _ in range(draw(st.integers(0, 5))):
                a, b = draw(st.lists(st.sampled_from(ends), min_size=2, max_size=2, unique=True))
                c = Connection.between(a, b, draw(connection_types))
                conns[c.id] = c

        def of(k: str) -> tuple[Connection, ...]:
            return tuple(c for c in conns.values() if k in (c.peer_key_string1, c.peer_key_string2))

        names = {k: draw(st.sampled_from(["pi", "pi-2"])) for k in present}
        return PresenceGraph(
            peer(local, connections=of(local), hops=0),
            tuple(peer(k, name=names[k], connections=of(k)) for k in present),
        )

    return snapshot(), snapshot()


@THOROUGH
@given(pair=graph_pairs())
def test_diff_reports_exactly_the_peers_and_connections_that_differ(
    pair: tuple[PresenceGraph, PresenceGraph],
) -> None:
    old, new = pair
    old_peers = {p.peer_key_string: p for p in old.remote_peers}
    new_peers = {p.peer_key_string: p for p in new.remote_peers}
    old_ids = {c.id for c in old.connections()}
    new_ids = {c.id for c in new.connections()}

    diff = new.diff(old)

    assert {p.peer_key_string for p in diff.joined} == new_peers.keys() - old_peers.keys()
    assert {p.peer_key_string for p in diff.left} == old_peers.keys() - new_peers.keys()
    local_changed = {new.local_peer.peer_key_string} if new.local_peer != old.local_peer else set()
    assert {p.peer_key_string for p in diff.changed} == local_changed | {
        k for k in new_peers.keys() & old_peers.keys() if new_peers[k] != old_peers[k]
    }
    assert {c.id for c in diff.connections_added} == new_ids - old_ids
    assert {c.id for c in diff.connections_removed} == old_ids - new_ids
    # The order remote peers are listed in is not a change.
    assert bool(diff) == (old_peers != new_peers or old_ids != new_ids)


# ================================================================ JSON


PEER_FIELDS = {
    "peer_key_string",
    "device_name",
    "os",
    "connections",
    "peer_metadata",
    "identity_service_metadata",
}
CONNECTION_FIELDS = {
    "id",
    "peer_key_string1",
    "peer_key_string2",
    "connection_type",
    "approximate_distance_in_meters",
}


def test_graph_json_has_a_local_peer_and_remote_peers() -> None:
    data = mesh().to_json()

    assert set(data) == {"local_peer", "remote_peers"}
    assert data["local_peer"]["peer_key_string"] == A
    assert [p["peer_key_string"] for p in data["remote_peers"]] == [B, C]


def test_peer_json_uses_the_reference_field_names() -> None:
    for entry in [mesh().to_json()["local_peer"], *mesh().to_json()["remote_peers"]]:
        assert set(entry) >= PEER_FIELDS
        for connection in entry["connections"]:
            assert set(connection) == CONNECTION_FIELDS


def test_connection_json_carries_the_type_as_its_reference_spelling() -> None:
    hall = mesh().to_json()["remote_peers"][0]

    assert hall["connections"] == [
        {
            "id": f"{A}<->{B}:AccessPoint",
            "peer_key_string1": A,
            "peer_key_string2": B,
            "connection_type": "AccessPoint",
            "approximate_distance_in_meters": None,
        },
        {
            "id": f"{B}<->{C}:Radio",
            "peer_key_string1": B,
            "peer_key_string2": C,
            "connection_type": "Radio",
            "approximate_distance_in_meters": 12.5,
        },
    ]


def test_peer_json_carries_name_os_and_metadata_as_plain_values() -> None:
    b = peer(B, name="pi-hall", metadata={"room": "hall", "tags": ["a", {"b": None}]})

    data = b.to_json()

    assert data["device_name"] == "pi-hall"
    assert data["os"] == "Linux"
    assert data["peer_metadata"] == {"room": "hall", "tags": ["a", {"b": None}]}
    assert type(data["peer_metadata"]) is dict
    assert type(data["peer_metadata"]["tags"]) is list
    assert data["identity_service_metadata"] == {}


@THOROUGH
@given(graph=presence_graphs())
def test_graph_json_is_json_serialisable_and_round_trips(graph: PresenceGraph) -> None:
    data = graph.to_json()

    assert json.loads(json.dumps(data)) == data
    assert json.loads(graph.to_json_str()) == data
    assert json.loads(graph.to_json_str(indent=None)) == data


@QUICK
@given(graph=presence_graphs())
def test_graph_json_lists_every_connection_type_as_a_string(graph: PresenceGraph) -> None:
    spellings = {kind.value for kind in ConnectionType}
    for entry in [graph.to_json()["local_peer"], *graph.to_json()["remote_peers"]]:
        for connection in entry["connections"]:
            assert connection["connection_type"] in spellings


# ================================================================ DOT


def dot_tokens(text: str) -> list[tuple[str, str]]:
    """Tokenise DOT the way Graphviz's scanner (lib/cgraph/scan.l) does.

    Inside a quoted string ``\\"`` is a quote, ``\\\\`` is kept as a pair (so it
    cannot escape a following quote), backslash-newline is a line continuation.
    """
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            j, chars = i + 1, []
            while True:
                if j >= len(text):
                    raise ValueError(f"unterminated string starting at {i}")
                if text.startswith('\\"', j):
                    chars.append('"')
                    j += 2
                elif text.startswith("\\\\", j):
                    chars.append("\\\\")
                    j += 2
                elif text.startswith("\\\n", j):
                    j += 2
                elif text[j] == '"':
                    break
                else:
                    chars.append(text[j])
                    j += 1
            tokens.append(("string", "".join(chars)))
            i = j + 1
        elif text.startswith("--", i):
            tokens.append(("op", "--"))
            i += 2
        elif ch in "{}[];,=":
            tokens.append(("op", ch))
            i += 1
        else:
            match = re.match(r"[A-Za-z_][A-Za-z_0-9]*|-?(\.[0-9]+|[0-9]+(\.[0-9]*)?)", text[i:])
            if not match:
                raise ValueError(f"unexpected {ch!r} at {i}")
            tokens.append(("id", match.group()))
            i += len(match.group())
    return tokens


def parse_dot(text: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict[str, str]]]]:
    """Parse the DOT subset to_dot writes; return (nodes with attributes, edges)."""
    tokens = dot_tokens(text)
    pos = 0

    def peek() -> tuple[str, str]:
        return tokens[pos] if pos < len(tokens) else ("eof", "")

    def take(kind: str | None = None, value: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of DOT")
        k, v = tokens[pos]
        if (kind and k != kind) or (value is not None and v != value):
            raise ValueError(f"expected {kind} {value!r}, got {k} {v!r}")
        pos += 1
        return v

    def attributes() -> dict[str, str]:
        attrs: dict[str, str] = {}
        if peek() != ("op", "["):
            return attrs
        take("op", "[")
        while peek() != ("op", "]"):
            name = take("id")
            take("op", "=")
            attrs[name] = take()
            if peek() == ("op", ","):
                take("op", ",")
        take("op", "]")
        return attrs

    take("id", "graph")
    take("id", "presence")
    take("op", "{")
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict[str, str]]] = []
    while peek() != ("op", "}"):
        first = take()
        if first == "node" and tokens[pos - 1][0] == "id":
            attributes()
        elif peek() == ("op", "--"):
            take("op", "--")
            second = take()
            edges.append((first, second, attributes()))
        else:
            nodes[first] = attributes()
        take("op", ";")
    take("op", "}")
    if pos != len(tokens):
        raise ValueError("text after the closing brace")
    return nodes, edges


def test_dot_is_an_undirected_graph_with_one_node_per_peer_and_one_edge_per_connection() -> None:
    graph = mesh()
    text = graph.to_dot()

    nodes, edges = parse_dot(text)

    assert text.startswith("graph presence {")
    assert text.endswith("}\n")
    assert set(nodes) == {A, B, C}
    assert sorted((a, b) for a, b, _ in edges) == [(A, B), (B, C)]


def test_dot_labels_edges_with_type_and_distance() -> None:
    _, edges = parse_dot(mesh().to_dot())

    assert {(a, b): attrs["label"] for a, b, attrs in edges} == {
        (A, B): "AccessPoint",
        (B, C): "Radio ~12.5 m",
    }


def test_dot_labels_nodes_with_device_name_and_marks_the_local_peer_bold() -> None:
    nodes, _ = parse_dot(mesh().to_dot())

    assert nodes[A]["label"].startswith("pi-kitchen-01\\n")
    assert nodes[A].get("style") == "bold"
    assert nodes[B].get("style") is None
    assert nodes[C]["label"] == f"node-garden\\n{C[:10]}…"


def test_dot_labels_a_nameless_peer_with_a_question_mark() -> None:
    nodes, _ = parse_dot(PresenceGraph(peer(A, name="", hops=0)).to_dot())

    assert nodes[A]["label"].startswith("?\\n")


@THOROUGH
@given(graph=presence_graphs(names_strategy=unicode_names.filter(lambda n: "\\" not in n)))
def test_dot_of_any_graph_parses_with_one_edge_per_connection(graph: PresenceGraph) -> None:
    nodes, edges = parse_dot(graph.to_dot())

    assert set(nodes) == {p.peer_key_string for p in graph.peers()}
    assert sorted((a, b) for a, b, _ in edges) == sorted(
        (c.peer_key_string1, c.peer_key_string2) for c in graph.connections()
    )
    for p in graph.peers():
        assert nodes[p.peer_key_string]["label"] == f"{p.device_name or '?'}\\n{p.peer_key_string[:10]}…"


AWKWARD_NAMES = [
    'the "hall" pi',
    "semi;colon] -- brace}",
    "two\nlines",
    "Küche 🍳",
    "trailing backslash\\",
    'quote after backslash\\"];',
]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_dot_survives_awkward_device_names(name: str) -> None:
    ab = Connection.between(A, B, ConnectionType.RADIO)
    graph = PresenceGraph(
        peer(A, name=name, connections=(ab,), hops=0), (peer(B, name=name, connections=(ab,)),)
    )

    nodes, edges = parse_dot(graph.to_dot())

    assert set(nodes) == {A, B}
    assert len(edges) == 1


# ================================================================ values


def test_graph_values_are_immutable_and_hashable_when_metadata_free() -> None:
    graph = mesh()

    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.local_peer = graph.remote_peers[0]  # type: ignore[misc]
    assert hash(Connection.between(A, B, ConnectionType.RADIO)) == hash(
        Connection.between(B, A, ConnectionType.RADIO)
    )


def test_peer_metadata_cannot_be_mutated_through_the_graph() -> None:
    b: Peer = mesh().remote_peers[0]

    with pytest.raises(TypeError):
        b.peer_metadata["room"] = "attic"  # type: ignore[index]
