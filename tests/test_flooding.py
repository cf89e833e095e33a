"""Specification of the flood fan-out (agent.core.flooding), alone.

Rules covered: a newly accepted record goes to every established link except
its source (the link it came in on), the origin's own link (it has this
record or a newer one), and neighbours the sender or origin already covers
(their peer ids in ``covered``); each covered neighbour counts as pruned.
Skipping the source or the origin is never counted as pruning.
"""

from __future__ import annotations

import pytest

from agent.core.flooding import Neighbour, fan_out


def neighbour(n: int) -> Neighbour[str]:
    key = bytes([n]) * 32
    return Neighbour(link=f"link-{n}", public_key=key, peer_id=key[:8])


N1, N2, N3, N4 = (neighbour(n) for n in (1, 2, 3, 4))
ALL = [N1, N2, N3, N4]
ORIGIN = bytes([9]) * 32  # not a neighbour


def test_a_record_goes_to_every_neighbour_when_nothing_is_skipped() -> None:
    assert fan_out(ALL, ORIGIN, None, frozenset(), ()) == (["link-1", "link-2", "link-3", "link-4"], 0)


def test_the_source_link_is_skipped_and_not_counted_as_pruned() -> None:
    assert fan_out(ALL, ORIGIN, N2.link, frozenset(), ()) == (["link-1", "link-3", "link-4"], 0)


def test_the_origins_own_link_is_skipped_and_not_counted_as_pruned() -> None:
    assert fan_out(ALL, N3.public_key, None, frozenset(), ()) == (["link-1", "link-2", "link-4"], 0)


def test_neighbours_the_sender_or_origin_covers_are_pruned_and_counted() -> None:
    covered = frozenset({N1.peer_id, N4.peer_id})
    assert fan_out(ALL, ORIGIN, None, covered, ()) == (["link-2", "link-3"], 2)


def test_what_the_origin_or_the_sender_reaches_is_pruned_alike() -> None:
    assert fan_out(ALL, ORIGIN, None, (N2.peer_id,), ()) == (["link-1", "link-3", "link-4"], 1)
    assert fan_out(ALL, ORIGIN, None, (), (N2.peer_id,)) == (["link-1", "link-3", "link-4"], 1)
    assert fan_out(ALL, ORIGIN, None, (N1.peer_id,), (N2.peer_id,)) == (["link-3", "link-4"], 2)


def test_a_covered_source_or_origin_is_skipped_not_pruned() -> None:
    covered = frozenset({N1.peer_id, N2.peer_id, N3.peer_id})
    assert fan_out(ALL, N2.public_key, N1.link, covered, ()) == (["link-4"], 1)


def test_the_source_is_matched_by_identity_not_by_equality() -> None:
    class LinkObject:
        def __eq__(self, other: object) -> bool:
            return True  # every link "equals" every other: only identity may count

        __hash__ = object.__hash__

    links = [LinkObject(), LinkObject()]
    neighbours = [Neighbour(link, bytes([n]) * 32, bytes([n]) * 8) for n, link in enumerate(links, 1)]
    targets, pruned = fan_out(neighbours, ORIGIN, links[0], frozenset(), ())
    assert len(targets) == 1 and targets[0] is links[1] and pruned == 0


@pytest.mark.parametrize("source", [None, N1.link])
def test_no_neighbours_means_no_targets(source: str | None) -> None:
    assert fan_out([], ORIGIN, source, frozenset({N1.peer_id}), ()) == ([], 0)


def test_a_peer_with_two_links_is_reached_on_both_unless_skipped() -> None:
    twin = Neighbour("link-1b", N1.public_key, N1.peer_id)
    assert fan_out([N1, twin, N2], ORIGIN, N1.link, frozenset(), ()) == (["link-1b", "link-2"], 0)
    assert fan_out([N1, twin, N2], N1.public_key, None, frozenset(), ()) == (["link-2"], 0)
