"""Specification of the duty-cycle ledger (agent.core.duty_cycle).

A transmitter may spend at most ``fraction * window`` seconds on the air in *any* window of
``window`` seconds (one hour by default): rolling, not clock hours. A transmission longer than the
dwell limit or than the whole allowance is refused with a typed error. The ledger answers when a
frame may go (``ready_at``/``wait_time``) exactly, and its memory stays bounded at any frame rate:
beyond ``max_entries`` the two oldest entries merge, conservatively. Presence traffic may get only a
share of the allowance, in a ledger of its own. The regions table holds the regulators' figures.

The checker here is independent of the ledger: exact rational arithmetic over the transmissions
actually recorded, every window that ends where a transmission ends (the windows that hold the
most, see the module docstring) and, as a cross-check, windows at many other offsets.
"""

from __future__ import annotations

import math
import random
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK, THOROUGH

from agent.core.duty_cycle import (
    EU868_G1,
    EU868_G2,
    EU868_G3,
    NONE,
    REGIONS,
    US915,
    DutyCycle,
    DutyCycleError,
    DwellTimeError,
    SharedAllowance,
    region_for,
)

HOUR = 3600.0


def window_load(sent: list[tuple[float, float]], left: Fraction, right: Fraction) -> Fraction:
    """Exact airtime of ``sent`` inside (left, right]."""
    total = Fraction(0)
    for start, airtime in sent:
        s, e = Fraction(start), Fraction(start) + Fraction(airtime)
        overlap = min(right, e) - max(left, s)
        if overlap > 0:
            total += overlap
    return total


def worst_window(sent: list[tuple[float, float]], window: float, extra_offsets: int = 0) -> Fraction:
    """The most airtime any window of ``window`` seconds holds (exact; ``sent`` in order, apart).

    One sweep over the windows ending where each transmission ends, with prefix sums; then
    ``extra_offsets`` windows at random offsets, checked directly, as a cross-check of the claim
    that those windows hold the most.
    """
    w = Fraction(window)
    starts = [Fraction(s) for s, _ in sent]
    airtimes = [Fraction(a) for _, a in sent]
    prefix = [Fraction(0)]
    for a in airtimes:
        prefix.append(prefix[-1] + a)
    worst, j = Fraction(0), 0
    for k in range(len(sent)):
        left = starts[k] + airtimes[k] - w
        while starts[j] + airtimes[j] <= left:
            j += 1
        load = prefix[k + 1] - prefix[j] - max(Fraction(0), left - starts[j])
        worst = max(worst, load)
    if sent and extra_offsets:
        rng = random.Random(len(sent))
        lo, hi = starts[0] - w, starts[-1] + airtimes[-1]
        for _ in range(extra_offsets):
            right = lo + (hi - lo) * Fraction(rng.random())
            assert window_load(sent, right - w, right) <= worst
    return worst


# ---------------------------------------------------------------- the allowance


def test_one_percent_of_an_hour_is_36_seconds_in_any_window() -> None:
    ledger = DutyCycle(0.01)
    assert ledger.allowance == pytest.approx(36.0)
    now = 0.0
    for _ in range(35):
        assert ledger.can_send(now, 1.0)
        ledger.record(now, 1.0)
        now += 1.0
    assert ledger.used(now) == pytest.approx(35.0)
    assert ledger.can_send(now, 0.99)
    assert not ledger.can_send(now, 1.0)  # the allowance keeps 1 ns in hand


def test_the_window_rolls_it_does_not_reset_on_the_hour() -> None:
    ledger = DutyCycle(0.01)
    ledger.record(3590.0, 30.0)  # ends at 3620, across a clock hour
    assert not ledger.can_send(3620.0, 6.5)  # a clock-hour counter would have let this go
    assert ledger.can_send(3620.0, 5.9)
    # A 30 s frame fits once at most 6 s of [3590, 3620) are left in the window it would end:
    # its left edge at 3614, so it starts at 3614 + 3600 - 30.
    assert ledger.ready_at(3620.0, 30.0) == pytest.approx(3614.0 + HOUR - 30.0, abs=1e-6)


def test_airtime_leaves_the_window_exactly_as_the_window_slides_past_it() -> None:
    ledger = DutyCycle(0.01)
    ledger.record(0.0, 20.0)
    ledger.record(100.0, 16.0)
    assert ledger.used(100.0 + 16.0) == pytest.approx(36.0)
    # A 4 s frame needs 4 s of the first transmission to have left (0, 4) + the slack.
    at = ledger.ready_at(200.0, 4.0)
    assert at + 4.0 - HOUR == pytest.approx(4.0, abs=1e-6)
    assert ledger.can_send(at, 4.0)
    assert not ledger.can_send(at - 1e-6, 4.0)
    assert ledger.wait_time(200.0, 4.0) == pytest.approx(at - 200.0)
    assert 200.0 + ledger.wait_time(200.0, 4.0) >= at


