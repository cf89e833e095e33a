"""Who keeps a place in a full peer table: the Sybil policy (issue 13, item 1).

Keys are free, so one admitted neighbour can offer any number of self-signed
peers. The table is bounded (``max_peers`` peers, ``max_held_bytes`` of
records); what this module decides is who gives up a place when it is full.

**The rule.** A newcomer takes the place of the held peer with the weakest
standing, and only if it stands stronger itself; otherwise it is refused
(``capacity``). Standing, strongest first:

1. *anchored* — this peer and its first-hand neighbours: never displaced;
2. *reachable* over mutual claims: nearer (fewer hops) stands stronger;
3. *unreachable* (a card whose owner is not in the graph): weakest, the oldest
   out first.

Within a standing (and, for reachable peers, at equal hops), a peer charged to
a heavier neighbour stands weaker. Every non-anchored peer is charged to one
group: a reachable one to the neighbour all its shortest paths start at (or to
:data:`MANY` when they start at several), an unreachable one to the neighbour
that first delivered it (or to :data:`STORE` when loaded at start). A neighbour's weight
is what its charged peers occupy: their record bytes plus :data:`SLOT_BYTES`
each. So a flooding neighbour's newcomers are refused once it is the heaviest,
while a newcomer brought by anyone else takes one of the flood's places: a
peer seen first-hand, or reachable without passing through the flooder,
outranks the flood, and the flood never holds more than the room others leave.
Hops rank before groups because an admitted attacker can make its fake peers
reachable (they claim each other, and it claims up to 64 of them) but never
nearer than one hop beyond itself; that a multi-path peer is not anchored
keeps an attacker linked to two honest peers from anchoring its whole tree.
What remains until fleet trust: fake peers can push out honest ones that are
farther away than they are.

The charges come from a breadth-first search over mutual claims
(:func:`~agent.core.reachability.first_hops`); it runs at most once per
``refresh`` seconds of engine time while the table is full, and between
searches the groups are kept up to date incrementally (an eviction leaves its
group, an admission joins one), so refusing a flood costs a few dictionary
operations per record.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from agent.core.reachability import Claims, first_hops

#: The group of unreachable peers loaded from the store (no neighbour delivered them).
STORE: Final = b""
#: The group of reachable peers whose shortest paths start at two or more neighbours.
MANY: Final = b"*"
#: What one held peer costs beside its record bytes (dictionary entries, key, objects).
SLOT_BYTES: Final = 1024


class Standing(enum.IntEnum):
    """How firmly a peer holds its place (lower is firmer)."""

    ANCHORED = 0
    REACHABLE = 1
    UNREACHABLE = 2


@dataclass(frozen=True, slots=True)
class Claim:
    """A peer's claim to a place: its standing, hops (reachable only) and the group charged."""

    standing: Standing
    group: bytes = STORE
    hops: int = 0


ANCHORED: Final = Claim(Standing.ANCHORED)


@dataclass(slots=True)
class _Group:
    """The peers charged to one neighbour (or to the store)."""

    weight: int = 0
    #: Unreachable members in admission order (oldest first) -> bytes charged.
    unreachable: dict[bytes, int] = field(default_factory=dict)
    #: Reachable members sorted by (hops, peer id), farthest last -> bytes charged.
    reachable: list[tuple[int, bytes, int]] = field(default_factory=list)


