"""Specification of sealed links in the engine (agent.core.session through agent.core.engine).

Rules covered: two engines that both offer a session seal every frame after the
PROOFs (only HELLO, PROOF and CARD_REQUEST go plain) and converge as plain links
do; one that offers none gets a plain link, unless the other requires sealing,
which closes it (``handshake.unsealed``) but for a leaf when unsealed leaves are
allowed; trust on requires sealing and encrypts by default; an on-path attacker
who strips or replaces an offer breaks the PROOFs, so the link never forms; on
an established sealed link an injected plain message, a changed byte, a replay
and a sealed frame from another link are each dropped and counted, and the link
goes on carrying records; reordered frames are each taken once.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.core.engine import EngineConfig, LinkSpec
from agent.core.events import CloseLink
from agent.core.limits import MIN_SEALED_MTU
from agent.core.records import ConnectionType
from agent.core.session import Sealing, is_sealed_frame
from agent.core.wire import (
    BEFORE_SESSION,
    FRAME_AUTHENTICATED,
    FRAME_SEALED,
    FRAME_WHOLE,
    Deny,
    MessageType,
    decode_hello,
    decode_message,
    encode_hello,
    encode_message,
)
from agent.core.wire import Role as WireRole
from tests.test_engine import Node, Wire, kinds, make_node, stranger_card

OFFER = EngineConfig(sealing=Sealing.OFFER)
REQUIRE = EngineConfig(sealing=Sealing.REQUIRE)
OFF = EngineConfig(sealing=Sealing.OFF)


def linked(
    config_a: EngineConfig, config_b: EngineConfig, spec: LinkSpec | None = None
) -> tuple[Wire, Node, Node, int]:
    a, b = make_node("a", config=config_a), make_node("b", config=config_b)
    wire = Wire(a, b)
    link = wire.connect(a, b, spec)
    wire.run(0.5)
    return wire, a, b, int(link)


def sealed_pair() -> tuple[Wire, Node, Node, int]:
    wire, a, b, link = linked(OFFER, OFFER)
    assert a.engine.established_links() and b.engine.established_links()
    return wire, a, b, link


def test_two_engines_that_offer_seal_every_frame_after_the_proofs_and_converge() -> None:
    wire, a, b, _ = sealed_pair()
    assert a.engine.stats["links.sealed"] == b.engine.stats["links.sealed"] == 1
    for node in (a, b):
        frames = wire.sent_by(node)
        plain = [f for f in frames if not is_sealed_frame(f)]
        assert set(kinds(plain)) <= BEFORE_SESSION
        assert any(is_sealed_frame(f) for f in frames)
        assert all(f[0] == FRAME_AUTHENTICATED for f in frames if is_sealed_frame(f))  # trust off
    assert a.engine.graph(wire.now).peer(b.engine.peer_key_string) is not None
    assert b.engine.graph(wire.now).peer(a.engine.peer_key_string) is not None


def test_a_hello_carries_a_session_offer_unless_sealing_is_off() -> None:
    wire, a, b, _ = linked(OFFER, OFF)
    (hello_a,) = [f for f in wire.sent_by(a) if decode_message(f[1:])[0] is MessageType.HELLO]
    (hello_b,) = [f for f in wire.sent_by(b) if decode_message(f[1:])[0] is MessageType.HELLO]
    offer = decode_hello(decode_message(hello_a[1:])[1]).session_key
    assert offer is not None and len(offer) == 32
    assert decode_hello(decode_message(hello_b[1:])[1]).session_key is None


def test_one_end_without_an_offer_gets_a_plain_link_when_neither_requires_sealing() -> None:
    wire, a, b, _ = linked(OFFER, OFF)
    assert a.engine.established_links() and b.engine.established_links()
    assert a.engine.stats["links.unsealed"] == 1 and a.engine.stats["links.sealed"] == 0
    assert not any(is_sealed_frame(s.frame) for s in wire.log)


def test_an_end_that_requires_sealing_closes_a_link_whose_remote_offers_nothing() -> None:
    wire, a, b, _ = linked(REQUIRE, OFF)
    assert not a.engine.established_links() and not b.engine.established_links()
    assert a.engine.stats["handshake.unsealed"] == 1
    (closed,) = wire.events_of(a, CloseLink)
    assert "does not seal" in closed.reason


def test_a_link_too_small_for_a_seal_offers_none() -> None:
    spec = LinkSpec(ConnectionType.BLUETOOTH, mtu=MIN_SEALED_MTU - 1)
    _, a, _, _ = linked(OFFER, OFFER, spec)
    assert a.engine.established_links() and a.engine.stats["links.unsealed"] == 1


@pytest.mark.parametrize("allowed", [True, False])
def test_requiring_sealing_takes_a_plain_leaf_only_when_unsealed_leaves_are_allowed(allowed: bool) -> None:
    router = replace(REQUIRE, unsealed_leaves=allowed)
    leaf = EngineConfig(role=WireRole.LEAF, sealing=Sealing.OFF)
    _, r, _, _ = linked(router, leaf)
    assert bool(r.engine.established_links()) is allowed
    assert r.engine.stats["handshake.unsealed"] == int(not allowed)


def test_trust_on_requires_sealing_and_encrypts_by_default() -> None:
    from tests.test_trust import Ca, certified, member

    ca = Ca()
    a = member("a", [ca], certified(ca), config=EngineConfig())
    b = member("b", [ca], certified(ca), config=EngineConfig())
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run(0.5)
    assert a.engine.established_links() and a.engine.stats["links.sealed"] == 1
    sealed = [f for f in wire.sent_by(a) if is_sealed_frame(f)]
    assert sealed and all(f[0] == FRAME_SEALED for f in sealed)
    assert not any(b"linux" in f for f in sealed)  # a card's OS string, readable in a plain frame


class Stripper(Wire):
    """A wire whose middle man rewrites HELLOs: without their session offers, or with its own."""

    def __init__(self, *nodes: Node, replace_with: bytes | None = None) -> None:
        super().__init__(*nodes)
        self.replace_with = replace_with

    def service(self, node: Node) -> None:
        super().service(node)
        for i, (to, link, frame) in enumerate(self._queue):
            if frame is not None and frame[0] == FRAME_WHOLE and frame[1:2] == b"\x85" and frame[2] == 1:
                hello = decode_hello(decode_message(frame[1:])[1])
                forged = encode_hello(hello.nonce, hello.card, hello.capabilities, self.replace_with)
                self._queue[i] = (to, link, bytes([FRAME_WHOLE]) + forged)


@pytest.mark.parametrize("replace_with", [None, bytes(range(1, 33))], ids=["stripped", "replaced"])
def test_an_on_path_attacker_who_strips_or_replaces_the_offers_breaks_the_proofs(
    replace_with: bytes | None,
) -> None:
    a, b = make_node("a", config=OFFER), make_node("b", config=OFFER)
    wire = Stripper(a, b, replace_with=replace_with)
    wire.connect(a, b)
    wire.run(0.5)
    assert not a.engine.established_links() and not b.engine.established_links()
    assert (
        a.engine.stats["handshake.rejected.bad_proof"] + b.engine.stats["handshake.rejected.bad_proof"] >= 1
    )


# ---------------------------------------------------------------- an established sealed link


def records_frame(*raws: bytes) -> bytes:
    return bytes([FRAME_WHOLE]) + encode_message(MessageType.RECORDS, *raws)


def last_sealed(wire: Wire, node: Node) -> bytes:
    return [f for f in wire.sent_by(node) if is_sealed_frame(f)][-1]


def still_carries_records(wire: Wire, a: Node, b: Node) -> bool:
    """A metadata change at ``b`` still reaches ``a`` over the link."""
    b_key = b.engine.peer_key_string
    card = b.engine.card
    b.engine.set_card(replace(card, metadata={"after": "attack"}), wire.now)
    wire.run(0.5)
    peer = a.engine.graph(wire.now).peer(b_key)
    return peer is not None and dict(peer.peer_metadata) == {"after": "attack"}


def test_an_injected_plain_message_on_a_sealed_link_is_dropped_and_counted() -> None:
    wire, a, b, link = sealed_pair()
    held = a.engine.held_record_count()
    a.engine.receive(link, records_frame(stranger_card()), wire.now)
    a.engine.receive(link, bytes([FRAME_WHOLE]) + Deny().encode(), wire.now)
    assert a.engine.stats["session.rejected.unsealed"] == 2
    assert a.engine.held_record_count() == held
    assert a.engine.established_links()
    assert still_carries_records(wire, a, b)


def test_a_sealed_frame_with_any_byte_changed_is_dropped_and_the_link_goes_on() -> None:
    wire, a, b, link = sealed_pair()
    wire.muted.add(link)  # a frame that a has not had yet
    b.engine.set_card(replace(b.engine.card, metadata={"held": "back"}), wire.now)
    wire.run(0.1)
    wire.muted.clear()
    frame = bytearray(last_sealed(wire, b))
    for at in range(1, len(frame)):
        changed = bytearray(frame)
        changed[at] ^= 0x40
        a.engine.receive(link, bytes(changed), wire.now)
    assert a.engine.stats["session.rejected.bad_tag"] == len(frame) - 1
    assert still_carries_records(wire, a, b)


def test_a_replayed_sealed_frame_is_dropped_and_counted() -> None:
    wire, a, b, link = sealed_pair()
    a.engine.receive(link, last_sealed(wire, b), wire.now)
    assert a.engine.stats["session.rejected.replayed"] == 1
    assert still_carries_records(wire, a, b)


def test_a_sealed_frame_from_another_link_between_the_same_peers_is_refused() -> None:
    wire, a, b, _ = sealed_pair()
    second = wire.connect(a, b)  # a second link, its own session
    wire.run(0.5)
    a.engine.receive(second, last_sealed(wire, b), wire.now)  # b's frame on the first link
    assert a.engine.stats["session.rejected.bad_tag"] >= 1 or a.engine.stats["session.rejected.replayed"] >= 1


def test_frames_reordered_on_a_sealed_link_are_each_taken_once() -> None:
    wire, a, b, link = sealed_pair()
    wire.muted.add(link)  # hold b's frames back, then deliver them reversed
    since = wire.now
    for i in range(3):
        b.engine.set_card(replace(b.engine.card, metadata={"i": i}), wire.now)
        wire.run(0.1)
    held_back = [s.frame for s in wire.log if s.sender is b and s.link == link and s.time >= since]
    assert len(held_back) >= 3
    for frame in reversed(held_back):
        a.engine.receive(link, frame, wire.now)
    for frame in held_back:
        a.engine.receive(link, frame, wire.now)
    assert a.engine.stats["session.rejected.replayed"] == len(held_back)
    peer = a.engine.graph(wire.now).peer(b.engine.peer_key_string)
    assert peer is not None and dict(peer.peer_metadata) == {"i": 2}
