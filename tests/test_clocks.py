"""Two clocks: timers run on the driver's monotonic clock, the wall clock only signs and expires.

A Pi without a real-time clock, or an NTP correction, steps the wall clock.
Stepping one peer's wall clock by an hour in either direction must neither
fire every timer at once (links closed as dead, records expired) nor stall
them (keepalives stop, neighbours drop the links), and every record must
still be refreshed before it expires. All on the simulator's virtual clock,
through the real engine.
"""

from __future__ import annotations

import collections

import pytest

from agent.core.engine import EngineConfig
from agent.core.records import RecordKind
from agent.sim import ClosedLink, LinkModel, SimPeer, Simulation, Transmission, line

HOUR = 3600.0
#: Slow keepalives keep a simulated day cheap; the rules do not depend on the interval.
CONFIG = EngineConfig(keepalive_interval=60.0, dead_interval=180.0)
WIRE = LinkModel(latency=0.01)


def sees_everyone(sim: Simulation, peers: list[SimPeer]) -> bool:
    everyone = {p.peer_key_string for p in peers}
    return all({x.peer_key_string for x in p.engine.graph(sim.now).peers()} == everyone for p in peers)


def mesh() -> tuple[Simulation, list[SimPeer], list[ClosedLink], collections.Counter[int]]:
    sim = Simulation(seed=7, config=CONFIG)
    peers = sim.build(line(3), WIRE)
    closed: list[ClosedLink] = []
    frames_by_sender: collections.Counter[int] = collections.Counter()
    sim.on_close(closed.append)

    def count(t: Transmission) -> None:
        frames_by_sender[t.sender.index] += 1

    sim.on_transmit(count)
    sim.run_until_true(lambda: sees_everyone(sim, peers), timeout=30.0)
    sim.run_for(10.0)
    return sim, peers, closed, frames_by_sender


@pytest.mark.parametrize("step", [HOUR, -HOUR], ids=["forward", "backward"])
def test_a_wall_clock_step_neither_fires_nor_stalls_the_timers(step: float) -> None:
    sim, peers, closed, frames = mesh()
    middle = peers[1]
    frames.clear()

    sim.step_wall_clock(middle, step)
    sim.run_for(HOUR)

    assert closed == []
    assert all(p.engine.stats["links.dead"] == 0 for p in peers)
    assert all(p.engine.stats["records.expired"] == 0 for p in peers)
    assert sees_everyone(sim, peers)
    # The middle peer keeps one SUMMARY per keepalive on each of its two links: not a
    # burst (every timer fired) and not silence (timers waiting for the clock to catch up).
    per_link_per_hour = HOUR / CONFIG.keepalive_interval
    assert 0.9 * 2 * per_link_per_hour <= frames[middle.index] <= 1.2 * 2 * per_link_per_hour


def test_records_are_refreshed_before_they_expire_across_steps_in_both_directions() -> None:
    sim, peers, closed, _ = mesh()
    ahead, behind = peers[0], peers[2]
    sim.step_wall_clock(ahead, HOUR)
    sim.step_wall_clock(behind, -HOUR)
    counters = {p.index: p.engine.own_records[0].counter for p in peers}

    # More than a whole record lifetime, checked every ten minutes.
    for _ in range(int(CONFIG.record_ttl * 1.25 / 600)):
        sim.run_for(600.0)
        assert sees_everyone(sim, peers)
        for p in peers:
            for other in peers:
                card = other.engine.records_of(p.engine.public_key)
                assert card and card[0].kind is RecordKind.CARD
                assert card[0].expiry > other.wall(sim.now), "a held card expired before its refresh"

    assert closed == []
    assert all(p.engine.stats["records.expired"] == 0 for p in peers)
    assert all(p.engine.own_records[0].counter > counters[p.index] for p in peers), "every card re-signed"


def test_a_peer_whose_clock_runs_ahead_signs_expiries_by_its_own_wall_clock() -> None:
    sim, peers, _, _ = mesh()
    ahead = peers[0]
    sim.step_wall_clock(ahead, HOUR)

    ahead.presence.set_peer_metadata({"moved": True})
    sim.run_for(5.0)

    card = ahead.engine.own_records[0]
    assert card.expiry == pytest.approx(sim.now + HOUR + CONFIG.record_ttl, abs=10)
    assert peers[2].engine.records_of(ahead.engine.public_key)[0].counter == card.counter