class Occupancy:
    """Charges held peers to neighbours and picks who gives up a place (see the module docstring)."""

    def __init__(self, refresh: float) -> None:
        self.refresh = refresh
        #: Who first delivered each held remote peer (a neighbour's peer id, or STORE).
        self._origin: dict[bytes, bytes] = {}
        self._groups: dict[bytes, _Group] = {}
        self._where: dict[bytes, Claim] = {}
        self._stale = True
        self._searched_at: float | None = None

    # ------------------------------------------------------------------ bookkeeping

    def admitted(self, pid: bytes, claim: Claim | None, size: int, via: bytes) -> None:
        """A new peer now holds a place, charged as ``claim`` says (``None``: not worked out, the
        table was not full); ``via`` delivered it."""
        self._origin.setdefault(pid, via)
        if claim is None:
            self._stale = True
        elif not self._stale:
            self._join(pid, claim, size)

    def forgotten(self, pid: bytes) -> None:
        """A peer left the table (expired, evicted, dropped)."""
        self._origin.pop(pid, None)
        self._stale = True

    def topology_changed(self) -> None:
        """Claims or neighbours changed: the next decision may search again."""
        self._stale = True

    def prune(self, held: Iterable[bytes]) -> None:
        """Forget the origin of every peer not in ``held`` (keeps the map bounded by the table)."""
        keep = set(held)
        for pid in [p for p in self._origin if p not in keep]:
            del self._origin[pid]

    def claim_of(self, pid: bytes) -> Claim | None:
        """A held remote peer's claim as of the last search and admissions since (``None``: unplaced)."""
        return self._where.get(pid)

    def due(self, now: float) -> bool:
        """Whether :meth:`place` would search now (the caller gathers its inputs only then)."""
        return self._stale and (self._searched_at is None or now >= self._searched_at + self.refresh)

    def group_weight(self, group: bytes) -> int:
        placed = self._groups.get(group)
        return placed.weight if placed is not None else 0

    # ------------------------------------------------------------------ decisions

    def place(
        self,
        now: float,
        local_id: bytes,
        neighbours: Iterable[bytes],
        claims: Mapping[bytes, Claims],
        held: Mapping[bytes, int],
    ) -> None:
        """Search again if the groups are stale and the last search is ``refresh`` old.

        ``held``: every held remote peer id -> the bytes of its records.
        """
        if not self.due(now):
            return
        self._searched_at = now
        self._stale = False
        self._groups = {}
        self._where = {}
        firsts = set(neighbours)
        paths = first_hops(local_id, firsts, claims, held.keys() | {local_id})
        for pid, size in held.items():
            if pid == local_id or pid in firsts:
                continue
            route = paths.get(pid)
            if route is None:
                claim = Claim(Standing.UNREACHABLE, self._origin.get(pid, STORE))
            else:
                claim = Claim(Standing.REACHABLE, MANY if route[1] is None else route[1], route[0])
            self._join(pid, claim, size)
        for placed in self._groups.values():
            placed.reachable.sort()
        # Unreachable members in admission order: the origin map is in admission order.
        for pid in self._origin:
            where = self._where.get(pid)
            if where is not None and where.standing is Standing.UNREACHABLE:
                group = self._groups[where.group]
                group.unreachable[pid] = group.unreachable.pop(pid)

    def newcomer(self, claim: Claim, size: int) -> tuple[int, int, int]:
        """The eviction key a newcomer with ``claim`` would have (compare with :meth:`weakest`)."""
        weight = self.group_weight(claim.group) + size + SLOT_BYTES
        return _key(claim, weight, newest=True)

    def weakest(
        self, is_held: Callable[[bytes], bool], spare: bytes | None = None
    ) -> tuple[tuple[int, int, int], bytes] | None:
        """The held peer with the weakest standing and its eviction key (``spare`` excluded)."""
        best: tuple[tuple[int, int, int], bytes] | None = None
        for group_id, group in self._groups.items():
            pid = _first_held(group, is_held, spare)
            if pid is None:
                continue
            key = _key(self._where[pid], group.weight, newest=False)
            if best is None or key > best[0] or (key == best[0] and group_id < self._where[best[1]].group):
                best = (key, pid)
        return best

    def evicted(self, pid: bytes) -> None:
        """``pid`` gave up its place (the caller forgets its records)."""
        claim = self._where.pop(pid, None)
        self._origin.pop(pid, None)
        if claim is None or claim.standing is Standing.ANCHORED:
            return
        group = self._groups[claim.group]
        if claim.standing is Standing.UNREACHABLE:
            group.weight -= group.unreachable.pop(pid, 0)
        else:
            for i, (_, member, size) in enumerate(group.reachable):
                if member == pid:
                    group.weight -= size
                    del group.reachable[i]
                    break

    # ------------------------------------------------------------------ internals

    def _join(self, pid: bytes, claim: Claim, size: int) -> None:
        self._where[pid] = claim
        if claim.standing is Standing.ANCHORED:
            return
        group = self._groups.setdefault(claim.group, _Group())
        charged = size + SLOT_BYTES
        group.weight += charged
        if claim.standing is Standing.UNREACHABLE:
            group.unreachable[pid] = charged
        else:
            _insort(group.reachable, (claim.hops, pid, charged))


def _key(claim: Claim, weight: int, newest: bool) -> tuple[int, int, int]:
    """Larger is weaker. Unreachable: by group weight, then age; reachable: by hops, then weight."""
    if claim.standing is Standing.ANCHORED:
        return (0, 0, 0)
    if claim.standing is Standing.UNREACHABLE:
        return (2, weight, 0 if newest else 1)
    return (1, claim.hops, weight)


def _first_held(group: _Group, is_held: Callable[[bytes], bool], spare: bytes | None) -> bytes | None:
    """The group's weakest member still held: its oldest unreachable, else its farthest reachable.
    Members no longer held (forgotten since the last search) are dropped on the way."""
    gone = []
    found = None
    for pid in group.unreachable:
        if not is_held(pid):
            gone.append(pid)
        elif pid != spare:
            found = pid
            break
    for pid in gone:
        group.weight -= group.unreachable.pop(pid)
    if found is not None:
        return found
    while group.reachable and not is_held(group.reachable[-1][1]):
        group.weight -= group.reachable.pop()[2]
    for _, pid, _ in reversed(group.reachable):
        if pid != spare and is_held(pid):
            return pid
    return None


def _insort(members: list[tuple[int, bytes, int]], item: tuple[int, bytes, int]) -> None:
    lo, hi = 0, len(members)
    while lo < hi:
        mid = (lo + hi) // 2
        if members[mid][:2] < item[:2]:
            lo = mid + 1
        else:
            hi = mid
    members.insert(lo, item)
