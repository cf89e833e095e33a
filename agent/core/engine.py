"""The sans-I/O link-state presence engine: the one facade its drivers use.

The engine is a pure state machine in the style of h11 and aioquic: whoever
drives it reports links going up and down, hands it received frames with the
current time, and asks what to send (:meth:`Engine.datagrams_to_send`), when to
wake it (:meth:`Engine.next_timer`) and what happened (:meth:`Engine.next_event`).
It opens no socket and starts no thread.

**Two clocks.** Every ``now`` is the driver's monotonic clock (the asyncio
loop's time, the simulator's virtual time): timers, deadlines, rates and the
departure grace run on it, so a wall-clock step neither fires nor stalls them.
``wall(now)`` — injected, identity by default — gives Unix time, used only to
sign records (their expiry) and to check expiry. The outward calls are that
clock and :class:`CounterSource`, which must make a counter durable before
returning it.

The parts, each with one job and its own tests:

* :mod:`~agent.core.handshake` — phases, transition table, retransmission;
* :mod:`~agent.core.holdings` — held records, admission checks, summary, claims;
* :mod:`~agent.core.occupancy` — who gives up a place when the peer table is full;
* :mod:`~agent.core.flooding` — fan-out and pruning;
* :mod:`~agent.core.sync` — SUMMARY/DIGEST policy;
* :mod:`~agent.core.reachability` — the edge rule, hops, departure grace;
* :mod:`~agent.core.outbox` and :mod:`~agent.core.pacing` — queues, batching, send budget;
* :mod:`~agent.core.framing` — fragmenter and reassembler;
* :mod:`~agent.core.session` — the session key a handshake agrees, sealed frames, the replay window.

This module wires them: dispatch of typed messages, own records (signing,
refresh, recovery), and the graph. :meth:`Engine.receive` catches only the
project's typed errors for remote input; anything else is a bug and
propagates (the runtime logs it and drops the link).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import ed25519
from agent.core.backoff import Backoff, BackoffTracker, unit_from_bytes
from agent.core.certs import Certificate, CertificateError, RevocationList, TrustReason, is_revocation_list
from agent.core.codec import PlainCodec, RecordCodec
from agent.core.distance import LinkQuality
from agent.core.errors import RecordError
from agent.core.events import (
    CloseLink,
    ConnectionRequest,
    ConnectionRequested,
    Event,
    LinkEstablished,
    LinkId,
)
from agent.core.flooding import Neighbour, fan_out
from agent.core.framing import Reassembler
from agent.core.graph import PresenceGraph
from agent.core.handshake import Handshake, Phase
from agent.core.holdings import Holdings, Shortfall
from agent.core.keys import peer_id, peer_key_string
from agent.core.limits import (
    MAX_RECORD_BYTES,
    MIN_LINK_MTU,
    MIN_SEALED_MTU,
    NONCE_BYTES,
    PEER_ID_BYTES,
    PUBLIC_KEY_BYTES,
)
from agent.core.link import Link
from agent.core.linkspec import LinkSpec
from agent.core.medium import (
    DEFAULT_REFUSAL_PAUSE,
    EVERYONE,
    KEEPALIVE_SPREAD,
    MAX_ANSWER_DOUBLINGS,
    MAX_BUDGETS_KEPT,
    MAX_DEADLINE_DEFERRALS,
    SHORT_ID_BYTES,
    AirtimeBudget,
    Interface,
    InterfaceId,
    MediumLink,
    MediumSpec,
    fitted,
    longest_transmission,
    medium_frame,
    parse_medium_frame,
)
from agent.core.mesh_seal import MESH_OVERHEAD, MeshSeal
from agent.core.occupancy import ANCHORED, MANY, STORE, Claim, Occupancy, Standing
from agent.core.outbox import ONE_RECORD_OVERHEAD, Outbox, transfer_time
from agent.core.own_records import CounterSource, OwnRecords, links_record
from agent.core.reachability import Reachability, hop_counts
from agent.core.reasons import CloseReason, RejectReason, SessionReason
from agent.core.records import (
    CARD,
    CONNECTION_TYPE_CODES,
    EMPTY_METADATA,
    LINKS,
    Card,
    ConnectionType,
    Envelope,
    LinkEntry,
    Links,
    Metadata,
    Record,
    RecordKind,
)
from agent.core.session import Sealing, SessionError, SessionOffer, derive_session, is_sealed_frame
from agent.core.sync import DIGEST_HEADROOM, SyncState, digest_messages, records_to_offer
from agent.core.trust import HINTS, LineLimiter, Membership, Trust
from agent.core.view import LocalEdge, build_graph
from agent.core.wire import (
    AFTER_HANDSHAKE,
    BEFORE_SESSION,
    FRAGMENT_HEADER_BYTES,
    FRAME_WHOLE,
    ROUTER,
    Accept,
    Capabilities,
    CardRequest,
    Deny,
    Digest,
    Hello,
    Message,
    MessageType,
    Proof,
    Records,
    Role,
    Summary,
    UnsupportedVersionError,
    WireError,
    decode_message,
    digest_entry,
    encode_hello,
    frame_message_type,
    parse_fields,
    proof_message,
)

__all__ = ["CounterSource", "Engine", "EngineConfig", "LinkSpec", "Membership", "RecordCodec", "same_clock"]

log = logging.getLogger("agent.core.engine")

#: New peers' records refused for want of room that are tried again if their peer earns a place.
WAITING_RECORDS = 64


class Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED`: "leave this as it is" where ``None`` is a value."""

    UNCHANGED = enum.auto()


UNCHANGED: Final = Unchanged.UNCHANGED


def _via(source: Link | None) -> bytes:
    """The peer id a record came from, or :data:`STORE` (read back from the store, or waiting)."""
    remote_id = source.remote_id if source is not None else None
    return remote_id if remote_id is not None else STORE


