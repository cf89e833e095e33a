"""Specification of one link's outgoing side (agent.core.outbox), alone.

Rules covered: control messages go before links records, before DIGESTs,
before cards; records batch Nagle-like (the first is due at once, a busy
link waits ``flood_delay`` after its last RECORDS, a keepalive does not
count); a RECORDS message never exceeds one frame unless it carries one
record bigger than a frame, which is fragmented; the send budget holds over
every window (at most ``rate * t + capacity``), ``wake_at`` is when the next
frame becomes affordable and draining then sends it; :meth:`Outbox.drop_record`
and :meth:`Outbox.clear_data`; a control message or DIGEST still waiting is
not queued twice; a message whose first frame the budget paid sends the rest
with it (``try_take_rest``), a control message goes before the rest of one
already cut, and a control-only drain sends nothing else; :func:`transfer_time`
bounds what the budget needs for a message.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.linkspec import LinkSpec
from agent.core.outbox import Outbox, transfer_time
from agent.core.records import ConnectionType, RecordKind
from agent.core.wire import (
    FRAGMENT_HEADER_BYTES,
    FRAME_FRAGMENT,
    FRAME_WHOLE,
    Digest,
    Message,
    Records,
    Summary,
    frames_for,
    parse_message,
)

NOW = 1000.0
DELAY = 0.5
LAN = LinkSpec(ConnectionType.ACCESS_POINT)
CARD, LINKS = RecordKind.CARD, RecordKind.LINKS

SUMMARY = Summary(b"s" * 8).encode()
DIGEST = Digest(b"\x00" * 8, b"\xff" * 8, b"").encode()


def key(n: int, kind: RecordKind = LINKS) -> tuple[bytes, RecordKind]:
    return (bytes([n]) * 8, kind)


def raw(n: int, size: int = 40) -> bytes:
    return (b"%03d" % n + b"r" * size)[:size]


def outbox(spec: LinkSpec = LAN, now: float = NOW, delay: float = DELAY) -> Outbox:
    return Outbox(spec, now, delay)


def messages(frames: list[bytes]) -> list[Message]:
    """The messages a list of frames carries, reassembled by hand."""
    out: list[Message] = []
    parts: list[bytes] = []
    for frame in frames:
        if frame[0] == FRAME_WHOLE:
            assert not parts
            out.append(parse_message(frame[1:]))
            continue
        assert frame[0] == FRAME_FRAGMENT
        parts.append(frame[FRAGMENT_HEADER_BYTES:])
        if frame[2] == frame[3] - 1:
            out.append(parse_message(b"".join(parts)))
            parts = []
    assert not parts
    return out


# ---------------------------------------------------------------- priorities


def test_control_goes_before_links_records_before_digests_before_cards() -> None:
    box = outbox()
    box.queue_record(key(1, CARD), raw(1), NOW)
    box.send_digests([DIGEST])
    box.queue_record(key(2, LINKS), raw(2), NOW)
    box.send_control(SUMMARY)
    assert messages(box.drain(NOW)) == [
        Summary(b"s" * 8),
        Records((raw(2),)),
        parse_message(DIGEST),
        Records((raw(1),)),
    ]
    assert not box.has_output()


def test_control_messages_keep_their_order() -> None:
    box = outbox()
    for n in range(3):
        box.send_control(Summary(bytes([n]) * 8).encode())
    assert messages(box.drain(NOW)) == [Summary(bytes([n]) * 8) for n in range(3)]


def test_a_resend_that_finds_its_twin_still_waiting_adds_nothing() -> None:
    # A medium whose airtime is spent: every resend timer would otherwise add a copy per round.
    box = Outbox(LinkSpec(ConnectionType.RADIO, mtu=200, bytes_per_second=1.0, burst_bytes=200), NOW, DELAY)
    box.send_control(bytes(199))  # one whole frame that takes the whole burst: nothing else goes now
    assert len(box.drain(NOW)) == 1
    for _ in range(50):
        box.send_control(SUMMARY)
        box.send_digests([DIGEST])
    assert box.drain(NOW) == []
    later = box.drain(NOW + 10_000)
    assert messages(later) == [parse_message(SUMMARY), parse_message(DIGEST)]


def test_digests_not_yet_cut_can_be_dropped_and_nothing_else_is() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.send_control(SUMMARY)
    box.send_digests([DIGEST, Digest(b"\x00" * 8, b"\x7f" * 8, b"").encode()])
    assert box.drop_digests() == 2
    assert box.drop_digests() == 0
    assert messages(box.drain(NOW)) == [Summary(b"s" * 8), Records((raw(1),))]


def test_a_control_message_sent_again_after_it_left_goes_again() -> None:
    box = outbox()
    box.send_control(SUMMARY)
    assert len(box.drain(NOW)) == 1
    box.send_control(SUMMARY)
    assert len(box.drain(NOW)) == 1


def test_a_newer_version_of_a_queued_record_replaces_it() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.queue_record(key(1), raw(2), NOW)
    assert messages(box.drain(NOW)) == [Records((raw(2),))]


def test_digests_go_out_while_records_wait_for_their_delay() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.drain(NOW)
    box.queue_record(key(2), raw(2), NOW + 0.1)
    box.send_digests([DIGEST])
    assert messages(box.drain(NOW + 0.1)) == [parse_message(DIGEST)]
    assert box.wake_at == NOW + DELAY


# ---------------------------------------------------------------- Nagle-like batching


def test_the_first_record_on_an_idle_link_is_due_at_once() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    assert box.records_due == NOW
    assert not box.only_records_waiting(NOW)
    assert messages(box.drain(NOW)) == [Records((raw(1),))]


def test_a_link_that_never_sent_records_sends_at_once_whatever_the_clock() -> None:
    box = outbox(now=0.0, delay=2.0)
    box.queue_record(key(1), raw(1), 0.0)
    assert box.records_due == 0.0


def test_a_busy_link_waits_flood_delay_after_its_last_records() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.drain(NOW)
    box.queue_record(key(2), raw(2), NOW + 0.1)
    box.queue_record(key(3), raw(3), NOW + 0.2)
    assert box.only_records_waiting(NOW + 0.2)
    assert box.drain(NOW + 0.2) == []
    assert box.wake_at == NOW + DELAY
    assert messages(box.drain(NOW + DELAY)) == [Records((raw(2), raw(3)))]  # the burst shares a frame


def test_a_link_quiet_for_flood_delay_sends_at_once_again() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.drain(NOW)
    box.queue_record(key(2), raw(2), NOW + DELAY + 0.1)
    assert box.records_due == NOW + DELAY + 0.1


def test_a_keepalive_just_sent_does_not_delay_records() -> None:
    box = outbox()
    box.send_control(SUMMARY)
    box.drain(NOW)
    box.queue_record(key(1), raw(1), NOW + 0.01)
    assert box.records_due == NOW + 0.01
    box.drain(NOW + 0.01)  # last RECORDS now at NOW + 0.01
    box.send_control(SUMMARY)
    box.drain(NOW + 0.4)
    box.queue_record(key(2), raw(2), NOW + 0.45)
    assert box.records_due == NOW + 0.01 + DELAY  # from the RECORDS, not the keepalive


# ---------------------------------------------------------------- RECORDS packing


@QUICK
@given(
    mtu=st.integers(32, 1500),
    sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=20),
)
def test_records_messages_fit_one_frame_unless_one_record_is_bigger(mtu: int, sizes: list[int]) -> None:
    box = outbox(LinkSpec(ConnectionType.BLUETOOTH, mtu=mtu))
    queued = {key(n): raw(n, size) for n, size in enumerate(sizes)}
    for k, r in queued.items():
        box.queue_record(k, r, NOW)
    frames = box.drain(NOW)
    assert all(len(frame) <= mtu for frame in frames)
    sent = messages(frames)
    assert all(isinstance(m, Records) for m in sent)
    assert sorted(r for m in sent for r in m.records) == sorted(queued.values())  # type: ignore[union-attr]
    whole = [frame for frame in frames if frame[0] == FRAME_WHOLE]
    assert len(whole) + sum(1 for f in frames if f[0] == FRAME_FRAGMENT and f[2] == 0) == len(sent)
    for m in sent:
        assert isinstance(m, Records)
        if len(m.encode()) + 1 > mtu:  # fragmented: a single record that cannot fit a frame
            assert len(m.records) == 1


def test_small_records_share_a_frame_up_to_the_mtu() -> None:
    mtu = 255
    box = outbox(LinkSpec(ConnectionType.RADIO, mtu=mtu))
    for n in range(20):
        box.queue_record(key(n), raw(n, 60), NOW)
    frames = box.drain(NOW)
    assert all(frame[0] == FRAME_WHOLE and len(frame) <= mtu for frame in frames)
    assert [len(m.records) for m in messages(frames)] == [3] * 6 + [2]  # type: ignore[union-attr]


def test_a_record_bigger_than_a_frame_goes_alone_fragmented() -> None:
    mtu = 64
    box = outbox(LinkSpec(ConnectionType.RADIO, mtu=mtu))
    box.queue_record(key(1), raw(1, 300), NOW)
    box.queue_record(key(2), raw(2, 10), NOW)
    frames = box.drain(NOW)
    assert all(len(frame) <= mtu for frame in frames)
    assert frames[0][0] == FRAME_FRAGMENT
    assert messages(frames) == [Records((raw(1, 300),)), Records((raw(2, 10),))]


class OneMessageAtATime:
    """A medium's pace, reduced to its rule: ``firsts`` messages may start (``try_take``), and a
    started message's later frames always go (``try_take_rest``: the ledgers, never short here)."""

    def __init__(self, firsts: int) -> None:
        self.firsts = firsts

    def try_take(self, cost: float, now: float) -> bool:
        if self.firsts <= 0:
            return False
        self.firsts -= 1
        return True

    def ready_at(self, cost: float, now: float) -> float:
        return now + 10.0

    def try_take_rest(self, cost: float, now: float) -> bool:
        return True

    def ready_at_rest(self, cost: float, now: float) -> float:
        return now


