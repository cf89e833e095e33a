"""The fleet view: every agent's mirrored view, verified and merged into one graph (pure, no I/O).

The ``presence-agent fleet`` command subscribes to :meth:`TopicLayout.fleet_filters`
and hands every message to :meth:`FleetState.handle`; :meth:`FleetState.graph`
is the merged graph at that moment. Nothing here opens a connection or starts a
thread, and a :class:`FleetState` is not thread-safe: feed and read it from one
thread (or under one lock).

What is trusted, and why:

* A record is believed only as far as its signature goes. A ``card`` or ``links``
  payload is accepted only if it parses, its kind matches the topic, it is signed
  by the peer key *named in the topic*, and it has not expired. Anything else is a
  :class:`Rejection` and changes nothing: it never replaces a record accepted
  earlier on the same topic.
* Per (agent, peer, kind) the counter only grows: a record with a lower counter
  than the highest accepted there (remembered even after a clear) is ``replayed``,
  so an old signed record cannot roll an agent's view back. The same bytes again
  (a retained message redelivered, or re-published after a clear) are no replay.
* ``status`` is not signed: whoever may publish under an agent's subtree may say
  it is online. The broker's ACLs decide *whose* views are shown, signatures
  *what* they say.

Identity: a card may carry a fleet certificate (trust on, ``agent.core.trust``).
A :class:`FleetState` given the fleet's :class:`~agent.core.certs.FleetTrust`
(``presence-agent fleet --ca-key``, or ``[trust] ca_keys`` of ``--config``)
verifies it for the card's key at :meth:`FleetState.graph` time: each peer
shows ``certificate`` (:class:`CertificateCheck`: ``verified``, ``refused``
with ``certificate_reason``, ``none`` without one, ``unchecked`` when the view
trusts no CA) and, only when verified, the certificate's metadata as
``identity_service_metadata``. The fleet view sees revocation lists only as
given to it (``[trust] revocation_list``): lists flooded in the mesh are not
mirrored.

Merging: only agents whose latest status is ``online`` count. An agent without a
status (never seen, or its retained status cleared) is not yet online: a live
agent publishes its retained status before anything else, so records without one
are a dead agent's leftovers or a view still arriving. A peer is shown when at
least one online agent holds an unexpired record of it (a peer with links but no
card yet shows with empty name, os and version, as in the engine's graph); for
each kind the fleet shows the highest-counter record held by any online agent.
A connection between shown peers counts when both ends' links records list it
with the same type, as in the engine; its distance is the mean of both claims.

Rejection reasons, each counted in :attr:`FleetState.stats` as
``rejected.<reason>`` (and all in ``rejected``):

``bad_topic_key``   the agent or peer level of the topic is not a peer key string
``malformed``       not a well-formed record (from :func:`open_record`)
``oversized``       larger than a record may be
``bad_signature``   the signature does not verify
``wrong_kind``      a card on a ``links`` topic or the reverse
``wrong_key``       a record of another peer than the topic names
``expired``         already expired on arrival (reported, so a wrong clock is visible;
                    a record that expires while held just drops out of the graph)
``replayed``        a counter below the highest accepted on that topic, or equal to
                    the held one with other content

The other counters: ``accepted``, ``unchanged`` (the held bytes again),
``cleared`` (empty payloads on record topics), ``status`` and ``ignored``
(topics outside the layout, or kinds the fleet does not read).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from agent.core.certs import Certificate, CertificateError, FleetTrust, TrustReason
from agent.core.errors import PeerKeyError, RecordError
from agent.core.graph import Connection
from agent.core.keys import peer_id, public_key_from_string
from agent.core.reachability import mutual_edges
from agent.core.records import (
    CONNECTION_TYPE_BY_CODE,
    EMPTY_METADATA,
    Card,
    Links,
    Metadata,
    Record,
    RecordKind,
    open_record,
    thaw_metadata,
    verify_record,
)
from agent.mqtt.topics import ONLINE, TOPIC_RECORD, TopicKind, TopicLayout

#: The peer fields whose change :meth:`FleetGraph.diff` reports (counters alone are not news:
#: a record re-signed with the same content changes nothing a person sees).
_DESCRIPTIVE: Final = (
    "device_name",
    "os",
    "agent_version",
    "peer_metadata",
    "identity_service_metadata",
    "certificate",
    "seen_by",
)

#: One held record's place: (agent key, peer key, kind).
_Slot = tuple[str, str, RecordKind]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message on a fleet topic that was refused, and why (``peer`` is ``None`` on a status topic)."""

    topic: str
    agent: str
    peer: str | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class FleetAgent:
    """An agent mirroring its view: whether it is online and how many peers its retained view lists."""

    peer_key_string: str
    online: bool
    peer_count: int

    def to_json(self) -> dict[str, Any]:
        return {"peer_key_string": self.peer_key_string, "online": self.online, "peer_count": self.peer_count}


