"""A "radio field": Pis at random positions with radio, some also on a LAN, and leaves on routers.

Data only, reproducible from a seed: the engine cannot run it yet (broadcast media and leaves are
the next step of issue 10); :class:`agent.sim.radio.RadioMedium` can take its positions as is.

Units: metres. The rule:

- ``n`` routers (Pis) uniform in a square whose side gives ``mean_degree`` radio neighbours on
  average at ``range_m`` (``side = range * sqrt(pi * n / mean_degree)``); redrawn (same seed stream)
  until the radio graph, nodes within ``range_m`` of each other, is connected;
- the first ``round(lan_fraction * n)`` routers in a seeded shuffle (at least 2 when the fraction is
  positive) are also on one LAN: bridges between the LAN and the radio;
- ``leaves`` leaves (BLE nodes), each placed uniformly within ``leaf_range_m`` of a router drawn at
  random, attached to every router within ``leaf_range_m`` (so a leaf may attach to several).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from agent.sim.radio import Position


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf's position and the routers (indices) it attaches to, nearest first."""

    position: Position
    routers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RadioField:
    """Routers with positions, their radio and LAN edges (i < j), and the leaves."""

    positions: tuple[Position, ...]
    range_m: float
    radio_edges: tuple[tuple[int, int], ...]
    lan: tuple[int, ...]
    leaves: tuple[Leaf, ...]

    @property
    def n(self) -> int:
        return len(self.positions)

    @property
    def lan_edges(self) -> tuple[tuple[int, int], ...]:
        """The LAN as a full mesh of its members (one switch)."""
        members = sorted(self.lan)
        return tuple((a, b) for i, a in enumerate(members) for b in members[i + 1 :])

    def radio_hops(self, origin: int) -> dict[int, int]:
        """Radio hops from ``origin`` to every router (BFS over the radio edges)."""
        adjacency: dict[int, list[int]] = {i: [] for i in range(self.n)}
        for a, b in self.radio_edges:
            adjacency[a].append(b)
            adjacency[b].append(a)
        depth, frontier = {origin: 0}, [origin]
        while frontier:
            nxt = []
            for node in frontier:
                for other in adjacency[node]:
                    if other not in depth:
                        depth[other] = depth[node] + 1
                        nxt.append(other)
            frontier = nxt
        return depth


def radio_field(
    n: int,
    seed: int = 0,
    *,
    range_m: float = 3000.0,
    mean_degree: float = 5.0,
    lan_fraction: float = 0.2,
    leaves: int = 0,
    leaf_range_m: float = 15.0,
) -> RadioField:
    """A connected radio field of ``n`` routers (see the module docstring for the rule)."""
    if n < 1 or range_m <= 0 or mean_degree <= 0 or not 0 <= lan_fraction <= 1 or leaves < 0:
        raise ValueError(
            "radio_field needs n >= 1, range_m > 0, mean_degree > 0, 0 <= lan_fraction <= 1 and "
            f"leaves >= 0; got n={n}, range_m={range_m}, mean_degree={mean_degree}, "
            f"lan_fraction={lan_fraction}, leaves={leaves}"
        )
    rng = random.Random(seed)
    side = range_m * math.sqrt(math.pi * n / mean_degree)
    for _ in range(1000):
        points = tuple((rng.uniform(0, side), rng.uniform(0, side)) for _ in range(n))
        edges = tuple(
            (i, j) for i in range(n) for j in range(i + 1, n) if math.dist(points[i], points[j]) <= range_m
        )
        field = RadioField(points, range_m, edges, (), ())
        if len(field.radio_hops(0)) == n:
            break
    else:
        raise RuntimeError(f"no connected radio field of {n} routers after 1000 draws: raise mean_degree")
    order = list(range(n))
    rng.shuffle(order)
    lan_size = min(n, max(2, round(lan_fraction * n))) if lan_fraction > 0 and n >= 2 else 0
    lan = tuple(sorted(order[:lan_size]))
    placed = []
    for _ in range(leaves):
        home = rng.randrange(n)
        angle, radius = rng.uniform(0, 2 * math.pi), leaf_range_m * math.sqrt(rng.random())
        hx, hy = points[home]
        spot = (hx + radius * math.cos(angle), hy + radius * math.sin(angle))
        near = sorted(
            (math.dist(spot, points[r]), r) for r in range(n) if math.dist(spot, points[r]) <= leaf_range_m
        )
        placed.append(Leaf(spot, tuple(r for _, r in near)))
    return RadioField(points, range_m, edges, lan, tuple(placed))
