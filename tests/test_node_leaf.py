"""The node firmware's leaf (firmware_bridge/micropython/leaf.py) against real host routers.

The leaf core is the very file a node runs, imported under CPython through agent.sim.leaf_node,
with the node library's own pure-Python Ed25519 signing its records and proofs. It is linked to
real host engines on the in-memory wire of ``test_engine`` (BLE-sized MTUs). What is checked: a
node appears in every router's graph, with its name, OS and metadata and a Bluetooth connection
that both ends list, at a 244-byte and at the 20-byte default MTU; a metadata change on the node
reaches every router; a node switched off leaves every graph after the dead interval; a router
that expects another key refuses the node; a router's DIGEST is answered with what it lacks; a
newer copy of the node's own record (state lost) moves the node's counter past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from test_engine import NOW, Node, Wire, make_node

from agent.core.engine import Engine
from agent.core.events import LinkId
from agent.core.keys import peer_key_string
from agent.core.linkspec import LinkSpec
from agent.core.records import ConnectionType, Links, RecordKind
from agent.core.wire import frames_for
from agent.sim.firmware import load
from agent.sim.leaf_node import LeafEvent, LeafNode, NodeIdentity

ED25519: Any = load("ed25519")
BLE = ConnectionType.BLUETOOTH
SEED = bytes(range(32))


@dataclass
class LeafEngine:
    """A :class:`LeafNode` behind the engine interface the wire drives (link ids are the wire's)."""

    node: LeafNode
    switched_off: bool = False
    events: list[LeafEvent] = field(default_factory=list)
    _now: float = NOW

    @property
    def public_key(self) -> bytes:
        return self.node.public_key

    def link_up(self, link: LinkId, spec: LinkSpec, now: float) -> None:
        self.node.link_up(link, spec.mtu, now, spec.expected_peer)

    def receive(self, link: LinkId, frame: bytes, now: float) -> None:
        if not self.switched_off:
            self.node.receive(link, frame, now)

    def link_down(self, link: LinkId, now: float) -> None:
        self.node.link_down(link, now)

    def next_event(self) -> None:
        self.events.extend(self.node.take_events())
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[LinkId, bytes]]:
        out: list[tuple[Any, bytes]] = self.node.take_output()
        return [] if self.switched_off else out

    def next_timer(self) -> float | None:
        return None if self.switched_off else self.node.next_tick(self._now)

    def handle_timer(self, now: float) -> None:
        self._now = now
        if not self.switched_off:
            self.node.tick(now)


class WireClock:
    """The node's wall clock: the wire's (virtual) time once :attr:`wire` is set."""

    def __init__(self) -> None:
        self.wire: Wire | None = None

    def __call__(self) -> float:
        return self.wire.now if self.wire is not None else NOW


def make_leaf_node(metadata: dict[str, Any] | None = None, seed: bytes = SEED) -> Node:
    identity = NodeIdentity(
        "leaf-kitchen", "MicroPython 1.27.0 esp32", metadata=metadata or {"room": "kitchen"}
    )
    node = LeafNode(seed, identity, wall=WireClock(), keepalive_s=1.0, dead_s=3.0)
    return Node("leaf", LeafEngine(node), None)  # type: ignore[arg-type]


def leaf_of(node: Node) -> LeafNode:
    engine: LeafEngine = node.engine  # type: ignore[assignment]
    return engine.node


def mesh(mtu: int = 244) -> tuple[Wire, Node, Node, Node, LinkId]:
    r1, r2 = make_node("r1"), make_node("r2")
    node = make_leaf_node()
    wire = Wire(r1, r2, node)
    leaf_of(node).leaf.wall.wire = wire
    wire.connect(r1, r2)
    wire.run(0.5)
    link = wire.connect(r1, node, LinkSpec(BLE, mtu=mtu))
    return wire, r1, r2, node, link


def peer_named(engine: Engine, now: float, key: bytes) -> Any:
    return next((p for p in engine.graph(now).peers() if p.peer_key_string == peer_key_string(key)), None)


def connected_to(engine: Engine, now: float, key: bytes) -> set[str]:
    """The peers ``key`` has a counted Bluetooth connection with, in ``engine``'s graph."""
    me = peer_key_string(key)
    out = set()
    for c in engine.graph(now).connections():
        ends = {c.peer_key_string1, c.peer_key_string2}
        if me in ends and c.connection_type is BLE:
            out |= ends - {me}
    return out