class CertificateCheck(enum.StrEnum):
    """What the fleet view made of a peer's fleet certificate."""

    #: The card carries none (an open mesh, or a card from before trust was on).
    NONE = "none"
    #: The view trusts no CA, so it cannot tell (give it ``--ca-key``).
    UNCHECKED = "unchecked"
    VERIFIED = "verified"
    #: It does not verify for this card's key now; ``certificate_reason`` says why.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class FleetPeer:
    """One peer of the fleet: its card, the online agents that list it, and the counters shown.

    ``peer_metadata`` and ``identity_service_metadata`` (the verified certificate's
    metadata, else empty) are read-only; ``seen_by`` is sorted; a counter is ``None``
    when no online agent holds that record.
    """

    peer_key_string: str
    device_name: str
    os: str
    agent_version: str
    peer_metadata: Metadata
    seen_by: tuple[str, ...]
    card_counter: int | None
    links_counter: int | None
    identity_service_metadata: Metadata = field(default_factory=lambda: EMPTY_METADATA)
    certificate: CertificateCheck = CertificateCheck.NONE
    certificate_reason: TrustReason | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_key_string": self.peer_key_string,
            "device_name": self.device_name,
            "os": self.os,
            "agent_version": self.agent_version,
            "peer_metadata": thaw_metadata(self.peer_metadata),
            "seen_by": list(self.seen_by),
            "card_counter": self.card_counter,
            "links_counter": self.links_counter,
            "identity_service_metadata": thaw_metadata(self.identity_service_metadata),
            "certificate": self.certificate.value,
            "certificate_reason": self.certificate_reason.value if self.certificate_reason else None,
        }