RADIO64 = LinkSpec(ConnectionType.RADIO, mtu=64)


def test_a_started_message_goes_whole_and_the_next_waits_for_the_budget() -> None:
    box = Outbox(RADIO64, NOW, DELAY, OneMessageAtATime(firsts=1))
    box.queue_record(key(1, CARD), raw(1, 300), NOW)  # a card of five fragments
    box.queue_record(key(2, CARD), raw(2, 10), NOW)
    frames = box.drain(NOW)
    assert messages(frames) == [Records((raw(1, 300),))]
    assert box.starved and box.wake_at == NOW + 10.0


def test_a_control_message_goes_before_the_rest_of_a_message_already_cut() -> None:
    budget = OneMessageAtATime(firsts=0)
    box = Outbox(RADIO64, NOW, DELAY, budget)
    box.queue_record(key(1, CARD), raw(1, 300), NOW)
    assert box.drain(NOW) == [] and box.starved  # the card is cut, and waits
    box.send_control(SUMMARY)
    assert box.control_waiting()
    budget.firsts = 1
    assert messages(box.drain(NOW + 10)) == [Summary(b"s" * 8)]  # the PROOF's case: it does not wait
    budget.firsts = 1
    assert messages(box.drain(NOW + 20)) == [Records((raw(1, 300),))]


