"""A deterministic discrete-event simulation of many engines on a virtual clock.

Each simulated peer runs the real :class:`~agent.core.engine.Engine` and exposes
the real :class:`~agent.api.Presence` API; only the transport (a wire with
latency, loss, MTU, send budget and airtime) and the clock are simulated.
Everything random comes from one seeded ``random.Random``, so a run is
reproducible from its seed.

Observers see what the wires do without changing it: :meth:`Simulation.on_transmit`
reports every frame put on a wire, :meth:`Simulation.on_close` every link an
engine closed; :meth:`Simulation.dial_at` schedules a connection, e.g. to redial.

**Radio fields.** :meth:`Simulation.add_radio` puts peers on one shared channel
(:class:`~agent.sim.radio.RadioMedium`: positions, path loss, collisions, half-duplex
radios, each transmitter's duty cycle) as a broadcast interface of their engines:
what an engine addresses :class:`~agent.core.medium.Broadcast` goes on the air, and
every frame that ends is handed to each receiver that got it, with its RSSI and SNR.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.api.presence import Presence
from agent.core.engine import Engine, EngineConfig, LinkSpec, Membership
from agent.core.events import CloseLink, ConnectionRequested, Event, LinkId
from agent.core.graph import PresenceGraph
from agent.core.medium import Broadcast, MediumSpec
from agent.core.pump import pump
from agent.core.records import ConnectionType, Envelope, Record, make_card, open_record, verify_record
from agent.sim.radio import RadioMedium
from agent.state.store import MemoryCounter

T = TypeVar("T")

#: Virtual time starts at a plausible Unix time so record expiry behaves as in the field.
DEFAULT_START = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How a simulated wire behaves. ``airtime_per_byte`` serialises frames (radio)."""

    connection_type: ConnectionType = ConnectionType.ACCESS_POINT
    latency: float = 0.005
    loss: float = 0.0
    #: The default models a LAN TCP link, whose frames the transport caps at 16 KiB.
    mtu: int = 16384
    bytes_per_second: float | None = None
    frame_overhead_bytes: int = 0
    airtime_per_byte: float = 0.0
    keepalive_interval: float | None = None
    dead_interval: float | None = None


#: A LoRa-class link: 255-byte frames, ~400 ms airtime per full frame (SF7/125 kHz),
#: 1 % duty cycle as a send budget (a full frame every 40 s), and slow keepalives.
LORA = LinkModel(
    connection_type=ConnectionType.RADIO,
    latency=0.05,
    mtu=255,
    bytes_per_second=255 / 40.0,
    frame_overhead_bytes=13,
    airtime_per_byte=0.4 / 255,
    keepalive_interval=120.0,  # a 12-byte SUMMARY every 2 min: ~3 % of the duty-cycle budget
    dead_interval=360.0,
)


class SharedCodec:
    """Memoises parsing and verification across every engine of one simulation.

    Sound because both are pure functions of the record bytes; only successes
    are cached, so every rejection is still computed (and counted) per engine.
    """

    def __init__(self) -> None:
        self._envelopes: dict[bytes, Envelope] = {}
        self._records: dict[bytes, Record] = {}
        self.verifications = 0

    def open(self, raw: bytes) -> Envelope:
        env = self._envelopes.get(raw)
        if env is None:
            env = self._envelopes[raw] = open_record(raw)
        return env

    def verify(self, envelope: Envelope, raw: bytes) -> Record:
        record = self._records.get(raw)
        if record is None:
            self.verifications += 1
            record = self._records[raw] = verify_record(envelope, raw)
        return record


class MemoryMetadataStore:
    """In-memory stand-in for the SQLite store (simulated peers have no disk)."""

    def __init__(self) -> None:
        self.text: str | None = None

    def save_metadata_json(self, text: str) -> None:
        self.text = text

    def load_metadata_json(self) -> str | None:
        return self.text


class _WallClock:
    """A peer's wall clock, bound to the peer once it exists (the engine is built first)."""

    peer: SimPeer | None = None

    def __call__(self, now: float) -> float:
        return now if self.peer is None else self.peer.wall(now)


