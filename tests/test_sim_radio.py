"""Specification of the simulator's broadcast medium (agent.sim.radio).

One transmission reaches every node whose RSSI (log-distance path loss, optional seeded shadowing
and fading) reaches the sensitivity for the SF; a node that transmits hears nothing; frames that
overlap at a receiver are lost unless one is 6 dB stronger than the rest there (capture), so hidden
terminals collide at the node between them; every transmitter keeps to its duty cycle; airtime is
the engine's formula. Everything is deterministic from the seed.

The geometry at SF7/125 kHz with the defaults (-30 dBm at 1 m, exponent 2.7): sensitivity
-124.5 dBm, a median range of about 3.2 km.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK

from agent.core.airtime import LoRaModulation, ModulationError
from agent.core.duty_cycle import Region
from agent.sim.radio import (
    Delivery,
    DutyCycleExceededError,
    RadioBusyError,
    RadioConfig,
    RadioError,
    RadioMedium,
)

SF7 = LoRaModulation()
FRAME = b"x" * 40


def medium(*xs: float, **kwargs: object) -> RadioMedium:
    """Nodes on a line at ``xs`` metres."""
    return RadioMedium([(x, 0.0) for x in xs], **kwargs)  # type: ignore[arg-type]


def test_the_default_channel_is_sf7_with_three_kilometres_of_range() -> None:
    config = RadioConfig.lora()
    assert config.noise_floor_dbm == pytest.approx(-174 + 10 * math.log10(125e3) + 6)
    assert config.sensitivity_dbm == pytest.approx(config.noise_floor_dbm - 7.5)
    assert config.range_m == pytest.approx(3170, rel=0.01)
    sf10 = RadioConfig.lora(LoRaModulation(10))
    assert sf10.sensitivity_dbm == pytest.approx(config.sensitivity_dbm - 7.5)
    assert sf10.range_m > 1.8 * config.range_m


# ---------------------------------------------------------------- range


def test_two_nodes_in_range_hear_each_other() -> None:
    air = medium(0.0, 1000.0)
    end = air.transmit(0, FRAME, 10.0)
    assert end == pytest.approx(10.0 + SF7.airtime(len(FRAME)))
    assert air.next_end() == end
    assert air.deliveries(end - 1e-6) == []  # not yet ended
    [got] = air.deliveries(end)
    expected = air.config.path_loss.rssi(1000.0)
    assert got == Delivery(1, 0, FRAME, expected, expected - air.config.noise_floor_dbm, end)
    assert air.next_end() is None
    assert air.stats["delivered"] == 1


def test_out_of_range_nothing_arrives() -> None:
    air = medium(0.0, 5000.0)
    assert not air.in_range(0, 1)
    end = air.transmit(0, FRAME, 0.0)
    assert air.deliveries(end) == []
    assert air.stats["weak"] == 1
    assert air.take_losses() == []  # out of range is not a loss of a frame it could have had


def test_one_transmission_reaches_every_neighbour_in_range() -> None:
    air = medium(0.0, 500.0, 1500.0, 3000.0, 3500.0)
    assert air.neighbours(0) == [1, 2, 3]
    end = air.transmit(0, FRAME, 0.0)
    assert [d.receiver for d in air.deliveries(end)] == [1, 2, 3]
    assert air.stats["sent"] == 1


# ---------------------------------------------------------------- collisions and capture


def test_overlapping_equal_power_frames_collide_at_a_receiver_in_range_of_both() -> None:
    air = medium(0.0, 1000.0, 2000.0)  # 1 in the middle; 0 and 2 hear each other too
    air.transmit(0, FRAME, 0.0)
    end = air.transmit(2, FRAME, 0.01)  # starts while 0's frame is on the air
    got = air.deliveries(end)
    assert all(d.receiver != 1 for d in got)
    assert {(loss.receiver, loss.reason) for loss in air.take_losses()} == {
        (1, "collision"),
        (0, "half_duplex"),
        (2, "half_duplex"),
    }


def test_a_frame_6_db_stronger_is_captured_and_the_weaker_lost() -> None:
    # The receiver at 0: one sender at 1000 m, the other at 1700 m (6.2 dB weaker at n = 2.7).
    air = medium(0.0, 1000.0, -1700.0)
    assert air.mean_rssi(1, 0) - air.mean_rssi(2, 0) >= 6.0
    air.transmit(1, FRAME, 0.0)
    end = air.transmit(2, FRAME, 0.02)
    got = [d for d in air.deliveries(end) if d.receiver == 0]
    assert [d.sender for d in got] == [1]


def test_less_than_the_capture_margin_loses_both() -> None:
    air = medium(0.0, 1000.0, -1500.0)  # 4.8 dB apart
    assert 0 < air.mean_rssi(1, 0) - air.mean_rssi(2, 0) < 6.0
    air.transmit(1, FRAME, 0.0)
    end = air.transmit(2, FRAME, 0.02)
    assert [d for d in air.deliveries(end) if d.receiver == 0] == []


def test_hidden_terminals_collide_at_the_node_between_them() -> None:
    air = medium(0.0, 2500.0, 5000.0)  # A, B, C: A and C cannot hear each other
    assert not air.in_range(0, 2)
    assert air.in_range(0, 1) and air.in_range(1, 2)
    air.transmit(0, FRAME, 0.0)
    assert not air.channel_busy(2, 0.01)  # C senses a free channel: A is hidden from it
    assert air.channel_busy(1, 0.01)
    end = air.transmit(2, FRAME, 0.01)
    assert air.deliveries(end) == []
    assert {(loss.receiver, loss.reason) for loss in air.take_losses()} == {(1, "collision")}


def test_frames_back_to_back_do_not_collide() -> None:
    air = medium(0.0, 1000.0, 2000.0)
    end = air.transmit(0, FRAME, 0.0)
    air.deliveries(end)
    end2 = air.transmit(2, FRAME, end)
    assert [d.sender for d in air.deliveries(end2) if d.receiver == 1] == [2]


# ---------------------------------------------------------------- half duplex


def test_a_transmitting_node_receives_nothing() -> None:
    air = medium(0.0, 100.0, 50000.0)
    end_a = air.transmit(0, FRAME, 0.0)
    air.transmit(1, b"y", 0.01)  # 1 sends a short frame while 0's is on the air
    got = air.deliveries(end_a + 1.0)
    assert [(d.receiver, d.sender) for d in got] == []  # neither got the other's: both were sending
    reasons = {(loss.receiver, loss.sender, loss.reason) for loss in air.take_losses()}
    assert (1, 0, "half_duplex") in reasons


def test_a_radio_sends_one_frame_at_a_time() -> None:
    air = medium(0.0, 100.0)
    end = air.transmit(0, FRAME, 0.0)
    with pytest.raises(RadioBusyError, match="one frame at a time"):
        air.transmit(0, FRAME, end / 2)
    assert air.ready_at(0, len(FRAME), 0.0) == end


# ---------------------------------------------------------------- duty cycle


def test_a_frame_beyond_the_allowance_is_refused_with_when_it_may_go() -> None:
    tight = Region("test", None, None, 0.01, None, "a test band")
    air = medium(0.0, 100.0, region=tight, window=10.0)  # 0.1 s per 10 s: one SF7 frame of 40 bytes
    end = air.transmit(0, FRAME, 0.0)
    with pytest.raises(DutyCycleExceededError, match="no airtime allowance left") as refused:
        air.transmit(0, FRAME, end)
    assert refused.value.ready_at == air.ready_at(0, len(FRAME), end)
    assert air.transmit(0, FRAME, refused.value.ready_at) > refused.value.ready_at


@given(
    attempts=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0.0, 0.5), st.integers(1, 100), st.booleans()), max_size=80
    )
)
@QUICK
def test_no_transmitter_ever_exceeds_its_duty_cycle(attempts: list[tuple[int, float, int, bool]]) -> None:
    window = 20.0
    band = Region("test", None, None, 0.05, None, "a test band")  # 1 s per 20 s
    air = medium(0.0, 300.0, 600.0, 900.0, region=band, window=window)
    sent: dict[int, list[tuple[float, float]]] = {n: [] for n in range(4)}
    now = 0.0
    for node, gap, size, wait in attempts:
        now += gap
        at = air.ready_at(node, size, now) if wait else now
        if at > now + 5.0:
            continue
        now = at
        try:
            end = air.transmit(node, bytes(size), now)
        except (DutyCycleExceededError, RadioBusyError):
            continue
        sent[node].append((now, end - now))
        air.deliveries(now)
    allowance = Fraction(band.duty_cycle) * Fraction(window)
    for frames in sent.values():
        for start, airtime in frames:
            right = Fraction(start) + Fraction(airtime)
            load = sum(
                max(
                    Fraction(0),
                    min(right, Fraction(s) + Fraction(a)) - max(right - Fraction(window), Fraction(s)),
                )
                for s, a in frames
            )
            assert load <= allowance


# ---------------------------------------------------------------- determinism and refusals


def test_shadowing_is_symmetric_and_seeded_and_fading_is_reproducible() -> None:
    def run(seed: int) -> list[Delivery]:
        config = RadioConfig.lora(shadowing_sigma_db=8.0, fading_sigma_db=3.0)
        rng = random.Random(1)
        air = RadioMedium(
            [(rng.uniform(0, 4000), rng.uniform(0, 4000)) for _ in range(12)], config, seed=seed
        )
        assert air.mean_rssi(3, 7) == air.mean_rssi(7, 3)
        now, out = 0.0, []
        for i in range(40):
            node = i % 12
            now = air.ready_at(node, 20, now + 0.03)
            air.transmit(node, bytes([i]) * 20, now)
            out.extend(air.deliveries(now))
        out.extend(air.deliveries(now + 10.0))
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_what_a_radio_cannot_do_is_refused() -> None:
    air = medium(0.0, 100.0)
    air.deliveries(5.0)
    with pytest.raises(RadioError, match="time ran backwards"):
        air.transmit(0, FRAME, 4.0)
    with pytest.raises(ModulationError, match="256 bytes"):
        air.transmit(0, bytes(256), 6.0)
    with pytest.raises(RadioError, match="zero or more"):
        RadioConfig(capture_margin_db=-1.0)
