"""Who is in the graph: the "both ends claim it" edge rule, hop counts and the departure grace.

**The edge rule.** A connection between two remote peers counts only when
both list it, with the same type, in their links records (a departed peer's
stale record cannot keep it alive); its distance is the mean of both claims
(:func:`~agent.core.records.mean_distance_dm`). The local peer's own links
count as they are. The fleet view (:mod:`agent.mqtt.fleet`) applies the same
rule through :func:`mutual_edges`.

**Hops** are a breadth-first search from the local peer over those edges.
**Departure grace:** a peer no longer reachable stays shown, with its last
hop count, for ``grace`` seconds (a link flap does not flicker the graph).
Removals within ``settle`` seconds share one evaluation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from agent.core.records import mean_distance_dm

Claims = Mapping[tuple[bytes, int], int | None]
#: (low peer id, high peer id, connection type code) -> distance in decimetres.
Edges = dict[tuple[bytes, bytes, int], int | None]


def mutual_edges(claims: Mapping[bytes, Claims], among: Collection[bytes]) -> Edges:
    """Connections among ``among`` that both ends claim with the same type."""
    edges: Edges = {}
    for pid, mine in claims.items():
        if pid not in among:
            continue
        for (nid, code), dist in mine.items():
            if pid < nid and nid in among:
                back = claims.get(nid)
                if back is not None and (pid, code) in back:
                    edges[(pid, nid, code)] = mean_distance_dm(dist, back[(pid, code)])
    return edges


def hop_counts(
    local_id: bytes, neighbours: Iterable[bytes], claims: Mapping[bytes, Claims], known: Collection[bytes]
) -> dict[bytes, int]:
    """Hops from the local peer to every ``known`` peer reachable over mutual claims."""
    hops = {local_id: 0}
    frontier = [nid for nid in neighbours if nid in known and nid != local_id]
    for nid in frontier:
        hops[nid] = 1
    depth = 1
    while frontier:
        depth += 1
        nxt = []
        for pid in frontier:
            for nid, code in claims.get(pid, ()):
                if nid not in hops and nid in known and (pid, code) in claims.get(nid, ()):
                    hops[nid] = depth
                    nxt.append(nid)
        frontier = nxt
    return hops


class Reachability:
    """The peers shown now, with hop counts, and those leaving under the departure grace."""

    def __init__(self, grace: float, settle: float) -> None:
        self.grace = grace
        self.settle = settle
        self.visible: dict[bytes, int] = {}
        # Peers that stopped being reachable: (since when, last hop count).
        self._gone: dict[bytes, tuple[float, int]] = {}
        self.stale = True
        #: When a settled removal is due for evaluation.
        self.due: float | None = None

    def schedule_removal(self, now: float) -> None:
        """A connection went away: evaluate once removals settle. Bring :attr:`visible` up to date
        first (:meth:`update`, if :attr:`stale`), so peers reachable until now keep their grace."""
        if self.due is None:
            self.due = now + self.settle

    def update(self, hops: dict[bytes, int], now: float) -> bool:
        """Take a fresh search result; ``True`` if what is shown changed."""
        before = self.visible
        gone_before = len(self._gone)
        for pid, last_hops in before.items():
            if pid not in hops and pid not in self._gone:
                self._gone[pid] = (now, last_hops)
        for pid, (since, _) in list(self._gone.items()):
            if pid in hops or since + self.grace <= now:
                del self._gone[pid]
        changed = hops != before or len(self._gone) != gone_before
        self.visible = hops
        self.stale = False
        self.due = None
        return changed

    def shown(self, known: Collection[bytes]) -> dict[bytes, int]:
        """Reachable peers and those in their grace (while still ``known``), with hop counts."""
        shown = dict(self.visible)
        for pid, (_, hops) in self._gone.items():
            if pid in known:
                shown.setdefault(pid, hops)
        return shown

    def next_deadline(self) -> float | None:
        """When the next evaluation is due (a settled removal, or a grace running out)."""
        grace = min((since for since, _ in self._gone.values()), default=None)
        deadlines = [t for t in (self.due, None if grace is None else grace + self.grace) if t is not None]
        return min(deadlines, default=None)


def first_hops(
    local_id: bytes, neighbours: Collection[bytes], claims: Mapping[bytes, Claims], known: Collection[bytes]
) -> dict[bytes, tuple[int, bytes | None]]:
    """Every reachable remote peer -> (hops, the neighbour all its shortest paths start at, or
    ``None`` when they start at two or more). The same search as :func:`hop_counts`."""
    route: dict[bytes, tuple[int, bytes | None]] = {
        nid: (1, nid) for nid in neighbours if nid in known and nid != local_id
    }
    seen = {local_id, *route}
    frontier = list(route)
    depth = 1
    while frontier:
        depth += 1
        level: dict[bytes, bytes | None] = {}
        for pid in frontier:
            via = route[pid][1]
            for nid, code in claims.get(pid, ()):
                if nid in seen or nid not in known or (pid, code) not in claims.get(nid, ()):
                    continue
                if nid not in level:
                    level[nid] = via
                elif level[nid] != via:
                    level[nid] = None
        for nid, via in level.items():
            route[nid] = (depth, via)
        seen.update(level)
        frontier = list(level)
    return route