@pytest.mark.parametrize("mtu", [244, 20])
def test_a_node_appears_in_every_routers_graph_with_its_card_and_a_bluetooth_connection(mtu: int) -> None:
    wire, r1, r2, node, _ = mesh(mtu)
    assert wire.run_until(lambda: all(peer_named(r.engine, wire.now, node.key) for r in (r1, r2)), 10)
    seen = peer_named(r2.engine, wire.now, node.key)
    assert seen.device_name == "leaf-kitchen" and seen.os == "MicroPython 1.27.0 esp32"
    assert seen.peer_metadata == {"room": "kitchen"}
    # The connection counts in a graph two hops away: both ends list it.
    router = {peer_key_string(r1.key)}
    assert wire.run_until(lambda: connected_to(r2.engine, wire.now, node.key) == router, 10)


def test_a_metadata_change_on_the_node_reaches_every_router() -> None:
    wire, r1, r2, node, _ = mesh()
    wire.run(3)
    leaf_of(node).set_metadata({"room": "hall"}, wire.now)

    def everywhere() -> bool:
        seen = [peer_named(r.engine, wire.now, node.key) for r in (r1, r2)]
        return all(p is not None and p.peer_metadata == {"room": "hall"} for p in seen)

    assert wire.run_until(everywhere, 10)


def test_a_node_switched_off_leaves_every_graph_after_the_dead_interval() -> None:
    wire, r1, r2, node, _ = mesh()
    assert wire.run_until(lambda: peer_named(r2.engine, wire.now, node.key) is not None, 10)
    node.engine.switched_off = True  # type: ignore[attr-defined]
    off = wire.now
    assert wire.run_until(lambda: all(peer_named(r.engine, wire.now, node.key) is None for r in (r1, r2)), 30)
    assert wire.now - off <= 3.0 + 1.0 + 1.0  # dead interval, departure grace, a flood


def test_a_router_expecting_another_node_refuses_it() -> None:
    r1 = make_node("r1")
    node = make_leaf_node()
    wire = Wire(r1, node)
    leaf_of(node).leaf.wall.wire = wire
    impostor = ED25519.SigningKey(bytes(32)).public_key
    link = 7
    wire.ends[link] = (r1, node)
    r1.engine.link_up(link, LinkSpec(BLE, mtu=244, expected_peer=impostor[:8]), wire.now)
    node.engine.link_up(link, LinkSpec(BLE, mtu=244, expected_peer=r1.key), wire.now)
    wire.run(5)
    assert peer_named(r1.engine, wire.now, node.key) is None
    assert r1.engine.stats["handshake.rejected.key_mismatch"] == 1


def test_the_node_lists_every_router_it_is_attached_to_in_one_links_record() -> None:
    wire, r1, r2, node, _ = mesh()
    wire.connect(r2, node, LinkSpec(BLE, mtu=244))
    routers = {peer_key_string(r1.key), peer_key_string(r2.key)}
    assert wire.run_until(lambda: connected_to(r1.engine, wire.now, node.key) == routers, 10)
    held = r1.engine._held.get(node.key[:8], RecordKind.LINKS)  # the node's links record, as r1 holds it
    assert held is not None and isinstance(held.body, Links) and len(held.body.claims) == 2


def test_a_newer_copy_of_its_own_record_moves_the_nodes_counter_past_it() -> None:
    wire, r1, _, node, link = mesh()
    assert wire.run_until(lambda: peer_named(r1.engine, wire.now, node.key) is not None, 10)
    leaf = leaf_of(node).leaf
    records = load("records")
    stolen = records.sign_card(ED25519.SigningKey(SEED), 1000, int(wire.now) + 3600, "old", "x", "0", {})
    leaf.receive(link, b"\x00" + load("cbor").encode([5, stolen]), wire.now)
    assert leaf.card[0] > 1000
    assert wire.run_until(
        lambda: (
            (peer_named(r1.engine, wire.now, node.key) or {}).device_name == "leaf-kitchen"
            and r1.engine._held.get(node.key[:8], RecordKind.CARD).counter > 1000
        ),
        10,
    )


# ---------------------------------------------------------------- the same file, under MicroPython