def test_a_digest_cut_and_waiting_for_the_budget_can_be_dropped() -> None:
    box = Outbox(RADIO64, NOW, DELAY, OneMessageAtATime(firsts=0))
    box.send_digests([DIGEST])
    assert box.drain(NOW) == [] and box.starved  # cut, and waiting for airtime
    assert box.drop_digests() == 1 and not box.has_output()


def test_queued_records_can_be_dropped_a_cut_one_waiting_too_and_nothing_else() -> None:
    box = Outbox(RADIO64, NOW, DELAY, OneMessageAtATime(firsts=0))
    box.queue_record(key(1, CARD), raw(1, 30), NOW)
    assert box.drain(NOW + DELAY) == [] and box.starved  # cut, and waiting for airtime
    box.queue_record(key(2), raw(2), NOW)
    box.send_digests([DIGEST])
    assert box.drop_records() == 2
    assert box.has_output() and box.drop_digests() == 1 and not box.has_output()


def test_a_control_only_drain_leaves_everything_else_queued() -> None:
    box = outbox()
    box.send_digests([DIGEST])
    box.queue_record(key(1), raw(1), NOW)
    box.send_control(SUMMARY)
    assert messages(box.drain(NOW, control_only=True)) == [Summary(b"s" * 8)]
    assert not box.control_waiting() and box.has_output() and not box.starved
    assert messages(box.drain(NOW)) == [Records((raw(1),)), parse_message(DIGEST)]