def same_clock(now: float) -> float:
    """The default wall clock: the driver's clock is Unix time too (tests, the simulator)."""
    return now


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Protocol timings and bounds. Times are seconds; all but the record TTLs are monotonic."""

    record_ttl: float = 24 * 3600.0
    refresh_before_expiry: float = 6 * 3600.0
    keepalive_interval: float = 1.0
    dead_interval: float = 3.0
    departure_grace: float = 0.5
    #: Removals within this window share one reachability evaluation.
    reachability_settle: float = 0.02
    links_debounce: float = 0.05
    #: Records wait this long before going out, so a burst shares frames and a copy
    #: that a neighbour meanwhile sends us is cancelled instead of sent back.
    flood_delay: float = 0.01
    handshake_timeout: float = 30.0
    #: First retransmission of an unanswered handshake message (doubles each time;
    #: stretched on slow links to four times the message's transfer time).
    handshake_retry: float = 1.0
    deny_backoff_initial: float = 1.0
    deny_backoff_max: float = 300.0
    backoff_jitter: float = 0.5
    reassembly_timeout: float = 60.0
    sweep_interval: float = 60.0
    digest_min_interval: float = 5.0
    max_peers: int = 16384
    #: Bytes of remote records held at most (with ``max_peers``, bounds the table's memory).
    max_held_bytes: int = 16 * 1024 * 1024
    #: While the table is full, who gives up a place is worked out afresh at most this often.
    occupancy_refresh: float = 1.0
    #: The "peer table full" warning is logged at most this often.
    full_log_interval: float = 60.0
    #: A DIGEST message carries at most this many bytes of entries (split above it).
    max_digest_bytes: int = 8192
    #: Router (holds the mesh, floods) or leaf (holds only its own records; wire.Role).
    role: Role = Role.ROUTER
    #: Sealed point-to-point links (agent.core.session.Sealing); ``None``: ``require`` with
    #: fleet trust on, else ``offer``.
    sealing: Sealing | None = None
    #: Sealed frames are encrypted (else authenticated only); ``None``: encrypted with trust on.
    encrypt: bool | None = None
    #: ``require`` still takes a plain link to a leaf (a MicroPython node cannot seal).
    unsealed_leaves: bool = False


class Engine:
    """One peer's presence protocol state. See the module docstring."""

    def __init__(
        self,
        *,
        private_key: Ed25519PrivateKey,
        public_key: bytes,
        counters: CounterSource,
        card: Card,
        now: float,
        rng: Callable[[int], bytes],
        config: EngineConfig | None = None,
        codec: RecordCodec | None = None,
        held_records: Iterable[bytes] = (),
        wall: Callable[[float], float] = same_clock,
        membership: Membership | None = None,
        mesh_key: bytes | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self._private_key = private_key
        self.public_key = public_key
        self.peer_key_string = peer_key_string(public_key)
        self.peer_id = peer_id(public_key)
        self._rng = rng
        self._wall = wall
        self._wall_now = wall(now)
        self._wall_offset = self._wall_now - now
        self._codec: RecordCodec = codec or PlainCodec()
        self.stats: collections.Counter[str] = collections.Counter()
        # Fleet trust (agent.core.trust): on when a membership is given; our card carries our certificate.
        self._trust = Trust(membership) if membership is not None else None
        self._own_certificate: Certificate | None = None
        self._trust_log = LineLimiter()
        self._revocation_version = 0  # grows with every list accepted: what the state directory persists
        if membership is not None:
            card = dataclasses.replace(card, certificate=membership.certificate)
            self._own_certificate = self._check_own_certificate(now)
        trusted = membership is not None
        self._sealing = self.config.sealing or (Sealing.REQUIRE if trusted else Sealing.OFFER)
        self._encrypt = self.config.encrypt if self.config.encrypt is not None else trusted
        # Broadcast interfaces seal every frame under the fleet's mesh key, when one is given.
        self._mesh_key = mesh_key
        self._counters = counters

        self._links: dict[LinkId, Link] = {}
        self._establishments = 0  # links established so far: each one's rank in the links record
        self._neighbours: list[Neighbour[Link]] = []
        self._events: deque[Event] = deque()
        self._held = Holdings(public_key, self.config.max_peers, self.config.max_held_bytes)
        self._occupancy = Occupancy(self.config.occupancy_refresh)
        self._leaf = self.config.role is Role.LEAF
        self._capabilities = Capabilities(self.config.role) if self._leaf else ROUTER
        # Established links to routers: the flood targets (a leaf gets no floods).
        self._routers: list[Neighbour[Link]] = []
        # Broadcast interfaces (radio dongles), those with broadcast output queued, this peer's
        # id on them, and the SNR of the medium frame being handled (for its rebroadcast delay).
        self._interfaces: dict[InterfaceId, Interface] = {}
        self._pending_interfaces: dict[Interface, None] = {}
        # The budgets of interfaces that went down, for their return (bounded, oldest out).
        self._budgets_kept: dict[InterfaceId, AirtimeBudget] = {}
        self._short_id = self.peer_id[:SHORT_ID_BYTES]
        self._heard_snr: float | None = None
        # New peers' records refused for want of room (bounded, oldest out), tried again when
        # their peer gains a place or a held peer's links record claims it (it may now be reachable).
        self._waiting: collections.OrderedDict[tuple[bytes, RecordKind], tuple[bytes, Link | None]] = (
            collections.OrderedDict()
        )
        self._full_logged_at: float | None = None
        # Links with something queued, so sending does not scan idle links. A dict, not a
        # set: insertion order keeps runs reproducible (sets of objects order by address).
        self._pending: dict[Link, None] = {}
        # Only peers that proved their key and then denied us are held here (bounded, oldest out).
        cfg = self.config
        deny = Backoff(cfg.deny_backoff_initial, cfg.deny_backoff_max, cfg.backoff_jitter)
        self._deny_backoff: BackoffTracker[bytes] = BackoffTracker(deny)
        self._reach = Reachability(self.config.departure_grace, self.config.reachability_settle)
        self.graph_version = 0

        self._next_sweep = now + self.config.sweep_interval
        self._own = OwnRecords(
            private_key,
            public_key,
            counters,
            record_ttl=cfg.record_ttl,
            refresh_before=cfg.refresh_before_expiry,
            links_debounce=cfg.links_debounce,
            card=card,
            wall=self._wall_now,
        )
        self._accept_own(self._own.card, now)
        # The (empty) links record is published only once this peer has a link.
        for raw in held_records:
            self._merge(raw, now, source=None)

    # ------------------------------------------------------------------ inputs

    def link_up(self, link: LinkId, spec: LinkSpec, now: float) -> None:
        """A transport opened ``link``; the handshake starts."""
        if link in self._links:
            raise ValueError(f"link {link!r} is already up")
        if spec.mtu < MIN_LINK_MTU:
            raise ValueError(f"link MTU {spec.mtu} is below the minimum {MIN_LINK_MTU}")
        if spec.expected_peer is not None and len(spec.expected_peer) not in (
            PEER_ID_BYTES,
            PUBLIC_KEY_BYTES,
        ):
            raise ValueError("expected_peer is a 32-byte public key or an 8-byte peer id")
        self._tick(now)
        self._open_link(link, spec, now, None)

    def _open_link(self, link: LinkId, spec: LinkSpec, now: float, medium: Interface | None) -> Link:
        keepalive = spec.keepalive_interval or self.config.keepalive_interval
        # A slow link gets the time to carry two full-size cards on top of the timeout.
        slow = 2 * self._transfer_time(spec, medium, MAX_RECORD_BYTES)
        # On a medium a handshake waits its turn on a shared channel: give it ten keepalives.
        timeout = self.config.handshake_timeout
        if medium is not None:
            timeout = max(timeout, 10 * medium.spec.keepalive_interval)
        deadline = now + timeout + slow
        state = Link(
            id=link,
            spec=spec,
            keepalive=keepalive,
            dead=spec.dead_interval or self.config.dead_interval,
            handshake=Handshake(self._handshake_nonce(medium), deadline, self.config.handshake_retry),
            outbox=Outbox(spec, now, self.config.flood_delay, medium.budget if medium else None),
            reassembler=Reassembler(spec.mtu, self.stats),
            # On a medium, a DIGEST costs shared airtime: at most one per two keepalives per neighbour.
            sync=SyncState(
                keepalive,
                self.config.digest_min_interval if medium is None else 2 * medium.spec.keepalive_interval,
                first_at_once=medium is None,
            ),
            last_rx=now,
            medium=medium,
        )
        if medium is None and self._sealing is not Sealing.OFF and spec.mtu >= MIN_SEALED_MTU:
            state.handshake.offer = SessionOffer.from_seed(self._rng(32))
        self._links[link] = state
        self.stats["links.opened"] += 1
        # A peer whose card we hold shares a mesh with us, so it most likely holds ours:
        # name our card instead of sending it (re-handshakes on a lossy radio cost no card).
        # A first contact sends the card at once, so it costs no extra round trip.
        self._send_hello(state, by_reference=self._held.card_of(spec.expected_peer) is not None, now=now)
        return state

    def interface_up(self, interface: InterfaceId, spec: MediumSpec, now: float) -> None:
        """A transport brought up a broadcast interface (a radio dongle): neighbours are found from
        the frames heard on it (:meth:`receive_on`); this peer announces itself with a SUMMARY."""
        if interface in self._interfaces:
            raise ValueError(f"interface {interface!r} is already up")
        if spec.mtu < MIN_LINK_MTU:
            raise ValueError(f"medium MTU {spec.mtu} leaves link frames below {MIN_LINK_MTU} bytes")
        self._tick(now)
        if self._mesh_key is not None:
            spec = dataclasses.replace(spec, seal_overhead=MESH_OVERHEAD)
            if spec.mtu < MIN_LINK_MTU:
                raise ValueError(f"a sealed medium's MTU leaves link frames below {MIN_LINK_MTU} bytes")
        # Frames no longer than the budget can ever carry (the seal's bytes count: they shrink it).
        fit = fitted(spec)
        if fit is None:
            raise ValueError(
                f"no presence frame fits this medium: a full one takes "
                f"{spec.airtime.airtime(spec.airtime.mtu):.2f} s, over the "
                f"{longest_transmission(spec):.2f} s its airtime budget can ever permit: "
                "use a faster modulation or a larger allowance"
            )
        spec = fit
        kept = self._budgets_kept.pop(interface, None)
        budget = kept if kept is not None and kept.spec == spec else None
        medium = Interface(interface, spec, now, self.config.flood_delay, budget)
        if self._mesh_key is not None:
            # The epoch comes from the durable counter: it grows across restarts, so a frame
            # counter is never reused under this sender's key.
            epoch = self._counters.next_counter()
            medium.seal = MeshSeal(self._mesh_key, self._short_id, epoch, self._encrypt)
            self.stats["interfaces.sealed"] += 1
        self._interfaces[interface] = medium
        self._own.slow_links_down(spec.keepalive_interval / 2)
        if self._own.last_longer(spec.record_ttl, spec.refresh_before):
            # Signed again now, while no neighbour is up on the interface: the card and links
            # floods over the air then carry the long expiry, not a refresh due within a day.
            self.set_card(self.card, now)
            self._publish_links(now, force=True)
        self.stats["interfaces.up"] += 1
        # The first announce goes within a couple of seconds, at a random moment: peers that
        # power up together must not collide on every announce.
        medium.keepalive_factor = min(1.0, 2.0 / spec.keepalive_interval) * self._jitter()

    def interface_down(self, interface: InterfaceId, now: float) -> None:
        """The transport lost a broadcast interface (a dongle unplugged): its neighbours go."""
        medium = self._interfaces.pop(interface, None)
        if medium is None:
            return
        self._budgets_kept[interface] = medium.budget
        while len(self._budgets_kept) > MAX_BUDGETS_KEPT:
            del self._budgets_kept[next(iter(self._budgets_kept))]
        self._pending_interfaces.pop(medium, None)
        for state in list(medium.neighbours.values()):
            self.link_down(state.id, now)
        medium.neighbours.clear()

    def interface_refused(self, interface: InterfaceId, wait: float, now: float) -> None:
        """The transmitter refused a frame for its duty cycle and can send again in ``wait`` seconds
        (0: it did not say): the interface sends nothing before then. The refused frame is lost,
        as on the air; what matters is sent again by the usual timers."""
        medium = self._interfaces.get(interface)
        if medium is None:
            return
        medium.budget.pause_until(now + (wait if wait > 0 else DEFAULT_REFUSAL_PAUSE))
        self.stats["interfaces.duty_cycle_refused"] += 1

    def receive_on(
        self,
        interface: InterfaceId,
        data: bytes,
        now: float,
        rssi: float | None = None,
        snr: float | None = None,
    ) -> None:
        """A frame was heard on a broadcast interface (with its RSSI and SNR, when the radio gives
        them). Raises nothing for anything a remote sends."""
        medium = self._interfaces.get(interface)
        if medium is None:
            self.stats["frames.dropped_no_link"] += 1
            return
        if data[:SHORT_ID_BYTES] == self._short_id:
            self.stats["medium.own_echo"] += 1
            return
        if medium.seal is not None:
            try:
                data = medium.seal.open(data)
            except SessionError as exc:
                self.stats[exc.reason.medium_counter] += 1
                return
        try:
            sender, dest, frame = parse_medium_frame(data)
        except WireError:
            self.stats["frames.malformed"] += 1
            return
        state = medium.neighbours.get(sender)
        if state is None:
            if dest not in (EVERYONE, self._short_id):
                return  # a handshake between others, from someone we have not heard yet
            hello = frame_message_type(frame) == MessageType.HELLO
            state = self._open_neighbour(medium, sender, now, hello=hello)
            if state is None:
                return
        if rssi is not None and state.quality is not None:
            distance = state.quality.heard(now, rssi, snr)
            if distance is not None:
                self.update_link(state.id, now, distance_dm=round(distance * 10))
        if dest not in (EVERYONE, self._short_id):
            state.last_rx = now  # overheard: alive (first-hand), but not for us
            return
        self._heard_snr = snr
        try:
            self.receive(state.id, frame, now)
        finally:
            self._heard_snr = None

    def _handshake_nonce(self, medium: Interface | None) -> bytes:
        if medium is None:
            return self._rng(NONCE_BYTES)
        if not medium.nonce or not medium.handshaking():
            medium.nonce = self._rng(NONCE_BYTES)  # a new round: no handshake holds the old one
        return medium.nonce

    @staticmethod
    def _transfer_time(spec: LinkSpec, medium: Interface | None, size: int) -> float:
        """Seconds to carry ``size`` bytes: by the link's budget, or by a medium's airtime."""
        if medium is None:
            return transfer_time(spec, size)
        frames = -(-size // (spec.mtu - FRAGMENT_HEADER_BYTES))
        return frames * medium.spec.airtime.airtime(spec.mtu + medium.spec.header_bytes)

    def _reopen_neighbour(self, state: Link, now: float) -> Link | None:
        """A neighbour on a medium started a new handshake (it restarted, or gave up on ours):
        forget the old link without a word and answer on a fresh one."""
        medium = state.medium
        assert medium is not None and isinstance(state.id, MediumLink)
        self.stats["medium.neighbour_restarted"] += 1
        if state.established:
            self._on_topology_change(now, removal=True)
        self._links.pop(state.id, None)
        self._pending.pop(state, None)
        medium.neighbours.pop(state.id.short_id, None)
        self._refresh_neighbours()
        return self._open_neighbour(medium, state.id.short_id, now, hello=True)

    def _open_neighbour(self, medium: Interface, sender: bytes, now: float, *, hello: bool) -> Link | None:
        """A link to a neighbour first heard now (``hello``: in a HELLO), unless the interface is
        full or refuses it."""
        if medium.pending_neighbours() >= medium.spec.max_pending_neighbours:
            self.stats["medium.pending_full"] += 1
            return None
        if len(medium.neighbours) >= medium.spec.max_neighbours:
            self.stats["medium.neighbours_full"] += 1
            return None
        if medium.refuses(sender, now, hello=hello):
            self.stats["medium.refused_neighbour_heard"] += 1
            return None
        self._tick(now)
        spec = medium.spec
        link_spec = LinkSpec(
            spec.connection_type,
            mtu=spec.mtu,
            keepalive_interval=spec.keepalive_interval,
            dead_interval=spec.dead_interval,
        )
        self.stats["medium.neighbours_heard"] += 1
        state = self._open_link(MediumLink(medium.id, sender), link_spec, now, medium)
        state.quality = LinkQuality(spec.path_loss)
        medium.neighbours[sender] = state
        return state

    def _broadcast_summary(self, medium: Interface) -> None:
        medium.keepalive = bytes([FRAME_WHOLE]) + Summary(self.summary).encode()
        medium.early_summary_at = None
        low, high = KEEPALIVE_SPREAD
        medium.keepalive_factor = low + (high - low) * self._jitter()
        self._pending_interfaces[medium] = None

    def link_down(self, link: LinkId, now: float) -> None:
        """The transport lost ``link`` (closed, timed out, unplugged)."""
        state = self._links.get(link)
        if state is None:
            return
        self._tick(now)
        self.stats["links.closed"] += 1
        if state.established:
            self._on_topology_change(now, removal=True)
        del self._links[link]
        self._refresh_neighbours()
        self._pending.pop(state, None)

    def update_link(
        self,
        link: LinkId,
        now: float,
        *,
        mtu: int | None = None,
        distance_dm: int | Unchanged | None = UNCHANGED,
    ) -> None:
        """The transport learned more about an up link: a negotiated MTU, a new distance. A
        changed distance is an update of the link (the links record is re-signed), not a new link.
        ``ValueError`` for an MTU below the minimum (45 on a link that offered a session)."""
        state = self._links.get(link)
        if state is None:
            return
        self._tick(now)
        if mtu is not None and mtu != state.spec.mtu:
            if mtu < MIN_LINK_MTU:
                raise ValueError(f"link MTU {mtu} is below the minimum {MIN_LINK_MTU}")
            if state.handshake.offer is not None and mtu < MIN_SEALED_MTU:
                raise ValueError(f"a sealed link's MTU {mtu} is below the minimum {MIN_SEALED_MTU}")
            state.spec = dataclasses.replace(state.spec, mtu=mtu)
            state.outbox.set_mtu(mtu)
            state.reassembler.mtu = mtu
            if state.sealed_reassembler is not None:
                state.sealed_reassembler.mtu = state.outbox.frame_mtu
        if not isinstance(distance_dm, Unchanged) and distance_dm != state.spec.distance_dm:
            state.spec = dataclasses.replace(state.spec, distance_dm=distance_dm)
            if state.established:
                self.stats["links.distance_updated"] += 1
                self.graph_version += 1
                self._own.links_changed(now)

    def receive(self, link: LinkId, frame: bytes, now: float) -> None:
        """Bytes arrived on ``link``. Raises nothing for anything a remote sends."""
        state = self._links.get(link)
        if state is None or state.handshake.closing:
            self.stats["frames.dropped_no_link"] += 1
            return
        self._tick(now)
        self.stats["frames.received"] += 1
        self.stats["bytes.received"] += len(frame)
        session = state.session
        sealed = is_sealed_frame(frame)
        if sealed:
            if session is None or state.sealed_reassembler is None:
                self.stats[SessionReason.NO_SESSION.counter] += 1
                return
            try:
                inner = session.open(frame)
            except SessionError as exc:
                self.stats[exc.reason.counter] += 1
                return
            state.last_rx = now  # only an authenticated frame keeps a sealed link alive
            data = state.sealed_reassembler.message(inner, now)
        else:
            if session is None:
                state.last_rx = now
            data = state.reassembler.message(frame, now)
        if data is None:
            return
        try:
            kind, fields = decode_message(data)
            if session is not None and not sealed and kind not in BEFORE_SESSION:
                self.stats[SessionReason.UNSEALED.counter] += 1
                return
            if kind in AFTER_HANDSHAKE and not state.established:
                self.stats["messages.before_handshake"] += 1
                return
            message = parse_fields(kind, fields)
        except UnsupportedVersionError as exc:
            if state.remote_key is None:
                self._close(state, CloseReason.VERSION_MISMATCH, now, detail=str(exc))
            else:
                self.stats["handshake.repeated_hello"] += 1
            return
        except WireError as exc:
            self.stats["messages.malformed"] += 1
            log.debug("malformed message on %r: %s", link, exc)
            return
        self._dispatch(state, message, now)

    def decide(self, link: LinkId, allow: bool, now: float) -> None:
        """The connection request handler's answer for ``link``."""
        state = self._links.get(link)
        if state is None or state.handshake.phase is not Phase.DECIDING:
            return
        self._tick(now)
        if not allow:
            self._send_control(state, Deny().encode())
            self._close(state, CloseReason.DENIED_LOCALLY, now)
            return
        self._send_control(state, Accept().encode())
        if state.handshake.allow():
            self._establish(state, now)

    def set_card(self, card: Card, now: float) -> None:
        """Publish a new card (name, OS, metadata): re-sign it and flood it. With trust on, the
        card carries this device's certificate whatever ``card`` says."""
        self._tick(now)
        if self._trust is not None:
            card = dataclasses.replace(card, certificate=self._trust.certificate)
        self._accept_own(self._own.sign_card(card, self._wall_now), now)

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: keepalives, timeouts, re-signing, expiry.

        Deadlines are compared as ``start + interval <= now``, exactly as
        :meth:`next_timer` computes them, so a wake-up at a deadline always
        clears it (``now - start >= interval`` can differ by one rounding).
        """
        self._tick(now)
        for state in list(self._links.values()):
            hs = state.handshake
            if hs.closing:
                continue
            while state.delayed and state.delayed[0][0] <= now:
                self._send_control(state, state.delayed.pop(0)[1])
            if hs.established:
                if state.last_rx + state.dead <= now:
                    self._close(state, CloseReason.DEAD, now)
                elif (
                    state.medium is None
                    and state.outbox.last_tx + state.keepalive <= now
                    and not state.outbox.has_output()
                ):
                    self._send_control(state, self._summary_message(state))
                continue
            if (
                hs.deadline <= now
                and state.deferrals < MAX_DEADLINE_DEFERRALS
                and self._own_part_waits(state)
            ):
                # Our PROOF or HELLO has not gone yet for want of airtime: the remote cannot
                # have answered it. The waiting frame is near the head of the line, so the
                # pace lets it go soon; the bound is for a channel that never frees up.
                hs.deadline = now + state.keepalive
                state.deferrals += 1
                self.stats["handshake.deadline_deferred"] += 1
            if hs.deadline <= now:
                self._close(state, CloseReason.HANDSHAKE_TIMEOUT, now)
                continue
            if hs.retry_at <= now:
                self.stats["handshake.retransmitted"] += 1
                message = hs.retransmission(now, self.config.handshake_timeout)
                if message is not None and state.medium is not None and message == hs.hello:
                    self._broadcast_hello(state, now, again=True)
                elif message is not None:
                    self._send_control(state, message)
        for medium in self._interfaces.values():
            if medium.summary_due <= now and medium.keepalive is None:
                # The keepalive and the announce, one per interface; it goes from the reserve,
                # ahead of whatever the budget holds back.
                self._broadcast_summary(medium)
        if self._own.take_links_due(now):
            self._publish_links(now)
        card_stale, links_stale = self._own.stale(self._wall_now)
        if card_stale:
            self.set_card(self.card, now)
        if links_stale:
            self._publish_links(now)
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval
            self._sweep(now)
        due = self._reach.next_deadline()
        if due is not None and due <= now:
            self._evaluate_reachability(now)

    @staticmethod
    def _own_part_waits(state: Link) -> bool:
        """A neighbour's handshake frame of ours is still waiting to go on its medium."""
        medium = state.medium
        if medium is None:
            return False
        return bool(state.delayed) or state.outbox.control_waiting() or medium.outbox.control_waiting()

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """The next event for the driver, or ``None``."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[LinkId, bytes]]:
        """Frames to send now, each within its link's MTU and send budget. A frame for a
        broadcast interface is addressed :class:`~agent.core.medium.Broadcast` (it carries the
        sender and destination ids: every neighbour in range hears it).

        On a medium, every queue pays from one airtime budget, in a strict order: the
        keepalive, the broadcast HELLO (it serves every neighbour handshaking), each
        neighbour's handshake frames (PROOF, ACCEPT), the rest of the broadcast queue
        (records), then each neighbour's own queue (DIGEST, records for a leaf). Once one waits
        for airtime the ones after it wait too: a small frame lower down must not take the
        airtime a larger, more urgent one is waiting for (a PROOF behind a stream of DIGESTs
        never goes).
        """
        out: list[tuple[LinkId, bytes]] = []
        #: Interfaces whose budget refused a frame this round -> when it frees up.
        starved: dict[Interface, float] = {}

        def on_medium(medium: Interface, dest: bytes, frames: list[bytes]) -> None:
            for frame in frames:
                out.append((medium.broadcast, self._on_air(medium, dest, frame)))
                self._sent(frame, medium, now)

        def note_starved(medium: Interface, outbox: Outbox) -> None:
            if outbox.starved and outbox.wake_at is not None:
                starved[medium] = outbox.wake_at

        for interface in list(self._pending_interfaces):
            keepalive = interface.take_keepalive(now)
            if keepalive is not None:
                on_medium(interface, EVERYONE, [keepalive])
            if interface.outbox.control_waiting():
                on_medium(interface, EVERYONE, interface.outbox.drain(now, control_only=True))
                note_starved(interface, interface.outbox)
        for state in list(self._pending):
            medium = state.medium
            if medium is not None and medium not in starved and state.outbox.control_waiting():
                assert isinstance(state.id, MediumLink)
                on_medium(medium, state.id.short_id, state.outbox.drain(now, control_only=True))
                note_starved(medium, state.outbox)
        for interface in list(self._pending_interfaces):
            broadcast = interface.outbox
            if interface in starved:
                broadcast.wake_at = starved[interface] if broadcast.has_output() else None
            elif broadcast.only_records_waiting(now):
                broadcast.wake_at = broadcast.records_due
            else:
                on_medium(interface, EVERYONE, broadcast.drain(now))
                note_starved(interface, broadcast)
            if not broadcast.has_output() and interface.keepalive is None:
                self._pending_interfaces.pop(interface, None)
        for state in list(self._pending):
            outbox = state.outbox
            closing = state.handshake.closing
            medium = state.medium
            if medium is not None and medium in starved and outbox.has_output():
                outbox.wake_at = starved[medium]
                continue
            if outbox.only_records_waiting(now) and not closing:
                outbox.wake_at = outbox.records_due  # only records queued, not yet due
                continue
            if medium is None:
                for frame in outbox.drain(now):
                    out.append((state.id, frame))
                    self._sent(frame, None, now)
            else:
                assert isinstance(state.id, MediumLink)
                on_medium(medium, state.id.short_id, outbox.drain(now))
                note_starved(medium, outbox)
            if not outbox.has_output():
                self._pending.pop(state, None)
                if closing and medium is not None:
                    # A neighbour on a medium has no transport link to close: it is simply gone.
                    # One refused (denied, bad card, wrong version) or whose handshake timed out
                    # (a marginal pair that hears each other only now and then) is not handshaken
                    # with again for a while, however often it is heard: on a spent channel its
                    # HELLO rounds would otherwise take the airtime that records need. After a
                    # timeout it still answers the neighbour's own HELLO (medium.Refusal).
                    self._links.pop(state.id, None)
                    assert isinstance(state.id, MediumLink)
                    medium.neighbours.pop(state.id.short_id, None)
                    reason = state.close_reason
                    if reason is not CloseReason.DEAD:
                        passive = reason is CloseReason.HANDSHAKE_TIMEOUT
                        medium.refuse(state.id.short_id, now, self._jitter(), answers_hello=passive)
                elif closing:
                    self._links.pop(state.id, None)
                    reason = state.close_reason
                    assert reason is not None
                    text = f"{reason.text}: {state.close_detail}" if state.close_detail else reason.text
                    remote = peer_key_string(state.remote_key) if state.remote_key else None
                    self._events.append(CloseLink(state.id, text, remote, state.close_retry_at, reason))
        return out

    def _on_air(self, medium: Interface, dest: bytes, frame: bytes) -> bytes:
        """A link frame as it goes on a broadcast interface: ids, and the mesh seal if any."""
        data = medium_frame(self._short_id, dest, frame)
        return medium.seal.seal(data) if medium.seal is not None else data

    def _sent(self, frame: bytes, medium: Interface | None, now: float) -> None:
        self.stats["frames.sent"] += 1
        self.stats["bytes.sent"] += len(frame)
        if medium is not None:
            medium.last_tx = now

    def next_timer(self) -> float | None:
        """When the engine next wants :meth:`handle_timer` (monotonic engine time), or ``None``.

        A time at or before the current one means "now".
        """
        soonest = self._next_sweep
        for state in self._links.values():
            wake_at = state.outbox.wake_at
            if wake_at is not None and wake_at < soonest:
                soonest = wake_at
            hs = state.handshake
            if hs.closing:
                continue
            if state.delayed and state.delayed[0][0] < soonest:
                soonest = state.delayed[0][0]
            if hs.pending:
                # Silence is normal while the handler decides: the handshake deadline and
                # the retransmission timer apply, not the dead interval.
                deadline = min(hs.deadline, hs.retry_at)
            else:
                deadline = state.last_rx + state.dead
                if state.medium is None and not state.outbox.has_output():
                    # With output queued, its own wake-up (wake_at) comes first and resets last_tx.
                    deadline = min(deadline, state.outbox.last_tx + state.keepalive)
            if deadline < soonest:
                soonest = deadline
        for medium in self._interfaces.values():
            wake_at = medium.outbox.wake_at
            if wake_at is not None and wake_at < soonest:
                soonest = wake_at
            if medium.keepalive_at is not None:
                soonest = min(soonest, medium.keepalive_at)
            elif medium.keepalive is None:
                soonest = min(soonest, medium.summary_due)
        for extra in (self._own.links_due_at, self._reach.next_deadline()):
            if extra is not None and extra < soonest:
                soonest = extra
        # Own records are refreshed by wall-clock expiry, converted at the latest offset.
        return min(soonest, self._own.refresh_at(self._wall_offset))

    def take_dirty_records(self) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """Records to persist and (public key, kind) pairs to forget, since the last call."""
        return self._held.take_dirty()

    # ------------------------------------------------------------------ queries

    @property
    def own_records(self) -> tuple[Record, Record]:
        """This peer's current card and links records."""
        return self._own.card, self._own.links

    @property
    def card(self) -> Card:
        """This peer's current card body (name, OS, agent version, metadata)."""
        return self._own.card_body

    def records_of(self, peer_key: bytes) -> list[Record]:
        """The records held for a peer (card first), for export and verification."""
        return self._held.records_of(peer_key)

    def held_record_count(self) -> int:
        return len(self._held)

    def table_usage(self) -> tuple[int, int]:
        """(peers held, this one included; bytes of remote records held): what the limits bound."""
        return len(self._held.keys), self._held.held_bytes

    @property
    def summary(self) -> bytes:
        """An 8-byte hash of every (peer, kind, counter) held: equal summaries, equal holdings."""
        return self._held.summary

    def established_links(self) -> list[tuple[LinkId, str, ConnectionType]]:
        """(link, remote peer key string, type) of every admitted link."""
        return [
            (n.link.id, peer_key_string(n.public_key), n.link.spec.connection_type) for n in self._neighbours
        ]

    def peer_count(self, now: float) -> int:
        """How many peers (the local one included) :meth:`graph` would show; cheap to poll."""
        return len(self._shown(now))

    def retry_at(self, remote_key: bytes) -> float | None:
        """Earliest time to redial a peer that denied us (``None``: no restriction)."""
        return self._deny_backoff.retry_at(remote_key)

    def graph(self, now: float) -> PresenceGraph:
        """The presence graph as this peer sees it at ``now``."""
        return build_graph(self.peer_id, self._local_edges(), self._held, self._shown(now), self._identity)

    def _identity(self, pid: bytes) -> Metadata:
        """``identity_service_metadata`` of a shown peer: its verified certificate's metadata, or nothing."""
        if self._trust is None:
            return EMPTY_METADATA
        if pid == self.peer_id:
            return self._own_certificate.metadata if self._own_certificate is not None else EMPTY_METADATA
        return self._trust.identity(pid)

    @property
    def trust_on(self) -> bool:
        """Whether fleet trust is on (a CA is configured): uncertified peers are refused."""
        return self._trust is not None

    @property
    def revocation_lists(self) -> tuple[RevocationList, ...]:
        """The newest revocation list held per trusted CA (at most two; none with trust off)."""
        return () if self._trust is None else tuple(self._trust.fleet.revocations.values())

    @property
    def revocation_version(self) -> int:
        """Grows by one whenever a revocation list is accepted (from the mesh or the operator), so a
        persister (:meth:`agent.state.local_peer.LocalPeer.save_revocation_lists`) compares one int."""
        return self._revocation_version

    # ------------------------------------------------------------------ dispatch

    def _jitter(self) -> float:
        """A random share in [0, 1), from the injected random source (seeded in the simulator)."""
        return unit_from_bytes(self._rng(2))

    def _tick(self, now: float) -> None:
        # Every input reads the wall clock once: for expiry checks during it, and its
        # offset for turning expiries into timers.
        self._wall_now = self._wall(now)
        self._wall_offset = self._wall_now - now

    def _dispatch(self, state: Link, message: Message, now: float) -> None:
        match message:
            case Hello():
                self._on_hello(state, message, now)
            case Proof():
                self._on_proof(state, message, now)
            case Accept():
                answer, establish = state.handshake.on_accept(message.ask_back)
                for reply in answer:
                    self._send_control(state, reply)
                if establish:
                    self._establish(state, now)
            case Deny():
                self._on_deny(state, message, now)
            case CardRequest():
                self._on_card_request(state, now)
            case Records():
                state.sync.last_record_rx = now
                merge = self._merge
                for raw in message.records:
                    merge(raw, now, state)
            case Summary():
                medium = state.medium
                state.sync.heard = message.summary
                matches = message.summary == self._summary_for(state)
                if matches and state.outbox.drop_digests():
                    # Queued behind the airtime budget while the flood caught up: moot now.
                    self.stats["sync.digests_dropped"] += 1
                if matches and medium is not None and self._all_hold_ours(medium):
                    dropped = medium.outbox.drop_records()
                    if dropped:
                        self.stats["records.moot_dropped"] += dropped
                answered = False
                if not matches and medium is not None and not state.to_leaf:
                    if self._push_explained(medium, message.summary, now):
                        return  # we know what it lacks, and it is on its way
                    # Maybe we lack what it has: our SUMMARY, soon, lets it explain the gap and
                    # send the record, where a DIGEST is several frames; a DIGEST waits for the
                    # next mismatch.
                    answered = medium.summary_soon(now, self._jitter(), answer=True)
                    if answered:
                        self.stats["medium.early_summaries"] += 1
                wants_digest = state.sync.on_summary(matches, now) and not answered
                if wants_digest and (medium is None or medium.may_digest(now)):
                    self._send_digest(state, now)
            case Digest():
                self.stats["sync.digests_received"] += 1
                lo, hi = message.lo, message.hi
                if state.to_leaf:  # a leaf is offered nothing but its own records
                    assert state.remote_key is not None
                    lo = hi = state.remote_key[:8] if lo <= state.remote_key[:8] <= hi else b""
                for key, record in records_to_offer(message, self._held.in_range(lo, hi) if lo else ()):
                    self._queue_record(state, key, record.raw, now)
                    self.stats["sync.records_offered"] += 1

    # ------------------------------------------------------------------ handshake

    def _send_hello(self, state: Link, by_reference: bool, now: float) -> None:
        card = self._own.card
        if state.medium is not None:
            self._broadcast_hello(state, now)
            return
        ref = digest_entry(card.peer_id, card.kind, card.counter)
        offer = state.handshake.offer
        hello = encode_hello(
            state.handshake.nonce,
            ref if by_reference else card.raw,
            self._capabilities,
            offer.public if offer is not None else None,
        )
        resend_after = 4 * self._transfer_time(state.spec, state.medium, len(hello))
        state.handshake.sent_hello(hello, by_reference, resend_after, now)
        self._send_control(state, hello)

    def _answer(self, state: Link, message: bytes, now: float) -> None:
        """A reply to a broadcast HELLO. On a medium every neighbour that heard it answers at
        once, and hidden terminals among them collide every time: answer after a random delay."""
        medium = state.medium
        if medium is None:
            self._send_control(state, message)
            return
        delay = 0.5 * medium.hello_gap(len(message)) * self._jitter()
        state.delayed.append((now + delay, message))
        state.delayed.sort(key=lambda item: item[0])

    def _broadcast_hello(self, state: Link, now: float, *, again: bool = False) -> None:
        """Our HELLO on a medium: one broadcast for every neighbour handshaking (medium.py).
        ``again``: a retransmission (its timer, already doubled, stays as it is)."""
        medium = state.medium
        assert medium is not None
        hello = encode_hello(medium.nonce, self._own.card.raw, self._capabilities)
        gap = medium.hello_gap(len(hello))
        if not again:
            # Resend after a random share more than the gap: two hidden terminals that answered
            # the same frame together must not keep colliding at the neighbour between them.
            state.handshake.sent_hello(hello, False, gap * (1 + self._jitter()), now)
        if now < medium.hello_at + gap or (again and not medium.may_resend_hello(len(hello), now)):
            return  # one went (or waits) already: it serves this neighbour too
        medium.hello_at = now
        medium.outbox.send_control(hello)
        self._pending_interfaces[medium] = None

    def _on_hello(self, state: Link, hello: Hello, now: float) -> None:
        hs = state.handshake
        if hs.remote_key is not None and state.medium is not None and hello.nonce != hs.remote_nonce:
            if not state.established:
                # Its new round while ours with it is under way: prove ourselves over its new nonce.
                self.stats["medium.proof_renewed"] += 1
                state.answers = 0
                signed = proof_message(hello.nonce, self.public_key, hs.remote_key)
                hs.remote_nonce, hs.proof = hello.nonce, Proof(self._private_key.sign(signed)).encode()
                self._answer(state, hs.proof, now)
                return
            if not self._forgot_us(state, hs.remote_key[:8]):
                self.stats["medium.hello_for_others"] += 1  # its round for a newcomer
                return
            fresh = self._reopen_neighbour(state, now)  # it restarted: start again
            if fresh is None:
                return
            state, hs = fresh, fresh.handshake
        if hs.remote_key is not None:
            # The remote did not get our PROOF (or ACCEPT): answer its retransmission.
            self.stats["handshake.repeated_hello"] += 1
            medium = state.medium
            if medium is not None:
                # A broadcast HELLO is resent for whichever neighbour still lacks a PROOF: one
                # established with us has ours; else answer after a HELLO gap, doubling with
                # each answer (every pending neighbour answering every repeat was a PROOF storm).
                gap = medium.hello_gap(len(hs.hello)) * 2 ** min(state.answers, MAX_ANSWER_DOUBLINGS)
                if state.established or now < state.answered_at + gap:
                    return
                state.answered_at = now
                state.answers += 1
            for reply in hs.answer_to_repeated_hello(hello.nonce):
                self._answer(state, reply, now)
            return
        state.remote_capabilities = hello.capabilities
        try:
            card = self._hello_card(state, hello, now)
        except RecordError as exc:
            self.stats[exc.reason.handshake_counter] += 1
            self._close(state, CloseReason.HANDSHAKE_REFUSED, now, detail=str(exc))
            return
        except CertificateError as exc:
            self.stats[RejectReason.UNCERTIFIED.handshake_counter] += 1
            self.stats[f"trust.rejected.{exc.reason}"] += 1
            self._refuse(state, exc, CloseReason.UNTRUSTED, now)
            return
        if card is None:
            # A reference to a card we do not hold (or only an older one): ask for it.
            self.stats["handshake.card_requested"] += 1
            if hs.phase is Phase.HELLO_SENT:
                hs.move(Phase.CARD_REQUESTED)
            self._send_control(state, CardRequest().encode())
            return
        own_offer = hs.offer.public if hs.offer is not None else None
        hs.remote_offer = hello.session_key
        signed = proof_message(hello.nonce, self.public_key, card.public_key, own_offer, hello.session_key)
        hs.card_accepted(card, hello.nonce, Proof(self._private_key.sign(signed)).encode())
        self._answer(state, hs.proof, now)
        if hs.early_proof is not None:
            self._on_proof(state, Proof(hs.early_proof), now)

    def _forgot_us(self, state: Link, pid: bytes) -> bool:
        """Whether neighbour ``pid`` restarted: a links record of its newer than the one held when
        our link came up no longer lists us (one published before, still in flight, would)."""
        links = self._held.get(pid, RecordKind.LINKS)
        if links is None or links.counter <= state.links_counter_at_up:
            return False
        return self.peer_id not in self._held.neighbours_claimed_by(pid)

    def _hello_card(self, state: Link, hello: Hello, now: float) -> Record | None:
        """The remote's card from its HELLO: verified, or held; ``None`` if referenced and not held."""
        wall = self._wall_now
        if hello.reference is not None:
            pid, counter = hello.reference
            card = self._held.get(pid, RecordKind.CARD)
            if card is None or card.counter < counter or card.expiry <= wall:
                return None
            self._check_hello_card(state, card.public_key, card.expiry, wall)
            if self._trust is not None:  # held, so certified: judged again now
                state.handshake.claimed_key = card.public_key
                state.handshake.remote_certificate = self._trust.judge_held(pid, wall)
            return card
        env = self._codec.open(hello.card)
        if env.kind is not RecordKind.CARD:
            raise RecordError(RejectReason.MALFORMED, "HELLO must carry a card")
        self._check_hello_card(state, env.public_key, env.expiry, wall)
        if self._trust is not None:
            state.handshake.claimed_key = env.public_key
            self._trust.precheck_card(env, wall)  # before the card's signature
        record = self._codec.verify(env, hello.card)
        if self._trust is not None:
            state.handshake.remote_certificate = self._trust.verify_card(record, wall)
        return record

    def _check_hello_card(self, state: Link, public_key: bytes, expiry: int, wall: float) -> None:
        if expiry <= wall:
            raise RecordError(RejectReason.EXPIRED, "HELLO card has expired")
        expected = state.spec.expected_peer
        if isinstance(state.id, MediumLink):
            expected = state.id.short_id  # a neighbour's card must be the one it sends from
        if expected is not None and public_key[: len(expected)] != expected:
            raise RecordError(RejectReason.KEY_MISMATCH, "HELLO card is not from the expected peer")
        if public_key == self.public_key:
            raise RecordError(RejectReason.SELF, "link leads back to this peer")

    def _on_card_request(self, state: Link, now: float) -> None:
        # Answered once, by switching our HELLO to carry the card; a lost answer is
        # covered by HELLO retransmission, and nobody can make us send the card at will.
        if not state.handshake.may_send_card():
            self.stats["handshake.unexpected_card_request"] += 1
            return
        self.stats["handshake.card_sent_on_request"] += 1
        self._send_hello(state, by_reference=False, now=now)

    def _on_proof(self, state: Link, proof: Proof, now: float) -> None:
        hs = state.handshake
        if hs.phase is Phase.CARD_REQUESTED:
            # The remote proved itself before hearing that we lack its card: keep the
            # proof for when the card comes, or a slow radio would carry it twice.
            hs.early_proof = proof.signature
            return
        if hs.phase is not Phase.PROVING or hs.remote_key is None or hs.remote_card is None:
            self.stats["handshake.unexpected_proof"] += 1
            return
        own_offer = hs.offer.public if hs.offer is not None else None
        signed = proof_message(hs.nonce, hs.remote_key, self.public_key, hs.remote_offer, own_offer)
        if not ed25519.verify(hs.remote_key, signed, proof.signature):
            if state.medium is not None:
                # On a shared channel a proof over an earlier nonce of ours (a neighbour still
                # answering our previous HELLO) is common: ignore it; ours is resent until answered.
                self.stats["handshake.rejected.bad_proof"] += 1
                return
            self._close(state, CloseReason.BAD_PROOF, now)
            return
        if not self._start_session(state, now):
            return
        hs.move(Phase.DECIDING)
        card = hs.remote_card.body
        assert isinstance(card, Card)
        certificate = hs.remote_certificate
        request = ConnectionRequest(
            peer_key_string=peer_key_string(hs.remote_key),
            peer_metadata=card.metadata,
            identity_service_metadata=certificate.metadata if certificate is not None else EMPTY_METADATA,
            connection_type=state.spec.connection_type,
        )
        self._events.append(ConnectionRequested(state.id, request))

    def _start_session(self, state: Link, now: float) -> bool:
        """The remote proved its key (and both offers): seal the link if both ends offered, or
        refuse a plain one this peer requires sealed. ``False``: the link is closing."""
        hs = state.handshake
        assert hs.remote_key is not None
        if hs.offer is not None and hs.remote_offer is not None:
            try:
                session = derive_session(
                    hs.offer,
                    hs.remote_offer,
                    own_key=self.public_key,
                    remote_key=hs.remote_key,
                    own_nonce=hs.nonce,
                    remote_nonce=hs.remote_nonce,
                    encrypt=self._encrypt,
                )
            except ValueError as exc:  # a small-order X25519 key: no secret is agreed
                self.stats["handshake.rejected.bad_session_key"] += 1
                self._close(state, CloseReason.HANDSHAKE_REFUSED, now, detail=f"session offer: {exc}")
                return False
            state.session = session
            state.sealed_reassembler = Reassembler(state.spec.mtu - session.overhead, self.stats)
            state.outbox.seal_with(session)
            self.stats["links.sealed"] += 1
            return True
        exempt = state.medium is not None or (state.to_leaf and self.config.unsealed_leaves)
        if self._sealing is Sealing.REQUIRE and not exempt:
            self._close(state, CloseReason.UNSEALED, now)
            return False
        self.stats["links.unsealed"] += 1
        return True

    def _on_deny(self, state: Link, deny: Deny, now: float) -> None:
        if deny.reason is not None:
            self._refused_by_remote(state, deny.reason, now)
            return
        retry_at = None
        # Only a remote that proved its key may make us back off from that key;
        # otherwise anyone replaying a card could keep us away from its owner.
        remote = state.remote_key
        if remote is not None and state.handshake.remote_proved:
            retry_at = self._deny_backoff.failed(remote, now, self._jitter())
        self._close(state, CloseReason.DENIED_BY_REMOTE, now, retry_at=retry_at)

    def _establish(self, state: Link, now: float) -> None:
        hs = state.handshake
        assert hs.remote_key is not None and hs.remote_card is not None
        if self._trust is not None:
            # Judged again: a revocation list may have come while the handler decided.
            assert hs.remote_certificate is not None
            try:
                self._trust.fleet.judge(hs.remote_certificate, int(self._wall_now))
            except CertificateError as exc:
                self._refuse(state, exc, CloseReason.UNTRUSTED, now)
                return
        hs.move(Phase.ESTABLISHED)
        links = self._held.get(hs.remote_key[:8], RecordKind.LINKS)
        state.links_counter_at_up = links.counter if links is not None else -1
        self._establishments += 1
        state.established_order = self._establishments
        self._refresh_neighbours()
        self._deny_backoff.succeeded(hs.remote_key)
        if state.medium is not None:
            assert isinstance(state.id, MediumLink)
            state.medium.linked(state.id.short_id)
        self.stats["links.established"] += 1
        self._events.append(
            LinkEstablished(state.id, peer_key_string(hs.remote_key), state.spec.connection_type)
        )
        card = hs.remote_card
        held = self._held.get(card.peer_id, RecordKind.CARD)
        if not self._leaf and (held is None or held.counter < card.counter):
            self._merge(card.raw, now, source=state)
        self._send_control(state, self._summary_message(state))
        if self._trust is not None:
            for raw in self._trust.revocation_lists:  # the newest lists reach every member
                self._send_control(state, Records((raw,)).encode())
        self._on_topology_change(now, removal=False)

    def _close(
        self,
        state: Link,
        reason: CloseReason,
        now: float,
        *,
        detail: str = "",
        retry_at: float | None = None,
    ) -> None:
        if state.handshake.closing:
            return
        self.stats[reason.counter] += 1
        if state.established:
            self._on_topology_change(now, removal=True)
        state.handshake.move(Phase.CLOSING)
        self._refresh_neighbours()
        state.close_reason = reason
        state.close_detail = detail
        state.close_retry_at = retry_at
        state.outbox.clear_data()  # nothing but the queued control messages (a DENY) goes out
        self._pending[state] = None  # so the close is reported once queued control frames are out

    # ------------------------------------------------------------------ fleet trust

    def _refuse(self, state: Link, exc: CertificateError, reason: CloseReason, now: float) -> None:
        """Refuse a peer's certificate: tell it why (DENY with the reason), close, log a line."""
        self._send_control(state, Deny(exc.reason).encode())
        self._close(state, reason, now, detail=f"{exc.reason}: {exc.detail}")
        if self._trust_log.due(f"refused.{reason.name}.{exc.reason}", now):
            key = state.remote_key or state.handshake.claimed_key
            log.warning(
                "%s peer %s: its certificate is refused (%s: %s); %d so far",
                "withdrew" if reason is CloseReason.WITHDRAWN else "refused",
                peer_key_string(key) if key is not None else f"on link {state.id!r}",
                exc.reason,
                exc.detail,
                self.stats[reason.counter],
            )

    def _refused_by_remote(self, state: Link, reason: TrustReason, now: float) -> None:
        """The remote refused our certificate and said why: close, and say so in the log."""
        self.stats[f"trust.refused_by_remote.{reason}"] += 1
        self._close(state, CloseReason.REFUSED_BY_REMOTE, now, detail=str(reason))
        if self._trust_log.due(f"refused_by_remote.{reason}", now):
            key = state.remote_key or state.handshake.claimed_key
            log.warning(
                "peer %s refused this device's certificate (%s): %s",
                peer_key_string(key) if key is not None else f"on link {state.id!r}",
                reason,
                HINTS[reason],
            )

    def _check_own_certificate(self, now: float) -> Certificate | None:
        """This device's certificate as the fleet will judge it; a warning if it will be refused."""
        assert self._trust is not None
        try:
            return self._trust.own_certificate(self.public_key, self._wall_now)
        except CertificateError as exc:
            if self._trust_log.due(f"own.{exc.reason}", now):
                log.warning(
                    "this device's certificate will be refused by the fleet (%s: %s): %s",
                    exc.reason,
                    exc.detail,
                    HINTS[exc.reason],
                )
            return None

    def _on_revocation_list(self, trust: Trust, raw: bytes, source: Link | None, now: float) -> None:
        """A revocation list arrived in RECORDS: the newest per CA is held, flooded on, and applied."""
        if trust.holds_list(raw):
            self.stats["trust.revocation_lists.duplicate"] += 1
            return
        try:
            self._apply_revocation_list(trust, raw, source, now)
        except CertificateError as exc:
            self.stats[f"trust.revocation_lists.rejected.{exc.reason}"] += 1

    def _apply_revocation_list(
        self, trust: Trust, raw: bytes, source: Link | None, now: float
    ) -> RevocationList:
        revocations = trust.accept_revocation_list(raw)
        self._revocation_version += 1
        self.stats["trust.revocation_lists.accepted"] += 1
        log.info(
            "revocation list %d of fleet CA %s accepted (%d serials revoked)",
            revocations.counter,
            revocations.ca_key_id.hex(),
            len(revocations.serials),
        )
        message = Records((raw,)).encode()
        for neighbour in self._neighbours:
            if neighbour.link is not source:
                self._send_control(neighbour.link, message)
        if self._own_certificate is not None:
            self._own_certificate = self._check_own_certificate(now)
        self._withdraw_untrusted(now)
        return revocations

    def add_revocation_list(self, raw: bytes, now: float) -> RevocationList:
        """A revocation list from the operator (``presence-agent fleet-ca revoke`` made it): held,
        flooded and applied as one from the mesh. Raises :class:`~agent.core.certs.CertificateError`
        if refused (``stale``: not newer than the one held), and ``ValueError`` with trust off."""
        if self._trust is None:
            raise ValueError("fleet trust is off: no CA is configured to check a revocation list against")
        self._tick(now)
        return self._apply_revocation_list(self._trust, raw, None, now)

    def _withdraw_untrusted(self, now: float) -> None:
        """Drop every held peer whose certificate no longer holds (revoked, expired) and close its links."""
        assert self._trust is not None
        for pid, exc in self._trust.withdrawn(self._wall_now):
            self.stats["trust.peers_withdrawn"] += 1
            for state in list(self._links.values()):
                key = state.remote_key
                if key is not None and key[:8] == pid and not state.handshake.closing:
                    self._refuse(state, exc, CloseReason.WITHDRAWN, now)
            self._occupancy.evicted(pid)
            self._drop_peer(pid, now)

    # ------------------------------------------------------------------ own records

    def _accept_own(self, record: Record, now: float) -> None:
        self._store(record, now)
        self._flood(record, None, now)

    def _publish_links(self, now: float, force: bool = False) -> None:
        # Oldest link first: a newcomer never displaces a link listed before it (own_records).
        links, unlisted = links_record(
            LinkEntry(n.peer_id, n.link.spec.connection_type, n.link.spec.distance_dm)
            for n in sorted(self._neighbours, key=lambda n: n.link.established_order)
        )
        if unlisted:
            self.stats["links.unlisted"] = unlisted
        record = self._own.sign_links(links, now, self._wall_now, force)
        if record is not None:
            self._accept_own(record, now)

    def _check_own_copy(self, env: Envelope, raw: bytes, now: float) -> None:
        # Recovery (own_records): only a genuine newer copy moves the counters.
        if not self._own.lost_state(env):
            return
        self._codec.verify(env, raw)
        self.stats["records.own_newer_seen"] += 1
        self._own.advance_past(env.counter)
        if env.kind is RecordKind.CARD:
            self.set_card(self.card, now)
        else:
            self._publish_links(now, force=True)

    # ------------------------------------------------------------------ records

    def _merge(self, raw: bytes, now: float, source: Link | None) -> None:
        # Runs for every record received: attributes read once into locals, and the sender's
        # peer id (``via``) worked out only where it is used (a new peer, a full table).
        held = self._held
        key = held.key_of_raw(raw)
        if key is not None:
            self.stats["records.duplicate"] += 1
            # The sender has it: a copy still queued for it need not go. On a medium, enough
            # copies heard mean the neighbours have it: our rebroadcast is cancelled.
            if source is not None and source.medium is not None:
                if source.medium.heard_copy(key, raw):
                    self.stats["records.rebroadcast_suppressed"] += 1
            elif source is not None and source.outbox.drop_record(key, raw):
                self.stats["records.flood_suppressed"] += 1
            return
        trust = self._trust
        if trust is not None and is_revocation_list(raw):
            self._on_revocation_list(trust, raw, source, now)
            return
        claim: Claim | None = None
        cert: Certificate | None = None
        try:
            env = self._codec.open(raw)
            public_key = env.public_key
            if public_key == self.public_key:
                self._check_own_copy(env, raw, now)
                raise RecordError(RejectReason.OWN_RECORD, "an older copy of one of this peer's own records")
            if self._leaf:
                raise RecordError(RejectReason.NOT_FOR_LEAF, "a leaf holds only its own records")
            shortfall = held.check(env, self._wall_now, len(raw))
            pid = env.peer_id
            if trust is not None:
                # Before the signature and any occupancy charge: an uncertified flood costs nothing.
                if env.kind is CARD:
                    trust.precheck_card(env, self._wall_now)
                else:
                    trust.require_certified(pid)
            if shortfall is not None:
                # Decided before the signature is checked (a refused flood costs no verification),
                # carried out after it (a forgery displaces nobody).
                self._place_peers(now)
                claim = self._claim_for(env, pid, _via(source))
                self._make_room(pid, claim, shortfall, len(raw), now, commit=False)
            record = self._codec.verify(env, raw)
            if trust is not None and env.kind is CARD:
                cert = trust.verify_card(record, self._wall_now)  # a forged certificate displaces nobody
            if shortfall is not None:
                assert claim is not None
                self._make_room(pid, claim, shortfall, len(raw), now, commit=True)
        except CertificateError as exc:
            self.stats[RejectReason.UNCERTIFIED.record_counter] += 1
            self.stats[f"trust.rejected.{exc.reason}"] += 1
            if env.kind is RecordKind.LINKS:
                self._wait(env, raw, source)  # its card may be on its way (links go first)
            return
        except RecordError as exc:
            self.stats[exc.reason.record_counter] += 1
            if exc.reason is RejectReason.CAPACITY:
                self._refused_for_room(env, raw, source, now)
            return
        new_peer = pid not in held.keys
        self.stats["records.accepted"] += 1
        if trust is not None and cert is not None:
            trust.certified[pid] = cert
        self._store(record, now)
        if new_peer:  # a new peer: this is all it holds
            self._occupancy.admitted(pid, claim, len(raw), _via(source))
        self._flood(record, source, now)
        if self._waiting:
            self._retry_waiting(record, new_peer, now)

    def _claim_for(self, env: Envelope, pid: bytes, via: bytes) -> Claim:
        """A record's claim to a place (:mod:`agent.core.occupancy`): anchored for a first-hand
        neighbour; reachable one hop beyond a reachable peer that claims it back; else unreachable."""
        if any(n.peer_id == pid for n in self._neighbours):
            return ANCHORED
        known = pid in self._held.keys
        placed = self._occupancy.claim_of(pid)
        if placed is not None and known:
            return placed
        body = env.body
        if env.kind is not RecordKind.LINKS and known:
            held_links = self._held.get(pid, RecordKind.LINKS)
            body = held_links.body if held_links is not None else body
        best: Claim | None = None
        if isinstance(body, Links):
            neighbours = {n.peer_id for n in self._neighbours}
            for nid, code in body.claims:
                if (pid, code) not in self._held.claims.get(nid, ()):
                    continue
                if nid in neighbours:
                    through = Claim(Standing.REACHABLE, nid, 1)
                elif (
                    placed := self._occupancy.claim_of(nid)
                ) is None or placed.standing is not Standing.REACHABLE:
                    continue
                else:
                    through = placed
                if best is None or through.hops + 1 < best.hops:
                    best = Claim(Standing.REACHABLE, through.group, through.hops + 1)
                elif through.hops + 1 == best.hops and through.group != best.group:
                    best = Claim(Standing.REACHABLE, MANY, best.hops)
        return best or Claim(Standing.UNREACHABLE, via)

    def _make_room(
        self, pid: bytes, claim: Claim, shortfall: Shortfall, size: int, now: float, *, commit: bool
    ) -> None:
        """Find (``commit``: evict) the weaker peers whose places the record needs, or raise
        ``capacity``. See :mod:`agent.core.occupancy`."""
        occupancy, held = self._occupancy, self._held
        mine = occupancy.newcomer(claim, size)
        place, missing = shortfall.place, shortfall.bytes
        while place or missing > 0:
            weakest = occupancy.weakest(held.keys.__contains__, spare=pid)
            if weakest is None or weakest[0] <= mine:
                raise RecordError(
                    RejectReason.CAPACITY,
                    f"the peer table is full ({len(held.keys)} peers, {held.held_bytes} bytes)",
                )
            if not commit:
                return
            victim = weakest[1]
            place, missing = False, missing - held.bytes_of(victim)
            occupancy.evicted(victim)
            self._evict(victim, now)

    def _place_peers(self, now: float) -> None:
        if self._occupancy.due(now):
            held = self._held
            neighbours = [n.peer_id for n in self._neighbours]
            self._occupancy.place(now, self.peer_id, neighbours, held.claims, held.peer_sizes())

    def _retry_waiting(self, record: Record, new_peer: bool, now: float) -> None:
        """Try again the waiting records that ``record`` may have earned a place."""
        pids = [record.peer_id] if new_peer else []
        if record.kind is RecordKind.LINKS:
            pids.extend(self._held.neighbours_claimed_by(record.peer_id))
        for pid in pids:
            for kind in (RecordKind.LINKS, RecordKind.CARD):
                waiting = self._waiting.pop((pid, kind), None)
                if waiting is not None:
                    raw, source = waiting
                    self._merge(raw, now, source if source is not None and source.established else None)

    def _evict(self, pid: bytes, now: float) -> None:
        self.stats["peers.evicted"] += 1
        self._drop_peer(pid, now)

    def _drop_peer(self, pid: bytes, now: float) -> None:
        self.graph_version += 1
        if self._trust is not None:
            self._trust.certified.pop(pid, None)
        if self._held.evict(pid):
            self._mark_removal(now)
        self._occupancy.topology_changed()

    def _wait(self, env: Envelope, raw: bytes, source: Link | None) -> None:
        """A new peer's record refused for now waits (bounded, oldest out) to be tried again when
        its peer gains a place (room, or with trust on, a certified card)."""
        key = (env.peer_id, env.kind)
        if key[0] not in self._held.keys:
            self._waiting[key] = (raw, source)
            self._waiting.move_to_end(key)
            while len(self._waiting) > WAITING_RECORDS:
                self._waiting.popitem(last=False)

    def _refused_for_room(self, env: Envelope, raw: bytes, source: Link | None, now: float) -> None:
        self._wait(env, raw, source)
        if self._full_logged_at is None or now >= self._full_logged_at + self.config.full_log_interval:
            self._full_logged_at = now
            log.warning(
                "peer table full (%d peers, %d bytes of records): newcomers that stand no stronger than "
                "the weakest held peer are refused (%d refused, %d evicted so far)",
                len(self._held.keys),
                self._held.held_bytes,
                self.stats["records.rejected.capacity"],
                self.stats["peers.evicted"],
            )

    def _store(self, record: Record, now: float) -> None:
        lost_claim = self._held.put(record)
        self.graph_version += 1
        if record.kind is LINKS and record.peer_id != self.peer_id:
            self._occupancy.topology_changed()
            if lost_claim:
                self._mark_removal(now)
            else:
                self._reach.stale = True

    def _forget(self, pid: bytes, kind: RecordKind, now: float) -> None:
        if kind is RecordKind.CARD and self._trust is not None:
            self._trust.certified.pop(pid, None)
        if self._held.forget(pid, kind):
            self.graph_version += 1
            self._occupancy.topology_changed()
            if kind is RecordKind.LINKS:
                self._mark_removal(now)

    def _flood(self, record: Record, source: Link | None, now: float) -> None:
        pid = record.peer_id
        key = (pid, record.kind)
        claimed_by = self._held.neighbours_claimed_by
        source_reaches: tuple[bytes, ...] = ()
        source_key = source.remote_key if source is not None else None
        if source is not None and source_key is not None:
            # The sender holds this version, so an older one queued for it is moot.
            if source.medium is None:
                source.outbox.drop_record(key)
            source_reaches = claimed_by(source_key[:8])
        targets, pruned = fan_out(self._routers, record.public_key, source, claimed_by(pid), source_reaches)
        raw = record.raw
        media: dict[Interface, None] = {}
        for target in targets:
            if target.medium is None:
                self._queue_record(target, key, raw, now)
            else:
                media[target.medium] = None
        for medium in media:  # once per interface, however many neighbours it reaches
            if medium.summary_soon(now, self._jitter()):
                self.stats["medium.early_summaries"] += 1  # a neighbour that missed it will hear
            if self._held_back_on(medium, record):
                self.stats["records.cards_held_back_on_medium"] += 1  # a big card goes when a DIGEST asks
                continue
            snr = self._heard_snr if source is not None and source.medium is medium else None
            delay = medium.spec.rebroadcast_after(snr, self._jitter())
            medium.outbox.queue_record(key, raw, now, delay)
            medium.queued(key)
            self._pending_interfaces[medium] = None
        if pruned:
            self.stats["records.flood_pruned"] += pruned

    def _refresh_neighbours(self) -> None:
        self._neighbours = [
            Neighbour(state, state.remote_key, state.remote_key[:8])
            for state in self._links.values()
            if state.established and state.remote_key is not None
        ]
        self._routers = [n for n in self._neighbours if not n.link.to_leaf]

    def _send_control(self, state: Link, message: bytes) -> None:
        state.outbox.send_control(message)
        self._pending[state] = None

    def _queue_record(self, state: Link, key: tuple[bytes, RecordKind], raw: bytes, now: float) -> None:
        if len(raw) + ONE_RECORD_OVERHEAD > state.remote_capabilities.max_message:
            self.stats["records.too_big_for_link"] += 1
            return
        if state.medium is not None:  # records go to everyone in range, once
            state.medium.outbox.queue_record(key, raw, now, state.medium.spec.rebroadcast_window[0])
            self._pending_interfaces[state.medium] = None
            return
        state.outbox.queue_record(key, raw, now)
        self._pending[state] = None

    def _sweep(self, now: float) -> None:
        for pid, kind in self._held.expired(self._wall_now):
            self.stats["records.expired"] += 1
            self._forget(pid, kind, now)
        if self._trust is not None:
            self._withdraw_untrusted(now)  # certificates expired since
        for state in self._links.values():
            state.reassembler.sweep(now, functools.partial(self._reassembly_allowance, state))
            if state.sealed_reassembler is not None:
                state.sealed_reassembler.sweep(now, functools.partial(self._reassembly_allowance, state))
        self._held.drop_unused_keys()
        self._occupancy.prune(self._held.keys)

    def _reassembly_allowance(self, state: Link, size: int) -> float:
        # A slow link gets the time its budget needs for the whole message.
        return self.config.reassembly_timeout + 2 * self._transfer_time(state.spec, state.medium, size)

    # ------------------------------------------------------------------ sync

    def _summary_for(self, state: Link) -> bytes:
        """What this peer holds, as far as ``state``'s remote is concerned: a leaf only its own records."""
        if state.to_leaf and state.remote_key is not None:
            return self._held.summary_of(state.remote_key[:8])
        return self.summary

    def _summary_message(self, state: Link) -> bytes:
        # Fixed size whatever is held: quiet meshes cost the same per link at any N.
        return Summary(self._summary_for(state)).encode()

    def _push_explained(self, medium: Interface, theirs: bytes, now: float) -> bool:
        """Broadcast the records a neighbour whose SUMMARY is ``theirs`` lacks, when our recent
        changes explain the difference (Holdings.explain); ``True`` if they did. A card bigger
        than a frame still goes only when a DIGEST asks for it, as in a flood."""
        held = self._held
        lacking = [
            (key, record)
            for key in held.explain(theirs)
            if (record := held.get(*key)) is not None and not self._held_back_on(medium, record)
        ]
        outbox = medium.outbox
        for key, record in lacking:
            if not outbox.holds_record(key):
                delay = medium.spec.rebroadcast_after(self._heard_snr, self._jitter())
                outbox.queue_record(key, record.raw, now, delay)
                medium.queued(key)  # another neighbour's copy cancels ours
                self._pending_interfaces[medium] = None
        if lacking:
            self.stats["sync.gaps_explained"] += 1
        return bool(lacking)

    @staticmethod
    def _held_back_on(medium: Interface, record: Record) -> bool:
        """A card bigger than one frame: never sent on a medium unasked (a DIGEST asks)."""
        return record.kind is CARD and len(record.raw) + ONE_RECORD_OVERHEAD > medium.spec.mtu

    def _all_hold_ours(self, medium: Interface) -> bool:
        """Every established neighbour's last SUMMARY is ours: each held, when it sent it,
        everything we hold now (records only get newer), so records still queued for the
        interface are moot (offers drawn by an old DIGEST, rebroadcasts behind a spent budget)."""
        summary = self.summary
        return all(n.sync.heard == summary for n in medium.neighbours.values() if n.established)

    def _send_digest(self, state: Link, now: float) -> None:
        state.sync.digest_sent(now)
        self.stats["sync.digests_sent"] += 1
        if state.to_leaf and state.remote_key is not None:
            pid = state.remote_key[:8]
            digests = [Digest(pid, pid, b"".join(self._held.digest_entries_of(pid)))]
        else:
            room = min(self.config.max_digest_bytes, state.remote_capabilities.max_message - DIGEST_HEADROOM)
            if state.medium is not None:
                # One frame each: a frame lost on the air loses its range only, not the DIGEST
                # (30 Pis at SF10 sent DIGESTs of four frames, and lost one of them so often that
                # 3 of 16 runs had not settled after 48 h; one frame each, all 16 had).
                room = min(room, state.outbox.frame_mtu - DIGEST_HEADROOM)
            digests = digest_messages(self._held.digest_entries(), state.outbox.frame_mtu, room)
        state.outbox.send_digests([d.encode() for d in digests])
        self._pending[state] = None

    # ------------------------------------------------------------------ reachability

    def _mark_removal(self, now: float) -> None:
        # Peers reachable until now keep their grace period: bring "visible" up to
        # date before the removal takes effect, then re-evaluate once it settles.
        if self._reach.stale:
            self._evaluate_reachability(now)
        self._reach.schedule_removal(now)

    def _on_topology_change(self, now: float, removal: bool) -> None:
        self._occupancy.topology_changed()
        if removal:
            self._mark_removal(now)
        else:
            self._reach.stale = True
        self.graph_version += 1
        self._own.links_changed(now)

    def _shown(self, now: float) -> dict[bytes, int]:
        """Peers in the graph now with their hop counts: reachable ones and those in grace."""
        self._evaluate_reachability(now)
        return self._reach.shown(self._held.keys)

    def _local_edges(self) -> list[LocalEdge]:
        return [
            (n.peer_id, CONNECTION_TYPE_CODES[n.link.spec.connection_type], n.link.spec.distance_dm)
            for n in self._neighbours
        ]

    def _evaluate_reachability(self, now: float) -> None:
        neighbours = (n.peer_id for n in self._neighbours)
        hops = hop_counts(self.peer_id, neighbours, self._held.claims, self._held.keys)
        if self._reach.update(hops, now):
            self.graph_version += 1
