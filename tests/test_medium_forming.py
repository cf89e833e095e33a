"""How neighbours on a spent channel still form (agent.core.engine on a broadcast interface).

A forming field is airtime-bound: every peer has ~11 s of presence airtime an hour at SF7 and
1 %, and the rules below are what keeps it from wasting that. On one interface the engine sends
in a strict order, keepalive, then the neighbours' handshake frames, then what goes to everyone,
then each neighbour's own queue, so a PROOF never waits behind records; a handshake does not time
out while our own part of it still waits for airtime; a repeated HELLO is answered after gaps
that double; a neighbour whose handshake timed out is left to start the next one, but its HELLO
is answered; only a links record newer than the link says a neighbour restarted.

Two or three engines share an in-memory channel (:class:`Air`): every broadcast frame reaches
every other engine at once, unless a test drops it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from test_engine import NOW, Node, make_node

from agent.core.airtime import LoRaModulation
from agent.core.events import ConnectionRequested
from agent.core.medium import (
    MAX_REFUSAL_DOUBLINGS,
    MEDIUM_RECORD_TTL,
    MEDIUM_REFRESH_BEFORE,
    REFUSED_KEEPALIVES,
    Broadcast,
    Interface,
    MediumLink,
    MediumSpec,
    parse_medium_frame,
)
from agent.core.records import RecordKind, make_card
from agent.core.wire import DIGEST_ENTRY_BYTES, MessageType, decode_message, frame_message_type

RADIO = "radio"
KEEPALIVE = 60.0
SPEC = MediumSpec(LoRaModulation(), keepalive_interval=KEEPALIVE, dead_interval=3 * KEEPALIVE)


@dataclass(frozen=True, slots=True)
class OnAir:
    time: float
    sender: str
    dest: bytes
    kind: MessageType | None
    frame: bytes


@dataclass
class Air:
    """One broadcast channel between engines, stepped in ``step`` seconds; connection requests
    are allowed. ``drop(sender, frame)`` True loses a frame for every receiver."""

    nodes: list[Node]
    now: float = NOW
    step: float = 0.25
    drop: Callable[[Node, bytes], bool] = lambda _node, _frame: False
    log: list[OnAir] = field(default_factory=list)

    def __post_init__(self) -> None:
        for node in self.nodes:
            node.engine.interface_up(RADIO, SPEC, self.now)

    def run_for(self, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
        end = self.now + seconds
        while self.now < end and not until():
            for node in self.nodes:
                node.engine.handle_timer(self.now)
                self.flush(node)
            self.now += self.step

    def flush(self, node: Node) -> None:
        engine = node.engine
        while (event := engine.next_event()) is not None:
            if isinstance(event, ConnectionRequested):
                engine.decide(event.link, True, self.now)
        for link, frame in engine.datagrams_to_send(self.now):
            assert link == Broadcast(RADIO)
            self.log.append(OnAir(self.now, node.name, frame[4:8], frame_kind(frame), frame))
            if self.drop(node, frame):
                continue
            for other in self.nodes:
                if other is not node:
                    other.engine.receive_on(RADIO, frame, self.now)

    def sent_by(self, node: Node, kind: MessageType, dest: bytes | None = None) -> list[float]:
        return [
            s.time for s in self.log if s.sender == node.name and s.kind is kind and dest in (None, s.dest)
        ]


def frame_kind(frame: bytes) -> MessageType | None:
    kind = frame_message_type(parse_medium_frame(frame)[2])
    return MessageType(kind) if kind is not None else None


def short_id(node: Node) -> bytes:
    return node.engine.peer_id[:4]


def interface(node: Node) -> Interface:
    return node.engine._interfaces[RADIO]


def established(a: Node, b: Node) -> bool:
    link = a.engine._links.get(MediumLink(RADIO, short_id(b)))
    return link is not None and link.established


def spend_pace(node: Node, seconds_of_airtime: float, now: float = NOW) -> None:
    """Leave ``node``'s pace ``seconds_of_airtime`` in debt at ``now`` (as after a burst of sending)."""
    pace = interface(node).budget.pace
    pace.charge(pace.refill(now) + seconds_of_airtime, now)


def pace_rate(node: Node) -> float:
    rate = interface(node).budget.pace.rate
    assert rate is not None
    return rate