# ---------------------------------------------------------------- the send budget


def budget_spec(rate: float, burst: int | None, overhead: int, mtu: int) -> LinkSpec:
    return LinkSpec(
        ConnectionType.RADIO, mtu=mtu, bytes_per_second=rate, burst_bytes=burst, frame_overhead_bytes=overhead
    )


def capacity_of(spec: LinkSpec) -> float:
    return float(max(spec.burst_bytes or 0, spec.mtu + spec.frame_overhead_bytes))


@QUICK
@given(
    rate=st.floats(5.0, 5000.0),
    burst=st.one_of(st.none(), st.integers(0, 3000)),
    overhead=st.integers(0, 20),
    mtu=st.integers(32, 600),
    sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=12),
    steps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=40),
)
def test_frames_never_exceed_rate_times_t_plus_capacity_over_any_window(
    rate: float, burst: int | None, overhead: int, mtu: int, sizes: list[int], steps: list[float]
) -> None:
    spec = budget_spec(rate, burst, overhead, mtu)
    box = outbox(spec, delay=0.0)
    for size in sizes:
        box.send_control(b"\x81" + b"c" * size)  # the outbox never parses control messages
    sent: list[tuple[float, int]] = []
    now = NOW
    for step in steps:
        # Drain at arbitrary times and, half the time, exactly when the outbox asked to wake.
        now = box.wake_at if box.wake_at is not None and step < 1.0 else now + step
        sent.extend((now, len(frame) + overhead) for frame in box.drain(now))
    capacity = capacity_of(spec)
    for (i, (start, _)), (j, (end, _)) in itertools.combinations_with_replacement(enumerate(sent), 2):
        window = sum(cost for _, cost in sent[i : j + 1])
        assert window <= rate * (end - start) + capacity + 0.011 + 1e-9 * window


@QUICK
@given(
    rate=st.floats(1.0, 5000.0),
    overhead=st.integers(0, 20),
    mtu=st.integers(32, 600),
    sizes=st.lists(st.integers(1, 1500), min_size=2, max_size=8),
)
def test_draining_at_wake_at_always_sends_the_waiting_frame(
    rate: float, overhead: int, mtu: int, sizes: list[int]
) -> None:
    box = outbox(budget_spec(rate, None, overhead, mtu), delay=0.0)
    for size in sizes:
        box.send_control(b"\x81" + b"c" * size)
    now = NOW
    box.drain(now)
    while box.has_output():
        assert box.wake_at is not None and box.wake_at > now
        now = box.wake_at
        assert box.drain(now) != []


def test_wake_at_is_exactly_when_the_next_frame_becomes_affordable() -> None:
    spec = budget_spec(10.0, None, 0, 100)  # capacity: one 100-byte frame
    box = outbox(spec)
    box.send_control(b"\x81" + b"a" * 98)  # a 100-byte whole frame
    box.send_control(b"\x81" + b"b" * 98)
    assert len(box.drain(NOW)) == 1
    assert box.wake_at == pytest.approx(NOW + 10.0)
    assert box.drain(NOW + 10.0 - 0.01) == []  # 99.9 bytes of budget: not yet
    assert box.wake_at == pytest.approx(NOW + 10.0)
    assert len(box.drain(NOW + 10.0)) == 1
    assert box.wake_at is None