def test_used_counts_partial_overlaps_and_the_transmission_under_way() -> None:
    ledger = DutyCycle(0.1, window=100.0)
    ledger.record(10.0, 4.0)
    assert ledger.used(12.0) == pytest.approx(2.0)  # half sent so far
    assert ledger.used(14.0) == pytest.approx(4.0)
    assert ledger.used(112.0) == pytest.approx(2.0)  # (12, 112]: the second half only
    assert ledger.used(114.0) == 0.0
    assert ledger.remaining(14.0) == pytest.approx(6.0)


def test_a_radio_sends_one_frame_at_a_time() -> None:
    ledger = DutyCycle(1.0, window=10.0)
    ledger.record(0.0, 2.0)
    assert ledger.busy_until == 2.0
    assert not ledger.can_send(1.0, 0.1)
    assert ledger.ready_at(1.0, 0.1) == 2.0
    assert ledger.wait_time(1.0, 0.1) == 1.0
    with pytest.raises(DutyCycleError, match=re.escape("overlaps the previous one, which ends at 2.0")):
        ledger.record(1.5, 0.1)
    ledger.record(2.0, 0.1)  # back to back is fine


def test_what_may_go_now_waits_zero() -> None:
    ledger = DutyCycle(0.01)
    assert ledger.ready_at(5.0, 1.0) == 5.0
    assert ledger.wait_time(5.0, 1.0) == 0.0


# ---------------------------------------------------------------- refusals


def test_a_frame_longer_than_the_dwell_limit_is_refused_with_what_to_do() -> None:
    ledger = US915.ledger()
    assert ledger.can_send(0.0, 0.4)
    for ask in (ledger.can_send, ledger.ready_at, ledger.wait_time, ledger.record):
        with pytest.raises(DwellTimeError, match="400 ms dwell limit: send a shorter frame"):
            ask(0.0, 0.41)


def test_a_frame_longer_than_the_whole_allowance_is_refused() -> None:
    ledger = DutyCycle(0.001, window=1000.0)  # 1 s per 1000 s
    with pytest.raises(DwellTimeError, match=re.escape("exceeds the whole allowance of 1.000 s")):
        ledger.ready_at(0.0, 1.5)
    assert issubclass(DwellTimeError, DutyCycleError)
    assert issubclass(DutyCycleError, ValueError)


@pytest.mark.parametrize(
    ("args", "says"),
    [((0.0,), "fraction in \\(0, 1\\]"), ((1.5,), "1 % is 0.01"), ((0.01, 0.0), "window of 0.0 s")],
)
def test_a_ledger_that_cannot_mean_anything_is_refused(args: tuple[float, ...], says: str) -> None:
    with pytest.raises(DutyCycleError, match=says):
        DutyCycle(*args)
    with pytest.raises(DutyCycleError, match="dwell limit of -1"):
        DutyCycle(0.01, dwell=-1.0)
    with pytest.raises(DutyCycleError, match="positive time"):
        DutyCycle(0.01).can_send(0.0, 0.0)


# ---------------------------------------------------------------- never exceeded, bounded


@given(
    fraction=st.sampled_from([0.001, 0.01, 0.1, 0.5]),
    steps=st.lists(st.tuples(st.floats(0.0, 60.0), st.floats(0.001, 3.0), st.booleans()), max_size=60),
)
@THOROUGH
def test_no_window_ever_holds_more_than_the_allowance(
    fraction: float, steps: list[tuple[float, float, bool]]
) -> None:
    window = 600.0
    ledger = DutyCycle(fraction, window=window)
    sent: list[tuple[float, float]] = []
    now = 0.0
    for gap, airtime, wait in steps:
        now += gap
        if airtime > ledger.allowance / 2:
            continue
        if wait:  # a sender that waits for its turn
            now = ledger.ready_at(now, airtime)
        if ledger.can_send(now, airtime):
            ledger.record(now, airtime)
            sent.append((now, airtime))
            now += airtime
    assert worst_window(sent, window, extra_offsets=20) <= Fraction(ledger.allowance)


@given(
    airtime=st.floats(0.01, 2.0),
    prior=st.lists(st.tuples(st.floats(0.0, 50.0), st.floats(0.01, 2.0)), max_size=20),
    at=st.floats(0.0, 2000.0),
)
@QUICK
def test_ready_at_is_the_earliest_time_the_ledger_permits(
    airtime: float, prior: list[tuple[float, float]], at: float
) -> None:
    ledger = DutyCycle(0.01, window=300.0)  # 3 s per 300 s
    now = 0.0
    for gap, a in prior:
        now = ledger.ready_at(now + gap, a)
        ledger.record(now, a)
        now += a
    query = now + at
    ready = ledger.ready_at(query, airtime)
    assert ready >= query
    assert ledger.can_send(ready, airtime)
    if ready > query + 1e-6:
        assert not ledger.can_send(ready - 1e-6, airtime)


