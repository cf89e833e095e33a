"""Specification of who is in the graph (agent.core.reachability), alone.

Rules covered: a connection between two remote peers counts only when both
ends claim it with the same type, at the mean of both distances; hop counts
are a breadth-first search from the local peer over such edges (a line, a
ring), never through unknown peers; a peer no longer reachable stays shown
with its last hop count for exactly ``grace`` seconds, and
:meth:`Reachability.next_deadline` says when to look again; a returning peer
leaves the gone set; removals within ``settle`` share one evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from agent.core.reachability import Claims, Reachability, first_hops, hop_counts, mutual_edges

BT, LAN = 1, 2


def pid(n: int) -> bytes:
    return bytes([n]) * 8


L = pid(0)  # the local peer
A, B, C, D = pid(1), pid(2), pid(3), pid(4)


def claims_of(*edges: tuple[bytes, bytes, int], dist: int | None = None) -> dict[bytes, Claims]:
    """Both ends of each edge claim it (with ``dist``)."""
    out: dict[bytes, dict[tuple[bytes, int], int | None]] = {}
    for a, b, code in edges:
        out.setdefault(a, {})[(b, code)] = dist
        out.setdefault(b, {})[(a, code)] = dist
    return dict(out)


# ---------------------------------------------------------------- the edge rule


def test_a_connection_both_ends_claim_with_the_same_type_is_an_edge() -> None:
    claims = {A: {(B, BT): 10}, B: {(A, BT): 20}}
    assert mutual_edges(claims, {A, B}) == {(A, B, BT): 15}


def test_a_connection_only_one_end_claims_is_no_edge() -> None:
    assert mutual_edges({A: {(B, BT): 10}, B: {}}, {A, B}) == {}
    assert mutual_edges({A: {(B, BT): 10}}, {A, B}) == {}


def test_a_connection_claimed_with_different_types_is_no_edge() -> None:
    assert mutual_edges({A: {(B, BT): None}, B: {(A, LAN): None}}, {A, B}) == {}


def test_two_types_between_the_same_pair_are_two_edges() -> None:
    claims = {A: {(B, BT): None, (B, LAN): 4}, B: {(A, BT): None, (A, LAN): 6}}
    assert mutual_edges(claims, {A, B}) == {(A, B, BT): None, (A, B, LAN): 5}


@pytest.mark.parametrize(
    ("mine", "theirs", "mean"), [(None, None, None), (None, 30, 30), (30, None, 30), (10, 21, 15)]
)
def test_an_edge_distance_is_the_mean_of_both_claims(
    mine: int | None, theirs: int | None, mean: int | None
) -> None:
    assert mutual_edges({A: {(B, BT): mine}, B: {(A, BT): theirs}}, {A, B}) == {(A, B, BT): mean}


def test_edges_are_keyed_low_id_first_whichever_end_is_listed_first() -> None:
    claims = {B: {(A, BT): None}, A: {(B, BT): None}}
    assert list(mutual_edges(claims, {A, B})) == [(A, B, BT)]


def test_only_edges_among_the_given_peers_count() -> None:
    claims = claims_of((A, B, BT), (B, C, BT))
    assert mutual_edges(claims, {A, B}) == {(A, B, BT): None}
    assert mutual_edges(claims, {A, C}) == {}


# ---------------------------------------------------------------- hops


def test_hops_along_a_line() -> None:
    claims = claims_of((L, A, BT), (A, B, BT), (B, C, LAN))
    assert hop_counts(L, [A], claims, {L, A, B, C}) == {L: 0, A: 1, B: 2, C: 3}


def test_hops_around_a_ring_take_the_shorter_way() -> None:
    ring = [pid(n) for n in range(7)]  # ring[0] is the local peer
    edges = [(ring[i], ring[(i + 1) % 7], BT) for i in range(7)]
    hops = hop_counts(L, [ring[1], ring[6]], claims_of(*edges), set(ring))
    assert hops == {ring[0]: 0, ring[1]: 1, ring[6]: 1, ring[2]: 2, ring[5]: 2, ring[3]: 3, ring[4]: 3}


def test_first_hops_name_the_neighbour_every_shortest_path_starts_at() -> None:
    claims = claims_of((A, C, BT), (C, D, BT), (B, D, LAN))
    routes = first_hops(L, [A, B], claims, {L, A, B, C, D})
    assert routes == {A: (1, A), B: (1, B), C: (2, A), D: (2, B)}


def test_first_hops_name_no_neighbour_where_shortest_paths_start_at_two() -> None:
    # A-C and B-C: C (and D beyond it) are two hops away through either neighbour.
    claims = claims_of((A, C, BT), (B, C, BT), (C, D, BT))
    routes = first_hops(L, [A, B], claims, {L, A, B, C, D})
    assert routes[C] == (2, None) and routes[D] == (3, None)


def test_first_hops_search_what_hop_counts_search() -> None:
    ring = [pid(n) for n in range(9)]
    edges = [(ring[i], ring[(i + 1) % 9], BT) for i in range(9)] + [(ring[2], ring[6], LAN)]
    claims, known = claims_of(*edges), set(ring) - {ring[4]}
    routes = first_hops(L, [ring[1], ring[8]], claims, known)
    hops = hop_counts(L, [ring[1], ring[8]], claims, known)
    assert {p: h for p, (h, _) in routes.items()} == {p: h for p, h in hops.items() if p != L}


def test_the_local_peers_own_links_count_without_a_claim_back() -> None:
    assert hop_counts(L, [A], {}, {L, A}) == {L: 0, A: 1}


def test_a_one_sided_claim_is_not_traversed() -> None:
    claims: Mapping[bytes, Claims] = {A: {(B, BT): None}, B: {}}
    assert hop_counts(L, [A], claims, {L, A, B}) == {L: 0, A: 1}


def test_a_claim_of_another_type_back_is_not_traversed() -> None:
    claims = {A: {(B, BT): None}, B: {(A, LAN): None}}
    assert hop_counts(L, [A], claims, {L, A, B}) == {L: 0, A: 1}


def test_unknown_peers_are_neither_counted_nor_traversed() -> None:
    claims = claims_of((A, B, BT), (B, C, BT))
    assert hop_counts(L, [A], claims, {L, A, C}) == {L: 0, A: 1}  # C is only behind unknown B


def test_an_unknown_neighbour_is_not_counted() -> None:
    assert hop_counts(L, [A, B], {}, {L, B}) == {L: 0, B: 1}


def test_the_local_peer_listed_as_its_own_neighbour_stays_at_zero() -> None:
    assert hop_counts(L, [L, A], {}, {L, A}) == {L: 0, A: 1}


# ---------------------------------------------------------------- departure grace

GRACE = 0.5
SETTLE = 0.02


def reach(shown: dict[bytes, int], now: float = 0.0) -> Reachability:
    r = Reachability(GRACE, SETTLE)
    r.update(shown, now)
    return r


def test_a_new_reachability_is_stale_and_shows_nothing() -> None:
    r = Reachability(GRACE, SETTLE)
    assert r.stale
    assert r.shown({A}) == {}
    assert r.next_deadline() is None


def test_update_reports_whether_what_is_shown_changed() -> None:
    r = Reachability(GRACE, SETTLE)
    assert r.update({L: 0, A: 1}, 0.0) is True
    assert not r.stale
    assert r.update({L: 0, A: 1}, 0.1) is False
    assert r.update({L: 0, A: 2}, 0.2) is True


def test_a_departed_peer_stays_shown_with_its_last_hops_until_the_grace_runs_out() -> None:
    r = reach({L: 0, A: 1, B: 2}, 0.0)
    assert r.update({L: 0, A: 1}, 10.0) is True
    assert r.shown({L, A, B}) == {L: 0, A: 1, B: 2}
    assert r.next_deadline() == 10.0 + GRACE
    assert r.update({L: 0, A: 1}, 10.0 + GRACE - 0.001) is False
    assert r.shown({L, A, B}) == {L: 0, A: 1, B: 2}


def test_the_grace_ends_exactly_after_grace_seconds() -> None:
    r = reach({L: 0, A: 1, B: 2}, 0.0)
    r.update({L: 0, A: 1}, 10.0)
    assert r.update({L: 0, A: 1}, 10.0 + GRACE) is True
    assert r.shown({L, A, B}) == {L: 0, A: 1}
    assert r.next_deadline() is None


def test_a_departed_peer_no_longer_known_is_not_shown() -> None:
    r = reach({L: 0, A: 1, B: 2})
    r.update({L: 0, A: 1}, 1.0)
    assert r.shown({L, A}) == {L: 0, A: 1}


def test_the_grace_starts_when_the_peer_first_went_missing() -> None:
    r = reach({L: 0, A: 1, B: 2})
    r.update({L: 0, A: 1}, 1.0)
    r.update({L: 0}, 1.3)  # A leaves later: B keeps its own start
    assert r.next_deadline() == 1.0 + GRACE
    r.update({L: 0}, 1.0 + GRACE)
    assert r.shown({L, A, B}) == {L: 0, A: 1}
    assert r.next_deadline() == 1.3 + GRACE


def test_a_returning_peer_leaves_the_gone_set_and_shows_its_new_hops() -> None:
    r = reach({L: 0, A: 1, B: 2})
    r.update({L: 0, A: 1}, 1.0)
    assert r.update({L: 0, A: 1, B: 3}, 1.2) is True
    assert r.shown({L, A, B}) == {L: 0, A: 1, B: 3}
    assert r.next_deadline() is None
    r.update({L: 0, A: 1}, 5.0)  # leaving again: a fresh grace from now
    assert r.next_deadline() == 5.0 + GRACE


def test_a_reachable_peer_shows_its_current_hops_not_a_departed_ones() -> None:
    r = reach({L: 0, A: 1})
    r.update({L: 0}, 1.0)
    r.update({L: 0, A: 2}, 1.1)
    assert r.shown({L, A}) == {L: 0, A: 2}


def test_removals_within_settle_share_one_evaluation() -> None:
    r = reach({L: 0, A: 1})
    r.schedule_removal(1.0)
    r.schedule_removal(1.01)
    assert r.due == 1.0 + SETTLE
    assert r.next_deadline() == 1.0 + SETTLE
    r.update({L: 0}, 1.0 + SETTLE)
    assert r.due is None
    assert r.next_deadline() == 1.0 + SETTLE + GRACE


def test_next_deadline_is_the_sooner_of_a_settled_removal_and_a_grace() -> None:
    r = reach({L: 0, A: 1})
    r.update({L: 0}, 1.0)
    r.schedule_removal(1.1)
    assert r.next_deadline() == pytest.approx(1.1 + SETTLE)
    r2 = Reachability(grace=0.01, settle=1.0)
    r2.update({L: 0, A: 1}, 0.0)
    r2.update({L: 0}, 1.0)
    r2.schedule_removal(1.0)
    assert r2.next_deadline() == 1.01
