"""The sans-I/O link-state presence engine.

The engine is a pure state machine in the style of h11 and aioquic: whoever
drives it reports links going up and down, hands it received frames with the
current time, and asks what to send (:meth:`Engine.datagrams_to_send`), when to
wake it (:meth:`Engine.next_timer`) and what happened (:meth:`Engine.next_event`).
It opens no socket, starts no thread and never reads a clock; the one outward
call is :class:`CounterSource`, which must make a counter durable before
returning it.

Protocol in short (message formats in :mod:`agent.core.wire`):

1. Link up: both sides send HELLO (a fresh nonce and their signed card, or only
   a reference to it if the remote is known and so likely holds it), then PROOF
   (a signature over the other's nonce). A side that does not hold a referenced
   card asks for it (CARD_REQUEST). The connection request handler is asked
   (:class:`ConnectionRequested`); both sides must ACCEPT.
2. Established: each side re-signs its links record (throttled), and the two
   compare SUMMARY hashes of what they hold; on mismatch they exchange DIGESTs
   and each pushes the records the other lacks.
3. A record newer than the one held for its (peer, kind) is verified, kept and
   flooded once to every other neighbour; echoes are dropped by a byte-exact
   lookup before any parsing or signature work.
4. The graph is computed from held records: a connection between two remote
   peers counts when both list it; peers not reachable from the local peer
   leave after ``departure_grace``.
"""

from __future__ import annotations

import collections
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.core.errors import RecordError
from agent.core.events import (
    CloseLink,
    ConnectionRequest,
    ConnectionRequested,
    Event,
    LinkEstablished,
    LinkId,
)
from agent.core.graph import Connection, Peer, PresenceGraph, sorted_peers
from agent.core.keys import peer_id, peer_key_string
from agent.core.limits import (
    HANDSHAKE_CONTEXT,
    MAX_CONNECTIONS_PER_RECORD,
    MAX_MESSAGE_BYTES,
    MAX_PARTIAL_MESSAGES_PER_LINK,
    MAX_RECORD_BYTES,
    MIN_LINK_MTU,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    SIGNATURE_BYTES,
)
from agent.core.records import (
    CONNECTION_TYPE_BY_CODE,
    CONNECTION_TYPE_CODES,
    EMPTY_METADATA,
    Card,
    ConnectionType,
    Envelope,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    load_public_key,
    mean_distance_dm,
    open_record,
    sign_record,
    verify_record,
)
from agent.core.wire import (
    DIGEST_ENTRY_BYTES,
    FRAGMENT_HEADER_BYTES,
    FRAME_FRAGMENT,
    FRAME_WHOLE,
    Hello,
    MessageType,
    WireError,
    decode_hello,
    decode_message,
    digest_entry,
    encode_hello,
    encode_message,
    frames_for,
    max_message_bytes,
    read_digest_entry,
)

log = logging.getLogger("agent.core.engine")

_ID_LOW: Final = b"\x00" * 8
_ID_HIGH: Final = b"\xff" * 8
_NO_PEERS: Final[tuple[bytes, ...]] = ()
_NO_CLAIMS: Final[Mapping[tuple[bytes, int], int | None]] = MappingProxyType({})


class CounterSource(Protocol):
    """Hands out record counters that never repeat, across restarts and crashes."""

    def next_counter(self) -> int: ...

    def advance_past(self, counter: int) -> None:
        """Make every later counter exceed ``counter`` (this peer's state was lost)."""
        ...


class RecordCodec(Protocol):
    """Parses and verifies records. The simulator shares one memoising codec across
    all its engines, so N engines do not verify the same bytes N times."""

    def open(self, raw: bytes) -> Envelope: ...

    def verify(self, envelope: Envelope, raw: bytes) -> Record: ...


class KeyCachingCodec:
    """The production codec: parses every time, caches loaded public keys."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    def open(self, raw: bytes) -> Envelope:
        return open_record(raw)

    def public_key(self, raw_key: bytes) -> Ed25519PublicKey:
        key = self._keys.get(raw_key)
        if key is None:
            key = self._keys[raw_key] = load_public_key(raw_key)
        return key

    def verify(self, envelope: Envelope, raw: bytes) -> Record:
        return verify_record(envelope, raw, self.public_key(envelope.public_key))


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """What a transport knows about a link when it comes up.

    ``bytes_per_second`` is the send budget (``None``: unlimited); every frame
    costs its length plus ``frame_overhead_bytes`` (a radio's preamble and
    header, expressed in byte-equivalents of airtime). ``expected_peer`` is the
    raw public key a transport already believes is at the far end (from a
    beacon or BLE advertisement); a HELLO card for any other key is refused.
    ``keepalive_interval`` / ``dead_interval`` override the engine defaults
    for slow links.
    """

    connection_type: ConnectionType
    mtu: int = 1400
    bytes_per_second: float | None = None
    burst_bytes: int | None = None
    frame_overhead_bytes: int = 0
    distance_dm: int | None = None
    expected_peer: bytes | None = None
    keepalive_interval: float | None = None
    dead_interval: float | None = None


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Protocol timings and bounds. Times are seconds of the driver's clock."""

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
    #: A DIGEST message carries at most this many bytes of entries (split above it).
    max_digest_bytes: int = 8192


@dataclass(slots=True)
class _Partial:
    count: int
    parts: dict[int, bytes]
    started: float


