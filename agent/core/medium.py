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
only keepalives may spend, paced over the window (a burst of half the hour, then its mean rate).
The engine serves an interface's queues in a strict order (keepalive, broadcast HELLO, the
neighbours' handshake frames, the broadcast queue, the neighbours' own queues), and one waiting
for airtime holds back those after it.

**Forming on a spent channel**: retransmitted HELLOs pay from a small share of the pace; a
neighbour's repeated HELLO is answered after gaps that double; a refusal after a timed-out
handshake is passive (:class:`Refusal`) and lasts a random 0.5..1.5 of its pause, doubled for
each refusal since the neighbour was last linked; one DIGEST goes per interface per
:data:`DIGEST_KEEPALIVES` keepalives.

**Settling**: a neighbour is dead after :data:`DEAD_KEEPALIVES` keepalives unheard. After a
record goes out, the next SUMMARY comes early (:meth:`Interface.summary_soon`, Trickle's reset);
a neighbour whose summary differs in a way ours cannot explain answers early with its own, and
one that can explain it (``Holdings.explain``) sends the records, so a lost record costs a few
frames, not a DIGEST. DIGESTs and records still queued when the SUMMARYs heard say they are moot
are dropped. Records signed while an interface is up last :data:`MEDIUM_RECORD_TTL`: each
refresh floods every record across the air again.
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
from agent.core.media_limits import DUTY_CYCLE_SLACK, PACING_BURST_SHARE
from agent.core.outbox import Outbox, RecordKey
from agent.core.pacing import TokenBucket
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

#: The rebroadcast delay range in full frames' airtime (MediumSpec.rebroadcast_window): the
#: farthest receivers go after a tenth of a frame, the nearest wait up to 2.5 frames, time enough
#: to hear a farther neighbour's copy and stay quiet (Meshtastic's contention window is in slots
#: of the frame airtime too). A fixed 0.5..4 s made a change reach 8 Pis at SF7 in 2.96x / 51x
#: the hop-optimal time (metadata / links); this range, 1.05x / 1.00x (figure 8, quick run).
REBROADCAST_FRAMES: Final = (0.1, 2.5)

#: A neighbour on a medium is dead once unheard for this many keepalives (the default dead
#: interval, :class:`MediumSpec`). Measured with keepalives drawn up to 1.25 intervals (the
#: :data:`KEEPALIVE_SPREAD` of then), three held as few as two SUMMARYs: at 10 % loss with collisions,
#: 8 Pis at SF7 lost 1-3 live links each 15 minutes, and each false death cost a handshake and two
#: links floods (4-30 s of airtime an hour per node, the field never quiet). Four still lost some
#: on 30 Pis; five lost none at 64 s keepalives, but at the 81 s of :data:`KEEPALIVE_SHARE` 30 Pis
#: at SF7 with 10 % loss lost live links in two quiet hours of three (4.7 and 7.2 s); with six, one
#: link in 2 of 15 such hours (scratch runs of other changes), none in figure 8's.
DEAD_KEEPALIVES: Final = 6
#: The default keepalive (s): :func:`quiet_keepalive` at SF7/125 kHz and a 1 % allowance (a
#: test checks they agree).
DEFAULT_KEEPALIVE: Final = 81.0
DEFAULT_DEAD_INTERVAL: Final = DEAD_KEEPALIVES * DEFAULT_KEEPALIVE

#: How long records signed by a peer on a medium last, and how long before expiry they are
#: signed again (MediumSpec.record_ttl / refresh_before; the engine's default is 24 h and 6 h). Every
#: refresh floods each of the mesh's records across the air once more: with 30 Pis at SF10 (61
#: records of 1.4 s each), a 24 h TTL cost every node about 4.9 s of airtime an hour on average,
#: more than the quiet hour's 3.6 s, and since that field takes longer than 18 h to form, records
#: were re-signed and expired while they still spread (it had not settled after 48 h). A week,
#: refreshed a day ahead (a budget-bound flood at SF10 takes hours), costs 0.6 s an hour.
MEDIUM_RECORD_TTL: Final = 7 * 24 * 3600.0
MEDIUM_REFRESH_BEFORE: Final = 24 * 3600.0

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
    keepalive_interval: float = DEFAULT_KEEPALIVE
    dead_interval: float = DEFAULT_DEAD_INTERVAL
    #: Rebroadcast delay range (s): far receivers wait the least. ``None``: scaled to the medium's
    #: airtime (:attr:`rebroadcast_window`).
    rebroadcast_delay: tuple[float, float] | None = None
    suppress_copies: int = 2
    #: Records this peer signs last at least this long while the interface is up, signed again
    #: ``refresh_before`` ahead of expiry (:data:`MEDIUM_RECORD_TTL`).
    record_ttl: float = MEDIUM_RECORD_TTL
    refresh_before: float = MEDIUM_REFRESH_BEFORE
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
        low, high = self.rebroadcast_window
        if not 0 <= low <= high:
            raise ValueError("rebroadcast_delay is (shortest, longest), 0 <= shortest <= longest")
        if self.suppress_copies < 1:
            raise ValueError("suppress_copies is at least 1")
        if not 0 < self.refresh_before < self.record_ttl:
            raise ValueError("refresh_before is positive and shorter than record_ttl")

    @property
    def mtu(self) -> int:
        """The link frames' MTU: the medium's, less the sender and destination ids."""
        return self.airtime.mtu - self.header_bytes

    @property
    def header_bytes(self) -> int:
        """What a medium frame carries besides its link frame: ids, and the seal if any."""
        return MEDIUM_HEADER_BYTES + self.seal_overhead

    @property
    def rebroadcast_window(self) -> tuple[float, float]:
        """The rebroadcast delay range (s): ``rebroadcast_delay``, or :data:`REBROADCAST_FRAMES`
        full frames' airtime (a fixed 0.5..4 s made each hop at SF7 three times its airtime)."""
        if self.rebroadcast_delay is not None:
            return self.rebroadcast_delay
        full = self.airtime.airtime(self.airtime.mtu)
        low, high = REBROADCAST_FRAMES
        return (low * full, high * full)

    def rebroadcast_after(self, snr: float | None, jitter: float) -> float:
        """The delay before rebroadcasting a record heard at ``snr`` (``None``: our own, at once);
        ``jitter`` in [0, 1) spreads neighbours that heard it alike."""
        low, high = self.rebroadcast_window
        if snr is None:
            return low
        nearness = min(1.0, max(0.0, (snr - SNR_FAR) / (SNR_NEAR - SNR_FAR)))
        return low + (high - low) * (0.8 * nearness + 0.2 * jitter)


#: The share of the duty-cycle allowance keepalives are sized to (:func:`quiet_keepalive`): the
#: quiet-hour goal is a tenth of it, and keepalives take eight tenths of that, so one HELLO retry of
#: a marginal pair or one DIGEST does not put a node's quiet hour over. Sized to the whole tenth
#: (64 s at SF7, 445 s at SF10), 30 Pis at SF7 had quiet hours of 4.10 and 4.94 s at their median
#: run (without and with 10 % loss), and no run of 30 Pis at SF10 had settled after 48 h; at 0.08
#: (and :data:`DEAD_KEEPALIVES` 6) 13 runs of 16 had, and the SF7 median runs' hours were 2.55 s.
KEEPALIVE_SHARE: Final = 0.08


def quiet_keepalive(
    airtime: AirtimeModel,
    allowance: float,
    share_of_allowance: float = KEEPALIVE_SHARE,
    window: float = 3600.0,
) -> float:
    """The shortest keepalive (whole seconds) at which no ``window`` can hold more broadcast
    SUMMARYs than ``share_of_allowance`` of the duty-cycle allowance pays for (by default
    :data:`KEEPALIVE_SHARE`, eight tenths of the quiet-hour goal), however each interval is drawn
    in :data:`KEEPALIVE_SPREAD`: a window holds at most ``floor(window / (low * keepalive)) + 1``.

    A bound, not a mean: at SF10 one SUMMARY is a tenth of the goal, and a keepalive 5 % under
    it on average still gave some node's hour one SUMMARY too many."""
    paid_for = math.floor(allowance * share_of_allowance * window / airtime.airtime(SUMMARY_FRAME_BYTES))
    if paid_for < 2:
        raise ValueError(f"a SUMMARY's airtime is more than half of {share_of_allowance:g} of the allowance")
    # floor(window / (low * k)) + 1 <= paid_for  <=>  window / (low * k) < paid_for
    return math.floor(window / (KEEPALIVE_SPREAD[0] * paid_for)) + 1


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

    The ``pace`` spreads ``general`` over the window: a bucket of airtime refilled at its mean
    rate, holding at most :data:`~agent.core.media_limits.PACING_BURST_SHARE` of it (never less
    than a full frame). Without it a forming field spends its hour in the first minutes, its
    handshakes time out in the silence after, and each retry costs the hour again. The rest of a
    message already started (:meth:`try_take_rest`) pays only the ledgers and leaves the pace in
    debt, so a card's fragments go together and the debt delays what follows.
    """

    __slots__ = ("_header", "general", "model", "pace", "presence", "spec")

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
        full_frame = self.model.airtime(self.model.mtu)
        burst = max(PACING_BURST_SHARE * self.general.allowance, full_frame)
        # Full from the start (refilled since minus infinity), whatever clock the engine runs on.
        self.pace = TokenBucket(self.general.allowance / spec.window, burst, -math.inf)

    def _airtime(self, cost: float) -> float:
        return self.model.airtime(int(cost) + self._header)

    def try_take(self, cost: float, now: float) -> bool:
        """A frame that starts a message: the pace must allow it, then as :meth:`try_take_rest`."""
        if self.pace.ready_at(self._airtime(cost), now) > now:
            return False
        return self.try_take_rest(cost, now)

    def try_take_rest(self, cost: float, now: float) -> bool:
        """A later frame of a message already started: the ledgers only (they are the law); the
        pace is charged into debt, which holds back the next message instead."""
        airtime = self._airtime(cost)
        if not (self.presence.can_send(now, airtime) and self.general.can_send(now, airtime)):
            return False
        self.presence.record(now, airtime)
        self.general.record(now, airtime)
        self.pace.charge(airtime, now)
        return True

    def ready_at(self, cost: float, now: float) -> float:
        return self.ready_at_rest(cost, self.pace.ready_at(self._airtime(cost), now))

    def ready_at_rest(self, cost: float, now: float) -> float:
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
#: A refused neighbour is not handshaken with again for about this many keepalives (drawn in
#: 0.5..1.5 times it: two neighbours that refused each other at once must not retry in step).
REFUSED_KEEPALIVES: Final = 10
#: Each refusal of a neighbour since it was last linked doubles that pause, this many times at
#: most: a marginal pair on a 30-Pi field at 10 % loss kept retrying its handshake, and its HELLOs
#: were half of a quiet hour's airtime at the worst node.
MAX_REFUSAL_DOUBLINGS: Final = 3
#: A neighbour gets at most one DIGEST from this interface per this many keepalives (its SUMMARY
#: differs from ours while a flood is under way: a DIGEST per SUMMARY heard costs more than the
#: flood it repairs).
DIGEST_KEEPALIVES: Final = 2
#: Retransmitted broadcast HELLOs may use at most these shares of the pace's rate and burst
#: (:meth:`Interface.may_resend_hello`). Measured on 30-Pi SF7 fields (3 seeds) and the 3-node
#: hidden terminal: with the HELLO gap alone HELLOs took most of the airtime (a SF10 field held
#: 8 % of its graph after 16 h); a fixed gap of a quarter of the rate held 99 % at 4 h but left the
#: 3 nodes unformed for 17 to 60+ keepalives; a quarter of rate and burst formed those in one
#: keepalive but held only 93-95 % at 4 h; a tenth of the rate with a quarter of the burst does both
#: (99 % at 4 h, one keepalive).
HELLO_RESEND_RATE_SHARE: Final = 0.1
HELLO_RESEND_BURST_SHARE: Final = 0.25
#: A neighbour's repeated HELLO is answered after a HELLO gap, doubled with each answer up to this
#: many times (then every 16 gaps) until it starts a new round.
MAX_ANSWER_DOUBLINGS: Final = 4
#: A neighbour's handshake deadline is put off one keepalive while our own frame of it still waits
#: for airtime, at most this many times.
MAX_DEADLINE_DEFERRALS: Final = 10
#: Budgets of interfaces that went down, kept for their return (a replugged dongle must not get a
#: fresh allowance: the duty cycle is the transmitter's over the hour), oldest out.
MAX_BUDGETS_KEPT: Final = 16
#: The next SUMMARY goes this share of the keepalive after the last transmission, drawn evenly:
#: neighbours drift apart, and the mean is one interval, so one SUMMARY per keepalive is what a
#: quiet interface costs on average (0.75..1 spent 14 % more). The narrower, the fewer an hour
#: can hold (:func:`quiet_keepalive`): at 0.75..1.25 the worst of 8 nodes sent 3.62 s in its
#: quiet hour at a keepalive whose mean was 3.4 s.
KEEPALIVE_SPREAD: Final = (0.9, 1.1)
#: Trickle's reset (RFC 6206), in full frames' airtime: after a record goes out on an interface,
#: or a neighbour's SUMMARY differs in a way ours cannot explain, the next SUMMARY comes this soon
#: instead of a keepalive later, once per keepalive at most (:meth:`Interface.summary_soon`). It
#: starts after the rebroadcast window (:data:`REBROADCAST_FRAMES`), when the flood has passed:
#: a neighbour that missed the record then hears a SUMMARY unlike its own, answers with its own,
#: and a neighbour that can explain the difference sends the record (Holdings.explain). Waiting
#: for the keepalive, a record lost to a collision reached the last of 30 Pis 28-66 times the
#: hop-optimal time later.
EARLY_SUMMARY_FRAMES: Final = (2.5, 4.0)
#: The early SUMMARY of a peer that heard one it cannot explain comes sooner (full frames): the
#: flood has passed, and the neighbours that can explain it are listening.
ANSWER_SUMMARY_FRAMES: Final = (0.5, 1.5)
#: A duty-cycle refusal that names no wait pauses the interface this long (s).
DEFAULT_REFUSAL_PAUSE: Final = 1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A neighbour not handshaken with until ``until``. ``answers_hello``: only we stop starting
    handshakes with it (ours timed out); its own HELLO is still answered, so two neighbours whose
    handshakes timed out cannot keep refusing each other in turn."""

    until: float
    answers_hello: bool = False


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
        #: Short ids of refused neighbours (bounded, oldest out).
        self._refused: dict[bytes, Refusal] = {}
        #: Refusals of each neighbour since it was last linked (bounded, oldest out).
        self._strikes: dict[bytes, int] = {}
        #: Airtime retransmitted HELLOs may spend (:meth:`may_resend_hello`; made at the first).
        self.hello_resends: TokenBucket | None = None
        #: When a DIGEST may next go from this interface (:data:`DIGEST_KEEPALIVES`).
        self.digest_at = -math.inf
        #: An early SUMMARY's time (:meth:`summary_soon`), and when the last was asked for.
        self.early_summary_at: float | None = None
        self._early_asked = -math.inf

    def refuse(self, short_id: bytes, now: float, jitter: float, *, answers_hello: bool = False) -> None:
        """Refuse ``short_id`` for about :data:`REFUSED_KEEPALIVES` keepalives (``jitter`` in
        [0, 1) draws the share), doubled for each refusal since it was last linked (at most
        :data:`MAX_REFUSAL_DOUBLINGS` times); ``answers_hello``: see :class:`Refusal`."""
        strikes = self._strikes.pop(short_id, 0) + 1
        self._strikes[short_id] = strikes
        pause = (0.5 + jitter) * REFUSED_KEEPALIVES * self.spec.keepalive_interval
        pause *= 2 ** min(strikes - 1, MAX_REFUSAL_DOUBLINGS)
        self._refused.pop(short_id, None)
        self._refused[short_id] = Refusal(now + pause, answers_hello)
        for table in (self._refused, self._strikes):
            while len(table) > MAX_REFUSED:
                del table[next(iter(table))]

    def linked(self, short_id: bytes) -> None:
        """``short_id`` is linked: its next refusal starts from one pause again."""
        self._strikes.pop(short_id, None)

    def refuses(self, short_id: bytes, now: float, *, hello: bool) -> bool:
        """Whether a frame heard now from ``short_id`` (a HELLO, if ``hello``) is ignored."""
        refusal = self._refused.get(short_id)
        if refusal is None:
            return False
        if refusal.until <= now:
            del self._refused[short_id]
            return False
        return not (hello and refusal.answers_hello)

    def may_digest(self, now: float) -> bool:
        """Whether a DIGEST may go now (one per :data:`DIGEST_KEEPALIVES` keepalives, for all
        neighbours: the records it draws are broadcast, so every neighbour's gap is repaired)."""
        if now < self.digest_at:
            return False
        self.digest_at = now + DIGEST_KEEPALIVES * self.spec.keepalive_interval
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
        neighbours sharing the channel (each answers with a PROOF)."""
        return 4 * self.hello_airtime(hello_len) * (1 + len(self.neighbours))

    def may_resend_hello(self, hello_len: int, now: float) -> bool:
        """Whether a broadcast HELLO may be retransmitted now, paying its airtime from
        :attr:`hello_resends`. Each pending neighbour's resend timer asks for one; at SF10 the
        HELLO gap alone let them take ten times the whole budget, and a HELLO goes before
        every other frame of the interface."""
        airtime = self.hello_airtime(hello_len)
        if self.hello_resends is None:
            pace = self.budget.pace
            assert pace.rate is not None
            capacity = max(HELLO_RESEND_BURST_SHARE * pace.capacity, airtime)
            self.hello_resends = TokenBucket(HELLO_RESEND_RATE_SHARE * pace.rate, capacity, -math.inf)
        return self.hello_resends.try_take(min(airtime, self.hello_resends.capacity), now)

    def hello_airtime(self, hello_len: int) -> float:
        """A HELLO's airtime; one longer than a frame (a card with its certificate, over LoRa)
        goes in fragments: the airtime of them all."""
        mtu = self.spec.mtu
        if hello_len <= mtu:
            return self.spec.airtime.airtime(hello_len + self.spec.header_bytes)
        frames = -(-hello_len // (mtu - FRAGMENT_HEADER_BYTES))
        return frames * self.spec.airtime.airtime(mtu + self.spec.header_bytes)

    @property
    def summary_due(self) -> float:
        due = self.last_tx + self.spec.keepalive_interval * self.keepalive_factor
        early = self.early_summary_at
        return due if early is None or early > due else early

    def summary_soon(self, now: float, jitter: float, *, answer: bool = False) -> bool:
        """Send the next SUMMARY after :data:`EARLY_SUMMARY_FRAMES` (``answer``: after
        :data:`ANSWER_SUMMARY_FRAMES`; ``jitter`` in [0, 1) draws where in it), unless one was
        asked for within the last keepalive; ``True`` if asked. The keepalive after it counts
        from it, so a change costs a SUMMARY early, not an extra."""
        if now - self._early_asked < self.spec.keepalive_interval:
            return False
        self._early_asked = now
        low, high = ANSWER_SUMMARY_FRAMES if answer else EARLY_SUMMARY_FRAMES
        full = self.spec.airtime.airtime(self.spec.airtime.mtu)
        at = now + (low + (high - low) * jitter) * full
        if self.early_summary_at is None or at < self.early_summary_at:
            self.early_summary_at = at
        return True

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