def linked_and_synced(step: float = 0.25) -> tuple[Node, Node, Air]:
    """Two neighbours, linked and holding the same records."""
    a, b = make_node("a"), make_node("b")
    air = Air([a, b], step=step)
    air.run_for(10 * KEEPALIVE, until=lambda: established(a, b) and established(b, a))
    air.run_for(3 * KEEPALIVE)
    assert a.engine.summary == b.engine.summary
    return a, b, air


def test_a_neighbours_proof_goes_before_the_records_queued_for_everyone() -> None:
    a, b = make_node("a"), make_node("b")
    air = Air([a, b])
    # a's pace is spent and its broadcast queue holds records of others, due at once.
    spend_pace(a, 0.1)
    stranger = make_node("c")
    for raw in (r.raw for r in stranger.engine.own_records):
        interface(a).outbox.queue_record((stranger.engine.peer_id, RecordKind.LINKS), raw, NOW, 0.0)
    a.engine._pending_interfaces[interface(a)] = None
    air.run_for(10 * KEEPALIVE)
    assert established(a, b) and established(b, a)
    proofs = air.sent_by(a, MessageType.PROOF, short_id(b))
    records = air.sent_by(a, MessageType.RECORDS)
    assert proofs and records
    assert min(proofs) < min(records)  # the handshake first, though the records were queued first


def test_a_handshake_does_not_time_out_while_our_own_proof_waits_for_airtime() -> None:
    a, b = make_node("a"), make_node("b")
    air = Air([a, b])
    # So deep in debt that a's first frames wait longer than a medium's handshake timeout (ten
    # keepalives and the time two full cards take).
    rate = interface(a).budget.pace.rate
    assert rate is not None
    spend_pace(a, 15 * KEEPALIVE * rate)
    air.run_for(30 * KEEPALIVE)
    assert a.engine.stats["handshake.deadline_deferred"] >= 1
    assert a.engine.stats["links.handshake_timeout"] == 0
    assert established(a, b) and established(b, a)


def test_a_repeated_hello_is_answered_after_gaps_that_double() -> None:
    a, b = make_node("a"), make_node("b")
    # b's HELLO reaches a, a's PROOF never reaches b.
    air = Air([a, b], drop=lambda node, frame: node is a and frame_kind(frame) is MessageType.PROOF)
    air.run_for(KEEPALIVE, until=lambda: bool(air.sent_by(a, MessageType.PROOF)))
    hello = next(s.frame for s in air.log if s.sender == "b" and s.kind is MessageType.HELLO)
    # Now b's HELLO is heard again every half second (b resending it for other neighbours), for
    # as long as a's handshake with b lasts.
    start, now = air.now, air.now
    while now < start + a.engine.config.handshake_timeout - 1:
        a.engine.receive_on(RADIO, hello, now)
        a.engine.handle_timer(now)
        air.flush(a)
        now += 0.5
        air.now = now
    answers = air.sent_by(a, MessageType.PROOF, short_id(b))
    gap = interface(a).hello_gap(len(hello))
    # Answered once a gap, that would be one PROOF per gap; doubling, one per 1, 2, 4, ... gaps.
    assert len(answers) <= 1 + math.ceil(math.log2(1 + (now - start) / gap))
    assert a.engine.stats["handshake.repeated_hello"] > 4 * len(answers)


def test_after_a_timeout_a_neighbour_leaves_the_next_handshake_to_the_other_end_but_answers_it() -> None:
    a, b = make_node("a"), make_node("b")
    only_summaries = [True]  # at first, of b's frames only its SUMMARYs reach a
    air = Air(
        [a, b],
        drop=lambda node, frame: (
            node is b and only_summaries[0] and frame_kind(frame) is not MessageType.SUMMARY
        ),
    )
    interface(a).refuse(short_id(b), NOW, 0.5, answers_hello=True)  # as after a timed-out handshake
    air.run_for(KEEPALIVE, until=lambda: a.engine.stats["medium.refused_neighbour_heard"] >= 1)
    assert a.engine.stats["medium.refused_neighbour_heard"] >= 1  # b's SUMMARY was ignored ...
    assert not established(a, b)
    only_summaries[0] = False
    air.run_for(5 * KEEPALIVE)
    assert established(a, b) and established(b, a)  # ... and b's HELLO answered


