"""The parts of a broadcast interface (agent.core.medium), without an engine.

A frame on a medium names its sender and destination by 4-byte ids; a
medium's spec is checked when it comes up; a record heard from far is
rebroadcast sooner than one heard from near; one SUMMARY per keepalive is a
tenth of a 1 % allowance; the airtime budget keeps a reserve that only
keepalives may spend, and a pace that lets it burst half its hour and then
spreads the rest (a started message's later frames go on the ledgers alone,
leaving the pace in debt); a queued rebroadcast is cancelled once enough
copies were heard.
"""

from __future__ import annotations

import math

import pytest

from agent.core.airtime import LoRaModulation
from agent.core.media_limits import PACING_BURST_SHARE
from agent.core.medium import (
    DEAD_KEEPALIVES,
    DEFAULT_KEEPALIVE,
    EVERYONE,
    HELLO_RESEND_RATE_SHARE,
    KEEPALIVE_SPREAD,
    MEDIUM_HEADER_BYTES,
    AirtimeBudget,
    Interface,
    MediumSpec,
    medium_frame,
    parse_medium_frame,
    quiet_keepalive,
)
from agent.core.records import RecordKind
from agent.core.wire import WireError
from agent.transports.radio_settings import RadioSettings

SF7 = LoRaModulation()
SPEC = MediumSpec(SF7, keepalive_interval=60.0, dead_interval=180.0)


def test_a_medium_frame_is_sender_destination_and_the_link_frame() -> None:
    data = medium_frame(b"ABCD", EVERYONE, b"\x00frame")
    assert data == b"ABCD" + bytes(4) + b"\x00frame"
    assert parse_medium_frame(data) == (b"ABCD", EVERYONE, b"\x00frame")
    with pytest.raises(WireError, match="no room"):
        parse_medium_frame(b"ABCD" + bytes(4))


def test_link_frames_on_a_medium_leave_room_for_the_ids() -> None:
    assert SPEC.mtu == SF7.mtu - MEDIUM_HEADER_BYTES


@pytest.mark.parametrize(
    "bad",
    [
        {"keepalive_interval": 0.0},
        {"keepalive_interval": 60.0, "dead_interval": 60.0},
        {"rebroadcast_delay": (2.0, 1.0)},
        {"suppress_copies": 0},
    ],
)
def test_a_medium_spec_that_cannot_work_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MediumSpec(SF7, **bad)  # type: ignore[arg-type]


def test_far_receivers_rebroadcast_first_and_own_records_go_at_once() -> None:
    far, near = SPEC.rebroadcast_after(-14.0, 0.5), SPEC.rebroadcast_after(9.0, 0.5)
    low, high = SPEC.rebroadcast_window
    assert low <= far < near <= high
    assert SPEC.rebroadcast_after(None, 0.9) == low


@pytest.mark.parametrize("sf", range(7, 13))
def test_no_hour_holds_more_keepalives_than_eight_tenths_of_the_quiet_hour_goal(sf: int) -> None:
    model = LoRaModulation(sf=sf)
    keepalive = quiet_keepalive(model, 0.01)
    summary = model.airtime(MEDIUM_HEADER_BYTES + 12)
    goal = 0.1 * 0.01 * 3600  # a tenth of a 1 % allowance

    def most_in_an_hour(k: float) -> int:  # every interval drawn at its shortest
        return math.floor(3600 / (KEEPALIVE_SPREAD[0] * k)) + 1

    assert most_in_an_hour(keepalive) * summary <= 0.8 * goal
    assert most_in_an_hour(keepalive - 1) * summary > 0.8 * goal  # the shortest such


def test_the_default_keepalive_is_the_quiet_one_at_sf7() -> None:
    assert quiet_keepalive(SF7, 0.01) == DEFAULT_KEEPALIVE == MediumSpec(SF7).keepalive_interval
    assert RadioSettings().keepalive_interval == DEFAULT_KEEPALIVE
    assert RadioSettings().dead_interval == DEAD_KEEPALIVES * DEFAULT_KEEPALIVE


def test_a_burst_of_frames_never_spends_the_keepalive_reserve() -> None:
    budget = AirtimeBudget(SPEC)
    now, sent = 0.0, 0.0
    while budget.try_take(200, now):
        sent += SF7.airtime(200 + MEDIUM_HEADER_BYTES)
        now += 1.0
    presence = SPEC.allowance * SPEC.presence_share * SPEC.window
    assert sent < presence  # the burst stopped short of the presence share ...
    keepalives = 0
    while budget.try_keepalive(12, now):  # ... and the keepalives still go
        keepalives += 1
        now += 1.0
    assert keepalives >= 2 * SPEC.window / SPEC.keepalive_interval
    assert budget.used(now) <= presence + 1e-9


def test_a_queued_rebroadcast_is_cancelled_once_enough_copies_are_heard() -> None:
    interface = Interface("radio", SPEC, 0.0, 0.01)
    key = (b"\x01" * 8, RecordKind.LINKS)
    interface.outbox.queue_record(key, b"record", 0.0, 1.0)
    interface.queued(key)  # the copy that brought it is the first
    assert interface.heard_copy(key, b"record") is True  # a second copy: ours is not needed
    assert not interface.outbox.holds_record(key)


def test_the_pace_lets_half_the_hour_go_at_once_and_spreads_the_rest() -> None:
    budget = AirtimeBudget(SPEC)
    frame = SF7.airtime(100 + MEDIUM_HEADER_BYTES)
    hour = budget.general.allowance

    def sent_by(end: float, now: float, sent: float) -> tuple[float, float]:
        while now < end:
            if budget.try_take(100, now):
                sent += frame
            now += 1.0
        return now, sent

    now, burst = sent_by(60.0, 0.0, 0.0)  # as fast as it may, for a minute
    assert PACING_BURST_SHARE * hour - frame <= burst <= PACING_BURST_SHARE * hour + hour / 60 + frame
    _, total = sent_by(3600.0, now, burst)  # the rest of the hour
    assert total <= hour + 1e-9
    assert total >= hour - 2 * frame  # the pace holds nothing back over the hour


def test_a_started_messages_later_frames_pay_the_ledgers_and_leave_the_pace_in_debt() -> None:
    budget = AirtimeBudget(SPEC)
    now = 0.0
    while budget.try_take(200, now):
        now = budget.general.busy_until  # the radio sends one frame at a time
    assert budget.ready_at(200, now) > now  # the burst is spent ...
    assert budget.ready_at_rest(200, now) == now
    assert budget.try_take_rest(200, now)  # ... but a fragment of a message already started goes
    assert budget.pace.tokens < 0  # into debt, which delays the next message
    debt = -budget.pace.tokens
    assert budget.ready_at(200, now) >= now + debt / (budget.general.allowance / SPEC.window)


def test_hello_resends_may_burst_then_go_at_a_tenth_of_the_pace() -> None:
    interface = Interface("radio", SPEC, 0.0, 0.01)
    hello = 150
    airtime = interface.hello_airtime(hello)
    burst = 0
    while interface.may_resend_hello(hello, 0.0):
        burst += 1
    assert burst >= 1
    rate = interface.budget.pace.rate
    assert rate is not None
    later = sum(interface.may_resend_hello(hello, t) for t in range(1, 36_001))
    # Over ten hours, no more than a tenth of the pace's rate pays for (and the full share is used).
    earned = 36_000 * HELLO_RESEND_RATE_SHARE * rate / airtime
    assert int(earned) <= later <= int(earned) + 1  # (+1: what the burst left over)