CONFORMANCE = """
import leaf as L, ed25519

V = INPUT["vectors"]
def h(name):
    return bytes.fromhex(V[name]["hex"])

class Counters:
    def __init__(self):
        self.given = [1, 3]  # card.plain is counter 1, links.1 counter 3
    def next(self):
        return self.given.pop(0)
    def advance_past(self, c):
        pass

card = V["card.plain.payload"]["inputs"]
identity = {"name": card["device_name"], "os": card["os"], "agent_version": card["agent_version"],
            "metadata": card["metadata"]}
wall = lambda: card["expiry"] - 86400
out = {}
for mtu in INPUT["mtus"]:
    key = ed25519.SigningKey(h("key.leaf.seed"))
    node = L.Leaf(key, Counters(), identity, wall, lambda n: h("nonce.leaf"))
    steps = []
    def step(frames, now):
        for f in frames:
            node.receive("r", bytes.fromhex(f), now)
        node.tick(now)
        steps.append([f.hex() for _, f in node.take_output()])
    router = INPUT["router"][str(mtu)]  # the router's messages, framed for this MTU by the host
    node.link_up("r", mtu, 0.0)
    steps.append([f.hex() for _, f in node.take_output()])
    step(router["msg.hello.router.value"], 0.1)
    step(router["msg.proof.router"], 0.2)
    step(router["msg.accept"], 0.3)  # established: the links record goes at once (leading edge)
    step([], 0.4)
    for digest in ("msg.digest.router", "msg.digest.empty", "msg.digest.leaf"):
        step(router[digest], 0.5)
    step([], 1.6)  # a keepalive with nothing sent for 1 s
    out[str(mtu)] = {"steps": steps, "events": [[e[0], e[1]] for e in node.events]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def conformance() -> Any:
    import test_leaf_profile as profile
    from micropython_support import require_micropython, run_batch

    require_micropython()
    names = ("msg.hello.router.value", "msg.proof.router", "msg.accept", *ROUTER_DIGESTS)
    router = {
        str(mtu): {name: [f.hex() for f in frames_for(profile.data(name), mtu, 9)] for name in names}
        for mtu in (244, 20)
    }
    return run_batch(
        CONFORMANCE, {"vectors": profile.VECTORS, "mtus": [244, 20], "router": router}, timeout=240
    )


ROUTER_DIGESTS = ("msg.digest.router", "msg.digest.empty", "msg.digest.leaf")


def messages(frames: list[str]) -> list[str]:
    """The messages (hex) a leaf's frames carry, fragments joined in index order."""
    out, parts = [], []
    for frame in map(bytes.fromhex, frames):
        if frame[0] == 0:
            out.append(frame[1:].hex())
        else:
            parts.append(frame[4:])
            if frame[2] == frame[3] - 1:
                out.append(b"".join(parts).hex())
                parts = []
    assert not parts
    return out


def vector(*names: str) -> list[str]:
    import test_leaf_profile as profile

    return [profile.VECTORS[name]["hex"] for name in names]


@pytest.mark.parametrize("mtu", ["244", "20"])
def test_the_leaf_under_micropython_follows_the_profiles_timeline_byte_for_byte(
    conformance: Any, mtu: str
) -> None:
    import test_leaf_profile as profile

    steps = conformance[mtu]["steps"]
    assert steps[0] == profile.VECTORS[f"frames.hello.leaf.value.mtu{mtu}"]["frames"]
    assert [messages(s) for s in steps[1:]] == [
        vector("msg.proof.leaf"),
        vector("msg.accept"),
        vector("msg.records.links.1"),  # both ACCEPTs: established, the links record listing R
        [],
        vector("msg.records.links.1"),  # msg.digest.router: the router held only the card
        vector("msg.records.card+links"),  # msg.digest.empty: it held nothing
        [],  # msg.digest.leaf: it holds both
        vector("msg.summary.leaf"),  # nothing sent for a keepalive
    ]
    assert conformance[mtu]["events"] == [["up", "r"]]


def test_the_leaf_under_micropython_fragments_as_the_profile_does(conformance: Any) -> None:
    import test_leaf_profile as profile

    steps = conformance["20"]["steps"]
    assert steps[1] == profile.VECTORS["frames.proof.leaf.mtu20"]["frames"]
    assert steps[8] == profile.VECTORS["frames.summary.leaf.mtu20"]["frames"]
    assert all(len(bytes.fromhex(f)) <= 20 for step in steps for f in step)
