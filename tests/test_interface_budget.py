"""A broadcast interface's airtime budget belongs to the transmitter, not to one session of it.

The engine (agent.core.engine) on one LoRa interface at EU868 g1's 1 %: a duty-cycle refusal from
the dongle (its own ledger may know transmissions ours does not) pauses everything on the
interface until the dongle's wait is over; an interface that goes down and comes back with the
same medium (a dongle replugged) keeps the airtime it had spent, so replugging never buys a fresh
allowance; one that comes back with another medium starts a budget of its own. A medium whose
full frame its budget can never carry is refused at interface_up (the engine would otherwise raise
at the first full frame), and ``fitted`` cuts its MTU as the radio transport does.
"""

from __future__ import annotations

import dataclasses

import pytest
from test_engine import NOW, make_node

from agent.core.airtime import LoRaModulation
from agent.core.medium import AirtimeBudget, Broadcast, MediumSpec, fitted, full_frame_fits

SPEC = MediumSpec(LoRaModulation(), keepalive_interval=60.0, dead_interval=180.0)
RADIO = "radio:/dev/ttyUSB0"


def broadcasts_between(engine: object, start: float, end: float, step: float = 0.25) -> list[float]:
    """Drive ``engine``'s timers from ``start`` to ``end``; when it put a frame on the interface."""
    sent: list[float] = []
    now = start
    while now <= end:
        engine.handle_timer(now)  # type: ignore[attr-defined]
        for link, _frame in engine.datagrams_to_send(now):  # type: ignore[attr-defined]
            if link == Broadcast(RADIO):
                sent.append(now)
        now += step
    return sent


def test_a_paused_budget_sends_nothing_before_the_pause_ends() -> None:
    budget = AirtimeBudget(SPEC)
    budget.pause_until(NOW + 30)
    assert not budget.try_take(40, NOW + 29.9)
    assert not budget.try_keepalive(12, NOW + 29.9)
    assert budget.ready_at(40, NOW) >= NOW + 30
    assert budget.try_keepalive(12, NOW + 30)


def test_a_duty_cycle_refusal_silences_the_interface_until_the_dongle_can_send() -> None:
    node = make_node("pi")
    node.engine.interface_up(RADIO, SPEC, NOW)
    node.engine.interface_refused(RADIO, 30.0, NOW)
    sent = broadcasts_between(node.engine, NOW, NOW + 45)
    assert sent, "the announce goes once the pause is over"
    assert min(sent) >= NOW + 30
    assert node.engine.stats["interfaces.duty_cycle_refused"] == 1


def test_a_refusal_without_a_wait_pauses_briefly_and_one_on_an_unknown_interface_is_ignored() -> None:
    node = make_node("pi")
    node.engine.interface_up(RADIO, SPEC, NOW)
    node.engine.interface_refused("radio:/dev/gone", 30.0, NOW)
    node.engine.interface_refused(RADIO, 0.0, NOW)
    sent = broadcasts_between(node.engine, NOW, NOW + 5)
    assert sent and min(sent) >= NOW + 1.0
    assert node.engine.stats["interfaces.duty_cycle_refused"] == 1


def test_a_replugged_dongle_keeps_the_airtime_it_spent_and_another_medium_starts_afresh() -> None:
    node = make_node("pi")
    node.engine.interface_up(RADIO, SPEC, NOW)
    broadcasts_between(node.engine, NOW, NOW + 5)  # the first announce
    spent = node.engine._interfaces[RADIO].budget.used(NOW + 5)
    assert spent > 0
    node.engine.interface_down(RADIO, NOW + 6)
    node.engine.interface_up(RADIO, SPEC, NOW + 7)
    assert node.engine._interfaces[RADIO].budget.used(NOW + 7) == spent
    node.engine.interface_down(RADIO, NOW + 8)
    slower = dataclasses.replace(SPEC, airtime=LoRaModulation(sf=9))
    node.engine.interface_up(RADIO, slower, NOW + 9)
    assert node.engine._interfaces[RADIO].budget.used(NOW + 9) == 0


def test_frames_are_cut_to_what_the_budget_can_ever_carry_the_seal_included() -> None:
    # SF12 at 1 %: a full 255-byte frame is about 9 s of air, over the general budget's hour.
    sf12 = MediumSpec(LoRaModulation(sf=12), keepalive_interval=600.0, dead_interval=1800.0)
    assert not full_frame_fits(sf12)
    fit = fitted(sf12)
    assert fit is not None and fit.airtime.mtu < 255 and full_frame_fits(fit)
    one_more = LoRaModulation(sf=12, mtu=fit.airtime.mtu + 1)
    assert not full_frame_fits(dataclasses.replace(fit, airtime=one_more))  # the longest that fits
    assert fitted(SPEC) is SPEC  # SF7: a full frame fits, nothing cut
    # The engine brings a medium up fitted, after the mesh seal's bytes shrank its budget too.
    for node in (make_node("plain"), make_node("sealed", mesh_key=bytes(32))):
        node.engine.interface_up(RADIO, fit, NOW)
        used = node.engine._interfaces[RADIO].spec
        assert full_frame_fits(used) and used.airtime.mtu <= fit.airtime.mtu
        assert broadcasts_between(node.engine, NOW, NOW + 700, step=5.0)  # and it announces itself


def test_a_medium_on_which_no_presence_frame_fits_is_refused() -> None:
    hopeless = MediumSpec(
        LoRaModulation(sf=12), allowance=0.0005, keepalive_interval=3000.0, dead_interval=9000.0
    )
    assert fitted(hopeless) is None
    with pytest.raises(ValueError, match="no presence frame fits"):
        make_node("pi").engine.interface_up(RADIO, hopeless, NOW)
