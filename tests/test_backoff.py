"""Specification of exponential back-off (agent.core.backoff).

The n-th consecutive failure waits ``min(maximum, initial * 2^(n-1))`` times a random
factor in ``[low, low + jitter]``; the random draw and all times are passed in. A tracker
keeps the failures and the earliest retry time per key, forgets a key on success, never
moves a hold earlier, and holds at most ``max_keys`` keys, forgetting the oldest first.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.backoff import DEFAULT_MAX_KEYS, Backoff, BackoffTracker, unit_from_bytes

ENGINE = Backoff(1.0, 300.0, jitter=0.5)  # deny back-off: delay * (1 + U[0, 0.5])
LAN = Backoff(0.5, 30.0, jitter=0.5)  # dial back-off: delay * (1 + U[0, 0.5])
MQTT = Backoff(1.0, 60.0, jitter=0.5, low=0.5)  # reconnect: delay * U[0.5, 1]

# ---------------------------------------------------------------- the policy


def test_the_delay_doubles_from_initial_and_stops_at_maximum() -> None:
    assert [LAN.base(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert [ENGINE.base(n) for n in (1, 2, 9, 10, 100)] == [1, 2, 256, 300, 300]


def test_a_huge_attempt_count_stays_at_maximum_without_overflowing() -> None:
    assert ENGINE.base(10**6) == 300.0
    assert Backoff(1e-300, 1e300).base(5000) == 1e300


def test_the_jitter_factor_spans_low_to_low_plus_jitter() -> None:
    assert ENGINE.delay(3, 0.0) == 4.0
    assert ENGINE.delay(3, 1.0) == 6.0
    assert MQTT.delay(3, 0.0) == 2.0
    assert MQTT.delay(3, 1.0) == 4.0
    assert Backoff(2.0, 8.0, jitter=0.0).delay(2, 0.7) == 4.0


@given(attempt=st.integers(1, 40), unit=st.floats(0.0, 1.0))
@QUICK
def test_every_wait_lies_within_its_jitter_bounds(attempt: int, unit: float) -> None:
    for policy in (ENGINE, LAN, MQTT):
        base = policy.base(attempt)
        wait = policy.delay(attempt, unit)
        assert base * policy.low <= wait <= base * (policy.low + policy.jitter)


def test_with_a_fixed_rng_the_waits_are_the_documented_formulas_bit_for_bit() -> None:
    # The formulas the three users had before sharing this policy, draw for draw.
    rng = random.Random(5)
    for n in range(1, 30):
        r = rng.random()
        assert LAN.delay(n, r) == min(30.0, 0.5 * 2 ** (n - 1)) * (1 + r * 0.5)
        assert MQTT.delay(n, r) == min(60.0, 1.0 * 2 ** (n - 1)) * (0.5 + (1.0 - 0.5) * r)
        data = rng.randbytes(2)
        jitter = int.from_bytes(data, "big") / 65535 * 0.5
        assert ENGINE.delay(n, unit_from_bytes(data)) == min(300.0, 1.0 * 2 ** (n - 1)) * (1 + jitter)


def test_the_mqtt_factor_equals_random_uniform_on_the_upper_half() -> None:
    for seed in range(50):
        assert MQTT.delay(1, random.Random(seed).random()) == random.Random(seed).uniform(0.5, 1.0)


def test_unit_from_bytes_maps_the_byte_range_onto_zero_to_one() -> None:
    assert unit_from_bytes(b"\x00\x00") == 0.0
    assert unit_from_bytes(b"\xff\xff") == 1.0
    assert unit_from_bytes(b"\x80\x00") == 32768 / 65535
    with pytest.raises(ValueError):
        unit_from_bytes(b"")


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter", "low"),
    [(0.0, 1.0, 0.5, 1.0), (2.0, 1.0, 0.5, 1.0), (1.0, 2.0, -0.1, 1.0), (1.0, 2.0, 0.5, -1.0)],
)
def test_a_policy_that_cannot_mean_anything_is_refused(
    initial: float, maximum: float, jitter: float, low: float
) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, jitter=jitter, low=low)


def test_attempts_count_from_one_and_draws_lie_in_zero_to_one() -> None:
    with pytest.raises(ValueError):
        ENGINE.base(0)
    with pytest.raises(ValueError):
        ENGINE.delay(1, 1.5)


# ---------------------------------------------------------------- the tracker


def test_consecutive_failures_double_the_hold_from_each_failure_time() -> None:
    tracker: BackoffTracker[str] = BackoffTracker(Backoff(1.0, 8.0, jitter=0.0))
    assert tracker.retry_at("a") is None and tracker.may_retry("a", 0.0)
    assert tracker.failed("a", 100.0, 0.3) == 101.0
    assert not tracker.may_retry("a", 100.5) and tracker.may_retry("a", 101.0)
    assert tracker.failed("a", 101.0, 0.3) == 103.0
    assert tracker.failed("a", 103.0, 0.3) == 107.0
    assert tracker.failed("a", 107.0, 0.3) == 115.0
    assert tracker.failed("a", 115.0, 0.3) == 123.0  # capped at 8 s
    assert tracker.attempts("a") == 5 and tracker.retry_at("a") == 123.0


def test_the_jitter_draw_stretches_the_hold() -> None:
    tracker: BackoffTracker[str] = BackoffTracker(ENGINE)
    assert tracker.failed("a", 10.0, 1.0) == 11.5
    assert tracker.failed("b", 10.0, 0.0) == 11.0


def test_success_forgets_the_failures_and_the_hold() -> None:
    tracker: BackoffTracker[str] = BackoffTracker(Backoff(1.0, 8.0, jitter=0.0))
    for t in (0.0, 1.0, 3.0):
        tracker.failed("a", t, 0.0)
    tracker.succeeded("a")
    assert "a" not in tracker and tracker.attempts("a") == 0 and tracker.retry_at("a") is None
    assert tracker.failed("a", 50.0, 0.0) == 51.0  # starts again at the initial delay
    tracker.succeeded("never seen")  # harmless


def test_a_hold_never_moves_earlier() -> None:
    tracker: BackoffTracker[str] = BackoffTracker(Backoff(1.0, 8.0, jitter=0.0))
    tracker.hold("a", 300.0)  # e.g. the engine's retry_at after a denial
    assert tracker.attempts("a") == 0 and tracker.retry_at("a") == 300.0
    assert tracker.failed("a", 10.0, 0.0) == 300.0  # a dial failure meanwhile does not shorten it
    assert tracker.attempts("a") == 1
    tracker.hold("a", 200.0)
    assert tracker.retry_at("a") == 300.0
    tracker.hold("a", 400.0)
    assert tracker.retry_at("a") == 400.0


def test_a_hold_that_passed_is_overtaken_by_the_next_failure() -> None:
    tracker: BackoffTracker[str] = BackoffTracker(Backoff(1.0, 8.0, jitter=0.0))
    tracker.hold("a", 5.0)
    assert tracker.failed("a", 20.0, 0.0) == 21.0


def test_the_tracker_holds_at_most_max_keys_and_forgets_the_oldest() -> None:
    tracker: BackoffTracker[int] = BackoffTracker(ENGINE, max_keys=3)
    for key in (1, 2, 3):
        tracker.failed(key, 0.0, 0.0)
    tracker.failed(1, 5.0, 0.0)  # 1 changed last: 2 is now the oldest
    tracker.failed(4, 5.0, 0.0)
    assert len(tracker) == 3 and 2 not in tracker and {1, 3, 4} == {k for k in (1, 2, 3, 4) if k in tracker}
    tracker.hold(5, 9.0)
    assert 3 not in tracker and len(tracker) == 3
    assert tracker.attempts(1) == 2  # the survivors keep their counts


def test_reading_a_key_does_not_keep_it_alive() -> None:
    tracker: BackoffTracker[int] = BackoffTracker(ENGINE, max_keys=2)
    tracker.failed(1, 0.0, 0.0)
    tracker.failed(2, 0.0, 0.0)
    assert tracker.retry_at(1) is not None and tracker.may_retry(1, 0.0) is False
    tracker.failed(3, 0.0, 0.0)
    assert 1 not in tracker


@given(keys=st.lists(st.binary(min_size=1, max_size=4), max_size=300))
@QUICK
def test_hostile_keys_never_grow_the_tracker_past_its_bound(keys: list[bytes]) -> None:
    tracker: BackoffTracker[bytes] = BackoffTracker(ENGINE, max_keys=16)
    for i, key in enumerate(keys):
        tracker.failed(key, float(i), 0.5)
        assert len(tracker) <= 16
    if keys:
        assert keys[-1] in tracker


def test_the_default_bound_is_documented_and_positive() -> None:
    assert BackoffTracker(ENGINE).max_keys == DEFAULT_MAX_KEYS == 1024
    with pytest.raises(ValueError):
        BackoffTracker(ENGINE, max_keys=0)
