"""A stateful fuzz of three real engines over in-memory links (issue 13).

A :class:`hypothesis.stateful.RuleBasedStateMachine` drives three
:class:`~agent.core.engine.Engine`s built like ``test_engine.make_node``. It
owns the links itself (link id -> the two engine indexes and the MTU) and a
FIFO of frames in flight, and interleaves at random: links opening and
closing, frames delivered or lost, garbage and corrupted copies of in-flight
frames injected, connection requests allowed or denied, the clock jumping
0..5 s with every due timer handled, cards re-signed with new metadata, and
the engines' outputs drained onto the wire (``CloseLink`` takes the link down
at the other end too), or a few loss-free round trips at once.

After every step: nothing raised (any exception fails the test: a remote can
only cause typed, counted handling), each engine's graph has itself as the
local peer and only peers whose card it holds, ``next_timer()`` is a real
number, every frame emitted fit its link's MTU, and no engine holds more
than three peers' two records. At the end all faults stop, every pair gets a
link, ten seconds pass with full delivery, and all three engines must agree
on the set of peers: all three of them.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_engine import NOW, Node, make_node

from agent.core.engine import LinkSpec
from agent.core.events import CloseLink, ConnectionRequested, LinkId
from agent.core.keys import public_key_from_string
from agent.core.records import ConnectionType, RecordKind, make_card

PEERS = 3
#: Each peer holds its own and every other peer's card and links record, no more.
MAX_HELD = PEERS * 2
MAX_DT = 5.0
MAX_LINKS = 4
SETTLE = 10.0

metadata = st.dictionaries(
    st.sampled_from(["room", "role", "n"]),
    st.one_of(st.integers(-1000, 1000), st.text(max_size=8), st.booleans()),
    max_size=3,
)


class EngineMesh(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.nodes: list[Node] = [make_node(name) for name in "abc"]
        self.ids = itertools.count(1)
        #: link id -> (index of one end, index of the other end, MTU)
        self.links: dict[LinkId, tuple[int, int, int]] = {}
        #: (destination index, link, frame), oldest first
        self.in_flight: deque[tuple[int, LinkId, bytes]] = deque()
        #: (index of the engine asking, link) of unanswered connection requests
        self.pending: list[tuple[int, LinkId]] = []
        self.oversized: list[tuple[int, LinkId, int, int]] = []
        self.auto_allow = False

    # ------------------------------------------------------------ plumbing

    def other(self, index: int, link: LinkId) -> int:
        a, b, _ = self.links[link]
        return b if index == a else a

    def open_link(self, a: int, b: int, mtu: int) -> LinkId:
        link = next(self.ids)
        self.links[link] = (a, b, mtu)
        spec = LinkSpec(ConnectionType.WEB_SOCKET, mtu=mtu)
        for mine, theirs in ((a, b), (b, a)):
            expected = replace(spec, expected_peer=self.nodes[theirs].key)
            self.nodes[mine].engine.link_up(link, expected, self.now)
        return link

    def drop_link(self, link: LinkId) -> None:
        a, b, _ = self.links.pop(link)
        for index in (a, b):
            self.nodes[index].engine.link_down(link, self.now)

    def collect_events(self) -> None:
        """Take every engine's events: record requests, apply CloseLink at both ends."""
        progressed = True
        while progressed:
            progressed = False
            for index, node in enumerate(self.nodes):
                while (event := node.engine.next_event()) is not None:
                    progressed = True
                    if isinstance(event, ConnectionRequested):
                        if self.auto_allow:
                            node.engine.decide(event.link, True, self.now)
                        else:
                            self.pending.append((index, event.link))
                    elif isinstance(event, CloseLink) and event.link in self.links:
                        self.drop_link(event.link)

    def drain(self) -> bool:
        """Move every engine's frames onto the wire; True if any were sent."""
        sent = False
        for index, node in enumerate(self.nodes):
            for link, frame in node.engine.datagrams_to_send(self.now):
                sent = True
                if link not in self.links:
                    continue  # the far end is already gone
                mtu = self.links[link][2]
                if len(frame) > mtu:
                    self.oversized.append((index, link, len(frame), mtu))
                self.in_flight.append((self.other(index, link), link, frame))
            self.collect_events()
        return sent

    def deliver_next(self) -> None:
        index, link, frame = self.in_flight.popleft()
        self.nodes[index].engine.receive(link, frame, self.now)

    def fire_timers(self) -> None:
        for node in self.nodes:
            timer = node.engine.next_timer()
            if timer is not None and timer <= self.now:
                node.engine.handle_timer(self.now)

    # ------------------------------------------------------------ rules

    @precondition(lambda self: len(self.links) < MAX_LINKS)
    @rule(
        pair=st.sampled_from(list(itertools.permutations(range(PEERS), 2))),
        mtu=st.integers(32, 1400),
    )
    def open(self, pair: tuple[int, int], mtu: int) -> None:
        self.open_link(*pair, mtu)
        self.collect_events()

    @precondition(lambda self: self.links)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        self.drop_link(data.draw(st.sampled_from(list(self.links)), label="link"))
        self.collect_events()

    @precondition(lambda self: self.in_flight)
    @rule()
    def deliver(self) -> None:
        self.deliver_next()
        self.collect_events()

    @precondition(lambda self: self.in_flight)
    @rule()
    def lose(self) -> None:
        self.in_flight.popleft()

    @precondition(lambda self: self.links)
    @rule(data=st.data(), garbage=st.binary(max_size=80))
    def inject_garbage(self, data: st.DataObject, garbage: bytes) -> None:
        link = data.draw(st.sampled_from(list(self.links)), label="link")
        index = data.draw(st.sampled_from(self.links[link][:2]), label="end")
        self.nodes[index].engine.receive(link, garbage, self.now)
        self.collect_events()

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def inject_corrupted(self, data: st.DataObject) -> None:
        at = data.draw(st.integers(0, len(self.in_flight) - 1), label="frame")
        index, link, frame = self.in_flight[at]
        damaged = bytearray(frame)
        pos = data.draw(st.integers(0, len(damaged) - 1), label="byte")
        damaged[pos] ^= data.draw(st.integers(1, 255), label="xor")
        cut = data.draw(st.integers(0, len(damaged)), label="keep")
        self.nodes[index].engine.receive(link, bytes(damaged[:cut] if cut else damaged), self.now)
        self.collect_events()

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def decide(self, data: st.DataObject) -> None:
        """Answer every pending request, mostly with allow."""
        pending, self.pending = self.pending, []
        for index, link in pending:
            allow = data.draw(st.sampled_from([True, True, True, False]), label="allow")
            self.nodes[index].engine.decide(link, allow, self.now)
        self.collect_events()

    @rule(dt=st.floats(0.0, MAX_DT, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.fire_timers()
        self.collect_events()

    @rule(index=st.integers(0, PEERS - 1), meta=metadata)
    def change_card(self, index: int, meta: dict[str, object]) -> None:
        node = self.nodes[index]
        node.engine.set_card(make_card(node.name, "linux", "0.1.0", meta), self.now)
        self.collect_events()

    @rule()
    def send(self) -> None:
        self.drain()

    @rule(rounds=st.integers(1, 6))
    def exchange(self, rounds: int) -> None:
        """A few loss-free round trips: drain, then deliver what was in flight."""
        for _ in range(rounds):
            self.drain()
            for _ in range(len(self.in_flight)):
                self.deliver_next()
                self.collect_events()

    # ------------------------------------------------------------ invariants

    @invariant()
    def graphs_hold_cards(self) -> None:
        for node in self.nodes:
            graph = node.engine.graph(self.now)
            assert graph.local_peer.peer_key_string == node.engine.peer_key_string
            for peer in graph.remote_peers:
                held = node.engine.records_of(public_key_from_string(peer.peer_key_string))
                assert any(r.kind is RecordKind.CARD for r in held), (node.name, peer.device_name)

    @invariant()
    def timers_are_real(self) -> None:
        for node in self.nodes:
            timer = node.engine.next_timer()
            assert timer is not None and not math.isnan(timer), (node.name, timer)

    @invariant()
    def frames_fit_their_links(self) -> None:
        assert not self.oversized, self.oversized

    @invariant()
    def holdings_are_bounded(self) -> None:
        for node in self.nodes:
            assert node.engine.held_record_count() <= MAX_HELD, (node.name, node.engine.held_record_count())

    # ------------------------------------------------------------ convergence

    def pump(self) -> None:
        for _ in range(100_000):
            self.collect_events()
            self.drain()
            if not self.in_flight:
                return
            while self.in_flight:
                self.deliver_next()
                self.collect_events()
        raise AssertionError("the engines never went quiet")

    def connect_every_pair(self) -> None:
        for a, b in itertools.combinations(range(PEERS), 2):
            if not any({x, y} == {a, b} for x, y, _ in self.links.values()):
                self.open_link(a, b, 1400)

    def teardown(self) -> None:
        # No more faults: answer every request with allow, deliver everything, link every pair.
        self.auto_allow = True
        for index, link in self.pending:
            self.nodes[index].engine.decide(link, True, self.now)
        self.pending.clear()
        self.connect_every_pair()
        deadline = self.now + SETTLE
        for _ in range(100_000):
            self.pump()
            self.connect_every_pair()
            self.pump()
            due = min(node.engine.next_timer() or math.inf for node in self.nodes)
            if due > deadline:
                break
            self.now = max(self.now, due)
            self.fire_timers()
        else:
            raise AssertionError("timers kept firing without the clock moving on")
        self.now = deadline
        everyone = {node.engine.peer_key_string for node in self.nodes}
        for node in self.nodes:
            seen = {p.peer_key_string for p in node.engine.graph(self.now).peers()}
            assert seen == everyone, (node.name, len(seen))
        assert not self.oversized, self.oversized


SHORT = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
LONG = settings(SHORT, max_examples=500, stateful_step_count=100)


class TestEngineStateful(EngineMesh.TestCase):  # type: ignore[misc,valid-type]
    settings = SHORT


@pytest.mark.slow
class TestEngineStatefulLong(EngineMesh.TestCase):  # type: ignore[misc,valid-type]
    settings = LONG
