"""Specification of the radio-field topology (agent.sim.radio_field).

Routers uniform in a square sized for a mean radio degree, redrawn until the radio graph is
connected; a seeded share of them also on one LAN; leaves placed near a router and attached to every
router within their range. Reproducible from the seed; data only (the engine cannot run it yet).
"""

from __future__ import annotations

import math

import pytest

from agent.core.airtime import LoRaModulation
from agent.sim.radio import RadioConfig, RadioMedium
from agent.sim.radio_field import radio_field


def test_a_field_is_connected_over_radio_and_reproducible() -> None:
    field = radio_field(30, seed=4)
    assert field.n == 30
    assert len(field.radio_hops(0)) == 30
    assert field == radio_field(30, seed=4)
    assert field != radio_field(30, seed=5)
    for a, b in field.radio_edges:
        assert a < b
        assert math.dist(field.positions[a], field.positions[b]) <= field.range_m


def test_thirty_pis_span_several_hops() -> None:
    depths = [max(radio_field(30, seed=s).radio_hops(0).values()) for s in range(5)]
    assert max(depths) >= 3


def test_some_pis_are_also_on_a_lan() -> None:
    field = radio_field(30, seed=1, lan_fraction=0.2)
    assert len(field.lan) == 6
    assert len(field.lan_edges) == 6 * 5 // 2
    assert radio_field(30, seed=1, lan_fraction=0.0).lan == ()
    assert len(radio_field(5, seed=1, lan_fraction=0.1).lan) == 2  # at least a pair


def test_leaves_attach_to_every_router_in_their_range_nearest_first() -> None:
    field = radio_field(10, seed=2, leaves=8, leaf_range_m=20.0)
    assert len(field.leaves) == 8
    for leaf in field.leaves:
        assert leaf.routers
        distances = [math.dist(leaf.position, field.positions[r]) for r in leaf.routers]
        assert distances == sorted(distances)
        assert all(d <= 20.0 for d in distances)
        others = set(range(field.n)) - set(leaf.routers)
        assert all(math.dist(leaf.position, field.positions[r]) > 20.0 for r in others)


def test_the_medium_takes_a_field_as_it_is() -> None:
    config = RadioConfig.lora(LoRaModulation(7))
    field = radio_field(20, seed=3, range_m=config.range_m)
    air = RadioMedium(field.positions, config)
    assert {(a, b) for a in range(20) for b in air.neighbours(a) if a < b} == set(field.radio_edges)


def test_a_field_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        radio_field(0)