def test_every_frame_pays_the_links_per_frame_overhead() -> None:
    spec = budget_spec(10.0, None, 20, 100)  # capacity 120: one 100-byte frame and its overhead
    box = outbox(spec)
    box.send_control(b"\x81" + b"a" * 98)
    box.send_control(b"\x81" + b"b" * 8)  # a 10-byte frame costs 30
    assert len(box.drain(NOW)) == 1
    assert box.wake_at == pytest.approx(NOW + 3.0)


def test_the_budget_holds_at_least_one_full_frame_whatever_the_burst() -> None:
    spec = budget_spec(1.0, 10, 13, 255)
    box = outbox(spec)
    box.send_control(b"\x81" + b"a" * 253)  # a full 255-byte frame
    assert len(box.drain(NOW)) == 1


def test_an_unlimited_link_sends_everything_at_once() -> None:
    box = outbox()
    for n in range(50):
        box.send_control(b"\x81" + b"c" * 1000 + bytes([n]))
    assert len(box.drain(NOW)) == 50
    assert box.wake_at is None


def test_wake_at_is_the_records_due_time_when_only_records_wait() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.drain(NOW)
    box.queue_record(key(2), raw(2), NOW + 0.1)
    box.drain(NOW + 0.1)
    assert box.wake_at == NOW + DELAY


# ---------------------------------------------------------------- drop_record and clear_data


def test_drop_record_unqueues_a_record_of_either_kind() -> None:
    box = outbox()
    box.queue_record(key(1, LINKS), raw(1), NOW)
    box.queue_record(key(2, CARD), raw(2), NOW)
    assert box.drop_record(key(1, LINKS)) is True
    assert box.drop_record(key(2, CARD), raw(2)) is True
    assert not box.has_output()
    assert box.drain(NOW) == []


def test_drop_record_with_other_bytes_keeps_the_newer_queued_one() -> None:
    box = outbox()
    box.queue_record(key(1), raw(2), NOW)
    assert box.drop_record(key(1), raw(1)) is False
    assert messages(box.drain(NOW)) == [Records((raw(2),))]


def test_drop_record_of_nothing_queued_is_false() -> None:
    box = outbox()
    assert box.drop_record(key(1)) is False
    box.queue_record(key(1, CARD), raw(1), NOW)
    assert box.drop_record(key(1, LINKS)) is False  # same peer, other kind


def test_clear_data_forgets_records_and_digests_but_keeps_control() -> None:
    box = outbox()
    box.queue_record(key(1), raw(1), NOW)
    box.queue_record(key(2, CARD), raw(2), NOW)
    box.send_digests([DIGEST])
    box.send_control(SUMMARY)
    box.clear_data()
    assert box.has_output()
    assert messages(box.drain(NOW)) == [Summary(b"s" * 8)]
    assert not box.has_output()


# ---------------------------------------------------------------- transfer_time


def test_transfer_time_is_zero_on_an_unlimited_link() -> None:
    assert transfer_time(LAN, 10_000) == 0.0


@pytest.mark.parametrize("size", [1, 100, 251, 252, 4096])
def test_transfer_time_covers_the_frames_of_a_message_of_that_size(size: int) -> None:
    spec = budget_spec(6.4, None, 13, 255)
    frames = frames_for(b"m" * size, spec.mtu, 0)
    cost = sum(len(frame) + spec.frame_overhead_bytes for frame in frames)
    assert transfer_time(spec, size) * 6.4 >= cost
    full_frames = -(-size // (spec.mtu - FRAGMENT_HEADER_BYTES))
    assert transfer_time(spec, size) == pytest.approx((size + full_frames * (4 + 1 + 13)) / 6.4)
