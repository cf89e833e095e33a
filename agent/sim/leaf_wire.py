"""A virtual-time in-memory wire between host engines and firmware leaves, counting every byte.

What a node costs over hours cannot be measured on Bumble's virtual air, which runs in real time;
this wire runs hours in seconds. Its ends are host :class:`~agent.core.engine.Engine` routers and
:class:`~agent.sim.leaf_node.LeafNode` nodes (the node firmware's own ``leaf.py`` and Ed25519), as
a BLE link joins them: each frame is one ATT write (router to node) or notification (node to
router) of at most the link's MTU. Delivery has zero latency and keeps each link's order; a link
closed by one end goes down at the other after the frames already in flight; the clock jumps to
the next timer any end asked for. Connection requests are allowed.

Counted per link and direction (``LinkCount``): frames and frame bytes, what the engines and the
leaf put on the wire; what a BLE link adds on the air per frame (ATT opcode and handle, 3 bytes;
L2CAP header, 4 bytes; the link layer's own) is not included.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Protocol

from agent.core.engine import Engine
from agent.core.events import CloseLink, ConnectionRequested
from agent.core.linkspec import LinkSpec
from agent.sim.leaf_node import LeafEventKind, LeafNode


class _End(Protocol):
    def link_up(self, link: int, spec: LinkSpec, now: float) -> None: ...
    def receive(self, link: int, frame: bytes, now: float) -> None: ...
    def link_down(self, link: int, now: float) -> None: ...
    def outputs(self, now: float) -> tuple[list[tuple[int, bytes]], list[int]]:
        """Frames to send, and links this end closed."""
        ...

    def next_timer(self, now: float) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class _RouterEnd:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def link_up(self, link: int, spec: LinkSpec, now: float) -> None:
        self.engine.link_up(link, spec, now)

    def receive(self, link: int, frame: bytes, now: float) -> None:
        self.engine.receive(link, frame, now)

    def link_down(self, link: int, now: float) -> None:
        self.engine.link_down(link, now)

    def outputs(self, now: float) -> tuple[list[tuple[int, bytes]], list[int]]:
        frames: list[tuple[int, bytes]] = []
        closed: list[int] = []
        while True:  # the order of agent.core.pump: events, frames, events again
            progressed = False
            while (event := self.engine.next_event()) is not None:
                progressed = True
                if isinstance(event, ConnectionRequested):
                    self.engine.decide(event.link, True, now)
                elif isinstance(event, CloseLink):
                    closed.append(event.link)  # type: ignore[arg-type]
            for link, frame in self.engine.datagrams_to_send(now):
                progressed = True
                frames.append((link, frame))  # type: ignore[arg-type]
            if not progressed:
                return frames, closed

    def next_timer(self, now: float) -> float | None:
        return self.engine.next_timer()

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)


class _LeafEnd:
    def __init__(self, node: LeafNode) -> None:
        self.node = node
        self._timer: float | None = None

    def link_up(self, link: int, spec: LinkSpec, now: float) -> None:
        self.node.link_up(link, spec.mtu, now, spec.expected_peer)

    def receive(self, link: int, frame: bytes, now: float) -> None:
        self.node.receive(link, frame, now)

    def link_down(self, link: int, now: float) -> None:
        self.node.link_down(link, now)

    def outputs(self, now: float) -> tuple[list[tuple[int, bytes]], list[int]]:
        frames = [(int(link), frame) for link, frame in self.node.take_output()]  # type: ignore[call-overload]
        closed = [int(e.link) for e in self.node.take_events() if e.kind is LeafEventKind.DOWN]  # type: ignore[call-overload]
        # A later next_tick may answer later: keep the earliest (agent.sim.leaf_node.LeafNode.next_tick).
        at = self.node.next_tick(now)
        self._timer = at if self._timer is None or self._timer <= now else min(self._timer, at)
        return frames, closed

    def next_timer(self, now: float) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        self._timer = None
        self.node.tick(now)


@dataclass
class LinkCount:
    """Frames and bytes one end put on one link."""

    frames: int = 0
    bytes: int = 0


@dataclass
class _Link:
    a: _End
    b: _End
    up: bool = True
    sent: dict[int, LinkCount] = field(default_factory=lambda: {0: LinkCount(), 1: LinkCount()})


class LeafWire:
    """Routers and leaves on zero-latency links and a virtual clock (module docstring)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._ends: dict[Hashable, _End] = {}
        self._links: dict[int, _Link] = {}
        self._queue: deque[tuple[int, _End, bytes | None]] = deque()
        self._ids = itertools.count(1)

    def _end(self, thing: Engine | LeafNode) -> _End:
        key = id(thing)
        if key not in self._ends:
            self._ends[key] = _RouterEnd(thing) if isinstance(thing, Engine) else _LeafEnd(thing)
        return self._ends[key]

    def connect(self, a: Engine | LeafNode, b: Engine | LeafNode, spec: LinkSpec) -> int:
        """A link between ``a`` and ``b`` now, each end expecting the other's key; returns its id."""
        link = next(self._ids)
        end_a, end_b = self._end(a), self._end(b)
        self._links[link] = _Link(end_a, end_b)
        end_a.link_up(link, replace(spec, expected_peer=b.public_key), self.now)
        end_b.link_up(link, replace(spec, expected_peer=a.public_key), self.now)
        self.pump()
        return link

    def cut(self, link: int) -> None:
        """The link is gone at both ends now (a node switched off, out of range)."""
        state = self._links[link]
        if state.up:
            state.up = False
            for end in (state.a, state.b):
                end.link_down(link, self.now)
            self.pump()

    def sent(self, link: int, by: Engine | LeafNode) -> LinkCount:
        """What ``by`` has put on ``link`` so far."""
        state = self._links[link]
        count = state.sent[0 if self._end(by) is state.a else 1]
        return replace(count)

    def _service(self, end: _End) -> None:
        frames, closed = end.outputs(self.now)
        for link, frame in frames:
            state = self._links.get(link)
            if state is None or not state.up:
                continue
            count = state.sent[0 if end is state.a else 1]
            count.frames += 1
            count.bytes += len(frame)
            self._queue.append((link, state.b if end is state.a else state.a, frame))
        for link in closed:
            state = self._links.get(link)
            if state is not None and state.up:
                state.up = False
                end.link_down(link, self.now)
                self._queue.append((link, state.b if end is state.a else state.a, None))

    def pump(self, limit: int = 1_000_000) -> None:
        """Deliver until nothing is in flight (no time passes)."""
        for end in list(self._ends.values()):
            self._service(end)
        for _ in range(limit):
            if not self._queue:
                return
            link, end, frame = self._queue.popleft()
            if frame is None:
                end.link_down(link, self.now)
            elif self._links[link].up:
                end.receive(link, frame, self.now)
            self._service(end)
        raise RuntimeError("the ends never went quiet")

    def run_until(self, deadline: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Wake every end at its timers until ``deadline`` (virtual) or until ``stop()`` holds."""
        self.pump()
        while not stop():
            timers = [e.next_timer(self.now) for e in self._ends.values()]
            due = min((t for t in timers if t is not None), default=None)
            if due is None or due > deadline:
                self.now = max(self.now, deadline)
                return stop()
            self.now = max(self.now, due)
            for end in list(self._ends.values()):
                timer = end.next_timer(self.now)
                if timer is not None and timer <= self.now:
                    end.handle_timer(self.now)
                    self._service(end)
            self.pump()
        return True
