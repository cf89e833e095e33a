"""Specification of this peer's own records (agent.core.own_records), alone.

Rules covered: expiry is the wall clock plus the TTL and every signature takes
a new counter; the links body is one entry per (peer id, type), capped at 64
(the links given first, oldest established first, are kept) and sorted, the
rest counted as unlisted; an unchanged, fresh links record is
not re-signed, a stale or forced one is; the links re-sign is throttled on the
leading edge; refresh is due within ``refresh_before`` of expiry and its timer
converts wall expiry with the given offset; only a higher counter of our own
is lost state, and recovery moves the counters past it.
"""

from __future__ import annotations

import pytest
from strategies import key_pair

from agent.core.limits import MAX_CONNECTIONS_PER_RECORD
from agent.core.own_records import OwnRecords, links_record
from agent.core.records import ConnectionType, LinkEntry, Links, RecordKind, make_card, open_record
from agent.state.store import MemoryCounter

WALL = 1_800_000_000.0
TTL = 1000.0
REFRESH = 250.0
DEBOUNCE = 0.05
BT, LAN = ConnectionType.BLUETOOTH, ConnectionType.ACCESS_POINT


def own(counters: MemoryCounter | None = None) -> OwnRecords:
    private, public = key_pair(1)
    return OwnRecords(
        private,
        public,
        counters or MemoryCounter(),
        record_ttl=TTL,
        refresh_before=REFRESH,
        links_debounce=DEBOUNCE,
        card=make_card("pi", "Linux", "0.1.0", {}),
        wall=WALL,
    )


def entry(n: int, kind: ConnectionType = BT, dm: int | None = None) -> LinkEntry:
    return LinkEntry(bytes([n]) * 8, kind, dm)


def test_records_expire_ttl_after_the_wall_clock_and_each_takes_a_new_counter() -> None:
    records = own()
    assert records.card.expiry == int(WALL + TTL) and records.links.expiry == int(WALL + TTL)
    first = records.card.counter
    again = records.sign_card(make_card("pi", "Linux", "0.1.0", {"room": 7}), WALL + 5)
    assert again.counter > max(first, records.links.counter)
    assert again.expiry == int(WALL + 5 + TTL)
    assert records.card_body.metadata == {"room": 7}


def test_the_links_body_is_one_entry_per_peer_and_type_sorted_by_id_then_type_name() -> None:
    links, unlisted = links_record([entry(3), entry(1, LAN), entry(1), entry(3, dm=20)])
    assert [(e.peer_id[0], e.connection_type) for e in links.entries] == [(1, LAN), (1, BT), (3, BT)]
    assert links.entries[2].distance_dm == 20  # the later claim of the same (peer, type) wins
    assert unlisted == 0


def test_the_links_body_lists_at_most_64_and_counts_the_rest() -> None:
    links, unlisted = links_record([entry(n) for n in range(MAX_CONNECTIONS_PER_RECORD + 6)])
    assert len(links.entries) == MAX_CONNECTIONS_PER_RECORD and unlisted == 6


def test_the_links_body_keeps_the_links_given_first_so_a_newcomer_never_displaces_one() -> None:
    oldest_first = [entry(200), entry(201), *(entry(n) for n in range(MAX_CONNECTIONS_PER_RECORD + 6))]
    links, unlisted = links_record(oldest_first)
    ids = [e.peer_id[0] for e in links.entries]
    assert 200 in ids and 201 in ids and unlisted == 8
    assert ids == sorted(ids)  # the kept ones, sorted inside the record


def test_an_unchanged_fresh_links_record_is_not_resigned_a_stale_or_forced_one_is() -> None:
    records = own()
    body = Links((entry(2),))
    signed = records.sign_links(body, 1.0, WALL)
    assert signed is not None and signed.body == body
    assert records.sign_links(body, 2.0, WALL) is None
    assert records.sign_links(body, 3.0, WALL, force=True) is not None
    stale_wall = records.links.expiry - REFRESH
    assert records.sign_links(body, 4.0, stale_wall) is not None


def test_the_links_resign_is_throttled_on_the_leading_edge() -> None:
    records = own()
    records.links_changed(10.0)
    assert records.links_due_at == 10.0  # a quiet spell before: at once
    assert records.take_links_due(10.0) and not records.take_links_due(10.0)
    records.sign_links(Links((entry(2),)), 10.0, WALL)
    records.links_changed(10.01)
    assert records.links_due_at == pytest.approx(10.0 + DEBOUNCE)  # a burst waits the debounce
    assert not records.take_links_due(10.02)
    assert records.take_links_due(10.0 + DEBOUNCE)


def test_refresh_is_due_within_refresh_before_of_expiry_in_wall_time() -> None:
    records = own()
    expiry = records.card.expiry
    assert records.stale(expiry - REFRESH - 1) == (False, False)
    assert records.stale(expiry - REFRESH) == (True, True)
    # Monotonic time 100 is wall WALL: the timer lands where the wall clock reaches the threshold.
    offset = WALL - 100.0
    assert records.refresh_at(offset) == pytest.approx(expiry - REFRESH - offset)


def test_only_a_higher_counter_of_our_own_is_lost_state() -> None:
    counters = MemoryCounter()
    records = own(counters)
    mine = open_record(records.card.raw)
    assert not records.lost_state(mine)
    newer = open_record(records.sign_card(records.card_body, WALL).raw)
    records.sign_card(records.card_body, WALL)  # ours moves on: the copy is old now
    assert not records.lost_state(newer)
    ahead = newer._replace(counter=records.card.counter + 100)
    assert records.lost_state(ahead) and ahead.kind is RecordKind.CARD
    records.advance_past(ahead.counter)
    assert records.sign_card(records.card_body, WALL).counter > ahead.counter
