"""Whole meshes on the simulator's virtual clock: convergence, change, departure, attack.

Every peer runs the real engine and exposes the real Presence API; only wires
and the clock are simulated, so nothing here sleeps.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import cbor2
import pytest

from agent.api import ConnectionRequestAuthorization, PresenceGraph
from agent.core import cose
from agent.core.errors import MetadataTooLargeError
from agent.core.records import RecordKind, open_record
from agent.core.wire import (
    FRAME_AUTHENTICATED,
    FRAME_WHOLE,
    SEALED_HEADER_BYTES,
    SEALED_TAG_BYTES,
    MessageType,
    decode_hello,
    decode_message,
    encode_message,
)
from agent.sim import (
    LORA,
    ClosedLink,
    LinkModel,
    SimPeer,
    Simulation,
    Transmission,
    grid,
    line,
    random_geometric,
)


def view(peer: SimPeer, sim: Simulation) -> tuple[frozenset[str], frozenset[str]]:
    """What a peer sees, independent of who is looking: all peer keys and all connection ids."""
    graph = peer.engine.graph(sim.now)
    return frozenset(p.peer_key_string for p in graph.peers()), frozenset(c.id for c in graph.connections())


def converged(sim: Simulation, peers: list[SimPeer]) -> bool:
    live = [p for p in peers if p.alive]
    views = {view(p, sim) for p in live}
    return len(views) == 1 and len(next(iter(views))[0]) == len(live)


def sees(observer: SimPeer, target: SimPeer, sim: Simulation) -> bool:
    return observer.engine.graph(sim.now).peer(target.peer_key_string) is not None


def relay_frame(sim: Simulation, receiver: SimPeer, records: list[bytes]) -> None:
    """Deliver RECORDS on one of ``receiver``'s established links, as if a neighbour relayed them
    (sealed under the neighbour's session, as its engine would send them)."""
    link, _, _ = receiver.engine.established_links()[0]
    frame = bytes([FRAME_WHOLE]) + encode_message(MessageType.RECORDS, *records)
    neighbour = sim._wires[link].other(receiver)  # type: ignore[call-overload]
    session = neighbour.engine._links[link].session
    receiver.engine.receive(link, session.seal(frame) if session is not None else frame, sim.now)
    sim.pump(receiver)


@pytest.fixture
def mesh50() -> Iterator[tuple[Simulation, list[SimPeer]]]:
    sim = Simulation(seed=7)
    peers = sim.build(random_geometric(50, seed=7))
    sim.run_until_true(lambda: converged(sim, peers), timeout=30)
    yield sim, peers
    sim.close()


def test_fifty_peers_converge_to_identical_graphs(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    (keys, connections), *_ = {view(p, sim) for p in peers}
    assert len(keys) == 50
    assert len(connections) == len(random_geometric(50, seed=7).edges)


def test_hops_and_direct_neighbours_follow_the_topology() -> None:
    sim = Simulation(seed=1)
    a, b, c, d = sim.build(line(4))
    sim.run_until_true(lambda: converged(sim, [a, b, c, d]), timeout=30)
    graph = a.engine.graph(sim.now)
    hops = {p.device_name: (p.hops, p.is_direct) for p in graph.remote_peers}
    assert hops == {"sim-1": (1, True), "sim-2": (2, False), "sim-3": (3, False)}
    assert [c.connection_type.value for c in graph.local_peer.connections] == ["AccessPoint"]
    # line() puts peers 10 m apart; the links record carries that distance.
    assert graph.local_peer.connections[0].approximate_distance_in_meters == 10.0


def test_a_metadata_change_reaches_every_peer(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    origin = peers[3]
    origin.presence.set_peer_metadata({"app_version": "1.2.4", "role": "gateway"})
    sim.run_until_true(
        lambda: all(
            p.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata.get("role") == "gateway"  # type: ignore[union-attr]
            for p in peers
        ),
        timeout=5,
    )
    assert origin.presence.peer_metadata == {"app_version": "1.2.4", "role": "gateway"}


def test_a_departed_peer_leaves_every_graph(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    victim = peers[10]
    sim.kill(victim)
    took = sim.run_until_true(lambda: not any(sees(p, victim, sim) for p in peers if p.alive), timeout=30)
    # Dead-link detection (3 s) plus the departure grace (0.5 s) plus flooding.
    assert took <= sim.config.dead_interval + sim.config.departure_grace + 1.0
    assert converged(sim, peers)


def test_a_brief_unreachability_within_the_grace_does_not_flicker() -> None:
    sim = Simulation(seed=2)
    a, b, c = sim.build(line(3))
    sim.run_until_true(lambda: converged(sim, [a, b, c]), timeout=30)
    seen: list[PresenceGraph] = []
    observer = a.presence.observe(seen.append)
    sim.disconnect(b, c)
    sim.run_for(sim.config.departure_grace / 4)
    sim.connect(b, c)
    sim.run_for(2.0)
    observer.stop()
    assert all(g.peer(c.peer_key_string) is not None for g in seen)


def test_partition_then_heal_converges() -> None:
    sim = Simulation(seed=3)
    topo = grid(36)
    peers = sim.build(topo)
    sim.run_until_true(lambda: converged(sim, peers), timeout=30)
    west = {p for p in peers if p.index % 6 < 3}
    cut = sim.partition(west)
    sim.run_until_true(
        lambda: converged(sim, list(west)) and converged(sim, [p for p in peers if p not in west]),
        timeout=30,
    )
    assert len(peers[0].engine.graph(sim.now).remote_peers) == len(west) - 1
    sim.heal(cut)
    sim.run_until_true(lambda: converged(sim, peers), timeout=30)


def test_a_replayed_older_record_is_rejected_and_counted(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    origin, target = peers[0], peers[25]
    old_card = origin.engine.own_records[0].raw
    origin.presence.set_peer_metadata({"v": 2})
    sim.run_until_true(
        lambda: target.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata == {"v": 2}, timeout=5
    )  # type: ignore[union-attr]
    before = target.engine.stats["records.rejected.stale"]
    relay_frame(sim, target, [old_card])
    assert target.engine.stats["records.rejected.stale"] == before + 1
    assert target.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata == {"v": 2}  # type: ignore[union-attr]


def test_a_forged_signature_is_rejected_and_counted(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    origin, target = peers[1], peers[30]
    genuine = origin.engine.own_records[0]
    payload, signature = cose.open_envelope(genuine.raw)
    fields = cbor2.loads(payload)
    fields[2] = genuine.counter + 100  # a newer counter with a name the attacker chose
    fields[4] = "evil-twin"
    forged = cose.envelope(cbor2.dumps(fields, canonical=True), signature)
    relay_frame(sim, target, [forged])
    assert target.engine.stats["records.rejected.bad_signature"] == 1
    assert target.engine.graph(sim.now).peer(origin.peer_key_string).device_name == origin.name  # type: ignore[union-attr]


def test_a_card_with_its_metadata_stripped_is_rejected(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    origin, target = peers[2], peers[40]
    origin.presence.set_peer_metadata({"clearance": "high"})
    sim.run_for(1.0)
    genuine = origin.engine.own_records[0]
    payload, signature = cose.open_envelope(genuine.raw)
    fields = cbor2.loads(payload)
    fields[7] = {}
    stripped = cose.envelope(cbor2.dumps(fields, canonical=True), signature)
    relay_frame(sim, target, [stripped])
    assert (
        target.engine.stats["records.rejected.stale"] + target.engine.stats["records.rejected.bad_signature"]
        == 1
    )
    # Even with a higher counter (so it is not merely stale) the signature fails.
    fields[2] = genuine.counter + 1
    relay_frame(sim, target, [cose.envelope(cbor2.dumps(fields, canonical=True), signature)])
    assert target.engine.stats["records.rejected.bad_signature"] >= 1
    assert target.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata == {"clearance": "high"}  # type: ignore[union-attr]


def test_oversized_metadata_raises_and_changes_nothing(mesh50: tuple[Simulation, list[SimPeer]]) -> None:
    sim, peers = mesh50
    origin = peers[4]
    origin.presence.set_peer_metadata({"ok": True})
    sim.run_for(1.0)
    card_before = origin.engine.own_records[0]
    frames_before = origin.engine.stats["frames.sent"]
    with pytest.raises(MetadataTooLargeError, match=r"4096"):
        origin.presence.set_peer_metadata({"blob": "x" * 5000})
    with pytest.raises(MetadataTooLargeError, match=r"is \d+ bytes; the limit is 4096"):
        origin.presence.set_peer_metadata({"floats": [1.1] * 900})  # fits as JSON, not as a card
    assert origin.engine.own_records[0] is card_before
    assert origin.presence.peer_metadata == {"ok": True}
    assert origin.engine.stats["frames.sent"] == frames_before
    sim.run_for(1.0)
    assert all(
        p.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata == {"ok": True} for p in peers
    )  # type: ignore[union-attr]


def test_records_are_refreshed_before_they_expire() -> None:
    from agent.core.engine import EngineConfig

    config = EngineConfig(record_ttl=60.0, refresh_before_expiry=20.0, sweep_interval=5.0)
    sim = Simulation(seed=4, config=config)
    peers = sim.build(line(3))
    sim.run_until_true(lambda: converged(sim, peers), timeout=30)
    first = peers[0].engine.own_records[0].counter
    sim.run_for(300.0)  # five lifetimes
    assert converged(sim, peers)
    assert peers[0].engine.own_records[0].counter > first
    assert peers[2].engine.stats["records.expired"] == 0


def test_an_expired_peer_is_forgotten() -> None:
    from agent.core.engine import EngineConfig

    config = EngineConfig(record_ttl=60.0, refresh_before_expiry=20.0, sweep_interval=5.0)
    sim = Simulation(seed=5, config=config)
    a, b, c = sim.build(line(3))
    sim.run_until_true(lambda: converged(sim, [a, b, c]), timeout=30)
    sim.kill(c)
    sim.run_for(120.0)
    assert a.engine.records_of(c.engine.public_key) == []
    assert a.engine.stats["records.expired"] == 2


# ---------------------------------------------------------------- observers and handlers


def test_an_observer_sees_joins_changes_and_departures_and_stops() -> None:
    sim = Simulation(seed=6)
    a, b = sim.add_peer("a"), sim.add_peer("b")
    graphs: list[PresenceGraph] = []
    got = threading.Event()

    def remember(graph: PresenceGraph) -> None:
        graphs.append(graph)
        got.set()

    with a.presence.observe(remember):
        assert got.wait(5)
        assert graphs[0].remote_peers == ()
        sim.connect(a, b)
        sim.run_for(1.0)
        b.presence.set_peer_metadata({"mood": "fine"})
        sim.run_for(1.0)
        deadline = threading.Event()
        deadline.wait(0.2)  # let the observer thread drain (real thread, not virtual time)
        assert graphs[-1].peer(b.peer_key_string).peer_metadata == {"mood": "fine"}  # type: ignore[union-attr]
    count = len(graphs)
    sim.disconnect(a, b)
    sim.run_for(2.0)
    assert len(graphs) == count
    sim.close()


def test_a_denied_peer_stays_out_and_retries_with_growing_backoff() -> None:
    sim = Simulation(seed=8)
    gate, visitor = sim.add_peer("gate"), sim.add_peer("visitor")
    asked: list[float] = []

    def deny_all(request: object) -> ConnectionRequestAuthorization:
        asked.append(sim.now)
        return ConnectionRequestAuthorization.DENY

    gate.presence.set_connection_request_handler(deny_all)
    sim.connect(gate, visitor)
    sim.run_for(60.0)
    assert not sees(gate, visitor, sim) and not sees(visitor, gate, sim)
    assert len(asked) >= 4
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    assert visitor.engine.stats["links.denied_by_remote"] == len(asked)
    gate.presence.set_connection_request_handler(None)
    sim.run_for(120.0)
    assert sees(gate, visitor, sim) and sees(visitor, gate, sim)
    sim.close()


def test_a_handler_that_does_not_answer_in_time_denies() -> None:
    sim = Simulation(seed=9, handler_timeout=0.2)
    slow, visitor = sim.add_peer("slow"), sim.add_peer("visitor")
    release = threading.Event()

    def stuck(request: object) -> ConnectionRequestAuthorization:
        release.wait(5)
        return ConnectionRequestAuthorization.ALLOW

    slow.presence.set_connection_request_handler(stuck)
    sim.connect(slow, visitor)
    sim.run_for(0.5)
    release.set()
    assert not sees(slow, visitor, sim)
    assert slow.engine.stats["links.denied_locally"] >= 1
    sim.close()


def test_the_handler_sees_the_remote_metadata_and_connection_type() -> None:
    sim = Simulation(seed=10)
    gate = sim.add_peer("gate")
    seen = []

    def check_version(request):  # type: ignore[no-untyped-def]
        seen.append(request)
        if request.peer_metadata.get("app_version") == "1.2.3":
            return ConnectionRequestAuthorization.DENY
        return ConnectionRequestAuthorization.ALLOW

    gate.presence.set_connection_request_handler(check_version)
    buggy = sim.add_peer("buggy", metadata={"app_version": "1.2.3"})
    good = sim.add_peer("good", metadata={"app_version": "1.2.4"})
    sim.connect(gate, buggy)
    sim.connect(gate, good, LinkModel(connection_type=LORA.connection_type))
    sim.run_for(5.0)
    assert sees(gate, good, sim) and not sees(gate, buggy, sim)
    types = {r.peer_key_string: r.connection_type.value for r in seen}
    assert types[good.peer_key_string] == "Radio"
    assert types[buggy.peer_key_string] == "AccessPoint"
    sim.close()


# ---------------------------------------------------------------- constrained links


def test_a_lora_line_of_four_converges_within_its_duty_cycle() -> None:
    sim = Simulation(seed=11)
    peers = sim.build(line(4), LORA)
    took = sim.run_until_true(lambda: converged(sim, peers), timeout=3600, check_every=5.0)
    budget = LORA.bytes_per_second
    assert budget is not None
    for directions in sim.wire_bytes().values():
        for sent in directions.values():
            # Frame overhead counts against the budget too, so payload bytes stay below it.
            assert sent <= budget * took + LORA.mtu + LORA.frame_overhead_bytes
    assert sim.max_frame <= LORA.mtu
    # A metadata change then crosses all three hops.
    peers[0].presence.set_peer_metadata({"battery": 87})
    sim.run_until_true(
        lambda: (
            peers[3].engine.graph(sim.now).peer(peers[0].peer_key_string).peer_metadata == {"battery": 87}
        ),  # type: ignore[union-attr]
        timeout=3600,
        check_every=5.0,
    )


def test_a_quiet_mesh_sends_only_small_keepalives_whatever_its_size() -> None:
    per_link: dict[int, float] = {}
    for n in (9, 36):
        sim = Simulation(seed=12)
        peers = sim.build(grid(n))
        sim.run_until_true(lambda: converged(sim, peers), timeout=30)  # noqa: B023
        sim.run_for(10.0)
        before = sum(p.engine.stats["bytes.sent"] for p in peers)
        sim.run_for(60.0)
        sent = sum(p.engine.stats["bytes.sent"] for p in peers) - before
        per_link[n] = sent / (2 * len(grid(n).edges)) / 60.0
        sim.close()
    # One SUMMARY (hash + count) per keepalive interval and direction: same size for any N.
    assert per_link[9] == pytest.approx(per_link[36], rel=0.05)
    assert per_link[36] < 40  # bytes per second per link direction


# ---------------------------------------------------------------- the card by reference


def cards_in(sent: list[Transmission]) -> int:
    """Signed cards these (whole, LAN-sized) frames carried: in HELLOs by value and in RECORDS.
    Links are sealed without encryption (trust is off), so the inner frames read in the clear."""
    count = 0
    for t in sent:
        frame = (
            t.frame[SEALED_HEADER_BYTES:-SEALED_TAG_BYTES] if t.frame[0] == FRAME_AUTHENTICATED else t.frame
        )
        kind, fields = decode_message(frame[1:])
        if kind is MessageType.HELLO:
            count += int(decode_hello(fields).reference is None)
        elif kind is MessageType.RECORDS:
            count += sum(open_record(raw).kind is RecordKind.CARD for raw in fields)
    return count


def metadata_seen(observer: SimPeer, target: SimPeer, sim: Simulation) -> object:
    peer = observer.engine.graph(sim.now).peer(target.peer_key_string)
    return None if peer is None else peer.peer_metadata


def both_admitted(a: SimPeer, b: SimPeer) -> bool:
    return any(p == b.peer_key_string for _, p, _ in a.engine.established_links()) and any(
        p == a.peer_key_string for _, p, _ in b.engine.established_links()
    )


def admitted_after(sim: Simulation, a: SimPeer, b: SimPeer) -> float:
    """Virtual seconds until both ends admitted their link, polled at a tenth of a LAN latency."""
    return sim.run_until_true(lambda: both_admitted(a, b), timeout=1, check_every=LinkModel().latency / 10)


def test_a_first_contact_and_a_re_contact_are_each_admitted_within_three_latencies() -> None:
    sim = Simulation(seed=15)
    a, b = sim.add_peer("a"), sim.add_peer("b")
    sent: list[Transmission] = []
    sim.on_transmit(sent.append)
    latency = LinkModel().latency
    sim.connect(a, b)
    # HELLO, PROOF, ACCEPT: the card travels inside the first HELLO, as no one knows anyone yet.
    assert admitted_after(sim, a, b) <= 3.1 * latency
    assert cards_in(sent) == 2
    sim.run_for(1.0)
    sim.disconnect(a, b)
    sim.run_for(1.0)
    del sent[:]

    sim.connect(a, b)
    assert admitted_after(sim, a, b) <= 3.1 * latency
    sim.run_for(1.0)
    assert cards_in(sent) == 0  # each names its card; the other holds it
    sim.close()


def test_a_peer_whose_card_changed_while_cut_off_is_asked_for_it_and_everyone_gets_it() -> None:
    sim = Simulation(seed=16)
    a, b, c = sim.build(line(3))
    sim.run_until_true(lambda: converged(sim, [a, b, c]), timeout=30)
    cut = sim.partition({c})
    c.presence.set_peer_metadata({"moved": "upstairs"})
    sim.run_for(1.0)
    sim.heal(cut)
    sim.run_until_true(lambda: metadata_seen(a, c, sim) == {"moved": "upstairs"}, timeout=5)
    assert b.engine.stats["handshake.card_requested"] == 1
    assert c.engine.stats["handshake.card_sent_on_request"] == 1
    sim.close()


# ---------------------------------------------------------------- the simulator's observers


def test_on_transmit_reports_every_frame_with_its_ends_and_whether_the_wire_lost_it() -> None:
    sim = Simulation(seed=17)
    a, b = sim.add_peer("a"), sim.add_peer("b")
    sent: list[Transmission] = []
    sim.on_transmit(sent.append)
    wire = sim.connect(a, b, LinkModel(loss=0.3))
    sim.run_for(10.0)

    assert len(sent) == a.engine.stats["frames.sent"] + b.engine.stats["frames.sent"]
    assert sum(t.lost for t in sent) == sim.frames_lost > 0
    assert {(t.sender, t.receiver) for t in sent} == {(a, b), (b, a)}
    assert all(t.wire == wire and t.airtime == 0.0 for t in sent)
    assert [t.time for t in sent] == sorted(t.time for t in sent)
    sim.close()


def test_on_close_reports_a_link_an_engine_gave_up_on_and_dial_at_can_bring_it_back() -> None:
    sim = Simulation(seed=18)
    a, b = sim.add_peer("a"), sim.add_peer("b")
    closed: list[ClosedLink] = []
    sim.on_close(closed.append)
    sim.connect(a, b, LinkModel(loss=1.0))  # nothing arrives: the handshake cannot complete
    sim.run_for(sim.config.handshake_timeout + 1.0)

    (report,) = closed  # both ends gave up; the wire closed once
    assert report.event.reason == "handshake did not complete" and report.event.retry_at is None
    assert {report.closer, report.other} == {a, b}
    sim.dial_at(sim.now + 1.0, report.closer, report.other)
    sim.run_for(2.0)
    assert both_admitted(a, b)
    sim.close()
