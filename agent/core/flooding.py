"""Who gets a newly accepted record: the fan-out with neighbour-coverage pruning.

A record is flooded once, when accepted as newer, to every established link
except its source, its origin, and neighbours listed in the held links
record of the sender or of the origin: the origin sends its record to all its
neighbours, and a sender forwards to all of its neighbours that it does not
prune by this same rule (which bottoms out at the origin), so those
neighbours get it from them. Only claims held are used; a stale claim costs
a digest repair, not a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

L = TypeVar("L")


@dataclass(frozen=True, slots=True)
class Neighbour(Generic[L]):
    """An established link and the remote peer at its end."""

    link: L
    public_key: bytes
    peer_id: bytes


def fan_out(
    neighbours: Sequence[Neighbour[L]],
    origin_key: bytes,
    source: L | None,
    origin_reaches: Sequence[bytes],
    source_reaches: Sequence[bytes],
) -> tuple[list[L], int]:
    """(links to send to, how many were pruned). ``*_reaches``: peer ids the origin's and the
    sender's held links records list."""
    targets = []
    pruned = 0
    for n in neighbours:
        if n.link is source or n.public_key == origin_key:
            continue  # the sender holds it; the origin has it or a newer one: never echo
        if n.peer_id in origin_reaches or n.peer_id in source_reaches:
            pruned += 1
            continue
        targets.append(n.link)
    return targets, pruned
