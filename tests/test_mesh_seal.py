"""Specification of sealed broadcast frames (agent.core.mesh_seal) and radio meshes that use them.

Rules covered: a sealed medium frame opens to its ids and link frame at any
holder of the mesh key, 16 bytes longer, encrypted or authenticated only; any
byte changed, another mesh key, another sender's id: ``bad_tag``; a replay is
``replayed``, frames reordered within the window are taken once each; a
sender's restart (a higher epoch) is taken; forged frames leave no per-sender
state and the table is bounded. In the simulator, a field whose peers hold the
mesh key converges with every frame sealed; an outsider on the same channel
is never linked and its frames are counted ``medium.rejected.bad_tag``; frames
heard and transmitted again by an injector are counted ``medium.rejected.replayed``.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.core.certs import FleetTrust, issue_certificate, raw_public_key
from agent.core.engine import Membership
from agent.core.limits import REPLAY_WINDOW
from agent.core.medium import parse_medium_frame
from agent.core.mesh_seal import MAX_MESH_SENDERS, MESH_OVERHEAD, MeshSeal
from agent.core.reasons import SessionReason
from agent.core.session import SessionError
from agent.core.wire import MessageType, decode_message
from agent.sim import RadioTransmission, Simulation
from agent.sim.network import DEFAULT_START
from agent.sim.radio import RadioMedium
from tests.test_radio_mesh import CHANNEL, KEEPALIVE, SPEC, converged

KEY = bytes(range(32))
SENDER, RECEIVER = b"SEND", b"RECV"


def frame(body: bytes, sender: bytes = SENDER) -> bytes:
    return sender + bytes(4) + body


def refused(seal: MeshSeal, data: bytes) -> SessionReason:
    with pytest.raises(SessionError) as caught:
        seal.open(data)
    return caught.value.reason


@given(st.binary(min_size=1, max_size=200), st.booleans())
def test_a_sealed_medium_frame_opens_at_any_holder_of_the_mesh_key(body: bytes, encrypt: bool) -> None:
    sender, receiver = MeshSeal(KEY, SENDER, 7, encrypt), MeshSeal(KEY, RECEIVER, 1)
    sealed = sender.seal(frame(b"\x00" + body))
    assert len(sealed) == len(frame(b"\x00" + body)) + MESH_OVERHEAD
    assert (b"\x00" + body in sealed) is not encrypt or len(body) < 4  # short bodies may occur by chance
    assert receiver.open(sealed) == frame(b"\x00" + body)


@given(st.binary(min_size=1, max_size=100), st.data(), st.booleans())
def test_any_byte_changed_gets_a_sealed_medium_frame_refused(
    body: bytes, data: st.DataObject, encrypt: bool
) -> None:
    sealed = bytearray(MeshSeal(KEY, SENDER, 7, encrypt).seal(frame(body)))
    at = data.draw(st.integers(0, len(sealed) - 1))
    sealed[at] ^= data.draw(st.integers(1, 255))
    assert refused(MeshSeal(KEY, RECEIVER, 1), bytes(sealed)) is SessionReason.BAD_TAG


def test_a_frame_sealed_under_another_mesh_key_is_refused() -> None:
    sealed = MeshSeal(os.urandom(32), SENDER, 7).seal(frame(b"\x00hello"))
    assert refused(MeshSeal(KEY, RECEIVER, 1), sealed) is SessionReason.BAD_TAG


def test_a_replay_is_refused_and_frames_reordered_within_the_window_are_taken_once() -> None:
    sender, receiver = MeshSeal(KEY, SENDER, 7), MeshSeal(KEY, RECEIVER, 1)
    frames = [sender.seal(frame(bytes([0, i]))) for i in range(REPLAY_WINDOW)]
    for sealed in reversed(frames):
        receiver.open(sealed)
    assert {refused(receiver, sealed) for sealed in frames} == {SessionReason.REPLAYED}


def test_a_restarted_sender_with_a_higher_epoch_is_heard_again() -> None:
    receiver = MeshSeal(KEY, RECEIVER, 1)
    receiver.open(MeshSeal(KEY, SENDER, 7).seal(frame(b"\x00before")))
    assert receiver.open(MeshSeal(KEY, SENDER, 8).seal(frame(b"\x00after"))) == frame(b"\x00after")
    assert refused(receiver, MeshSeal(KEY, SENDER, 7).seal(frame(b"\x00old epoch"))) is SessionReason.TOO_OLD


def test_forged_frames_leave_no_state_and_the_senders_table_is_bounded() -> None:
    receiver = MeshSeal(KEY, RECEIVER, 1)
    for i in range(100):
        forged = i.to_bytes(4, "big") + bytes(4) + os.urandom(40)
        assert refused(receiver, forged) is SessionReason.BAD_TAG
    assert len(receiver._windows) == 0
    for i in range(MAX_MESH_SENDERS + 10):
        receiver.open(MeshSeal(KEY, i.to_bytes(4, "big"), 1).seal(frame(b"\x00x", i.to_bytes(4, "big"))))
    assert len(receiver._windows) == MAX_MESH_SENDERS


# ---------------------------------------------------------------- radio meshes in the simulator


def sealed_field(outsider: bool = False, seed: int = 3) -> tuple[Simulation, list, list]:
    sim = Simulation(seed=seed, mesh_key=KEY)
    members = [sim.add_peer(f"m{i}") for i in range(3)]
    strangers = [sim.add_peer("outsider", outsider=True)] if outsider else []
    positions = [(0.0, 0.0), (800.0, 0.0), (1600.0, 0.0), (800.0, 300.0)][: len(members) + len(strangers)]
    sim.add_radio(members + strangers, RadioMedium(positions, CHANNEL, seed=seed), SPEC)
    return sim, members, strangers


def test_an_outsider_without_the_mesh_key_is_never_linked_and_its_frames_are_counted() -> None:
    sim, members, (stranger,) = sealed_field(outsider=True)
    assert sim.run_until_true(lambda: converged(sim, members), 20 * KEEPALIVE)
    sim.run_for(5 * KEEPALIVE)
    assert sum(m.engine.stats["medium.rejected.bad_tag"] for m in members) > 0
    for member in members:
        assert stranger.peer_key_string not in {
            p.peer_key_string for p in member.engine.graph(sim.now).peers()
        }
    assert not stranger.engine.established_links()


def test_frames_heard_and_sent_again_by_an_injector_are_counted_as_replays() -> None:
    sim, members, _ = sealed_field()
    assert sim.run_until_true(lambda: converged(sim, members), 20 * KEEPALIVE)
    heard: list[RadioTransmission] = []
    sim.on_radio(heard.append)
    sim.run_for(2 * KEEPALIVE)
    victim = members[1]
    for tapped in heard:
        if tapped.sender is not victim:
            victim.engine.receive_on(tapped.interface, tapped.frame, sim.now)
    sim.pump(victim)
    assert victim.engine.stats["medium.rejected.replayed"] > 0
    sim.run_for(2 * KEEPALIVE)
    assert converged(sim, members)


def test_a_field_holding_the_mesh_key_converges_with_every_frame_sealed() -> None:
    sim, members, _ = sealed_field()
    heard: list[RadioTransmission] = []
    sim.on_radio(heard.append)
    assert sim.run_until_true(lambda: converged(sim, members), 20 * KEEPALIVE)
    opener = MeshSeal(KEY, b"TAPR", 1)  # any holder of the key opens every frame on the air
    kinds = set()
    for tapped in heard:
        _, _, link_frame = parse_medium_frame(opener.open(tapped.frame))
        if link_frame[0] == 0:
            kinds.add(decode_message(link_frame[1:])[0])
    assert {MessageType.HELLO, MessageType.PROOF, MessageType.SUMMARY} <= kinds


def test_a_trust_on_field_links_over_lora_with_hellos_longer_than_a_frame() -> None:
    # Each card carries its certificate: the broadcast HELLO (about 360 bytes) goes in fragments,
    # and its pacing is the airtime of them all (a HELLO's own airtime would not be defined).
    ca = Ed25519PrivateKey.generate()

    def member(public_key: bytes) -> Membership:
        cert = issue_certificate(
            ca, 1, public_key, {"site": "depot-3"}, int(DEFAULT_START) - 60, int(DEFAULT_START) + 86_400
        )
        return Membership(FleetTrust.of([raw_public_key(ca)]), cert.raw)

    sim = Simulation(seed=3, mesh_key=KEY)
    members = [sim.add_peer(f"m{i}", membership=member) for i in range(3)]
    sim.add_radio(members, RadioMedium([(0.0, 0.0), (800.0, 0.0), (1600.0, 0.0)], CHANNEL, seed=3), SPEC)
    assert sim.run_until_true(lambda: converged(sim, members), 20 * KEEPALIVE)
    for peer in members:
        assert peer.engine.stats["medium.rejected.bad_tag"] == 0
        graph = peer.engine.graph(sim.now)
        assert all(p.identity_service_metadata == {"site": "depot-3"} for p in graph.peers())