def test_a_refused_neighbour_is_refused_for_half_to_one_and_a_half_pauses() -> None:
    iface = Interface(RADIO, SPEC, NOW, 0.01)
    pause = REFUSED_KEEPALIVES * KEEPALIVE
    for jitter, peer in ((0.0, b"one"), (0.999, b"two")):
        iface.refuse(peer, NOW, jitter)
        assert iface.refuses(peer, NOW + 0.5 * pause - 1, hello=True)
        assert iface.refuses(peer, NOW + (0.5 + jitter) * pause - 1, hello=False)
        assert not iface.refuses(peer, NOW + (0.5 + jitter) * pause + 1, hello=False)
    iface.refuse(b"slow", NOW, 0.5, answers_hello=True)
    assert iface.refuses(b"slow", NOW + 1, hello=False)
    assert not iface.refuses(b"slow", NOW + 1, hello=True)


def test_each_refusal_since_the_last_link_doubles_the_pause_up_to_a_bound() -> None:
    iface = Interface(RADIO, SPEC, NOW, 0.01)
    pause = REFUSED_KEEPALIVES * KEEPALIVE  # at jitter 0.5
    now = NOW
    for strikes in range(MAX_REFUSAL_DOUBLINGS + 3):
        iface.refuse(b"peer", now, 0.5)
        length = pause * 2 ** min(strikes, MAX_REFUSAL_DOUBLINGS)
        assert iface.refuses(b"peer", now + length - 1, hello=False)
        assert not iface.refuses(b"peer", now + length + 1, hello=False)
        now += length + 1
    iface.linked(b"peer")
    iface.refuse(b"peer", now, 0.5)
    assert not iface.refuses(b"peer", now + pause + 1, hello=False)  # one pause again


def test_one_digest_goes_from_an_interface_per_two_keepalives() -> None:
    iface = Interface(RADIO, SPEC, NOW, 0.01)
    assert iface.may_digest(NOW)
    assert not iface.may_digest(NOW + KEEPALIVE)
    assert iface.may_digest(NOW + 2 * KEEPALIVE)


def test_only_a_links_record_newer_than_the_link_says_a_neighbour_restarted() -> None:
    b, c = make_node("b"), make_node("c")
    # a holds b's links record from before their link (it lists nobody), and b's newer one,
    # which lists a, never reaches a.
    a = make_node("a", held_records=[b.engine.own_records[1].raw])
    air = Air([a, b], drop=lambda node, frame: node is b and frame_kind(frame) is MessageType.RECORDS)
    air.run_for(5 * KEEPALIVE)
    assert established(a, b)
    # A newcomer: b starts a HELLO round with a fresh nonce for it.
    air.nodes.append(c)
    c.engine.interface_up(RADIO, SPEC, air.now)
    air.run_for(5 * KEEPALIVE)
    assert a.engine.stats["medium.hello_for_others"] >= 1
    assert a.engine.stats["medium.neighbour_restarted"] == 0
    assert established(a, b)


def test_a_digest_still_waiting_for_airtime_is_dropped_once_the_neighbours_summary_matches() -> None:
    a, b, air = linked_and_synced()
    # a sends a DIGEST to b as if their summaries had differed, but its airtime is spent.
    spend_pace(a, 10 * KEEPALIVE * pace_rate(a), air.now)
    link = a.engine._links[MediumLink(RADIO, short_id(b))]
    a.engine._send_digest(link, air.now)
    mark = air.now
    air.run_for(3 * KEEPALIVE)
    assert a.engine.stats["sync.digests_dropped"] == 1  # b's SUMMARY matched: the DIGEST was moot
    assert not [t for t in air.sent_by(a, MessageType.DIGEST) if t >= mark]
    assert not link.outbox.has_output()