@dataclass(eq=False, slots=True)
class _Link:
    id: LinkId
    spec: LinkSpec
    opened_at: float
    nonce: bytes
    keepalive: float
    dead: float
    state: str = "handshake"  # handshake -> deciding -> established; closing at the end
    remote_key: bytes | None = None
    remote_card: Record | None = None
    remote_proved: bool = False
    local_allowed: bool = False
    remote_allowed: bool = False
    last_rx: float = 0.0
    last_tx: float = 0.0
    #: When the last RECORDS message left: the Nagle-like batching looks at records only,
    #: so a keepalive just sent does not hold back the next flood hop.
    last_records_tx: float = -1.0
    last_record_rx: float = 0.0
    tokens: float = 0.0
    refilled_at: float = 0.0
    control: deque[bytes] = field(default_factory=deque)
    digests: deque[bytes] = field(default_factory=deque)
    links_out: dict[tuple[bytes, RecordKind], bytes] = field(default_factory=dict)
    cards_out: dict[tuple[bytes, RecordKind], bytes] = field(default_factory=dict)
    records_due: float = 0.0
    fragments_out: deque[bytes] = field(default_factory=deque)
    next_msg_id: int = 0
    partials: dict[int, _Partial] = field(default_factory=dict)
    summary_mismatches: int = 0
    digest_sent_at: float | None = None
    handshake_deadline: float = 0.0
    # Handshake messages are retransmitted on silence, so one lost frame on a lossy
    # radio costs a retry, not the whole handshake deadline.
    retry_every: float = 1.0
    retry_at: float = 0.0
    hello: bytes = b""
    hello_by_reference: bool = False
    card_requested: bool = False
    # The remote's PROOF, if it came while we were asking for its card (checked once it is here).
    early_proof: bytes = b""
    proof: bytes = b""
    remote_nonce: bytes = b""
    close_reason: str = ""
    close_retry_at: float | None = None
    wake_at: float | None = None

    @property
    def established(self) -> bool:
        return self.state == "established"

    def has_output(self) -> bool:
        return bool(self.fragments_out or self.control or self.links_out or self.digests or self.cards_out)


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
    ) -> None:
        self.config = config or EngineConfig()
        self._private_key = private_key
        self.public_key = public_key
        self.peer_key_string = peer_key_string(public_key)
        self.peer_id = peer_id(public_key)
        self._counters = counters
        self._rng = rng
        self._keys_codec = KeyCachingCodec()
        self._codec: RecordCodec = codec or self._keys_codec
        self.stats: collections.Counter[str] = collections.Counter()

        self._links: dict[LinkId, _Link] = {}
        # (link, remote key, remote peer id) of every established link: the flooding fan-out.
        self._neighbours: list[tuple[_Link, bytes, bytes]] = []
        self._events: deque[Event] = deque()
        self._records: dict[tuple[bytes, RecordKind], Record] = {}
        # Raw bytes of every held record -> its key: flood echoes are dropped here.
        self._held_raw: dict[bytes, tuple[bytes, RecordKind]] = {}
        # Links with something queued, so sending does not scan idle links. A dict, not a
        # set: insertion order keeps runs reproducible (sets of objects order by address).
        self._pending: dict[_Link, None] = {}
        self._keys: dict[bytes, bytes] = {self.peer_id: public_key}
        self._summary = 0
        # Records to persist (Record) or to delete from the store (the peer's public key).
        self._dirty: dict[tuple[bytes, RecordKind], Record | bytes] = {}
        self._backoff: dict[bytes, int] = {}
        self._backoff_until: dict[bytes, float] = {}

        self._visible: dict[bytes, int] = {}
        # Peers that stopped being reachable: (since when, last hop count).
        self._gone: dict[bytes, tuple[float, int]] = {}
        # Remote peers' claimed connections: peer id -> {(neighbour id, type code): distance}.
        self._claims: dict[bytes, Mapping[tuple[bytes, int], int | None]] = {}
        self._claim_peers: dict[bytes, tuple[bytes, ...]] = {}
        self._reach_stale = True
        self._reach_due: float | None = None
        self.graph_version = 0

        self._resign_links_at: float | None = None
        self._links_signed_at = -math.inf
        self._next_sweep = now + self.config.sweep_interval
        self.card = card
        self._own_card = self._sign(card, now)
        self._own_links = self._sign(Links(()), now)
        self._accept_own(self._own_card, now)
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
        state = _Link(
            id=link,
            spec=spec,
            opened_at=now,
            nonce=self._rng(NONCE_BYTES),
            keepalive=spec.keepalive_interval or self.config.keepalive_interval,
            dead=spec.dead_interval or self.config.dead_interval,
            last_rx=now,
            last_tx=now,
            refilled_at=now,
        )
        state.tokens = self._burst(state)
        # A slow link gets the time to carry two full-size cards on top of the timeout.
        state.handshake_deadline = (
            now + self.config.handshake_timeout + 2 * self._transfer_time(state, MAX_RECORD_BYTES)
        )
        self._links[link] = state
        self.stats["links.opened"] += 1
        # A peer whose card we hold shares a mesh with us, so it most likely holds ours:
        # name our card instead of sending it (re-handshakes on a lossy radio cost no card).
        # A first contact sends the card at once, so it costs no extra round trip.
        self._send_hello(state, by_reference=self._held_card(spec.expected_peer) is not None, now=now)

    def link_down(self, link: LinkId, now: float) -> None:
        """The transport lost ``link`` (closed, timed out, unplugged)."""
        state = self._links.get(link)
        if state is None:
            return
        self.stats["links.closed"] += 1
        if state.established:
            self._on_topology_change(now, removal=True)
        del self._links[link]
        self._refresh_neighbours()
        self._pending.pop(state, None)

    def receive(self, link: LinkId, frame: bytes, now: float) -> None:
        """Bytes arrived on ``link``. Never raises for anything a remote sends."""
        state = self._links.get(link)
        if state is None or state.state == "closing":
            self.stats["frames.dropped_no_link"] += 1
            return
        state.last_rx = now
        self.stats["frames.received"] += 1
        self.stats["bytes.received"] += len(frame)
        if not frame or len(frame) > state.spec.mtu:
            self.stats["frames.malformed"] += 1
            return
        if frame[0] == FRAME_WHOLE:
            message: bytes | None = frame[1:]
        elif frame[0] == FRAME_FRAGMENT:
            message = self._reassemble(state, frame, now)
        else:
            self.stats["frames.malformed"] += 1
            return
        if message is None:
            return
        try:
            kind, fields = decode_message(message)
            self._dispatch(state, kind, fields, now)
        except (WireError, ValueError, TypeError, IndexError) as exc:
            self.stats["messages.malformed"] += 1
            log.debug("malformed message on %r: %s", link, exc)

    def decide(self, link: LinkId, allow: bool, now: float) -> None:
        """The connection request handler's answer for ``link``."""
        state = self._links.get(link)
        if state is None or state.state != "deciding":
            return
        if not allow:
            self.stats["links.denied_locally"] += 1
            self._send_control(state, encode_message(MessageType.DENY))
            self._close(state, "denied by connection request handler", None, now)
            return
        state.local_allowed = True
        self._send_control(state, encode_message(MessageType.ACCEPT))
        if state.remote_allowed:
            self._establish(state, now)

    def set_card(self, card: Card, now: float) -> None:
        """Publish a new card (name, OS, metadata): re-sign it and flood it."""
        self.card = card
        self._own_card = self._sign(card, now)
        self._accept_own(self._own_card, now)

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: keepalives, timeouts, re-signing, expiry.

        Deadlines are compared as ``start + interval <= now``, exactly as
        :meth:`next_timer` computes them, so a wake-up at a deadline always
        clears it (``now - start >= interval`` can differ by one rounding).
        """
        for state in list(self._links.values()):
            if state.state == "closing":
                continue
            if state.established and state.last_rx + state.dead <= now:
                self.stats["links.dead"] += 1
                self._close(state, "no frames within the dead interval", None, now)
                continue
            if not state.established and state.handshake_deadline <= now:
                self.stats["links.handshake_timeout"] += 1
                self._close(state, "handshake did not complete", None, now)
                continue
            if not state.established and state.retry_at <= now:
                self._retransmit_handshake(state, now)
            if state.established and state.last_tx + state.keepalive <= now and not state.has_output():
                self._send_control(state, self._summary_message())
        if self._resign_links_at is not None and now >= self._resign_links_at:
            self._resign_links_at = None
            self._publish_links(now)
        for own in (self._own_card, self._own_links):
            if own.expiry - now <= self.config.refresh_before_expiry:
                if own.kind is RecordKind.CARD:
                    self.set_card(self.card, now)
                else:
                    self._publish_links(now)
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval
            self._sweep(now)
        due = self._reach_due is not None and self._reach_due <= now
        if due or (self._gone and self._grace_deadline() <= now):
            self._evaluate_reachability(now)

    # ------------------------------------------------------------------ outputs

    def next_event(self) -> Event | None:
        """The next event for the driver, or ``None``."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[LinkId, bytes]]:
        """Frames to send now, each within its link's MTU and send budget."""
        out: list[tuple[LinkId, bytes]] = []
        for state in list(self._pending):
            if (
                now < state.records_due
                and not (state.control or state.fragments_out or state.digests)
                and state.state != "closing"
            ):
                state.wake_at = state.records_due  # only records queued, not yet due
                continue
            state.wake_at = None
            if state.has_output():
                self._drain(state, now, out)
            if not state.has_output():
                self._pending.pop(state, None)
            if state.state == "closing" and not state.has_output():
                self._links.pop(state.id, None)
                self._events.append(
                    CloseLink(
                        state.id,
                        state.close_reason,
                        peer_key_string(state.remote_key) if state.remote_key else None,
                        state.close_retry_at,
                    )
                )
        return out

    def next_timer(self) -> float | None:
        """When the engine next wants :meth:`handle_timer` (engine time), or ``None``.

        A time at or before the current one means "now".
        """
        soonest = self._next_sweep
        for state in self._links.values():
            if state.wake_at is not None and state.wake_at < soonest:
                soonest = state.wake_at
            if state.state == "closing":
                continue
            if not state.established:
                # Silence is normal while the handler decides: the handshake deadline and
                # the retransmission timer apply, not the dead interval.
                deadline = min(state.handshake_deadline, state.retry_at)
            else:
                deadline = state.last_rx + state.dead
                if not state.has_output():
                    # With output queued, its own wake-up (wake_at) comes first and resets last_tx.
                    deadline = min(deadline, state.last_tx + state.keepalive)
            if deadline < soonest:
                soonest = deadline
        for extra in (self._resign_links_at, self._reach_due):
            if extra is not None and extra < soonest:
                soonest = extra
        refresh = min(self._own_card.expiry, self._own_links.expiry) - self.config.refresh_before_expiry
        soonest = min(soonest, refresh)
        if self._gone:
            soonest = min(soonest, self._grace_deadline())
        return soonest

    def take_dirty_records(self) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """Records to persist and (public key, kind) pairs to forget, since the last call."""
        saved: list[bytes] = []
        deleted: list[tuple[bytes, int]] = []
        for (_, kind), entry in self._dirty.items():
            if isinstance(entry, Record):
                saved.append(entry.raw)
            else:
                deleted.append((entry, int(kind)))
        self._dirty.clear()
        return saved, deleted

    # ------------------------------------------------------------------ queries

    @property
    def own_records(self) -> tuple[Record, Record]:
        """This peer's current card and links records."""
        return self._own_card, self._own_links

    def records_of(self, peer_key: bytes) -> list[Record]:
        """The records held for a peer (card first), for export and verification."""
        pid = peer_id(peer_key)
        if self._keys.get(pid) != peer_key:
            return []
        return [r for kind in RecordKind if (r := self._records.get((pid, kind))) is not None]

    def held_record_count(self) -> int:
        return len(self._records)

    @property
    def summary(self) -> bytes:
        """An 8-byte hash of every (peer, kind, counter) held: equal summaries, equal holdings."""
        return self._summary.to_bytes(8, "big")

    def established_links(self) -> list[tuple[LinkId, str, ConnectionType]]:
        """(link, remote peer key string, type) of every admitted link."""
        return [
            (s.id, peer_key_string(s.remote_key), s.spec.connection_type)
            for s in self._links.values()
            if s.established and s.remote_key is not None
        ]

    def peer_count(self, now: float) -> int:
        """How many peers (the local one included) :meth:`graph` would show; cheap to poll."""
        return len(self._shown(now))

    def retry_at(self, remote_key: bytes) -> float | None:
        """Earliest time to redial a peer that denied us (``None``: no restriction)."""
        return self._backoff_until.get(remote_key)

    def graph(self, now: float) -> PresenceGraph:
        """The presence graph as this peer sees it at ``now``."""
        shown = self._shown(now)
        keys = {pid: peer_key_string(self._keys[pid]) for pid in shown}
        conns: dict[bytes, list[Connection]] = {pid: [] for pid in shown}
        for (a, b, code), dist in self._edges(shown).items():
            metres = None if dist is None else dist / 10.0
            conn = Connection.between(keys[a], keys[b], CONNECTION_TYPE_BY_CODE[code], metres)
            conns[a].append(conn)
            conns[b].append(conn)
        peers = []
        local: Peer | None = None
        for pid, hops in shown.items():
            card_record = self._records.get((pid, RecordKind.CARD))
            card = card_record.body if card_record is not None else None
            assert card is None or isinstance(card, Card)
            peer = Peer(
                peer_key_string=keys[pid],
                device_name=card.device_name if card else "",
                os=card.os if card else "",
                connections=tuple(sorted(conns[pid], key=lambda c: c.id)),
                peer_metadata=card.metadata if card else EMPTY_METADATA,
                identity_service_metadata=EMPTY_METADATA,
                hops=hops,
                agent_version=card.agent_version if card else "",
            )
            if pid == self.peer_id:
                local = peer
            else:
                peers.append(peer)
        assert local is not None
        return PresenceGraph(local, sorted_peers(peers))

    # ------------------------------------------------------------------ handshake

    def _dispatch(self, state: _Link, kind: MessageType, fields: tuple[Any, ...], now: float) -> None:
        if kind is MessageType.HELLO:
            self._on_hello(state, fields, now)
        elif kind is MessageType.PROOF:
            self._on_proof(state, fields, now)
        elif kind is MessageType.ACCEPT:
            state.remote_allowed = True
            if fields[:1] == (1,) and state.local_allowed:
                # A retransmitted ACCEPT asks for ours: the remote missed it.
                self._send_control(state, encode_message(MessageType.ACCEPT))
            if state.local_allowed and state.state == "deciding":
                self._establish(state, now)
        elif kind is MessageType.DENY:
            self._on_deny(state, now)
        elif kind is MessageType.CARD_REQUEST:
            self._on_card_request(state, now)
        elif not state.established:
            self.stats["messages.before_handshake"] += 1
        elif kind is MessageType.RECORDS:
            state.last_record_rx = now
            for raw in fields:
                if isinstance(raw, bytes):
                    self._merge(raw, now, source=state)
                else:
                    self.stats["messages.malformed"] += 1
        elif kind is MessageType.SUMMARY:
            self._on_summary(state, fields, now)
        elif kind is MessageType.DIGEST:
            self._on_digest(state, fields, now)

    def _on_hello(self, state: _Link, fields: tuple[Any, ...], now: float) -> None:
        if state.remote_key is not None:
            # The remote did not get our PROOF (or ACCEPT): answer its retransmission.
            self.stats["handshake.repeated_hello"] += 1
            if state.proof and fields[1:2] == (state.remote_nonce,):
                self._send_control(state, state.proof)
                if state.local_allowed:
                    self._send_control(state, encode_message(MessageType.ACCEPT))
            return
        # The version comes first, so a HELLO of another layout is still told apart from junk.
        version = fields[0] if fields else None
        if type(version) is not int or version != PROTOCOL_VERSION:
            self.stats["handshake.version_mismatch"] += 1
            self._close(state, f"remote does not speak protocol version {PROTOCOL_VERSION}", None, now)
            return
        hello = decode_hello(fields)
        try:
            card = self._hello_card(state, hello, now)
        except RecordError as exc:
            self.stats[f"handshake.rejected.{exc.reason}"] += 1
            self._close(state, f"handshake refused: {exc}", None, now)
            return
        if card is None:
            # A reference to a card we do not hold (or only an older one): ask for it.
            self.stats["handshake.card_requested"] += 1
            state.card_requested = True
            self._send_control(state, encode_message(MessageType.CARD_REQUEST))
            return
        state.remote_key = card.public_key
        state.remote_card = card
        proof = self._private_key.sign(HANDSHAKE_CONTEXT + hello.nonce + self.public_key + card.public_key)
        state.remote_nonce = hello.nonce
        state.proof = encode_message(MessageType.PROOF, proof)
        self._send_control(state, state.proof)
        if state.early_proof:
            self._on_proof(state, (state.early_proof,), now)

    def _hello_card(self, state: _Link, hello: Hello, now: float) -> Record | None:
        """The remote's card from its HELLO: verified, or held; ``None`` if referenced and not held."""
        if hello.reference is not None:
            peer, counter = hello.reference
            card = self._records.get((peer, RecordKind.CARD))
            if card is None or card.counter < counter or card.expiry <= now:
                return None
            self._check_hello_card(state, card.public_key, card.expiry, now)
            return card
        env = self._codec.open(hello.card)
        if env.kind is not RecordKind.CARD:
            raise RecordError("malformed", "HELLO must carry a card")
        self._check_hello_card(state, env.public_key, env.expiry, now)
        return self._codec.verify(env, hello.card)

    def _check_hello_card(self, state: _Link, public_key: bytes, expiry: int, now: float) -> None:
        if expiry <= now:
            raise RecordError("expired", "HELLO card has expired")
        if state.spec.expected_peer is not None and public_key != state.spec.expected_peer:
            raise RecordError("key_mismatch", "HELLO card is not from the expected peer")
        if public_key == self.public_key:
            raise RecordError("self", "link leads back to this peer")

    def _on_card_request(self, state: _Link, now: float) -> None:
        # Answered once, by switching our HELLO to carry the card; a lost answer is
        # covered by HELLO retransmission, and nobody can make us send the card at will.
        if state.remote_proved or not state.hello_by_reference:
            self.stats["handshake.unexpected_card_request"] += 1
            return
        self.stats["handshake.card_sent_on_request"] += 1
        self._send_hello(state, by_reference=False, now=now)

    def _send_hello(self, state: _Link, by_reference: bool, now: float) -> None:
        card = self._own_card
        ref = digest_entry(card.peer_id, card.kind, card.counter)
        state.hello = encode_hello(state.nonce, ref if by_reference else card.raw)
        state.hello_by_reference = by_reference
        state.retry_every = max(self.config.handshake_retry, 4 * self._transfer_time(state, len(state.hello)))
        state.retry_at = now + state.retry_every
        self._send_control(state, state.hello)

    def _held_card(self, key: bytes | None) -> Record | None:
        card = self._records.get((key[:8], RecordKind.CARD)) if key is not None else None
        return card if card is not None and card.public_key == key else None

    def _on_proof(self, state: _Link, fields: tuple[Any, ...], now: float) -> None:
        (signature,) = fields
        if state.remote_key is None and state.card_requested and isinstance(signature, bytes):
            # The remote proved itself before hearing that we lack its card: keep the
            # proof for when the card comes, or a slow radio would carry it twice.
            state.early_proof = signature
            return
        if state.remote_key is None or state.remote_proved:
            self.stats["handshake.unexpected_proof"] += 1
            return
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
            raise WireError("PROOF carries a 64-byte signature")
        try:
            self._keys_codec.public_key(state.remote_key).verify(
                signature, HANDSHAKE_CONTEXT + state.nonce + state.remote_key + self.public_key
            )
        except InvalidSignature:
            self.stats["handshake.rejected.bad_proof"] += 1
            self._close(state, "remote could not prove it holds its key", None, now)
            return
        state.remote_proved = True
        state.state = "deciding"
        card = state.remote_card
        assert card is not None and isinstance(card.body, Card)
        self._events.append(
            ConnectionRequested(
                state.id,
                ConnectionRequest(
                    peer_key_string=peer_key_string(state.remote_key),
                    peer_metadata=card.body.metadata,
                    identity_service_metadata=EMPTY_METADATA,
                    connection_type=state.spec.connection_type,
                ),
            )
        )

    def _retransmit_handshake(self, state: _Link, now: float) -> None:
        # Whatever the remote has not acknowledged yet: our HELLO until its PROOF
        # arrives (its PROOF proves it got our HELLO), then our ACCEPT asking for its.
        self.stats["handshake.retransmitted"] += 1
        if not state.remote_proved:
            self._send_control(state, state.hello)
        elif state.local_allowed and not state.remote_allowed:
            self._send_control(state, encode_message(MessageType.ACCEPT, 1))
        state.retry_every = min(2 * state.retry_every, self.config.handshake_timeout)
        state.retry_at = now + state.retry_every

    def _on_deny(self, state: _Link, now: float) -> None:
        self.stats["links.denied_by_remote"] += 1
        retry_at = None
        # Only a remote that proved its key may make us back off from that key;
        # otherwise anyone replaying a card could keep us away from its owner.
        if state.remote_key is not None and state.remote_proved:
            attempts = self._backoff.get(state.remote_key, 0) + 1
            self._backoff[state.remote_key] = attempts
            delay = min(
                self.config.deny_backoff_max,
                self.config.deny_backoff_initial * 2 ** (attempts - 1),
            )
            jitter = int.from_bytes(self._rng(2), "big") / 65535 * self.config.backoff_jitter
            retry_at = now + delay * (1 + jitter)
            self._backoff_until[state.remote_key] = retry_at
        self._close(state, "denied by the remote's connection request handler", retry_at, now)

    def _establish(self, state: _Link, now: float) -> None:
        assert state.remote_key is not None and state.remote_card is not None
        state.state = "established"
        self._refresh_neighbours()
        self._backoff.pop(state.remote_key, None)
        self._backoff_until.pop(state.remote_key, None)
        self.stats["links.established"] += 1
        self._events.append(
            LinkEstablished(state.id, peer_key_string(state.remote_key), state.spec.connection_type)
        )
        card = state.remote_card
        held = self._records.get((card.peer_id, RecordKind.CARD))
        if held is None or held.counter < card.counter:
            self._merge(card.raw, now, source=state)
        self._send_control(state, self._summary_message())
        self._on_topology_change(now, removal=False)

    def _close(self, state: _Link, reason: str, retry_at: float | None, now: float) -> None:
        if state.state == "closing":
            return
        if state.established:
            self._on_topology_change(now, removal=True)
        state.state = "closing"
        self._refresh_neighbours()
        state.close_reason = reason
        state.close_retry_at = retry_at
        # Nothing but the queued control messages (a DENY) goes out any more.
        state.links_out.clear()
        state.cards_out.clear()
        state.digests.clear()
        self._pending[state] = None  # so the close is reported once queued control frames are out

    # ------------------------------------------------------------------ records

    def _sign(self, body: Card | Links, now: float) -> Record:
        expiry = int(now + self.config.record_ttl)
        return sign_record(self._private_key, self.public_key, self._counters.next_counter(), expiry, body)

    def _accept_own(self, record: Record, now: float) -> None:
        self._store(record, now)
        self._flood(record, None, now)

    def _publish_links(self, now: float, force: bool = False) -> None:
        entries: dict[tuple[bytes, ConnectionType], LinkEntry] = {}
        for state in self._links.values():
            if state.established and state.remote_key is not None:
                nid = peer_id(state.remote_key)
                entries[(nid, state.spec.connection_type)] = LinkEntry(
                    nid, state.spec.connection_type, state.spec.distance_dm
                )
        ordered = [entries[k] for k in sorted(entries, key=lambda k: (k[0], k[1].value))]
        if len(ordered) > MAX_CONNECTIONS_PER_RECORD:
            # A record lists at most 64 links; the rest still carry traffic, unlisted.
            self.stats["links.unlisted"] = len(ordered) - MAX_CONNECTIONS_PER_RECORD
            ordered = ordered[:MAX_CONNECTIONS_PER_RECORD]
        links = Links(tuple(ordered))
        fresh = self._own_links.expiry - now > self.config.refresh_before_expiry
        if links == self._own_links.body and fresh and not force:
            return
        self._own_links = self._sign(links, now)
        self._links_signed_at = now
        self._accept_own(self._own_links, now)

    def _schedule_links(self, now: float) -> None:
        # Throttled on the leading edge: a change after a quiet spell is signed at once,
        # and a burst yields at most one new links record per links_debounce.
        if self._resign_links_at is None:
            self._resign_links_at = max(now, self._links_signed_at + self.config.links_debounce)

    def _merge(self, raw: bytes, now: float, source: _Link | None) -> None:
        key = self._held_raw.get(raw)
        if key is not None:
            self.stats["records.duplicate"] += 1
            if source is not None:
                # The sender has it: a copy still queued for it need not go.
                queue = source.links_out if key[1] is RecordKind.LINKS else source.cards_out
                if queue.get(key) == raw:
                    del queue[key]
                    self.stats["records.flood_suppressed"] += 1
            return
        try:
            env = self._codec.open(raw)
            pid = env.public_key[:8]
            known = self._keys.get(pid)
            if known is not None and known != env.public_key:
                raise RecordError("key_mismatch", "another key already holds this peer id")
            if env.public_key == self.public_key:
                self._check_own_copy(env, raw, now)
                raise RecordError("own_record", "an older copy of one of this peer's own records")
            held = self._records.get((pid, env.kind))
            if held is not None and env.counter <= held.counter:
                raise RecordError("stale", f"counter {env.counter} <= held {held.counter}")
            if env.expiry <= now:
                raise RecordError("expired", "record has expired")
            if held is None and known is None and len(self._keys) >= self.config.max_peers:
                raise RecordError("capacity", f"already holding {self.config.max_peers} peers")
            record = self._codec.verify(env, raw)
        except RecordError as exc:
            self.stats[f"records.rejected.{exc.reason}"] += 1
            return
        self.stats["records.accepted"] += 1
        self._store(record, now)
        self._flood(record, source, now)

    def _check_own_copy(self, env: Envelope, raw: bytes, now: float) -> None:
        # A genuine own record newer than ours means this peer's state was lost
        # (re-flashed, restored from backup): jump the counter and re-sign, or the
        # mesh would ignore this peer until the old records expire.
        own = self._own_card if env.kind is RecordKind.CARD else self._own_links
        if env.counter <= own.counter:
            return
        self._codec.verify(env, raw)
        self.stats["records.own_newer_seen"] += 1
        self._counters.advance_past(env.counter)
        if env.kind is RecordKind.CARD:
            self.set_card(self.card, now)
        else:
            self._publish_links(now, force=True)

    def _store(self, record: Record, now: float) -> None:
        pid = record.peer_id
        key = (pid, record.kind)
        old = self._records.get(key)
        if old is not None:
            self._held_raw.pop(old.raw, None)
            self._summary ^= old.summary_hash
        self._records[key] = record
        self._held_raw[record.raw] = key
        self._summary ^= record.summary_hash
        self._keys[pid] = record.public_key
        if pid != self.peer_id:
            self._dirty[key] = record
        self.graph_version += 1
        if record.kind is RecordKind.LINKS and pid != self.peer_id:
            assert isinstance(record.body, Links)
            claims = record.body.claims
            previous = self._claims.get(pid, _NO_CLAIMS)
            self._claims[pid] = claims
            self._claim_peers[pid] = record.body.neighbour_ids
            if previous and not previous.keys() <= claims.keys():
                self._mark_removal(now)
            else:
                self._reach_stale = True

    def _forget(self, pid: bytes, kind: RecordKind, now: float) -> None:
        record = self._records.pop((pid, kind), None)
        if record is None:
            return
        self._held_raw.pop(record.raw, None)
        self._summary ^= record.summary_hash
        self._dirty[(pid, kind)] = record.public_key
        self.graph_version += 1
        if kind is RecordKind.LINKS:
            self._claims.pop(pid, None)
            self._claim_peers.pop(pid, None)
            self._mark_removal(now)

    def _flood(self, record: Record, source: _Link | None, now: float) -> None:
        key = (record.peer_id, record.kind)
        is_links = record.kind is RecordKind.LINKS
        # Neighbour-coverage pruning. The origin sends its record to all its
        # neighbours, and a sender forwards to all of its neighbours that it does
        # not prune by this same rule (which bottoms out at the origin): so a
        # neighbour of the origin or of the sender gets the record from them and
        # need not get it from us. Only claims we hold are used; a stale claim
        # costs a digest repair, not a loss.
        origin_peers = self._claim_peers.get(record.peer_id, _NO_PEERS)
        source_peers = (
            self._claim_peers.get(source.remote_key[:8], _NO_PEERS)
            if source is not None and source.remote_key is not None
            else _NO_PEERS
        )
        pruned = 0
        origin_key = record.public_key
        for state, remote, remote_id in self._neighbours:
            if state is source:
                # The sender holds this version, so an older one queued for it is moot.
                (state.links_out if is_links else state.cards_out).pop(key, None)
                continue
            if remote == origin_key:
                continue  # the origin has this record or a newer one: never echo to it
            if remote_id in source_peers or remote_id in origin_peers:
                pruned += 1
                continue
            self._queue_record(state, key, record.raw, now)
        if pruned:
            self.stats["records.flood_pruned"] += pruned

    def _refresh_neighbours(self) -> None:
        self._neighbours = [
            (state, state.remote_key, state.remote_key[:8])
            for state in self._links.values()
            if state.established and state.remote_key is not None
        ]

    def _send_control(self, state: _Link, message: bytes) -> None:
        state.control.append(message)
        self._pending[state] = None

    def _queue_record(self, state: _Link, key: tuple[bytes, RecordKind], raw: bytes, now: float) -> None:
        if not (state.links_out or state.cards_out):
            # Nagle-like: a link that sent no records lately sends at once; a busy one
            # batches for flood_delay.
            state.records_due = max(now, state.last_records_tx + self.config.flood_delay)
        queue = state.links_out if key[1] is RecordKind.LINKS else state.cards_out
        queue[key] = raw
        self._pending[state] = None

    def _sweep(self, now: float) -> None:
        for (pid, kind), record in list(self._records.items()):
            if pid != self.peer_id and record.expiry <= now:
                self.stats["records.expired"] += 1
                self._forget(pid, kind, now)
        for state in self._links.values():
            # A slow link gets the time its budget needs for the whole message.
            for msg_id, partial in list(state.partials.items()):
                allowed = self.config.reassembly_timeout + 2 * self._transfer_time(
                    state, partial.count * state.spec.mtu
                )
                if partial.started + allowed < now:
                    del state.partials[msg_id]
                    self.stats["frames.reassembly_timeout"] += 1
        held_pids = {pid for pid, _ in self._records}
        for pid in list(self._keys):
            if pid not in held_pids:
                del self._keys[pid]

    # ------------------------------------------------------------------ sync

    def _summary_message(self) -> bytes:
        # Fixed size whatever is held: quiet meshes cost the same per link at any N.
        return encode_message(MessageType.SUMMARY, self.summary)

    def _on_summary(self, state: _Link, fields: tuple[Any, ...], now: float) -> None:
        remote_summary = fields[0]
        if not isinstance(remote_summary, bytes):
            raise WireError("SUMMARY carries an 8-byte hash")
        if remote_summary == self.summary:
            state.summary_mismatches = 0
            return
        state.summary_mismatches += 1
        first = state.digest_sent_at is None
        settled = state.summary_mismatches >= 2 and now - state.last_record_rx >= state.keepalive
        recent = state.digest_sent_at is not None and (
            now - state.digest_sent_at < self.config.digest_min_interval
        )
        if first or (settled and not recent):
            self._send_digest(state, now)

    def _send_digest(self, state: _Link, now: float) -> None:
        state.digest_sent_at = now
        state.summary_mismatches = 0
        self.stats["sync.digests_sent"] += 1
        entries = sorted(digest_entry(pid, kind, rec.counter) for (pid, kind), rec in self._records.items())
        room = min(self.config.max_digest_bytes, max_message_bytes(state.spec.mtu) - 40)
        per_message = max(1, room // DIGEST_ENTRY_BYTES)
        chunks = [entries[i : i + per_message] for i in range(0, len(entries), per_message)] or [[]]
        for i, chunk in enumerate(chunks):
            lo = _ID_LOW if i == 0 else chunk[0][:8]
            hi = _ID_HIGH if i == len(chunks) - 1 else _prev_id(chunks[i + 1][0][:8])
            state.digests.append(encode_message(MessageType.DIGEST, lo, hi, b"".join(chunk)))
        self._pending[state] = None

    def _on_digest(self, state: _Link, fields: tuple[Any, ...], now: float) -> None:
        lo, hi, packed = fields
        if not (isinstance(lo, bytes) and isinstance(hi, bytes) and isinstance(packed, bytes)):
            raise WireError("DIGEST is lo(8), hi(8), entries")
        if len(packed) % DIGEST_ENTRY_BYTES:
            raise WireError("DIGEST entries are 13 bytes each")
        theirs: dict[tuple[bytes, int], int] = {}
        for i in range(0, len(packed), DIGEST_ENTRY_BYTES):
            pid, kind, counter = read_digest_entry(packed[i : i + DIGEST_ENTRY_BYTES])
            theirs[(pid, kind)] = counter
        self.stats["sync.digests_received"] += 1
        for (pid, kind), record in self._records.items():
            if not lo <= pid <= hi:
                continue
            # The sender's own records are included: if it restarted with a lost store,
            # getting back its newer record is how it recovers its counter.
            if theirs.get((pid, int(kind)), -1) < record.counter:
                self._queue_record(state, (pid, kind), record.raw, now)
                self.stats["sync.records_offered"] += 1

    # ------------------------------------------------------------------ framing

    def _reassemble(self, state: _Link, frame: bytes, now: float) -> bytes | None:
        if len(frame) <= FRAGMENT_HEADER_BYTES:
            self.stats["frames.malformed"] += 1
            return None
        msg_id, index, count = frame[1], frame[2], frame[3]
        if (
            count < 2
            or index >= count
            or (count - 1) * (state.spec.mtu - FRAGMENT_HEADER_BYTES) >= MAX_MESSAGE_BYTES
        ):
            self.stats["frames.malformed"] += 1
            return None
        partial = state.partials.get(msg_id)
        if partial is not None and partial.count != count:
            del state.partials[msg_id]  # the sender restarted this id: replace, evict nothing else
            partial = None
        if partial is None:
            if len(state.partials) >= MAX_PARTIAL_MESSAGES_PER_LINK:
                oldest = min(state.partials, key=lambda k: state.partials[k].started)
                del state.partials[oldest]
                self.stats["frames.reassembly_evicted"] += 1
            partial = state.partials[msg_id] = _Partial(count, {}, now)
        partial.parts[index] = frame[FRAGMENT_HEADER_BYTES:]
        if len(partial.parts) < count:
            return None
        del state.partials[msg_id]
        return b"".join(partial.parts[i] for i in range(count))

    def _burst(self, state: _Link) -> float:
        # Never below one full frame, or a full frame could never be paid for.
        spec = state.spec
        return float(max(spec.burst_bytes or 0, spec.mtu + spec.frame_overhead_bytes))

    def _transfer_time(self, state: _Link, size: int) -> float:
        """Seconds the send budget needs to carry ``size`` bytes in full frames."""
        spec = state.spec
        if spec.bytes_per_second is None:
            return 0.0
        frames = -(-size // (spec.mtu - FRAGMENT_HEADER_BYTES))
        return (
            size + frames * (FRAGMENT_HEADER_BYTES + 1 + spec.frame_overhead_bytes)
        ) / spec.bytes_per_second

    def _drain(self, state: _Link, now: float, out: list[tuple[LinkId, bytes]]) -> None:
        spec = state.spec
        if spec.bytes_per_second is not None:
            state.tokens = min(
                self._burst(state), state.tokens + (now - state.refilled_at) * spec.bytes_per_second
            )
            state.refilled_at = now
        while state.has_output():
            if not state.fragments_out:
                message = self._next_message(state, now)
                if message is None:
                    break
                state.fragments_out.extend(frames_for(message, spec.mtu, state.next_msg_id))
                state.next_msg_id = (state.next_msg_id + 1) % 256
            frame = state.fragments_out[0]
            if spec.bytes_per_second is not None:
                cost = len(frame) + spec.frame_overhead_bytes
                # A hundredth of a byte of slack absorbs float rounding, so a wake-up
                # at the computed refill time always sends.
                if state.tokens < cost - 0.01:
                    state.wake_at = now + max(0.001, (cost - state.tokens) / spec.bytes_per_second)
                    break
                state.tokens -= cost
            state.fragments_out.popleft()
            out.append((state.id, frame))
            state.last_tx = now
            self.stats["frames.sent"] += 1
            self.stats["bytes.sent"] += len(frame)

    def _next_message(self, state: _Link, now: float) -> bytes | None:
        if state.control:
            return state.control.popleft()
        due = now >= state.records_due
        if state.links_out and due:
            state.last_records_tx = now
            return self._records_message(state, state.links_out)
        if state.digests:
            return state.digests.popleft()
        if state.cards_out and due:
            state.last_records_tx = now
            return self._records_message(state, state.cards_out)
        if state.links_out or state.cards_out:
            state.wake_at = state.records_due
        return None

    def _records_message(self, state: _Link, queue: dict[tuple[bytes, RecordKind], bytes]) -> bytes:
        # Pack as many records as fit one frame; a record bigger than a frame goes alone.
        room = state.spec.mtu - 1 - 4
        batch: list[bytes] = []
        used = 0
        for key in list(queue):
            raw = queue[key]
            size = len(raw) + 3
            if batch and used + size > room:
                break
            batch.append(raw)
            used += size
            del queue[key]
            if used > room:
                break
        return encode_message(MessageType.RECORDS, *batch)

    # ------------------------------------------------------------------ reachability

    def _mark_removal(self, now: float) -> None:
        # Peers reachable until now keep their grace period: bring "visible" up to
        # date before the removal takes effect, then re-evaluate once it settles.
        if self._reach_stale:
            self._evaluate_reachability(now)
        if self._reach_due is None:
            self._reach_due = now + self.config.reachability_settle

    def _on_topology_change(self, now: float, removal: bool) -> None:
        if removal:
            self._mark_removal(now)
        else:
            self._reach_stale = True
        self.graph_version += 1
        self._schedule_links(now)

    def _grace_deadline(self) -> float:
        return min(since for since, _ in self._gone.values()) + self.config.departure_grace

    def _local_edges(self) -> dict[tuple[bytes, int], int | None]:
        edges: dict[tuple[bytes, int], int | None] = {}
        for state in self._links.values():
            if state.established and state.remote_key is not None:
                code = CONNECTION_TYPE_CODES[state.spec.connection_type]
                edges[(peer_id(state.remote_key), code)] = state.spec.distance_dm
        return edges

    def _shown(self, now: float) -> dict[bytes, int]:
        """Peers in the graph now with their hop counts: reachable ones and those in grace."""
        self._evaluate_reachability(now)
        shown = dict(self._visible)
        for pid, (_, hops) in self._gone.items():
            if pid in self._keys:
                shown.setdefault(pid, hops)
        return shown

    def _edges(self, shown: Mapping[bytes, int]) -> dict[tuple[bytes, bytes, int], int | None]:
        """Connections among ``shown`` peers as (low id, high id, type code) -> distance.

        The local peer's own links count as they are; a connection between two
        remote peers counts only when both list it (a departed peer's stale
        record cannot keep it in the graph).
        """
        edges: dict[tuple[bytes, bytes, int], int | None] = {}
        for (nid, code), dist in self._local_edges().items():
            if nid in shown:
                low, high = sorted((self.peer_id, nid))
                edges[(low, high, code)] = dist
        for pid in shown:
            for (nid, code), dist in self._claims.get(pid, {}).items():
                if pid < nid and nid in shown and nid != self.peer_id:
                    back = self._claims.get(nid, {})
                    if (pid, code) in back:
                        edges[(pid, nid, code)] = mean_distance_dm(dist, back[(pid, code)])
        return edges

    def _evaluate_reachability(self, now: float) -> None:
        keys = self._keys
        claims = self._claims
        hops = {self.peer_id: 0}
        frontier = [nid for nid, _ in self._local_edges() if nid in keys]
        depth = 1
        for nid in frontier:
            hops[nid] = 1
        while frontier:
            depth += 1
            nxt = []
            for pid in frontier:
                for nid, code in claims.get(pid, ()):
                    if nid not in hops and nid in keys and (pid, code) in claims.get(nid, ()):
                        hops[nid] = depth
                        nxt.append(nid)
            frontier = nxt
        before = self._visible
        gone_before = len(self._gone)
        for pid, last_hops in before.items():
            if pid not in hops and pid not in self._gone:
                self._gone[pid] = (now, last_hops)
        for pid, (since, _) in list(self._gone.items()):
            if pid in hops or since + self.config.departure_grace <= now:
                del self._gone[pid]
        if hops != before or len(self._gone) != gone_before:
            self.graph_version += 1
        self._visible = hops
        self._reach_stale = False
        self._reach_due = None

    # ------------------------------------------------------------------ helpers


def _prev_id(pid: bytes) -> bytes:
    value = int.from_bytes(pid, "big")
    return max(0, value - 1).to_bytes(8, "big")