class _SimOutputs:
    """Where one peer's engine outputs go: onto its wires, into the event queue."""

    def __init__(self, sim: Simulation, peer: SimPeer) -> None:
        self._sim = sim
        self._peer = peer

    def send(self, link: LinkId, frame: bytes) -> None:
        if isinstance(link, Broadcast):
            self._sim._on_air(link.interface, self._peer, frame)
            return
        wire = self._sim._wires.get(link)  # type: ignore[call-overload]
        if wire is not None and wire.up:
            self._sim._transmit(wire, self._peer, frame)

    def handle_event(self, event: Event) -> None:
        peer, engine, now = self._peer, self._peer.engine, self._sim.now
        if isinstance(event, ConnectionRequested):
            answer = peer.presence.authorize(event.request).result()
            engine.decide(event.link, answer.value == "Allow", now)
        elif isinstance(event, CloseLink):
            self._sim._close_from(peer, event)

    def wake_at(self, at: float) -> None:
        peer, now = self._peer, self._sim.now
        if at <= now:
            # An engine that keeps asking to be woken "now" without progress is a bug.
            peer.immediate_wakeups += 1
            if peer.immediate_wakeups > 10_000:
                raise RuntimeError(f"{peer.name}'s engine busy-loops at t={now}")
        else:
            peer.immediate_wakeups = 0
        at = max(at, now)
        if peer.timer_at is None or at < peer.timer_at:
            peer.timer_at = at
            self._sim._push(at, "timer", peer)


class _SimDriver:
    """Runs Presence calls directly on the simulation's (single) thread."""

    def __init__(self, sim: Simulation, peer: SimPeer) -> None:
        self._sim = sim
        self._peer = peer

    def call(self, fn: Callable[[Any, float], T]) -> T:
        result = fn(self._peer.engine, self._sim.now)
        self._sim.pump(self._peer)
        return result


@dataclass(eq=False)
class SimPeer:
    """One simulated agent: its engine, its Presence API and its name."""

    index: int
    name: str
    engine: Engine
    presence: Presence = field(init=False)
    outputs: _SimOutputs = field(init=False)
    alive: bool = True
    timer_at: float | None = None
    published_version: int = -1
    immediate_wakeups: int = 0
    last_graph: PresenceGraph | None = None
    #: This peer's wall clock minus the simulation's (monotonic) clock: see
    #: :meth:`Simulation.step_wall_clock`.
    wall_offset: float = 0.0

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    @property
    def peer_key_string(self) -> str:
        return self.engine.peer_key_string


@dataclass(frozen=True, slots=True)
class Transmission:
    """A frame an engine put on a wire, as :meth:`Simulation.on_transmit` reports it."""

    time: float
    wire: int
    sender: SimPeer
    receiver: SimPeer
    frame: bytes
    model: LinkModel
    #: Seconds on the air: (frame + overhead) x airtime per byte (0 on wired links).
    airtime: float
    #: The wire will not deliver it (loss); it used the air all the same.
    lost: bool


@dataclass(frozen=True, slots=True)
class ClosedLink:
    """A wire an engine closed, as :meth:`Simulation.on_close` reports it."""

    time: float
    wire: int
    #: The peer whose engine closed the link, and the far end (which notices one latency later).
    closer: SimPeer
    other: SimPeer
    model: LinkModel
    #: The engine's event: its reason, and ``retry_at`` if the far end denied the closer.
    event: CloseLink


@dataclass(frozen=True, slots=True)
class RadioTransmission:
    """A frame an engine put on the air, as :meth:`Simulation.on_radio` reports it."""

    time: float
    interface: str
    sender: SimPeer
    frame: bytes
    airtime: float


@dataclass(eq=False, slots=True)
class SimRadio:
    """A channel shared by some peers: the medium, and which radio node each peer is."""

    interface: str
    medium: RadioMedium
    spec: MediumSpec
    peers: list[SimPeer]
    node_of: dict[int, int] = field(default_factory=dict)  # peer index -> radio node
    #: Each node's frames waiting for the channel, as a dongle queues them (listen before talk).
    queues: dict[int, list[bytes]] = field(default_factory=dict)
    #: Frames that waited because the channel was busy.
    deferred: int = 0


@dataclass(eq=False, slots=True)
class _Wire:
    id: int
    a: SimPeer
    b: SimPeer
    model: LinkModel
    up: bool = True
    #: Closed on purpose (not cut): frames already in flight still arrive, as with TCP.
    closed_gracefully: bool = False
    busy_until: dict[int, float] = field(default_factory=dict)
    bytes_sent: dict[int, int] = field(default_factory=dict)

    def other(self, peer: SimPeer) -> SimPeer:
        return self.b if peer is self.a else self.a