@dataclass(frozen=True, slots=True)
class PeerChange:
    """A peer shown before and after, with at least one descriptive field changed."""

    before: FleetPeer
    after: FleetPeer

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the descriptive fields that differ."""
        return tuple(name for name in _DESCRIPTIVE if getattr(self.before, name) != getattr(self.after, name))


@dataclass(frozen=True, slots=True)
class FleetDiff:
    """What changed between two fleet graphs (``new.diff(old)``); everything sorted by key or id."""

    joined: tuple[FleetPeer, ...] = ()
    left: tuple[FleetPeer, ...] = ()
    changed: tuple[PeerChange, ...] = ()
    connections_added: tuple[Connection, ...] = ()
    connections_removed: tuple[Connection, ...] = ()
    agents_online: tuple[str, ...] = ()
    agents_offline: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(
            (
                self.joined,
                self.left,
                self.changed,
                self.connections_added,
                self.connections_removed,
                self.agents_online,
                self.agents_offline,
            )
        )

    def to_json(self) -> list[dict[str, Any]]:
        """One JSON object per change (``--watch --json`` prints one per line), in :meth:`lines` order.

        ``{"event": ...}`` is ``agent_online`` / ``agent_offline`` (``agent``),
        ``joined`` (``peer``, ``name``, ``seen_by``), ``left`` (``peer``, ``name``),
        ``changed`` (``peer``, ``name``, ``fields``), ``link_up`` / ``link_down``
        (``connection``: its id) -- the peer and link events as ``presence-agent graph --watch`` names them.
        """
        events: list[dict[str, Any]] = []
        events += [{"event": "agent_online", "agent": key} for key in self.agents_online]
        events += [{"event": "agent_offline", "agent": key} for key in self.agents_offline]
        events += [
            {"event": "joined", "peer": p.peer_key_string, "name": p.device_name, "seen_by": list(p.seen_by)}
            for p in self.joined
        ]
        events += [{"event": "left", "peer": p.peer_key_string, "name": p.device_name} for p in self.left]
        events += [
            {
                "event": "changed",
                "peer": c.after.peer_key_string,
                "name": c.after.device_name,
                "fields": list(c.fields),
            }
            for c in self.changed
        ]
        events += [{"event": "link_up", "connection": c.id} for c in self.connections_added]
        events += [{"event": "link_down", "connection": c.id} for c in self.connections_removed]
        return events

    def lines(self) -> tuple[str, ...]:
        """One human-readable line per change, for ``--watch``."""
        lines = []
        for event in self.to_json():
            subject = event.get("agent") or event.get("peer") or event.get("connection", "")
            detail = _printable(event.get("name", ""))
            if "seen_by" in event:
                detail += f" (seen by {_count(len(event['seen_by']), 'agent')})"
            if "fields" in event:
                detail += f" ({', '.join(event['fields'])})"
            lines.append(f"{event['event']:<13} {subject} {detail.strip()}".rstrip())
        return tuple(lines)


@dataclass(frozen=True, slots=True)
class FleetGraph:
    """An immutable snapshot of the whole fleet: agents, peers and connections, each sorted by key or id."""

    agents: tuple[FleetAgent, ...] = ()
    peers: tuple[FleetPeer, ...] = ()
    connections: tuple[Connection, ...] = ()

    def peer(self, peer_key_string: str) -> FleetPeer | None:
        """The peer with this key, or ``None``."""
        return next((p for p in self.peers if p.peer_key_string == peer_key_string), None)

    def agent(self, peer_key_string: str) -> FleetAgent | None:
        """The agent with this key, or ``None``."""
        return next((a for a in self.agents if a.peer_key_string == peer_key_string), None)

    def connections_of(self, peer_key_string: str) -> tuple[Connection, ...]:
        """The connections at this peer."""
        return tuple(
            c for c in self.connections if peer_key_string in (c.peer_key_string1, c.peer_key_string2)
        )

    def diff(self, previous: FleetGraph | None) -> FleetDiff:
        """Peers that joined, left or changed, connections added or removed, and agents that went
        online or offline since ``previous`` (``None``: everything shown now is new)."""
        old = {p.peer_key_string: p for p in previous.peers} if previous else {}
        new = {p.peer_key_string: p for p in self.peers}
        old_conns = {c.id: c for c in previous.connections} if previous else {}
        new_conns = {c.id: c for c in self.connections}
        was_online = {a.peer_key_string for a in previous.agents if a.online} if previous else set()
        is_online = {a.peer_key_string for a in self.agents if a.online}
        changes = (PeerChange(old[k], new[k]) for k in sorted(new.keys() & old.keys()))
        return FleetDiff(
            joined=tuple(new[k] for k in sorted(new.keys() - old.keys())),
            left=tuple(old[k] for k in sorted(old.keys() - new.keys())),
            changed=tuple(c for c in changes if c.fields),
            connections_added=tuple(new_conns[k] for k in sorted(new_conns.keys() - old_conns.keys())),
            connections_removed=tuple(old_conns[k] for k in sorted(old_conns.keys() - new_conns.keys())),
            agents_online=tuple(sorted(is_online - was_online)),
            agents_offline=tuple(sorted(was_online - is_online)),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"agents": [...], "peers": [...], "connections": [...]}``.

        An agent is ``{"peer_key_string", "online", "peer_count"}``; a peer is
        ``{"peer_key_string", "device_name", "os", "agent_version", "peer_metadata",
        "seen_by", "card_counter", "links_counter", "identity_service_metadata",
        "certificate", "certificate_reason"}`` (the API's names where they
        apply; its connections are the top-level ones naming it); a connection is
        :meth:`Connection.to_json`.
        """
        return {
            "agents": [a.to_json() for a in self.agents],
            "peers": [p.to_json() for p in self.peers],
            "connections": [c.to_json() for c in self.connections],
        }


