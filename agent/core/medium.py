"""Broadcast media: an interface, the neighbours heard on it, one send queue and one airtime budget.

A radio dongle (LoRa, ESP-NOW) is one *interface*: a transmission reaches every
neighbour in range, and the airtime allowance belongs to the transmitter. So
the engine keeps, per interface, one broadcast queue (records, SUMMARY, records
offered to a DIGEST) and one budget that every frame on the interface pays
from, handshake frames to one neighbour included; and per neighbour heard, a
link with its own handshake, reassembly, sync state and liveness.

**Frame on a broadcast interface**::

    sender(4) ‖ dest(4) ‖ link frame          (wire.py: whole message or fragment)
    sender(4) ‖ dest(4) ‖ counter(8) ‖ link frame ‖ tag(8)   with a fleet mesh key
                                               (agent.core.mesh_seal states the bytes)

``sender`` is the first four bytes of the sender's peer id, ``dest`` a
neighbour's, or ``00000000`` for everyone. A neighbour's HELLO card must
belong to the id it sends from. Reassembly is per neighbour link, so keyed by
sender and message id.

**Handshakes on a medium** are the pairwise ones of every link (PROOF over each
other's nonce, the connection request handler, ACCEPT), except that a peer's
HELLO is broadcast: one HELLO, with one nonce per round, serves every neighbour
handshaking at the time, and its retransmission is one broadcast, not one per
neighbour (on a shared channel, per-neighbour HELLOs and their resends collapse
it). PROOF, ACCEPT and DIGEST go to one neighbour. The nonce changes only when no
handshake is under way. An established neighbour's HELLO with a new nonce is a
round for someone else, unless its links record no longer lists this peer: then
it restarted, and the link starts again.

**Liveness is first-hand**: a neighbour is up while a frame *from it* was heard
within its dead interval; records it relays about others never refresh
anyone. **Discovery**: a frame from an unknown sender opens a link to it and
answers with a HELLO addressed to it; an interface with nobody up announces
itself with a broadcast SUMMARY every keepalive, which is also its keepalive.

**Flooding**: a record heard is rebroadcast once, after a delay that grows with
the SNR it was heard at (far receivers first, as Meshtastic does), and not at
all once :attr:`MediumSpec.suppress_copies` copies were heard (Reticulum stops
at two). A card bigger than one frame is never flooded over a medium unasked:
it goes when a neighbour's DIGEST shows it lacks it. The budget is an :class:`AirtimeBudget`:
presence traffic may use ``presence_share`` of the duty-cycle allowance, with a reserve that
only keepalives may spend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from agent.core.airtime import AirtimeModel
from agent.core.distance import PathLoss
from agent.core.duty_cycle import DutyCycle
from agent.core.limits import MIN_LINK_MTU
from agent.core.linkspec import LinkSpec
from agent.core.media_limits import DUTY_CYCLE_SLACK
from agent.core.outbox import Outbox, RecordKey
from agent.core.records import ConnectionType
from agent.core.wire import FRAGMENT_HEADER_BYTES, WireError

if TYPE_CHECKING:
    from agent.core.link import Link
    from agent.core.mesh_seal import MeshSeal

SHORT_ID_BYTES: Final = 4
MEDIUM_HEADER_BYTES: Final = 2 * SHORT_ID_BYTES
#: ``dest`` of a frame for every neighbour in range.
EVERYONE: Final = bytes(SHORT_ID_BYTES)
#: SNR (dB) heard from far and near neighbours: the ends of the rebroadcast delay's scale.
SNR_FAR: Final = -15.0
SNR_NEAR: Final = 10.0

InterfaceId = Hashable


@dataclass(frozen=True, slots=True)
class Broadcast:
    """An output addressed to everyone in range on ``interface`` (see :meth:`Engine.datagrams_to_send`)."""

    interface: InterfaceId


@dataclass(frozen=True, slots=True)
class MediumLink:
    """The link id of a neighbour heard on an interface."""

    interface: InterfaceId
    short_id: bytes


@dataclass(frozen=True, slots=True)
class MediumSpec:
    """What a transport tells the engine about a broadcast interface when it comes up.

    ``allowance`` is the transmitter's duty cycle over ``window`` seconds (EU868 g1: 1 %),
    ``dwell`` the longest single transmission (US915: 0.4 s); presence traffic uses at most
    ``presence_share`` of the allowance. Keepalive and dead interval are per medium: one
    broadcast SUMMARY per keepalive is the whole cost of a quiet mesh (:func:`quiet_keepalive`).
    """

    airtime: AirtimeModel
    connection_type: ConnectionType = ConnectionType.RADIO
    allowance: float = 0.01
    window: float = 3600.0
    dwell: float | None = None
    presence_share: float = 0.5
    keepalive_interval: float = 60.0
    dead_interval: float = 180.0
    #: Rebroadcast delay range (s): far receivers wait the least.
    rebroadcast_delay: tuple[float, float] = (0.5, 4.0)
    suppress_copies: int = 2
    path_loss: PathLoss = field(default_factory=PathLoss)
    #: Neighbours on this interface not yet admitted, at most (a flood of fresh senders is ignored).
    max_pending_neighbours: int = 8
    #: Neighbours on this interface at all, at most (each costs a handshake, airtime and a links
    #: record entry; past it, new senders are ignored until one leaves).
    max_neighbours: int = 32
    #: Bytes a seal adds to every frame (agent.core.mesh_seal; 0: frames are not sealed). The
    #: engine sets it when it holds a fleet mesh key.
    seal_overhead: int = 0

    def __post_init__(self) -> None:
        if self.airtime.mtu <= MEDIUM_HEADER_BYTES + 16:
            raise ValueError(f"a medium MTU of {self.airtime.mtu} leaves no room for frames")
        if not 0 < self.keepalive_interval < self.dead_interval:
            raise ValueError("a medium's keepalive must be positive and shorter than its dead interval")
        low, high = self.rebroadcast_delay
        if not 0 <= low <= high:
            raise ValueError("rebroadcast_delay is (shortest, longest), 0 <= shortest <= longest")
        if self.suppress_copies < 1:
            raise ValueError("suppress_copies is at least 1")

    @property
    def mtu(self) -> int:
        """The link frames' MTU: the medium's, less the sender and destination ids."""
        return self.airtime.mtu - self.header_bytes

    @property
    def header_bytes(self) -> int:
        """What a medium frame carries besides its link frame: ids, and the seal if any."""
        return MEDIUM_HEADER_BYTES + self.seal_overhead

    def rebroadcast_after(self, snr: float | None, jitter: float) -> float:
        """The delay before rebroadcasting a record heard at ``snr`` (``None``: our own, at once);
        ``jitter`` in [0, 1) spreads neighbours that heard it alike."""
        low, high = self.rebroadcast_delay
        if snr is None:
            return low
        nearness = min(1.0, max(0.0, (snr - SNR_FAR) / (SNR_NEAR - SNR_FAR)))
        return low + (high - low) * (0.8 * nearness + 0.2 * jitter)


def quiet_keepalive(airtime: AirtimeModel, allowance: float, share_of_allowance: float = 0.1) -> float:
    """The keepalive at which one broadcast SUMMARY per interval uses ``share_of_allowance`` of the
    duty-cycle allowance (the issue's quiet-hour goal: a tenth of a 1 % allowance)."""
    summary_frame = MEDIUM_HEADER_BYTES + 12  # frame byte, CBOR array, type, 8-byte summary
    return math.ceil(airtime.airtime(summary_frame) / (allowance * share_of_allowance))


def medium_frame(sender: bytes, dest: bytes, frame: bytes) -> bytes:
    """A link frame as it goes on a broadcast interface."""
    return sender + dest + frame


def parse_medium_frame(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(sender id, destination id, link frame); :class:`WireError` if too short."""
    if len(data) <= MEDIUM_HEADER_BYTES:
        raise WireError(f"a {len(data)}-byte frame on a broadcast interface has no room for its ids")
    return data[:SHORT_ID_BYTES], data[SHORT_ID_BYTES:MEDIUM_HEADER_BYTES], data[MEDIUM_HEADER_BYTES:]


#: The keepalive reserve: this many windows' worth of keepalives is never spent on anything else.
KEEPALIVE_RESERVE: Final = 2.0
#: A broadcast SUMMARY on the air: the ids, the frame byte, the CBOR array, type and 8-byte summary.
SUMMARY_FRAME_BYTES: Final = MEDIUM_HEADER_BYTES + 12


class AirtimeBudget:
    """A send budget in airtime: the outbox's ``try_take``/``ready_at`` over duty-cycle ledgers.

    A frame's cost is its link-frame length; its airtime adds the medium header. Presence
    traffic gets ``presence_share`` of the allowance (``presence``); of that, twice what the
    keepalives need is reserved for them: every other frame must also fit ``general``, the
    rest, so a burst of handshakes and floods can never silence the keepalives (and with them
    every link on the interface, for the rest of the window).
    """

    __slots__ = ("_header", "general", "model", "presence", "spec")

    def __init__(self, spec: MediumSpec) -> None:
        self.spec = spec
        self.model = spec.airtime
        self._header = spec.header_bytes
        presence = spec.allowance * spec.presence_share
        summary = SUMMARY_FRAME_BYTES + spec.seal_overhead
        keepalives = spec.airtime.airtime(summary) / spec.keepalive_interval
        general = max(presence / 4, presence - KEEPALIVE_RESERVE * keepalives)
        self.presence = DutyCycle(presence, spec.window, spec.dwell)
        self.general = DutyCycle(general, spec.window, spec.dwell)

    def _airtime(self, cost: float) -> float:
        return self.model.airtime(int(cost) + self._header)

    def try_take(self, cost: float, now: float) -> bool:
        airtime = self._airtime(cost)
        if not (self.presence.can_send(now, airtime) and self.general.can_send(now, airtime)):
            return False
        self.presence.record(now, airtime)
        self.general.record(now, airtime)
        return True

    def ready_at(self, cost: float, now: float) -> float:
        airtime = self._airtime(cost)
        return self.general.ready_at(self.presence.ready_at(now, airtime), airtime)

    def try_keepalive(self, cost: float, now: float) -> bool:
        """A keepalive SUMMARY: it may use the reserve (the presence ledger alone)."""
        airtime = self._airtime(cost)
        if not self.presence.can_send(now, airtime):
            return False
        self.presence.record(now, airtime)
        # The general ledger must stay in order: it sees the keepalive as time the radio was busy.
        self.general.mark_busy(now + airtime)
        return True

    def used(self, now: float) -> float:
        """Seconds of airtime in the window ending ``now``."""
        return self.presence.used(now)

    def pause_until(self, until: float) -> None:
        """Send nothing before ``until``: the transmitter itself refused a frame for its duty cycle
        (a dongle's ledger can be stricter than ours: it counts what it sent before we knew it)."""
        self.presence.mark_busy(until)
        self.general.mark_busy(until)


def longest_transmission(spec: MediumSpec) -> float:
    """The longest frame (s) the engine may put on ``spec``'s air: within its dwell limit and within
    the allowance its airtime budget gives every frame (:class:`AirtimeBudget`)."""
    budget = AirtimeBudget(spec)
    limit = min(budget.general.allowance, budget.presence.allowance) - DUTY_CYCLE_SLACK
    return min(limit, spec.dwell if spec.dwell is not None else math.inf)


def full_frame_fits(spec: MediumSpec) -> bool:
    """Whether a frame of the medium's whole MTU fits :func:`longest_transmission`."""
    return spec.airtime.airtime(spec.airtime.mtu) <= longest_transmission(spec)


def fitted(spec: MediumSpec) -> MediumSpec | None:
    """``spec`` with its MTU cut to the longest frame :func:`longest_transmission` permits (itself
    when a full frame fits); None when not even a frame carrying the smallest link MTU does.

    At SF12 and 1 % a full LoRa frame (about 9 s) is more than the general budget's hour: the
    engine would meet frames its budget can never send, so a transport fits its spec first.
    """
    if full_frame_fits(spec):
        return spec
    limit = longest_transmission(spec)
    smallest = spec.header_bytes + MIN_LINK_MTU
    model = spec.airtime
    mtu = next((n for n in range(model.mtu - 1, smallest - 1, -1) if model.airtime(n) <= limit), None)
    if mtu is None:
        return None
    return dataclasses.replace(spec, airtime=dataclasses.replace(model, mtu=mtu))  # type: ignore[type-var]


#: Rebroadcast copies counted at most (beyond, only records still queued are kept).
MAX_COPIES_TRACKED: Final = 1024
#: Neighbours refused (denied, a bad card, another version, a handshake timed out) remembered per
#: interface, oldest out.
MAX_REFUSED: Final = 256
#: A refused neighbour is not handshaken with again for this many keepalives.
REFUSED_KEEPALIVES: Final = 10
#: Budgets of interfaces that went down, kept for their return (a replugged dongle must not get a
#: fresh allowance: the duty cycle is the transmitter's over the hour), oldest out.
MAX_BUDGETS_KEPT: Final = 16
#: The next SUMMARY goes this share of the keepalive after the last transmission, drawn evenly:
#: neighbours drift apart, and the mean is one interval, so one SUMMARY per keepalive is what a
#: quiet interface costs on average (:func:`quiet_keepalive`; 0.75..1 spent 14 % more).
KEEPALIVE_SPREAD: Final = (0.75, 1.25)
#: A duty-cycle refusal that names no wait pauses the interface this long (s).
DEFAULT_REFUSAL_PAUSE: Final = 1.0


class Interface:
    """One broadcast interface's state: its neighbours, broadcast queue and shared budget."""

    def __init__(
        self,
        interface: InterfaceId,
        spec: MediumSpec,
        now: float,
        flood_delay: float,
        budget: AirtimeBudget | None = None,
    ) -> None:
        self.id = interface
        self.spec = spec
        #: ``budget``: the one the interface had before it went down, when it comes back unchanged.
        self.budget = budget if budget is not None else AirtimeBudget(spec)
        self.outbox = Outbox(LinkSpec(spec.connection_type, mtu=spec.mtu), now, flood_delay, self.budget)
        self.broadcast = Broadcast(interface)
        #: The fleet mesh key's seal of every frame on this interface (``None``: plain frames).
        self.seal: MeshSeal | None = None
        #: Neighbours by short id (their links live in the engine's table too).
        self.neighbours: dict[bytes, Link] = {}
        #: Copies heard of each record queued for rebroadcast (the first reception counts).
        self.copies: dict[RecordKey, int] = {}
        #: When this interface last transmitted anything (its keepalive runs from there).
        self.last_tx = now
        #: The keepalive's share drawn for the next SUMMARY (:data:`KEEPALIVE_SPREAD`): neighbours
        #: that came up together do not keep transmitting together.
        self.keepalive_factor = 1.0
        #: This peer's handshake nonce on the interface: one HELLO, broadcast, serves every
        #: neighbour handshaking at the time; a fresh nonce once no handshake is under way.
        self.nonce = b""
        #: When our last broadcast HELLO was queued (one per ``hello_gap`` at most).
        self.hello_at = -math.inf
        #: A keepalive SUMMARY waiting for airtime (it goes before the queue, from the reserve),
        #: and when the reserve allows it.
        self.keepalive: bytes | None = None
        self.keepalive_at: float | None = None
        #: Short ids of refused neighbours -> until when they stay refused (bounded, oldest out).
        self._refused: dict[bytes, float] = {}

    def refuse(self, short_id: bytes, now: float) -> None:
        self._refused.pop(short_id, None)
        self._refused[short_id] = now + REFUSED_KEEPALIVES * self.spec.keepalive_interval
        while len(self._refused) > MAX_REFUSED:
            del self._refused[next(iter(self._refused))]

    def refused_until(self, short_id: bytes, now: float) -> bool:
        """Whether a neighbour heard now is still refused."""
        until = self._refused.get(short_id)
        if until is None:
            return False
        if until <= now:
            del self._refused[short_id]
            return False
        return True

    def take_keepalive(self, now: float) -> bytes | None:
        """The keepalive frame, if one waits and the reserve allows it now."""
        frame = self.keepalive
        if frame is None:
            return None
        if not self.budget.try_keepalive(len(frame), now):
            airtime = self.spec.airtime.airtime(len(frame) + self.spec.header_bytes)
            self.keepalive_at = max(now + 0.001, self.budget.presence.ready_at(now, airtime))
            return None
        self.keepalive = self.keepalive_at = None
        return frame

    def handshaking(self) -> bool:
        """Whether a neighbour's handshake is under way (the nonce must not change now)."""
        return any(not link.established and not link.handshake.closing for link in self.neighbours.values())

    def hello_gap(self, hello_len: int) -> float:
        """The least time between two broadcast HELLOs: four times the HELLO's airtime, times the
        neighbours sharing the channel (each answers with a PROOF). A HELLO longer than a frame
        (a card with its certificate, over LoRa) goes in fragments: the airtime of them all."""
        mtu = self.spec.mtu
        if hello_len <= mtu:
            airtime = self.spec.airtime.airtime(hello_len + self.spec.header_bytes)
        else:
            frames = -(-hello_len // (mtu - FRAGMENT_HEADER_BYTES))
            airtime = frames * self.spec.airtime.airtime(mtu + self.spec.header_bytes)
        return 4 * airtime * (1 + len(self.neighbours))

    @property
    def summary_due(self) -> float:
        return self.last_tx + self.spec.keepalive_interval * self.keepalive_factor

    def pending_neighbours(self) -> int:
        return sum(1 for link in self.neighbours.values() if not link.established)

    def queued(self, key: RecordKey) -> None:
        """``key`` was queued for rebroadcast: the reception that brought it is its first copy."""
        if len(self.copies) >= MAX_COPIES_TRACKED:
            self.copies = {k: n for k, n in self.copies.items() if self.outbox.holds_record(k)}
        self.copies[key] = 1

    def heard_copy(self, key: RecordKey, raw: bytes) -> bool:
        """Another copy of ``raw`` was heard; ``True`` if that cancels its queued rebroadcast."""
        count = self.copies.get(key, 1) + 1
        if count < self.spec.suppress_copies:
            self.copies[key] = count
            return False
        self.copies.pop(key, None)
        return self.outbox.drop_record(key, raw)
