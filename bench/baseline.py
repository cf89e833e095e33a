"""The baseline for figures 3 and 4: memberlist-style periodic full-state push-pull gossip.

Every node, every ``interval`` (0.2 s: memberlist's default gossip interval,
chosen for fairness; its default *push-pull* interval is 30 s, which would make
the baseline 150 times slower), picks one neighbour at random and sends it its
full state: every record it holds. The neighbour merges it and answers with
its own full state, which the initiator merges ("push-pull"). A change
therefore reaches everyone after some rounds, and every round costs the whole
state, whatever changed.

It runs on the same topologies and the same :class:`~agent.sim.LinkModel`
(latency, loss, MTU, send budget, frame overhead, airtime) as the simulator,
on a virtual clock with a heap of events. What it models, and how:

* **Bytes.** A full-state message is encoded like a RECORDS message: the sum
  of the held records' sizes (taken from the real engines' records) plus 3
  bytes per record and 5 bytes of header; above the MTU it is fragmented like
  the engine fragments (4-byte header per fragment). A message with a lost
  frame is lost.
* **Send budget and airtime** as in the simulator: a token bucket per
  direction that starts full, and frames serialised by airtime. A node starts
  a round on a link only if that link has nothing queued (it would otherwise
  queue without bound on a duty-cycled radio); answers are always queued.
* **State** starts converged (every node holds every record, as the subject
  does when measured). Only versions of records that changed are tracked;
  every other record is identical everywhere, so this is exact.
* **Failure detection** is the subject's, so only dissemination is compared:
  a link sends a keepalive (a 12-byte frame, like a SUMMARY) after
  ``keepalive`` seconds without sending, and a neighbour is declared dead
  ``dead`` seconds after anything last arrived from it. Keepalives are
  accounted for analytically (they change no state). The detecting node then
  re-issues its links record at once, as the engine does after a quiet spell
  (its ``links_debounce`` only throttles bursts).
* **Link changes** re-issue both endpoints' links records as soon as the wire
  appears or goes (no handshake: this favours the baseline).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.core.engine import EngineConfig
from agent.core.pacing import TokenBucket
from agent.core.wire import FRAGMENT_HEADER_BYTES
from agent.sim import LinkModel

#: Size of a keepalive frame: the subject's SUMMARY (frame byte, message header, 8-byte hash).
KEEPALIVE_FRAME_BYTES = 12
#: memberlist's default gossip interval.
DEFAULT_INTERVAL = 0.2
CARD = 0
LINKS = 1


@dataclass(slots=True)
class _Direction:
    """One direction of a wire: what the sender knows about sending on it."""

    model: LinkModel
    keepalive: float
    up: bool
    busy_until: float
    #: The send budget, the engine's rule (one full frame of burst).
    budget: TokenBucket
    last_tx: float
    last_arrival: float


def record_key(node: int, kind: int) -> int:
    """Records are keyed by (node, kind) packed into one int."""
    return 2 * node + kind


class GossipMesh:
    """Full-state push-pull gossip among ``n`` nodes; see the module docstring."""

    def __init__(
        self,
        n: int,
        edges: Iterable[tuple[int, int, LinkModel]],
        record_sizes: Sequence[tuple[int, int]],
        *,
        seed: int,
        start: float = 0.0,
        interval: float = DEFAULT_INTERVAL,
        config: EngineConfig | None = None,
    ) -> None:
        if len(record_sizes) != n:
            raise ValueError("one (card, links) size pair per node")
        self.n = n
        self.now = start
        self.interval = interval
        self.config = config or EngineConfig()
        self.rng = random.Random(seed)
        self.alive = [True] * n
        self._links: dict[tuple[int, int], _Direction] = {}
        self._neighbours: list[list[int]] = [[] for _ in range(n)]
        self._sizes: dict[tuple[int, int], int] = {}
        self._latest = [0] * (2 * n)
        for node, (card, links) in enumerate(record_sizes):
            self._sizes[(record_key(node, CARD), 0)] = card
            self._sizes[(record_key(node, LINKS), 0)] = links
        state_bytes = sum(card + links for card, links in record_sizes)
        self._versions: list[dict[int, int]] = [{} for _ in range(n)]
        self._total = [state_bytes] * n
        self._records = 2 * n
        self._queue: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.bytes_sent = 0
        self.frames_sent = 0
        self.messages_sent = 0
        self.keepalives_sent = 0
        self.airtime_s = 0.0
        #: Bytes and frames on radio links (those whose model has airtime), for figure 4.
        self.radio_bytes = 0
        self.radio_frames = 0
        self._missing: set[int] = set()
        self._required: dict[int, int] = {}
        self._reached_at: float | None = None
        for a, b, model in edges:
            self._add_directions(a, b, model)
        for node in range(n):
            self._push(start + self.rng.uniform(0, interval), "round", node)

    # ------------------------------------------------------------------ changes

    def set_record(self, node: int, kind: int, size: int, delay: float = 0.0) -> int:
        """Re-issue ``node``'s record of ``kind`` with a new size after ``delay``; returns its version."""
        key = record_key(node, kind)
        version = self._latest[key] + 1
        self._latest[key] = version
        self._sizes[(key, version)] = size
        if delay > 0:
            self._push(self.now + delay, "issue", node, key, version)
        else:
            self._issue(node, key, version)
        return version

    def version_of(self, node: int, kind: int) -> int:
        """The latest version issued of a node's record (0: the one every node started with)."""
        return self._latest[record_key(node, kind)]

    def size_of(self, node: int, kind: int) -> int:
        key = record_key(node, kind)
        return self._sizes[(key, self._latest[key])]

    def add_edge(self, a: int, b: int, model: LinkModel, links_sizes: tuple[int, int]) -> None:
        """A wire appears now; both ends re-issue their links records at once."""
        self._add_directions(a, b, model)
        for node, size in zip((a, b), links_sizes, strict=True):
            self.set_record(node, LINKS, size)

    def remove_edge(self, a: int, b: int, links_sizes: tuple[int, int]) -> None:
        """A wire goes now; both ends re-issue their links records at once."""
        for u, v in ((a, b), (b, a)):
            self._drop_direction(u, v)
        for node, size in zip((a, b), links_sizes, strict=True):
            self.set_record(node, LINKS, size)

    def kill(self, victim: int, links_sizes_after: Mapping[int, int]) -> dict[int, float]:
        """``victim`` vanishes now. Returns when each neighbour will declare it dead.

        ``links_sizes_after`` gives each neighbour's links record size without the victim.
        """
        detections: dict[int, float] = {}
        for u in list(self._neighbours[victim]):
            inbound = self._links[(victim, u)]
            self._account_keepalives(inbound, self.now)
            # A message still in flight is lost with the victim (as in the simulator).
            detections[u] = min(inbound.last_arrival, self.now) + self.config.dead_interval
        for u in list(self._neighbours[victim]):
            self._drop_direction(victim, u)
        self.alive[victim] = False
        self._missing.discard(victim)
        for u, when in detections.items():
            self._push(max(when, self.now), "dead", u, victim, links_sizes_after[u])
        return detections

    # ------------------------------------------------------------------ running

    def run_until(self, deadline: float) -> None:
        while self._queue and self._queue[0][0] <= deadline:
            self._step()
        self.now = max(self.now, deadline)

    def run_until_all_hold(
        self, required: Mapping[tuple[int, int], int], timeout: float, nodes: Iterable[int] | None = None
    ) -> float | None:
        """Run until every live node (or each of ``nodes``) holds at least these versions of these
        (node, kind) records.

        Returns the time that took, or ``None`` after ``timeout`` (the clock then stands at the timeout).
        """
        start = self.now
        self._required = {record_key(node, kind): version for (node, kind), version in required.items()}
        watched = range(self.n) if nodes is None else nodes
        self._missing = {u for u in watched if self.alive[u] and not self._holds(u)}
        self._reached_at = None if self._missing else self.now
        deadline = start + timeout
        while self._reached_at is None and self._queue and self._queue[0][0] <= deadline:
            self._step()
        reached = self._reached_at
        self._required = {}
        self._missing = set()
        if reached is None:
            self.now = max(self.now, deadline)
            return None
        return reached - start

    def totals(self) -> dict[str, float]:
        """Everything sent so far (keepalives accounted up to now)."""
        for (u, _), direction in self._links.items():
            if direction.up and self.alive[u]:
                self._account_keepalives(direction, self.now)
        return {
            "bytes": float(self.bytes_sent),
            "frames": float(self.frames_sent),
            "messages": float(self.messages_sent),
            "keepalives": float(self.keepalives_sent),
            "airtime_s": self.airtime_s,
            "radio_bytes": float(self.radio_bytes),
            "radio_frames": float(self.radio_frames),
        }

    def state_message_bytes(self, node: int) -> int:
        """Bytes of the full-state message ``node`` would send now (before framing)."""
        return self._total[node] + 3 * self._records + 4

    # ------------------------------------------------------------------ internals

    def _push(self, when: float, kind: str, *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), kind, args))

    def _step(self) -> None:
        when, _, kind, args = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        if kind == "round":
            self._round(args[0])
        elif kind == "arrive":
            self._arrive(*args)
        elif kind == "issue":
            self._issue(*args)
        elif kind == "dead":
            node, victim, size = args
            if self.alive[node] and (node, victim) in self._links:
                self._drop_direction(node, victim)
                self.set_record(node, LINKS, size)

    def _add_directions(self, a: int, b: int, model: LinkModel) -> None:
        for u, v in ((a, b), (b, a)):
            keepalive = model.keepalive_interval or self.config.keepalive_interval
            budget = TokenBucket(model.bytes_per_second, model.mtu + model.frame_overhead_bytes, self.now)
            self._links[(u, v)] = _Direction(model, keepalive, True, self.now, budget, self.now, self.now)
            self._neighbours[u] = sorted({*self._neighbours[u], v})

    def _drop_direction(self, u: int, v: int) -> None:
        direction = self._links.pop((u, v), None)
        if direction is not None and self.alive[u]:
            self._account_keepalives(direction, self.now)
        self._neighbours[u] = [x for x in self._neighbours[u] if x != v]

    def _issue(self, node: int, key: int, version: int) -> None:
        if self.alive[node]:
            self._set(node, key, version)
            self._check(node)

    def _set(self, node: int, key: int, version: int) -> None:
        versions = self._versions[node]
        old = versions.get(key, 0)
        if version > old:
            self._total[node] += self._sizes[(key, version)] - self._sizes[(key, old)]
            versions[key] = version

    def _holds(self, node: int) -> bool:
        versions = self._versions[node]
        return all(versions.get(key, 0) >= version for key, version in self._required.items())

    def _check(self, node: int) -> None:
        if node in self._missing and self._holds(node):
            self._missing.discard(node)
            if not self._missing and self._reached_at is None:
                self._reached_at = self.now

    def _round(self, node: int) -> None:
        if not self.alive[node]:
            return
        self._push(self.now + self.interval, "round", node)
        neighbours = self._neighbours[node]
        if not neighbours:
            return
        other = neighbours[self.rng.randrange(len(neighbours))]
        if self._links[(node, other)].busy_until > self.now:
            return
        self._send(node, other, push=True)

    def _arrive(self, sender: int, receiver: int, snapshot: dict[int, int], push: bool) -> None:
        if not self.alive[receiver] or (sender, receiver) not in self._links:
            return
        changed = False
        for key, version in snapshot.items():
            if version > self._versions[receiver].get(key, 0):
                self._set(receiver, key, version)
                changed = True
        if changed:
            self._check(receiver)
        if push and (receiver, sender) in self._links:
            self._send(receiver, sender, push=False)

    def _frames(self, message: int, mtu: int) -> list[int]:
        if message + 1 <= mtu:
            return [message + 1]
        chunk = mtu - FRAGMENT_HEADER_BYTES
        count = math.ceil(message / chunk)
        last = message - chunk * (count - 1)
        return [mtu] * (count - 1) + [last + FRAGMENT_HEADER_BYTES]

    def _send(self, sender: int, receiver: int, push: bool) -> None:
        direction = self._links[(sender, receiver)]
        self._account_keepalives(direction, self.now)
        model = direction.model
        t = max(self.now, direction.busy_until)
        lost = False
        for frame in self._frames(self.state_message_bytes(sender), model.mtu):
            cost = frame + model.frame_overhead_bytes
            t = direction.budget.ready_at(cost, t)  # a frame never exceeds the budget's capacity
            paid = direction.budget.try_take(cost, t)
            assert paid
            airtime = cost * model.airtime_per_byte
            t += airtime
            self.bytes_sent += frame
            self.frames_sent += 1
            self.airtime_s += airtime
            if model.airtime_per_byte:
                self.radio_bytes += frame
                self.radio_frames += 1
            if model.loss and self.rng.random() < model.loss:
                lost = True
        self.messages_sent += 1
        direction.busy_until = t
        direction.last_tx = t
        if lost:
            return
        arrival = t + model.latency
        direction.last_arrival = arrival
        self._push(arrival, "arrive", sender, receiver, dict(self._versions[sender]), push)

    def _account_keepalives(self, direction: _Direction, upto: float) -> None:
        """Keepalives the sender owes for idle time since its last frame, up to ``upto``."""
        idle = upto - direction.last_tx
        if idle < direction.keepalive:
            return
        count = math.floor(idle / direction.keepalive)
        model = direction.model
        airtime = (KEEPALIVE_FRAME_BYTES + model.frame_overhead_bytes) * model.airtime_per_byte
        self.keepalives_sent += count
        self.bytes_sent += count * KEEPALIVE_FRAME_BYTES
        self.frames_sent += count
        self.airtime_s += count * airtime
        if model.airtime_per_byte:
            self.radio_bytes += count * KEEPALIVE_FRAME_BYTES
            self.radio_frames += count
        direction.last_tx += count * direction.keepalive
        direction.last_arrival = max(direction.last_arrival, direction.last_tx + airtime + model.latency)
