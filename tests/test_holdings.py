"""Specification of the held records (agent.core.holdings), alone.

Rules covered: one record per (peer id, kind), the newest counter wins; the
admission checks reject with their :class:`RejectReason` (key_mismatch,
stale, expired at the given wall time); what a record lacks to fit is a place
(a new peer at ``max_peers``) and the bytes over ``max_bytes``; the byte index finds a
held record by its exact bytes only; the summary is the XOR of every held
record's ``summary_hash``, whatever the order or history; remote changes are
dirty until taken (records to save, keys to delete); :meth:`Holdings.expired`
uses the wall time it is given; :meth:`Holdings.put` reports a lost claim only
when a previously claimed connection disappears; unused keys are dropped.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK, key_pair

from agent.core.errors import RecordError
from agent.core.holdings import RECENT_CHANGES, Holdings, Shortfall
from agent.core.keys import peer_id
from agent.core.reasons import RejectReason
from agent.core.records import (
    ConnectionType,
    Envelope,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    make_card,
    open_record,
    sign_record,
)
from agent.core.wire import digest_entry

EXPIRY = 2_000_000_000
WALL = 1_800_000_000.0
LOCAL = 1
BT = ConnectionType.BLUETOOTH
LAN = ConnectionType.ACCESS_POINT


def public(seed: int) -> bytes:
    return key_pair(seed)[1]


def pid(seed: int) -> bytes:
    return peer_id(public(seed))


@functools.cache
def card(seed: int, counter: int = 1, expiry: int = EXPIRY) -> Record:
    private, pub = key_pair(seed)
    return sign_record(private, pub, counter, expiry, make_card(f"peer-{seed}", "linux", "0.1", {}))


@functools.cache
def links(
    seed: int,
    counter: int = 1,
    to: tuple[tuple[int, ConnectionType, int | None], ...] = (),
    expiry: int = EXPIRY,
) -> Record:
    private, pub = key_pair(seed)
    body = Links(tuple(LinkEntry(pid(n), kind, dist) for n, kind, dist in to))
    return sign_record(private, pub, counter, expiry, body)


def envelope(record: Record) -> Envelope:
    return open_record(record.raw)


def holdings(max_peers: int = 100, max_bytes: int = 1 << 20) -> Holdings:
    return Holdings(public(LOCAL), max_peers, max_bytes)


def reason_of(check: object, *args: object) -> RejectReason | None:
    assert callable(check)
    try:
        check(*args)
    except RecordError as exc:
        return exc.reason
    return None


def xor_summary(records: Sequence[Record]) -> bytes:
    value = 0
    for record in records:
        value ^= record.summary_hash
    return value.to_bytes(8, "big")


# ---------------------------------------------------------------- newest wins


def test_an_empty_holding_knows_only_the_local_key() -> None:
    held = holdings()
    assert len(held) == 0
    assert held.keys == {pid(LOCAL): public(LOCAL)}
    assert held.summary == bytes(8)


def test_put_holds_one_record_per_peer_and_kind() -> None:
    held = holdings()
    held.put(card(2))
    held.put(links(2))
    held.put(card(3))
    assert len(held) == 3
    assert held.get(pid(2), RecordKind.CARD) == card(2)
    assert held.get(pid(2), RecordKind.LINKS) == links(2)
    assert held.get(pid(3), RecordKind.LINKS) is None


def test_a_newer_counter_replaces_the_held_record() -> None:
    held = holdings()
    held.put(card(2, 1))
    assert reason_of(held.check, envelope(card(2, 2)), WALL, len(card(2, 2).raw)) is None
    held.put(card(2, 2))
    assert held.get(pid(2), RecordKind.CARD) == card(2, 2)
    assert len(held) == 1


@pytest.mark.parametrize("counter", [1, 4, 5], ids=["older", "older-still", "equal"])
def test_a_counter_not_above_the_held_one_is_stale(counter: int) -> None:
    held = holdings()
    held.put(card(2, 5))
    stale = card(2, counter)
    assert reason_of(held.check, envelope(stale), WALL, len(stale.raw)) is RejectReason.STALE


def test_staleness_is_per_kind() -> None:
    held = holdings()
    held.put(card(2, 5))
    assert reason_of(held.check, envelope(links(2, 1)), WALL, len(links(2, 1).raw)) is None


def test_a_record_expiring_at_or_before_the_wall_time_is_expired() -> None:
    held = holdings()
    at = card(2, 1, expiry=int(WALL))
    assert reason_of(held.check, envelope(at), WALL, len(at.raw)) is RejectReason.EXPIRED
    assert reason_of(held.check, envelope(at), WALL - 0.5, len(at.raw)) is None


def test_stale_is_checked_before_expired() -> None:
    held = holdings()
    held.put(card(2, 5))
    old_and_expired = card(2, 3, expiry=int(WALL) - 10)
    size = len(old_and_expired.raw)
    assert reason_of(held.check, envelope(old_and_expired), WALL, size) is RejectReason.STALE


def test_a_new_peer_beyond_max_peers_lacks_a_place() -> None:
    held = holdings(max_peers=3)  # the local peer counts: room for two remote peers
    held.put(card(2))
    assert held.room_needed(pid(3), RecordKind.CARD, 100) is None
    held.put(card(3))
    assert held.room_needed(pid(4), RecordKind.CARD, 100) == Shortfall(place=True, bytes=0)
    # Room is not a reason to refuse: check says what the record lacks, the engine decides.
    assert reason_of(held.check, envelope(card(4)), WALL, len(card(4).raw)) is None
    assert held.check(envelope(card(4)), WALL, 100) == Shortfall(place=True, bytes=0)
    assert held.check(envelope(card(3, 2)), WALL, 100) is None  # a held peer's newer card


def test_a_held_peer_never_lacks_a_place() -> None:
    held = holdings(max_peers=3)
    held.put(card(2))
    held.put(card(3))
    assert held.room_needed(pid(3), RecordKind.CARD, 100) is None
    assert held.room_needed(pid(3), RecordKind.LINKS, 100) is None  # known key, other kind


def test_remote_records_beyond_max_bytes_lack_the_bytes_over() -> None:
    first, second = card(2), card(3)
    held = holdings(max_bytes=len(first.raw) + len(second.raw))
    held.put(card(LOCAL))  # the local peer's own records do not count
    held.put(first)
    assert held.held_bytes == len(first.raw)
    assert held.room_needed(pid(3), RecordKind.CARD, len(second.raw)) is None
    held.put(second)
    assert held.room_needed(pid(4), RecordKind.CARD, 10) == Shortfall(place=False, bytes=10)
    # A replacement needs only what it adds.
    assert held.room_needed(pid(2), RecordKind.CARD, len(first.raw) + 3) == Shortfall(False, 3)
    assert held.check(envelope(card(2, 2)), WALL, len(first.raw) + 3) == Shortfall(False, 3)  # the same
    assert held.room_needed(pid(2), RecordKind.CARD, len(first.raw) - 3) is None
    held.forget(pid(2), RecordKind.CARD)
    assert held.held_bytes == len(second.raw)


def test_evicting_a_peer_drops_its_records_and_key() -> None:
    held = holdings()
    held.put(card(2))
    held.put(links(2))
    held.put(card(3))
    assert held.evict(pid(2)) is True  # it had a links record
    assert held.records_of(public(2)) == []
    assert pid(2) not in held.keys and pid(2) not in held.claims
    assert held.evict(pid(3)) is False
    assert held.peer_sizes() == {}
    assert held.held_bytes == 0


def test_another_key_for_a_held_peer_id_is_a_key_mismatch() -> None:
    held = holdings()
    held.put(card(2))
    impostor = envelope(card(2, 2))._replace(public_key=pid(2) + b"\x00" * 24)
    assert reason_of(held.check, impostor, WALL, 0) is RejectReason.KEY_MISMATCH
    assert reason_of(held.check, envelope(card(2, 2)), WALL, len(card(2, 2).raw)) is None
    assert reason_of(held.check, envelope(card(3)), WALL, len(card(3).raw)) is None


def test_another_key_for_the_local_peer_id_is_a_key_mismatch() -> None:
    held = holdings()
    impostor = envelope(card(2))._replace(public_key=pid(LOCAL) + b"\x00" * 24, peer_id=pid(LOCAL))
    assert reason_of(held.check, impostor, WALL, 0) is RejectReason.KEY_MISMATCH


def test_records_of_and_card_of_need_the_exact_key() -> None:
    held = holdings()
    held.put(links(2))
    held.put(card(2))
    assert held.records_of(public(2)) == [card(2), links(2)]  # card first
    assert held.card_of(public(2)) == card(2)
    other = pid(2) + b"\x00" * 24
    assert held.records_of(other) == []
    assert held.card_of(other) is None
    assert held.card_of(None) is None


# ---------------------------------------------------------------- the byte index


def test_the_byte_index_finds_a_held_record_by_its_exact_bytes() -> None:
    held = holdings()
    held.put(card(2))
    assert held.key_of_raw(card(2).raw) == (pid(2), RecordKind.CARD)
    assert held.key_of_raw(card(2).raw + b"\x00") is None


def test_the_byte_index_forgets_replaced_and_forgotten_records() -> None:
    held = holdings()
    held.put(card(2, 1))
    held.put(card(2, 2))
    assert held.key_of_raw(card(2, 1).raw) is None
    assert held.key_of_raw(card(2, 2).raw) == (pid(2), RecordKind.CARD)
    assert held.forget(pid(2), RecordKind.CARD)
    assert held.key_of_raw(card(2, 2).raw) is None


# ---------------------------------------------------------------- the summary

Spec = tuple[int, RecordKind, int]


def build(spec: Spec) -> Record:
    seed, kind, counter = spec
    return card(seed, counter) if kind is RecordKind.CARD else links(seed, counter)


record_specs = st.lists(
    st.tuples(st.integers(2, 7), st.sampled_from(RecordKind), st.integers(1, 4)),
    max_size=12,
    unique_by=lambda t: (t[0], t[1]),
)
record_pool = record_specs.map(lambda specs: [build(s) for s in specs])


@QUICK
@given(records=record_pool, seed=st.integers(0, 2**16))
def test_the_summary_is_the_xor_of_held_hashes_in_any_order(records: list[Record], seed: int) -> None:
    one, other = holdings(), holdings()
    for record in records:
        one.put(record)
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    for record in shuffled:
        other.put(record)
    assert one.summary == other.summary == xor_summary(records)


@QUICK
@given(specs=record_specs)
def test_equal_holdings_have_equal_summaries_whatever_the_history(specs: list[Spec]) -> None:
    direct, via_old = holdings(), holdings()
    for seed, kind, counter in specs:
        direct.put(build((seed, kind, counter)))
        via_old.put(build((seed, kind, 0)))  # an older version first, then the one held
        via_old.put(build((seed, kind, counter)))
    via_old.put(card(9))
    via_old.forget(pid(9), RecordKind.CARD)
    assert direct.summary == via_old.summary


@QUICK
@given(records=record_pool)
def test_forgetting_everything_brings_the_summary_back_to_zero(records: list[Record]) -> None:
    held = holdings()
    for record in records:
        held.put(record)
    for (p, kind), _ in list(held):
        held.forget(p, kind)
    assert held.summary == bytes(8)


def test_the_local_peers_records_count_in_the_summary() -> None:
    held = holdings()
    held.put(card(LOCAL))
    assert held.summary == xor_summary([card(LOCAL)])


def test_digest_entries_are_sorted_and_name_every_held_record() -> None:
    held = holdings()
    for record in (links(3, 2), card(2, 4), card(3, 1), links(2, 1)):
        held.put(record)
    entries = held.digest_entries()
    assert entries == sorted(entries)
    assert set(entries) == {
        digest_entry(r.peer_id, r.kind, r.counter) for r in (links(3, 2), card(2, 4), card(3, 1), links(2, 1))
    }


# ---------------------------------------------------------------- dirty


def test_remote_records_are_dirty_until_taken() -> None:
    held = holdings()
    held.put(card(2, 1))
    held.put(card(2, 2))
    held.put(links(3))
    saved, deleted = held.take_dirty()
    assert sorted(saved) == sorted([card(2, 2).raw, links(3).raw])  # only the newest of a key
    assert deleted == []
    assert held.take_dirty() == ([], [])


def test_the_local_peers_records_are_never_dirty() -> None:
    held = holdings()
    held.put(card(LOCAL))
    held.put(links(LOCAL))
    assert held.take_dirty() == ([], [])


def test_a_forgotten_record_is_a_deletion_by_public_key_and_kind() -> None:
    held = holdings()
    held.put(links(2))
    held.take_dirty()
    assert held.forget(pid(2), RecordKind.LINKS) is True
    assert held.take_dirty() == ([], [(public(2), int(RecordKind.LINKS))])


def test_put_then_forget_before_taking_is_only_a_deletion_and_the_reverse_only_a_save() -> None:
    held = holdings()
    held.put(card(2))
    held.forget(pid(2), RecordKind.CARD)
    assert held.take_dirty() == ([], [(public(2), int(RecordKind.CARD))])
    held.put(card(2, 2))
    held.forget(pid(2), RecordKind.CARD)
    held.put(card(2, 3))
    assert held.take_dirty() == ([card(2, 3).raw], [])


def test_forgetting_what_is_not_held_changes_nothing() -> None:
    held = holdings()
    assert held.forget(pid(2), RecordKind.CARD) is False
    assert held.take_dirty() == ([], [])


# ---------------------------------------------------------------- expiry


def test_expired_lists_remote_records_expiring_at_or_before_the_given_wall_time() -> None:
    held = holdings()
    held.put(card(2, expiry=1000))
    held.put(links(2, expiry=2000))
    held.put(card(3, expiry=3000))
    held.put(card(LOCAL, expiry=10))  # the local peer's own: never listed
    assert held.expired(999.0) == []
    assert held.expired(1000.0) == [(pid(2), RecordKind.CARD)]
    assert sorted(held.expired(2500.0)) == sorted([(pid(2), RecordKind.CARD), (pid(2), RecordKind.LINKS)])
    assert len(held.expired(1e12)) == 3


# ---------------------------------------------------------------- claims


def test_the_first_links_record_of_a_peer_loses_no_claim() -> None:
    held = holdings()
    assert held.put(links(2, 1, ((3, BT, 10),))) is False
    assert held.claims[pid(2)] == {(pid(3), 1): 10}
    assert held.neighbours_claimed_by(pid(2)) == (pid(3),)


def test_a_links_record_that_adds_or_remeasures_claims_loses_none() -> None:
    held = holdings()
    held.put(links(2, 1, ((3, BT, 10),)))
    assert held.put(links(2, 2, ((3, BT, 20), (4, LAN, None)))) is False
    assert held.neighbours_claimed_by(pid(2)) == (pid(3), pid(4))


def test_a_links_record_dropping_a_claimed_connection_reports_the_loss() -> None:
    held = holdings()
    held.put(links(2, 1, ((3, BT, 10), (4, LAN, None))))
    assert held.put(links(2, 2, ((4, LAN, None),))) is True
    assert held.neighbours_claimed_by(pid(2)) == (pid(4),)


def test_a_connection_changing_type_is_a_lost_claim() -> None:
    held = holdings()
    held.put(links(2, 1, ((3, BT, None),)))
    assert held.put(links(2, 2, ((3, LAN, None),))) is True


def test_an_empty_links_record_after_an_empty_one_loses_nothing() -> None:
    held = holdings()
    held.put(links(2, 1))
    assert held.put(links(2, 2)) is False


def test_cards_and_the_local_peers_links_never_report_a_lost_claim() -> None:
    held = holdings()
    assert held.put(card(2)) is False
    held.put(links(LOCAL, 1, ((2, BT, None),)))
    assert held.put(links(LOCAL, 2)) is False
    assert pid(LOCAL) not in held.claims


def test_forgetting_a_links_record_forgets_its_claims() -> None:
    held = holdings()
    held.put(links(2, 1, ((3, BT, None),)))
    held.forget(pid(2), RecordKind.LINKS)
    assert pid(2) not in held.claims
    assert held.neighbours_claimed_by(pid(2)) == ()
    assert held.put(links(2, 2)) is False  # nothing was claimed any more


# ---------------------------------------------------------------- keys


def test_drop_unused_keys_forgets_peers_without_records_but_never_the_local_one() -> None:
    held = holdings()
    held.put(card(2))
    held.put(card(3))
    held.put(links(3))
    held.forget(pid(2), RecordKind.CARD)
    held.forget(pid(3), RecordKind.CARD)
    assert pid(2) in held.keys  # kept until dropped
    held.drop_unused_keys()
    assert held.keys == {pid(LOCAL): public(LOCAL), pid(3): public(3)}


def test_a_dropped_key_frees_a_place() -> None:
    held = holdings(max_peers=2)
    held.put(card(2))
    assert held.room_needed(pid(3), RecordKind.CARD, 100) == Shortfall(place=True, bytes=0)
    held.forget(pid(2), RecordKind.CARD)
    held.drop_unused_keys()
    assert held.room_needed(pid(3), RecordKind.CARD, 100) is None


def test_in_range_gives_the_held_records_of_peer_ids_in_the_range_in_order() -> None:
    held = holdings()
    for seed in range(2, 12):
        held.put(card(seed))
        if seed % 2:
            held.put(links(seed))
    everything = sorted(held, key=lambda item: (item[0][0], item[0][1]))
    lo, hi = pid(4), pid(9)
    assert list(held.in_range(lo, hi)) == [item for item in everything if lo <= item[0][0] <= hi]
    held.forget(pid(5), RecordKind.CARD)
    held.put(card(30))
    assert list(held.in_range(pid(5), pid(5))) == [
        ((pid(5), RecordKind.LINKS), held.get(pid(5), RecordKind.LINKS))
    ]
    assert list(held.in_range(b"\x00" * 8, b"\xff" * 8)) == sorted(held, key=lambda item: item[0])


# ---------------------------------------------------------------- explaining another summary


def test_a_summary_that_lacks_one_recent_record_is_explained_by_it() -> None:
    h = holdings()
    for seed in (1, 2, 3):
        h.put(card(seed))
    theirs = h.summary
    h.put(card(2, counter=2))  # a flood they missed
    assert h.explain(theirs) == [(pid(2), RecordKind.CARD)]
    assert h.explain(h.summary) == []


def test_two_missed_records_or_one_record_changed_twice_are_explained() -> None:
    h = holdings()
    h.put(card(1))
    h.put(links(1))
    theirs = h.summary
    h.put(links(2))  # new to them
    h.put(card(1, counter=2))
    assert sorted(h.explain(theirs)) == sorted([(pid(2), RecordKind.LINKS), (pid(1), RecordKind.CARD)])
    h.put(card(1, counter=3))
    assert h.explain(xor_summary([card(1, counter=1), links(1), links(2)])) == [(pid(1), RecordKind.CARD)]


def test_a_summary_that_holds_something_we_lack_is_not_explained() -> None:
    h = holdings()
    h.put(card(1))
    h.put(card(2))
    assert h.explain(xor_summary([card(1), card(2), card(3)])) == []  # they are ahead: a DIGEST's job
    assert h.explain(xor_summary([card(1, counter=2), card(2)])) == []
    h.put(card(3))
    assert h.explain(bytes(8)) == []  # holding nothing: three changes behind, more than two


def test_only_the_recent_puts_are_tried() -> None:
    h = holdings()
    h.put(card(1))
    h.put(card(2))
    later = range(3, 3 + RECENT_CHANGES)
    for seed in later:
        h.put(card(seed))
    theirs = xor_summary([card(1), *(card(s) for s in later)])  # all but card(2)
    assert h.explain(theirs) == []  # card(2)'s put has left the window
