"""Specification of anti-entropy between two linked peers (agent.core.sync), alone.

Rules covered: the first summary mismatch on a link sends a DIGEST at once;
later ones only after two consecutive mismatches, a keepalive interval
without RECORDS, and ``min_interval`` since the last DIGEST; a match resets
the count. :func:`digest_messages` splits sorted entries into DIGESTs whose
``[lo, hi]`` ranges are contiguous and cover the whole id space, carrying
every entry exactly once, each within the room of its MTU.
:func:`records_to_offer` pushes back what the sender lacks or holds older,
in range only.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.limits import MIN_LINK_MTU
from agent.core.records import Links, Record, RecordKind
from agent.core.sync import SyncState, digest_messages, records_to_offer
from agent.core.wire import DIGEST_ENTRY_BYTES, Digest, digest_entry, frames_for, max_message_bytes

KEEPALIVE = 1.0
MIN_INTERVAL = 5.0
ID_LOW, ID_HIGH = b"\x00" * 8, b"\xff" * 8
CARD, LINKS = RecordKind.CARD, RecordKind.LINKS


def sync_state() -> SyncState:
    return SyncState(KEEPALIVE, MIN_INTERVAL)


def after_first_digest(at: float = 0.0) -> SyncState:
    s = sync_state()
    assert s.on_summary(False, at)
    s.digest_sent(at)
    return s


# ---------------------------------------------------------------- when to send a DIGEST


def test_the_first_mismatch_on_a_link_sends_a_digest_at_once() -> None:
    assert sync_state().on_summary(False, 0.0) is True


def test_on_a_medium_the_first_digest_waits_for_a_second_mismatch_in_a_row() -> None:
    s = SyncState(KEEPALIVE, MIN_INTERVAL, first_at_once=False)
    assert s.on_summary(False, 0.0) is False  # an explained push may repair it for a frame
    assert s.on_summary(True, 1.0) is False  # it did: the count starts again
    assert s.on_summary(False, 2.0) is False
    assert s.on_summary(False, 3.0) is True


def test_a_matching_summary_never_sends_a_digest() -> None:
    s = sync_state()
    assert s.on_summary(True, 0.0) is False
    assert s.mismatches == 0


def test_after_a_digest_one_mismatch_is_not_enough() -> None:
    s = after_first_digest()
    assert s.on_summary(False, 100.0) is False


def test_after_a_digest_two_consecutive_mismatches_on_a_quiet_link_send_another() -> None:
    s = after_first_digest()
    assert s.on_summary(False, 100.0) is False
    assert s.on_summary(False, 101.0) is True


def test_a_match_between_mismatches_resets_the_count() -> None:
    s = after_first_digest()
    s.on_summary(False, 100.0)
    s.on_summary(True, 101.0)
    assert s.on_summary(False, 102.0) is False
    assert s.on_summary(False, 103.0) is True


def test_records_received_within_a_keepalive_hold_the_digest_back() -> None:
    s = after_first_digest()
    s.on_summary(False, 100.0)
    s.last_record_rx = 100.5
    assert s.on_summary(False, 100.5 + KEEPALIVE - 0.01) is False  # records may still be in flight
    assert s.on_summary(False, 100.5 + KEEPALIVE) is True


def test_no_digest_within_min_interval_of_the_last() -> None:
    s = after_first_digest(at=10.0)
    s.last_record_rx = 0.0
    for t in (11.0, 12.0, 13.0, 14.9):
        assert s.on_summary(False, t) is False
    assert s.on_summary(False, 10.0 + MIN_INTERVAL) is True


def test_sending_a_digest_resets_the_mismatch_count() -> None:
    s = after_first_digest()
    s.on_summary(False, 100.0)
    s.on_summary(False, 101.0)
    s.digest_sent(101.0)
    assert s.mismatches == 0
    assert s.digest_sent_at == 101.0


# ---------------------------------------------------------------- splitting a digest


def pid(n: int) -> bytes:
    return n.to_bytes(8, "big")


@st.composite
def entry_lists(draw: st.DrawFn, two_kinds: bool = True) -> list[bytes]:
    """Sorted digest entries as a holding makes them: at most one per (peer id, kind)."""
    ids = draw(st.lists(st.integers(0, 2**64 - 1), max_size=60, unique=True))
    kinds = [CARD, LINKS] if two_kinds else [CARD]
    entries = [
        digest_entry(pid(n), kind, draw(st.integers(0, 2**32 - 1)))
        for n in ids
        for kind in kinds
        if draw(st.booleans()) or kind is CARD
    ]
    return sorted(entries)


mtus = st.sampled_from([MIN_LINK_MTU, 64, 255, 1400])
#: Small caps force many splits with few entries.
digest_caps = st.sampled_from([13, 26, 39, 100, 8192])


def room(mtu: int, cap: int) -> int:
    return min(cap, max_message_bytes(mtu) - 40)


def entries_of(message: Digest) -> list[bytes]:
    return [message.entries[i : i + DIGEST_ENTRY_BYTES] for i in range(0, len(message.entries), 13)]


@QUICK
@given(entries=entry_lists(), mtu=mtus, cap=digest_caps)
def test_digests_carry_every_entry_exactly_once_in_order(entries: list[bytes], mtu: int, cap: int) -> None:
    messages = digest_messages(entries, mtu, cap)
    assert [e for m in messages for e in entries_of(m)] == entries


@QUICK
@given(entries=entry_lists(), mtu=mtus, cap=digest_caps)
def test_digest_ranges_are_contiguous_and_cover_the_whole_id_space(
    entries: list[bytes], mtu: int, cap: int
) -> None:
    messages = digest_messages(entries, mtu, cap)
    assert messages[0].lo == ID_LOW
    assert messages[-1].hi == ID_HIGH
    for one, nxt in itertools.pairwise(messages):
        assert int.from_bytes(one.hi, "big") + 1 == int.from_bytes(nxt.lo, "big")


@QUICK
@given(entries=entry_lists(), mtu=mtus, cap=digest_caps)
def test_every_digest_fits_its_room_and_its_link(entries: list[bytes], mtu: int, cap: int) -> None:
    for message in digest_messages(entries, mtu, cap):
        assert len(message.entries) <= max(2 * DIGEST_ENTRY_BYTES, room(mtu, cap))  # one peer whole
        encoded = message.encode()
        assert len(encoded) <= max_message_bytes(mtu)
        assert all(len(frame) <= mtu for frame in frames_for(encoded, mtu, 0))


@QUICK
@given(entries=entry_lists(two_kinds=False), mtu=mtus, cap=digest_caps)
def test_with_one_record_per_peer_every_entry_lies_in_its_digests_range(
    entries: list[bytes], mtu: int, cap: int
) -> None:
    for message in digest_messages(entries, mtu, cap):
        assert message.lo <= message.hi
        assert all(message.lo <= e[:8] <= message.hi for e in entries_of(message))


def test_no_entries_make_one_empty_digest_over_everything() -> None:
    assert digest_messages([], 1400, 8192) == [Digest(ID_LOW, ID_HIGH, b"")]


def test_entries_that_fit_go_in_one_digest() -> None:
    entries = [digest_entry(pid(n), CARD, 1) for n in (5, 9, 200)]
    assert digest_messages(entries, 1400, 8192) == [Digest(ID_LOW, ID_HIGH, b"".join(entries))]


def test_a_split_starts_the_next_range_at_its_first_entrys_peer() -> None:
    entries = [digest_entry(pid(n), CARD, 1) for n in (5, 9, 200, 300)]
    first, second = digest_messages(entries, 1400, 2 * DIGEST_ENTRY_BYTES)
    assert (first.lo, first.hi) == (ID_LOW, pid(199))
    assert (second.lo, second.hi) == (pid(200), ID_HIGH)


#: Three peers holding a card and a links record each, three entries per DIGEST:
#: a split after the third entry falls between peer 2's card and its links record.
BOTH_KINDS = sorted(digest_entry(pid(n), kind, 1) for n in (1, 2, 3) for kind in (CARD, LINKS))


def test_a_split_never_falls_between_one_peers_entries() -> None:
    for message in digest_messages(BOTH_KINDS, 1400, 3 * DIGEST_ENTRY_BYTES):
        assert message.lo <= message.hi
        assert all(message.lo <= e[:8] <= message.hi for e in entries_of(message))


def test_a_holder_of_exactly_the_senders_records_offers_nothing_back() -> None:
    held = [((pid(n), kind), record(n, kind, 1)) for n in (1, 2, 3) for kind in (CARD, LINKS)]
    offered = [
        r
        for m in digest_messages(BOTH_KINDS, 1400, 3 * DIGEST_ENTRY_BYTES)
        for r in records_to_offer(m, held)
    ]
    assert offered == []


# ---------------------------------------------------------------- what to push back


def record(n: int, kind: RecordKind, counter: int) -> Record:
    """A held record of peer ``pid(n)`` (records_to_offer reads only its key and counter)."""
    return Record(
        kind, pid(n) + b"k" * 24, counter, 2_000_000_000, Links(()), b"raw-%d-%d-%d" % (n, kind, counter)
    )


def holding(*specs: tuple[int, RecordKind, int]) -> list[tuple[tuple[bytes, RecordKind], Record]]:
    return [((pid(n), kind), record(n, kind, counter)) for n, kind, counter in specs]


def digest(lo: int, hi: int, *entries: tuple[int, RecordKind, int]) -> Digest:
    return Digest(pid(lo), pid(hi), b"".join(digest_entry(pid(n), kind, c) for n, kind, c in sorted(entries)))


def offered(
    message: Digest, held: list[tuple[tuple[bytes, RecordKind], Record]]
) -> set[tuple[int, RecordKind]]:
    return {(int.from_bytes(p, "big"), kind) for (p, kind), _ in records_to_offer(message, held)}


def test_records_the_sender_lacks_are_offered() -> None:
    held = holding((3, CARD, 1), (3, LINKS, 1), (4, CARD, 1))
    assert offered(digest(0, 10, (3, CARD, 1)), held) == {(3, LINKS), (4, CARD)}


def test_records_the_sender_holds_older_are_offered_its_own_included() -> None:
    held = holding((3, CARD, 5), (4, CARD, 2))
    assert offered(digest(0, 10, (3, CARD, 4), (4, CARD, 2)), held) == {(3, CARD)}


def test_records_the_sender_holds_as_new_or_newer_are_not_offered() -> None:
    held = holding((3, CARD, 5), (4, LINKS, 2))
    assert offered(digest(0, 10, (3, CARD, 5), (4, LINKS, 9)), held) == set()


def test_only_records_within_the_digests_range_are_offered_bounds_included() -> None:
    held = holding((2, CARD, 1), (3, CARD, 1), (7, CARD, 1), (8, CARD, 1))
    assert offered(digest(3, 7), held) == {(3, CARD), (7, CARD)}


def test_the_offer_is_the_held_record_itself() -> None:
    held = holding((3, CARD, 2))
    assert records_to_offer(digest(0, 10), held) == held