class Simulation:
    """Drives N engines over simulated wires on a virtual clock."""

    def __init__(
        self,
        seed: int = 0,
        config: EngineConfig | None = None,
        start: float = DEFAULT_START,
        handler_timeout: float = 10.0,
        mesh_key: bytes | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        #: The fleet mesh key every peer added gets (broadcast frames sealed), unless it is an outsider.
        self.mesh_key = mesh_key
        self.config = config or EngineConfig()
        self.now = start
        self.codec = SharedCodec()
        self.peers: list[SimPeer] = []
        self.handler_timeout = handler_timeout
        self._queue: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._wires: dict[int, _Wire] = {}
        self._wire_ids = itertools.count(1)
        self.frames_lost = 0
        #: The largest frame any engine handed to a wire (must stay within the wire's MTU).
        self.max_frame = 0
        self._transmit_observers: list[Callable[[Transmission], None]] = []
        self._close_observers: list[Callable[[ClosedLink], None]] = []
        self._radio_observers: list[Callable[[RadioTransmission], None]] = []
        self.radios: dict[str, SimRadio] = {}

    # ------------------------------------------------------------------ building

    def add_peer(
        self,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        outsider: bool = False,
        membership: Callable[[bytes], Membership] | None = None,
    ) -> SimPeer:
        """A new peer with a fresh key (drawn from the seeded RNG); an ``outsider`` lacks the
        simulation's mesh key. ``membership``, given the peer's public key, turns fleet trust on
        for it (a fleet CA's certificate for that key: agent.core.trust)."""
        index = len(self.peers)
        private_key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        name = name or f"sim-{index}"
        clock = _WallClock()
        engine = Engine(
            private_key=private_key,
            public_key=public_key,
            counters=MemoryCounter(),
            card=make_card(name, "sim", __version__, metadata or {}),
            now=self.now,
            rng=self.rng.randbytes,
            config=self.config,
            codec=self.codec,
            wall=clock,
            mesh_key=None if outsider else self.mesh_key,
            membership=membership(public_key) if membership is not None else None,
        )
        peer = SimPeer(index, name, engine)
        clock.peer = peer
        peer.outputs = _SimOutputs(self, peer)
        store = MemoryMetadataStore()
        peer.presence = Presence(
            _SimDriver(self, peer), public_key, store, handler_timeout=self.handler_timeout
        )
        self.peers.append(peer)
        self.pump(peer)
        return peer

    def connect(
        self, a: SimPeer, b: SimPeer, model: LinkModel | None = None, distance_dm: int | None = None
    ) -> int:
        """Bring up a wire between two peers now; returns its id."""
        model = model or LinkModel()
        wire = _Wire(next(self._wire_ids), a, b, model)
        self._wires[wire.id] = wire
        for end in (a, b):
            spec = LinkSpec(
                connection_type=model.connection_type,
                mtu=model.mtu,
                bytes_per_second=model.bytes_per_second,
                frame_overhead_bytes=model.frame_overhead_bytes,
                distance_dm=distance_dm,
                expected_peer=wire.other(end).engine.public_key,
                keepalive_interval=model.keepalive_interval,
                dead_interval=model.dead_interval,
            )
            end.engine.link_up(wire.id, spec, self.now)
        for end in (a, b):
            self.pump(end)
        return wire.id

    def add_radio(
        self, peers: list[SimPeer], medium: RadioMedium, spec: MediumSpec, name: str = ""
    ) -> SimRadio:
        """Put ``peers`` on one channel (peer ``i`` of the list is radio node ``i`` of ``medium``):
        each engine brings it up as a broadcast interface now."""
        if len(peers) != len(medium.positions):
            raise ValueError(f"{len(peers)} peers for a medium of {len(medium.positions)} positions")
        interface = name or f"radio-{len(self.radios)}"
        radio = SimRadio(interface, medium, spec, list(peers), {p.index: i for i, p in enumerate(peers)})
        self.radios[interface] = radio
        for peer in peers:
            peer.engine.interface_up(interface, spec, self.now)
        for peer in peers:
            self.pump(peer)
        return radio

    def on_radio(self, callback: Callable[[RadioTransmission], None]) -> None:
        """Call ``callback`` for every frame an engine puts on the air, in order."""
        self._radio_observers.append(callback)

    def disconnect(self, a: SimPeer, b: SimPeer) -> None:
        """Both ends see their wires between ``a`` and ``b`` go down now (a pulled cable)."""
        for wire in list(self._wires.values()):
            if {wire.a, wire.b} == {a, b} and wire.up:
                self._cut(wire)

    def kill(self, peer: SimPeer) -> None:
        """The peer vanishes silently; its neighbours notice only through dead-link detection."""
        peer.alive = False
        for wire in self._wires.values():
            if peer in (wire.a, wire.b):
                wire.up = False

    def partition(self, side: set[SimPeer]) -> list[_Wire]:
        """Cut every wire crossing the boundary of ``side``; returns them for :meth:`heal`."""
        crossing = [w for w in self._wires.values() if w.up and ((w.a in side) != (w.b in side))]
        for wire in crossing:
            self._cut(wire)
        return crossing

    def heal(self, wires: list[_Wire]) -> None:
        for wire in wires:
            self.connect(wire.a, wire.b, wire.model)

    def step_wall_clock(self, peer: SimPeer, seconds: float) -> None:
        """Step ``peer``'s wall clock by ``seconds`` (an NTP correction, a Pi without an RTC).

        Only signing and expiry see it; the engine's timers run on the simulation's clock.
        """
        peer.wall_offset += seconds

    def dial_at(self, when: float, a: SimPeer, b: SimPeer, model: LinkModel | None = None) -> None:
        """Connect ``a`` and ``b`` at virtual time ``when``, if both are still alive then."""
        self._push(when, "dial", a, b, model)

    def build(self, topology: Any, model: LinkModel | None = None) -> list[SimPeer]:
        """Add ``topology.n`` peers and connect them along its edges."""
        peers = [self.add_peer() for _ in range(topology.n)]
        for a, b in topology.edges:
            self.connect(peers[a], peers[b], model, topology.distance_dm(a, b))
        return peers

    # ------------------------------------------------------------------ observing

    def on_transmit(self, callback: Callable[[Transmission], None]) -> None:
        """Call ``callback`` for every frame an engine puts on a wire, lost or not, in order."""
        self._transmit_observers.append(callback)

    def on_close(self, callback: Callable[[ClosedLink], None]) -> None:
        """Call ``callback`` when an engine closes a wire that was up, e.g. to redial it as a
        transport would. Wires cut by :meth:`disconnect`, :meth:`partition` or :meth:`kill` are
        not reported: no engine closed them."""
        self._close_observers.append(callback)

    # ------------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, deadline: float) -> None:
        """Process events up to ``deadline`` (virtual), then set the clock to it."""
        while self._queue and self._queue[0][0] <= deadline:
            self._step()
        self.now = max(self.now, deadline)

    def run_until_true(
        self, predicate: Callable[[], bool], timeout: float, check_every: float = 0.05
    ) -> float:
        """Run until ``predicate()`` holds (checked every ``check_every`` s); return the time taken.

        Raises ``TimeoutError`` after ``timeout`` virtual seconds.
        """
        start = self.now
        while not predicate():
            if self.now - start >= timeout:
                raise TimeoutError(f"condition not met after {timeout} simulated seconds")
            self.run_until(self.now + check_every)
        return self.now - start

    def _step(self) -> None:
        when, _, kind, args = heapq.heappop(self._queue)
        self.now = max(self.now, when)
        if kind == "deliver":
            wire, sender, frame = args
            receiver = wire.other(sender)
            if (wire.up or wire.closed_gracefully) and receiver.alive:
                receiver.engine.receive(wire.id, frame, self.now)
                self.pump(receiver)
        elif kind == "timer":
            (peer,) = args
            if peer.alive and peer.timer_at == when:
                peer.timer_at = None
                peer.engine.handle_timer(self.now)
                self.pump(peer)
        elif kind == "down":
            peer, wire_id = args
            if peer.alive:
                peer.engine.link_down(wire_id, self.now)
                self.pump(peer)
        elif kind == "dial":
            a, b, model = args
            if a.alive and b.alive:
                self.connect(a, b, model)
        elif kind == "radio-send":
            radio, node = args
            if radio.peers[node].alive:
                self._radio_send(radio, node)
        elif kind == "air":
            (radio,) = args
            for got in radio.medium.deliveries(self.now):
                receiver = radio.peers[got.receiver]
                if receiver.alive:
                    receiver.engine.receive_on(radio.interface, got.payload, self.now, got.rssi, got.snr)
                    self.pump(receiver)

    def _push(self, when: float, kind: str, *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), kind, args))

    def _cut(self, wire: _Wire) -> None:
        wire.up = False
        for end in (wire.a, wire.b):
            if end.alive:
                end.engine.link_down(wire.id, self.now)
                self.pump(end)

    def pump(self, peer: SimPeer) -> None:
        """Collect what the engine wants done: events, frames, its next timer, observer updates."""
        if not peer.alive:
            return
        engine = peer.engine
        pump(engine, self.now, peer.outputs)
        if peer.presence.wants_graphs and engine.graph_version != peer.published_version:
            graph = engine.graph(self.now)
            peer.published_version = engine.graph_version
            if graph != peer.last_graph:
                peer.last_graph = graph
                peer.presence.publish(graph)

    def _on_air(self, interface: object, sender: SimPeer, frame: bytes) -> None:
        radio = self.radios.get(str(interface))
        if radio is None:
            return
        node = radio.node_of[sender.index]
        queue = radio.queues.setdefault(node, [])
        queue.append(frame)
        if len(queue) == 1:
            self._radio_send(radio, node)

    def _radio_send(self, radio: SimRadio, node: int) -> None:
        """The dongle sends its next frame once its radio is free and it hears the channel clear
        (listen before talk, with a random back-off), as a LoRa dongle does."""
        queue = radio.queues.get(node)
        if not queue:
            return
        medium, frame = radio.medium, queue[0]
        ready = medium.ready_at(node, len(frame), self.now)
        if ready > self.now or medium.channel_busy(node, self.now):
            radio.deferred += 1
            self._push(max(ready, self.now + self._backoff(radio)), "radio-send", radio, node)
            return
        queue.pop(0)
        end = medium.transmit(node, frame, self.now)
        self.max_frame = max(self.max_frame, len(frame))
        if self._radio_observers:
            sent = RadioTransmission(self.now, radio.interface, radio.peers[node], frame, end - self.now)
            for observe in self._radio_observers:
                observe(sent)
        self._push(end, "air", radio)
        if queue:  # contend again, as everyone else does: no hogging the channel with a backlog
            self._push(end + self._backoff(radio), "radio-send", radio, node)

    def _backoff(self, radio: SimRadio) -> float:
        """A random contention back-off: 1..8 slots of a short frame's airtime."""
        return radio.medium.airtime(32) * self.rng.randint(1, 8)

    def _transmit(self, wire: _Wire, sender: SimPeer, frame: bytes) -> None:
        model = wire.model
        direction = 0 if sender is wire.a else 1
        self.max_frame = max(self.max_frame, len(frame))
        wire.bytes_sent[direction] = wire.bytes_sent.get(direction, 0) + len(frame)
        start = max(self.now, wire.busy_until.get(direction, 0.0))
        airtime = (len(frame) + model.frame_overhead_bytes) * model.airtime_per_byte
        wire.busy_until[direction] = start + airtime
        lost = bool(model.loss) and self.rng.random() < model.loss
        if self._transmit_observers:
            sent = Transmission(self.now, wire.id, sender, wire.other(sender), frame, model, airtime, lost)
            for observe in self._transmit_observers:
                observe(sent)
        if lost:
            self.frames_lost += 1
            return
        self._push(start + airtime + model.latency, "deliver", wire, sender, frame)

    def _close_from(self, peer: SimPeer, event: CloseLink) -> None:
        wire = self._wires.get(event.link)  # type: ignore[call-overload]
        if wire is None:
            return
        other = wire.other(peer)
        if wire.up:
            wire.up = False
            wire.closed_gracefully = True
            # The closing side is done with the link; the far side notices one latency later.
            peer.engine.link_down(wire.id, self.now)
            self._push(self.now + wire.model.latency, "down", other, wire.id)
            closed = ClosedLink(self.now, wire.id, peer, other, wire.model, event)
            for observe in self._close_observers:
                observe(closed)
        if event.retry_at is not None:
            self.dial_at(event.retry_at, peer, other, wire.model)

    # ------------------------------------------------------------------ inspection

    def wire_bytes(self) -> dict[int, dict[int, int]]:
        """Bytes sent per wire and direction (0: a→b, 1: b→a)."""
        return {w.id: dict(w.bytes_sent) for w in self._wires.values()}

    def close(self) -> None:
        for peer in self.peers:
            peer.presence.close()