def test_a_greedy_sender_gets_the_whole_allowance_and_no_more() -> None:
    ledger = DutyCycle(0.01)
    sent = []
    now, airtime = 0.0, 0.1027  # SF7 frames of 51 bytes
    while now < 4 * HOUR:
        now = ledger.ready_at(now, airtime)
        ledger.record(now, airtime)
        sent.append((now, airtime))
        now += airtime
    assert worst_window(sent, HOUR, extra_offsets=50) <= Fraction(36)
    assert ledger.used(now) >= 36.0 - airtime  # never more than a frame of allowance left unused
    assert len(sent) == pytest.approx(4 * 36 / airtime, rel=0.01)


def test_memory_stays_bounded_at_any_frame_rate_and_merging_never_permits_more() -> None:
    ledger = DutyCycle(0.5, window=10.0, max_entries=16)
    rng = random.Random(7)
    sent = []
    now = 0.0
    for _ in range(3000):
        airtime = rng.uniform(0.001, 0.05)
        now = ledger.ready_at(now + rng.uniform(0.0, 0.02), airtime)
        ledger.record(now, airtime)
        sent.append((now, airtime))
        now += airtime
        assert len(ledger) <= 16
    assert worst_window(sent, 10.0, extra_offsets=50) <= Fraction(ledger.allowance)
    # Conservative, not wasteful: the sender still got most of its allowance.
    assert sum(a for _, a in sent) >= 0.8 * 0.5 * (now - sent[0][0])


def test_old_entries_are_dropped_once_no_window_can_hold_them() -> None:
    ledger = DutyCycle(0.01, window=100.0)
    for i in range(50):
        ledger.record(10.0 * i, 0.01)
    assert len(ledger) <= 11


# ---------------------------------------------------------------- the presence share


def test_presence_traffic_gets_half_the_allowance_by_default_and_the_rest_stays_free() -> None:
    budget = SharedAllowance(DutyCycle(0.01, window=1000.0))  # 10 s, of which presence 5 s
    assert budget.presence.allowance == pytest.approx(5.0)
    now = 0.0
    while budget.can_send(now, 0.5):
        budget.record(now, 0.5)
        now += 0.5
    assert budget.presence.used(now) == pytest.approx(4.5)  # 5 s less the slack: nine frames
    assert budget.can_send(now, 0.5, presence=False)  # applications keep their half
    while budget.can_send(now, 0.5, presence=False):
        budget.record(now, 0.5, presence=False)
        now += 0.5
    assert budget.total.used(now) == pytest.approx(9.5)
    assert not budget.can_send(now, 0.5)
    at = budget.ready_at(now, 0.5)
    assert budget.can_send(at, 0.5)
    assert at >= budget.presence.ready_at(now, 0.5)


def test_a_share_that_cannot_mean_anything_is_refused() -> None:
    with pytest.raises(DutyCycleError, match=re.escape("half is 0.5")):
        SharedAllowance(DutyCycle(0.01), share=0.0)


# ---------------------------------------------------------------- regions


def test_the_regions_hold_the_regulators_figures() -> None:
    assert (EU868_G1.duty_cycle, EU868_G1.low_hz, EU868_G1.high_hz) == (0.01, 868.0e6, 868.6e6)
    assert (EU868_G2.duty_cycle, EU868_G2.low_hz, EU868_G2.high_hz) == (0.001, 868.7e6, 869.2e6)
    assert (EU868_G3.duty_cycle, EU868_G3.low_hz, EU868_G3.high_hz) == (0.10, 869.4e6, 869.65e6)
    assert (US915.duty_cycle, US915.dwell) == (1.0, 0.4)
    assert (NONE.duty_cycle, NONE.dwell) == (1.0, None)
    assert EU868_G1.ledger().allowance == pytest.approx(36.0)
    assert EU868_G3.ledger().allowance == pytest.approx(360.0)
    assert set(REGIONS) == {"EU868 g1", "EU868 g2", "EU868 g3", "US915", "none"}
    assert all(r.source for r in REGIONS.values())


def test_a_frequency_finds_its_band() -> None:
    assert region_for(868.1e6) is EU868_G1  # LoRaWAN's default channels
    assert region_for(869.525e6) is EU868_G3  # LoRaWAN's RX2, Meshtastic's EU_868
    assert region_for(915.0e6) is US915
    with pytest.raises(DutyCycleError, match=r"2412\.000 MHz is in no band"):
        region_for(2412e6)
    assert not NONE.contains(2412e6)


def test_without_a_duty_cycle_only_the_radio_being_busy_holds_a_frame() -> None:
    ledger = NONE.ledger()
    now = 0.0
    for _ in range(1000):
        assert ledger.ready_at(now, 0.0025) == now
        ledger.record(now, 0.0025)
        now += 0.0025
    assert math.isclose(ledger.used(now), 2.5)
