"""Topologies for the simulator: lists of edges between peer indices, reproducible from a seed."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topology:
    """``n`` peers, undirected ``edges`` (i < j) and optional 2-D positions in metres."""

    name: str
    n: int
    edges: tuple[tuple[int, int], ...]
    positions: tuple[tuple[float, float], ...] = ()

    def distance_dm(self, a: int, b: int) -> int | None:
        if not self.positions:
            return None
        (xa, ya), (xb, yb) = self.positions[a], self.positions[b]
        return round(math.hypot(xa - xb, ya - yb) * 10)

    def eccentricity(self, origin: int) -> int:
        """Hops from ``origin`` to the farthest peer (the hop-optimal flooding depth)."""
        adjacency: dict[int, list[int]] = {i: [] for i in range(self.n)}
        for a, b in self.edges:
            adjacency[a].append(b)
            adjacency[b].append(a)
        depth = hop_depths(adjacency, [origin])
        if len(depth) != self.n:
            raise ValueError(f"{self.name} topology is not connected")
        return max(depth.values())


def hop_depths(
    adjacency: Mapping[int, Sequence[int]] | Sequence[Sequence[int]], origins: Iterable[int]
) -> dict[int, int]:
    """Hops from the nearest of ``origins`` to every node reachable over ``adjacency`` (BFS)."""
    depth = dict.fromkeys(origins, 0)
    frontier = list(depth)
    while frontier:
        nxt = []
        for node in frontier:
            for other in adjacency[node]:
                if other not in depth:
                    depth[other] = depth[node] + 1
                    nxt.append(other)
        frontier = nxt
    return depth


def line(n: int) -> Topology:
    """0 - 1 - 2 - ... - n-1, 10 m apart."""
    return Topology(
        "line",
        n,
        tuple((i, i + 1) for i in range(n - 1)),
        tuple((10.0 * i, 0.0) for i in range(n)),
    )


def grid(n: int) -> Topology:
    """The nearest square-ish grid holding ``n`` peers, 4-neighbour links, 10 m spacing."""
    width = max(1, math.isqrt(n))
    if width * width < n:
        width += 1
    edges = []
    for i in range(n):
        x = i % width
        if x + 1 < width and i + 1 < n:
            edges.append((i, i + 1))
        if i + width < n:
            edges.append((i, i + width))
    positions = tuple((10.0 * (i % width), 10.0 * (i // width)) for i in range(n))
    return Topology("grid", n, tuple(edges), positions)


def random_geometric(n: int, seed: int = 0, mean_degree: float = 8.0) -> Topology:
    """Peers uniform in a square; linked when closer than a radius giving ``mean_degree``.

    Retries with new points (same seed stream, radius grown 1 % a try) until the
    graph is connected, so the result is reproducible from ``seed``.
    """
    rng = random.Random(seed)
    side = 100.0 * math.sqrt(n)
    radius = side * math.sqrt(mean_degree / (math.pi * max(1, n - 1)))
    for _ in range(100):
        points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(n)]
        edges = _edges_within(points, radius)
        topo = Topology("random_geometric", n, tuple(edges), tuple(points))
        try:
            topo.eccentricity(0)
        except ValueError:
            radius *= 1.01
            continue
        return topo
    raise RuntimeError(f"could not build a connected random geometric graph of {n} peers")


def _edges_within(points: list[tuple[float, float]], radius: float) -> list[tuple[int, int]]:
    # Bucket points into radius-sized cells so this stays O(n) for large n.
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(points):
        cells.setdefault((int(x // radius), int(y // radius)), []).append(i)
    edges = []
    r2 = radius * radius
    for i, (x, y) in enumerate(points):
        cx, cy = int(x // radius), int(y // radius)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cells.get((cx + dx, cy + dy), ()):
                    if j > i:
                        xj, yj = points[j]
                        if (x - xj) ** 2 + (y - yj) ** 2 <= r2:
                            edges.append((i, j))
    return sorted(edges)


TOPOLOGY_NAMES = ("line", "grid", "random_geometric")


def build(name: str, n: int, seed: int = 0) -> Topology:
    """A topology by name: ``line``, ``grid`` or ``random_geometric``."""
    if name == "random_geometric":
        return random_geometric(n, seed)
    if name == "line":
        return line(n)
    if name == "grid":
        return grid(n)
    raise ValueError(f"unknown topology {name!r}; choose line, grid or random_geometric")
