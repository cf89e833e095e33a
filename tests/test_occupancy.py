"""Who gives up a place in a full peer table (:mod:`agent.core.occupancy`), without an engine.

A newcomer takes the place of the held peer with the weakest standing only if it
stands stronger itself: anchored peers never go; reachable ones go farthest
first; unreachable ones go first of all, oldest first; within a standing the
heavier neighbour's peers go first, so a flood's own newcomers are refused and
anyone else's take the flood's places.
"""

from __future__ import annotations

from agent.core.occupancy import ANCHORED, MANY, SLOT_BYTES, STORE, Claim, Occupancy, Standing

LAN = 2


def pid(n: int) -> bytes:
    return bytes([n]) * 8


L = pid(0)
F, B = pid(1), pid(2)  # a flooding neighbour, an honest one


def sybil(n: int) -> bytes:
    return bytes([0xEE, n >> 8, n & 0xFF]) + b"\x00" * 5


def mutual(*edges: tuple[bytes, bytes]) -> dict[bytes, dict[tuple[bytes, int], int | None]]:
    out: dict[bytes, dict[tuple[bytes, int], int | None]] = {}
    for a, b in edges:
        out.setdefault(a, {})[(b, LAN)] = None
        out.setdefault(b, {})[(a, LAN)] = None
    return out


def flooded(count: int = 10) -> tuple[Occupancy, dict[bytes, int]]:
    """``F`` delivered ``count`` unreachable peers of 100 bytes; ``B`` one peer behind it."""
    occ = Occupancy(refresh=1.0)
    held = {F: 100, B: 100, pid(3): 100}
    for n in range(count):
        occ.admitted(sybil(n), None, 100, via=F)
        held[sybil(n)] = 100
    occ.admitted(pid(3), None, 100, via=B)
    occ.place(0.0, L, [F, B], mutual((L, F), (L, B), (B, pid(3))), held)
    return occ, held


def test_peers_are_charged_to_the_neighbour_their_paths_start_at_or_that_delivered_them() -> None:
    occ, _ = flooded()
    assert occ.claim_of(sybil(0)) == Claim(Standing.UNREACHABLE, F)
    assert occ.claim_of(pid(3)) == Claim(Standing.REACHABLE, B, 2)
    assert occ.claim_of(F) is None and occ.claim_of(B) is None  # first-hand: anchored, not charged
    assert occ.group_weight(F) == 10 * (100 + SLOT_BYTES)


def test_the_flood_s_own_newcomer_stands_no_stronger_than_its_weakest_and_is_refused() -> None:
    occ, held = flooded()
    weakest = occ.weakest(held.__contains__)
    assert weakest is not None and weakest[1] == sybil(0)  # the oldest of the heaviest group
    assert occ.newcomer(Claim(Standing.UNREACHABLE, F), 100) >= weakest[0]


def test_a_newcomer_from_another_neighbour_takes_one_of_the_flood_s_places() -> None:
    occ, held = flooded()
    weakest = occ.weakest(held.__contains__)
    assert weakest is not None
    assert occ.newcomer(Claim(Standing.UNREACHABLE, B), 100) < weakest[0]
    occ.evicted(weakest[1])
    assert occ.group_weight(F) == 9 * (100 + SLOT_BYTES)


def test_the_flood_gives_way_until_it_is_no_heavier_than_the_newcomers_group() -> None:
    occ, held = flooded(count=6)
    admitted = 0
    for n in range(100, 120):
        weakest = occ.weakest(held.__contains__)
        assert weakest is not None
        if occ.newcomer(Claim(Standing.UNREACHABLE, B), 100) >= weakest[0]:
            break
        occ.evicted(weakest[1])
        del held[weakest[1]]
        occ.admitted(sybil(n), Claim(Standing.UNREACHABLE, B), 100, via=B)
        held[sybil(n)] = 100
        admitted += 1
    assert admitted == 3  # F: 6 -> 3 peers; B: 1 -> 4 (its reachable peer and three newcomers)
    assert abs(occ.group_weight(F) - occ.group_weight(B)) <= 100 + SLOT_BYTES


def test_a_reachable_newcomer_outranks_every_unreachable_peer_even_of_its_own_group() -> None:
    occ, held = flooded()
    weakest = occ.weakest(held.__contains__)
    assert weakest is not None
    assert occ.newcomer(Claim(Standing.REACHABLE, F, 5), 100) < weakest[0]


def test_among_reachable_peers_the_farthest_goes_first_and_a_farther_newcomer_is_refused() -> None:
    occ = Occupancy(refresh=1.0)
    near, far = pid(3), pid(4)
    held = {F: 1, near: 1, far: 1}
    occ.place(0.0, L, [F], mutual((L, F), (F, near), (near, far)), held)
    weakest = occ.weakest(held.__contains__)
    assert weakest is not None and weakest[1] == far
    assert occ.newcomer(Claim(Standing.REACHABLE, B, 2), 1) < weakest[0]
    assert occ.newcomer(Claim(Standing.REACHABLE, B, 4), 1) > weakest[0]


def test_peers_whose_shortest_paths_start_at_two_neighbours_share_one_group() -> None:
    occ = Occupancy(refresh=1.0)
    both = pid(3)
    held = {F: 1, B: 1, both: 1}
    occ.place(0.0, L, [F, B], mutual((L, F), (L, B), (F, both), (B, both)), held)
    assert occ.claim_of(both) == Claim(Standing.REACHABLE, MANY, 2)


def test_peers_loaded_from_the_store_and_unreachable_are_charged_to_the_store() -> None:
    occ = Occupancy(refresh=1.0)
    occ.admitted(pid(5), None, 10, via=STORE)
    occ.place(0.0, L, [], {}, {pid(5): 10})
    assert occ.claim_of(pid(5)) == Claim(Standing.UNREACHABLE, STORE)


def test_anchored_peers_are_never_offered_and_an_anchored_newcomer_outranks_all() -> None:
    occ = Occupancy(refresh=1.0)
    held = {F: 1}
    occ.place(0.0, L, [F], mutual((L, F)), held)
    assert occ.weakest(held.__contains__) is None
    assert occ.newcomer(ANCHORED, 1) == (0, 0, 0)


def test_members_no_longer_held_are_skipped_and_the_spare_is_never_offered() -> None:
    occ, held = flooded()
    del held[sybil(0)]
    weakest = occ.weakest(held.__contains__, spare=sybil(1))
    assert weakest is not None and weakest[1] == sybil(2)


def test_a_search_runs_at_most_once_per_refresh_while_the_groups_are_stale() -> None:
    occ, _ = flooded()
    assert not occ.due(0.5)
    occ.topology_changed()
    assert not occ.due(0.5) and occ.due(1.0)


def test_origins_are_pruned_to_the_held_peers() -> None:
    occ, _ = flooded()
    occ.prune([F, B])
    occ.topology_changed()
    occ.place(5.0, L, [F, B], {}, {sybil(0): 100})
    assert occ.claim_of(sybil(0)) == Claim(Standing.UNREACHABLE, STORE)
