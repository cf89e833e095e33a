"""A BLE node in a fleet with trust on: its certificate rides in the card it signs itself.

The node is the firmware's own leaf (agent.sim.leaf_node, the very leaf.py a board runs) with
the certificate ``scripts/provision-node --fleet-ca`` writes to its flash; the routers are host
engines trusting the fleet CA (tests/test_trust.py's members), on the in-memory wire of
tests/test_engine.py. What is checked: a certified node is admitted and shows its certificate's
identity metadata in every router's graph; an uncertified node, or one whose certificate is for
another key, is refused at the handshake with the reason, and appears in no graph.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_engine import Node, Wire
from test_node_leaf import BLE, LeafEngine, WireClock
from test_trust import Ca, certified, deny_reasons, member

from agent.core.certs import TrustReason
from agent.core.linkspec import LinkSpec
from agent.sim.leaf_node import LeafNode, NodeIdentity

IDENTITY = {"site": "depot-3", "role": "sensor", "serial": "N-0042"}


def node_with(certificate: bytes, seed: bytes) -> Node:
    identity = NodeIdentity("leaf-dock", "MicroPython 1.27.0 esp32", certificate=certificate)
    leaf = LeafNode(seed, identity, wall=WireClock(), keepalive_s=1.0, dead_s=3.0)
    return Node("leaf", LeafEngine(leaf), None)  # type: ignore[arg-type]


def public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def fleet_with(node: Node, ca: Ca) -> tuple[Wire, Any, Any]:
    r1, r2 = member("r1", [ca], certified(ca)), member("r2", [ca], certified(ca))
    wire = Wire(r1, r2, node)
    node.engine.node.leaf.wall.wire = wire  # type: ignore[attr-defined]
    wire.connect(r1, r2)
    wire.run(0.5)
    wire.connect(r1, node, LinkSpec(BLE, mtu=244))
    wire.run(3.0)
    return wire, r1, r2


def identity_seen(router: Any, now: float, node: Node) -> dict[str, Any] | None:
    key = node.engine.node.peer_key_string  # type: ignore[attr-defined]
    found = next((p for p in router.engine.graph(now).peers() if p.peer_key_string == key), None)
    return None if found is None else dict(found.identity_service_metadata)


def test_a_certified_node_is_admitted_and_every_router_shows_its_identity() -> None:
    ca, seed = Ca(), bytes(range(32))
    node = node_with(ca.issue(public_key(seed), IDENTITY), seed)
    wire, r1, r2 = fleet_with(node, ca)
    assert identity_seen(r1, wire.now, node) == IDENTITY
    assert identity_seen(r2, wire.now, node) == IDENTITY


def test_an_uncertified_node_or_one_with_anothers_certificate_is_refused_with_the_reason() -> None:
    ca, seed = Ca(), bytes(range(32))
    for certificate, reason in (
        (b"", TrustReason.NO_CERTIFICATE),
        (ca.issue(public_key(bytes(range(1, 33))), IDENTITY), TrustReason.WRONG_KEY),
    ):
        node = node_with(certificate, seed)
        wire, r1, r2 = fleet_with(node, ca)
        assert identity_seen(r1, wire.now, node) is None and identity_seen(r2, wire.now, node) is None
        assert reason in deny_reasons(wire, r1)
        assert r1.engine.stats[f"trust.rejected.{reason}"] >= 1