class FleetState:
    """Every agent's retained view as received, verified, and merged on demand by :meth:`graph`."""

    def __init__(
        self,
        layout: TopicLayout,
        *,
        clock: Callable[[], float] = time.time,
        max_rejections: int = 100,
        trust: FleetTrust | None = None,
    ) -> None:
        if max_rejections < 0:
            raise ValueError(f"max_rejections must be 0 or more, got {max_rejections}")
        self.layout = layout
        self._clock = clock
        #: Agent key -> whether its latest status is "online" (absent: no status).
        self._online: dict[str, bool] = {}
        self._held: dict[_Slot, Record] = {}
        #: Highest counter ever accepted per slot; outlives a clear so a replay cannot follow one.
        self._highest: dict[_Slot, int] = {}
        self._rejections: deque[Rejection] = deque(maxlen=max_rejections)
        self._stats: Counter[str] = Counter()
        self._trust = trust

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        """The most recent rejections, oldest first (at most ``max_rejections``)."""
        return tuple(self._rejections)

    @property
    def stats(self) -> Mapping[str, int]:
        """A snapshot of the counters (names in the module docstring)."""
        return MappingProxyType(dict(self._stats))

    # ------------------------------------------------------------ input

    def handle(self, topic: str, payload: bytes) -> None:
        """Take one MQTT message. Never raises: what cannot be used is ignored or rejected."""
        parsed = self.layout.parse(topic)
        if parsed is None or not (parsed.kind is TopicKind.STATUS or parsed.kind in TOPIC_RECORD):
            self._stats["ignored"] += 1
        elif parsed.peer is None:
            self._on_status(topic, parsed.agent, payload)
        else:
            self._on_record(topic, parsed.agent, parsed.peer, TOPIC_RECORD[parsed.kind], payload)

    def _on_status(self, topic: str, agent: str, payload: bytes) -> None:
        if not payload:
            self._online.pop(agent, None)  # the retained status was deleted: unknown again
            self._stats["status"] += 1
            return
        try:
            public_key_from_string(agent)
        except PeerKeyError as exc:
            self._reject(Rejection(topic, agent, None, "bad_topic_key", str(exc)))
            return
        self._online[agent] = payload == ONLINE
        self._stats["status"] += 1

    def _on_record(self, topic: str, agent: str, peer: str, kind: RecordKind, payload: bytes) -> None:
        slot = (agent, peer, kind)
        if not payload:
            self._held.pop(slot, None)
            self._stats["cleared"] += 1
            return
        held = self._held.get(slot)
        if held is not None and held.raw == payload:
            self._stats["unchanged"] += 1
            return
        try:
            record = self._verify(slot, payload)
        except (RecordError, PeerKeyError) as exc:
            reason = exc.reason if isinstance(exc, RecordError) else "bad_topic_key"
            self._reject(Rejection(topic, agent, peer, reason, str(exc)))
            return
        self._held[slot] = record
        self._highest[slot] = record.counter
        self._stats["accepted"] += 1

    def _verify(self, slot: _Slot, payload: bytes) -> Record:
        """The record if it may be held in ``slot``; raises RecordError (or PeerKeyError) saying why not."""
        agent, peer, kind = slot
        public_key_from_string(agent)
        peer_key = public_key_from_string(peer)
        envelope = open_record(payload)
        if envelope.kind is not kind:
            raise RecordError(
                "wrong_kind", f"a {envelope.kind.name.lower()} record on a {kind.name.lower()} topic"
            )
        if envelope.public_key != peer_key:
            raise RecordError("wrong_key", "the record is another peer's than the topic names")
        record = verify_record(envelope, payload)
        now = self._clock()
        if record.expiry <= now:
            raise RecordError("expired", f"expired at {record.expiry}, now {now:.0f}")
        highest = self._highest.get(slot, -1)
        if record.counter < highest or (record.counter == highest and slot in self._held):
            raise RecordError("replayed", f"counter {record.counter}, already accepted {highest}")
        return record

    def _reject(self, rejection: Rejection) -> None:
        self._rejections.append(rejection)
        self._stats["rejected"] += 1
        self._stats[f"rejected.{rejection.reason}"] += 1

    # ------------------------------------------------------------ output

    def graph(self) -> FleetGraph:
        """The merged fleet graph at ``clock()`` (held records expired by then are left out)."""
        now = self._clock()
        listed: dict[str, set[str]] = {agent: set() for agent in self._online}
        seen_by: dict[str, set[str]] = {}
        best: dict[tuple[str, RecordKind], Record] = {}
        for (agent, peer, kind), record in self._held.items():
            if record.expiry <= now:
                continue
            listed.setdefault(agent, set()).add(peer)
            if not self._online.get(agent, False):
                continue
            seen_by.setdefault(peer, set()).add(agent)
            shown = best.get((peer, kind))
            # Equal counters should carry equal bytes; if not, the bytes decide, so the result
            # does not depend on arrival order.
            if shown is None or (record.counter, record.raw) > (shown.counter, shown.raw):
                best[(peer, kind)] = record
        agents = tuple(
            FleetAgent(key, self._online.get(key, False), len(listed[key])) for key in sorted(listed)
        )
        peers = tuple(self._fleet_peer(key, sorted(seen_by[key]), best, now) for key in sorted(seen_by))
        return FleetGraph(agents, peers, _connections(seen_by, best))

    def _fleet_peer(
        self, key: str, seen_by: list[str], best: Mapping[tuple[str, RecordKind], Record], now: float
    ) -> FleetPeer:
        peer = _fleet_peer(key, seen_by, best)
        card_record = best.get((key, RecordKind.CARD))
        if card_record is None:
            return peer
        card = card_record.body
        assert isinstance(card, Card)
        if not card.certificate:
            return peer
        if self._trust is None:
            return dataclasses.replace(peer, certificate=CertificateCheck.UNCHECKED)
        try:
            cert: Certificate = self._trust.verify(card.certificate, int(now), card_record.public_key)
        except CertificateError as exc:
            self._stats[f"certificates.refused.{exc.reason}"] += 1
            return dataclasses.replace(
                peer, certificate=CertificateCheck.REFUSED, certificate_reason=exc.reason
            )
        return dataclasses.replace(
            peer, certificate=CertificateCheck.VERIFIED, identity_service_metadata=cert.metadata
        )