def test_records_still_queued_for_everyone_are_dropped_once_every_neighbours_summary_matches() -> None:
    a, _b, air = linked_and_synced()
    # An offer drawn by an old DIGEST, still waiting for a's spent airtime: b holds it already.
    spend_pace(a, 10 * KEEPALIVE * pace_rate(a), air.now)
    own_links = a.engine.own_records[1]
    interface(a).outbox.queue_record((a.engine.peer_id, RecordKind.LINKS), own_links.raw, air.now, 0.0)
    a.engine._pending_interfaces[interface(a)] = None
    mark = air.now
    air.run_for(3 * KEEPALIVE)
    assert a.engine.stats["records.moot_dropped"] == 1
    assert not [t for t in air.sent_by(a, MessageType.RECORDS) if t >= mark]
    assert not interface(a).outbox.has_output()


def test_a_neighbour_that_missed_a_flood_gets_the_record_within_a_few_frames_without_a_digest() -> None:
    a, b, air = linked_and_synced(step=0.05)
    lost = [0]

    def lose_the_first_records(node: Node, frame: bytes) -> bool:
        if node is a and frame_kind(frame) is MessageType.RECORDS and not lost[0]:
            lost[0] = 1
            return True
        return False

    air.drop = lose_the_first_records
    a.engine.set_card(make_card("a", "linux", "0.1.0", {"v": 2}), air.now)
    start = air.now
    air.run_for(KEEPALIVE, until=lambda: b.engine.summary == a.engine.summary)
    assert lost[0] and b.engine.summary == a.engine.summary
    frame = SPEC.airtime.airtime(SPEC.airtime.mtu)
    # a's early SUMMARY, b's answer, a's explained push: a few frames, not a keepalive.
    assert air.now - start < 8 * frame < KEEPALIVE / 10
    assert a.engine.stats["sync.gaps_explained"] >= 1
    assert not [t for node in (a, b) for t in air.sent_by(node, MessageType.DIGEST) if t >= start]


def test_a_peer_on_a_medium_signs_records_that_last_a_week_once_and_refreshes_them_a_day_ahead() -> None:
    node = make_node("a")
    engine = node.engine
    day = 24 * 3600.0
    assert all(r.expiry <= NOW + day for r in engine.own_records)  # the engine's default
    counters = [r.counter for r in engine.own_records]
    engine.interface_up(RADIO, SPEC, NOW)
    card, links = engine.own_records
    assert card.counter > counters[0] and links.counter > counters[1]  # signed again at once
    assert card.expiry >= NOW + MEDIUM_RECORD_TTL - 1 and links.expiry >= NOW + MEDIUM_RECORD_TTL - 1
    engine.interface_down(RADIO, NOW + 1)
    engine.interface_up(RADIO, SPEC, NOW + 2)
    assert engine.own_records[0] == card  # already lasting a week: nothing to sign again
    engine.handle_timer(NOW + MEDIUM_RECORD_TTL - MEDIUM_REFRESH_BEFORE - 60)
    assert engine.own_records[0] == card
    engine.handle_timer(NOW + MEDIUM_RECORD_TTL - MEDIUM_REFRESH_BEFORE + 1)
    assert engine.own_records[0].counter > card.counter  # refreshed a day ahead of expiry


def test_a_digest_on_a_medium_goes_one_frame_each_so_a_lost_frame_loses_only_its_range() -> None:
    others = [make_node(f"p{i}") for i in range(30)]
    a = make_node("a", held_records=[r.raw for n in others for r in n.engine.own_records])
    b = make_node("b")
    air = Air([a, b])
    air.run_for(10 * KEEPALIVE, until=lambda: established(a, b) and established(b, a))
    link = a.engine._links[MediumLink(RADIO, short_id(b))]
    entries = a.engine._held.digest_entries()
    assert len(entries) * DIGEST_ENTRY_BYTES > SPEC.mtu  # as one DIGEST, several frames
    link.outbox.drop_digests()
    a.engine._send_digest(link, air.now)
    messages = list(link.outbox._digests)
    assert len(messages) > 1 and all(len(m) + 1 <= link.outbox.frame_mtu for m in messages)
    # The ranges follow each other across the whole id space, and carry every entry a holds.
    digests = [decode_message(m)[1] for m in messages]
    assert digests[0][0] == bytes(8) and digests[-1][1] == b"\xff" * 8
    for (_, hi, _), (lo, _, _) in itertools.pairwise(digests):
        assert int.from_bytes(hi, "big") + 1 == int.from_bytes(lo, "big")
    assert b"".join(e for _, _, e in digests) == b"".join(entries)