def _fleet_peer(key: str, seen_by: list[str], best: Mapping[tuple[str, RecordKind], Record]) -> FleetPeer:
    card_record = best.get((key, RecordKind.CARD))
    links_record = best.get((key, RecordKind.LINKS))
    card = card_record.body if card_record is not None else None
    assert card is None or isinstance(card, Card)
    return FleetPeer(
        peer_key_string=key,
        device_name=card.device_name if card else "",
        os=card.os if card else "",
        agent_version=card.agent_version if card else "",
        peer_metadata=card.metadata if card else EMPTY_METADATA,
        seen_by=tuple(seen_by),
        card_counter=card_record.counter if card_record else None,
        links_counter=links_record.counter if links_record else None,
    )


def _connections(
    shown: Iterable[str], best: Mapping[tuple[str, RecordKind], Record]
) -> tuple[Connection, ...]:
    """Connections among ``shown`` peers that both ends list with the same type (the engine's rule)."""
    key_of = {peer_id(public_key_from_string(key)): key for key in sorted(shown)}
    claims: dict[bytes, Mapping[tuple[bytes, int], int | None]] = {}
    for pid, key in key_of.items():
        if (record := best.get((key, RecordKind.LINKS))) is not None:
            assert isinstance(record.body, Links)
            claims[pid] = record.body.claims
    found: dict[str, Connection] = {}
    for (low, high, code), dm in mutual_edges(claims, key_of).items():
        metres = None if dm is None else dm / 10.0
        conn = Connection.between(key_of[low], key_of[high], CONNECTION_TYPE_BY_CODE[code], metres)
        found[conn.id] = conn
    return tuple(found[k] for k in sorted(found))


# ---------------------------------------------------------------- rendering


def render_table(graph: FleetGraph) -> str:
    """Two tables a person reads at a glance, in the style of ``presence-agent graph``: agents, then peers."""
    agent_rows = [("AGENT", "STATUS", "PEERS")]
    agent_rows += [
        (_short(a.peer_key_string), "online" if a.online else "offline", str(a.peer_count))
        for a in graph.agents
    ]
    online = sum(a.online for a in graph.agents)
    peer_rows = [("PEER", "NAME", "OS", "CERTIFICATE", "SEEN BY", "CONNECTIONS")]
    for p in graph.peers:
        types = Counter(c.connection_type.value for c in graph.connections_of(p.peer_key_string))
        peer_rows.append(
            (
                _short(p.peer_key_string),
                _printable(p.device_name) or "?",
                _printable(p.os) or "?",
                _certificate_cell(p),
                _count(len(p.seen_by), "agent"),
                ", ".join(f"{n}x {t}" for t, n in sorted(types.items())) or "-",
            )
        )
    return "\n".join(
        [
            *_columns(agent_rows),
            f"{_count(len(graph.agents), 'agent')}, {online} online",
            "",
            *_columns(peer_rows),
            _count(len(graph.peers), "peer"),
        ]
    )


def _certificate_cell(peer: FleetPeer) -> str:
    """``verified {"site": ...}``, ``refused (expired)``, ``none`` or ``unchecked``."""
    if peer.certificate is CertificateCheck.VERIFIED:
        identity = json.dumps(thaw_metadata(peer.identity_service_metadata), separators=(",", ":"))
        return _printable(f"verified {identity if len(identity) <= 40 else identity[:39] + '…'}")
    if peer.certificate is CertificateCheck.REFUSED:
        return f"refused ({peer.certificate_reason})"
    return peer.certificate.value


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _short(key: str) -> str:
    return key[:12] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _printable(text: str) -> str:
    # Names come from remote peers: a control character must not steer the operator's terminal.
    return "".join(c if c.isprintable() else "?" for c in text)
