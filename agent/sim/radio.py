"""The simulator's broadcast radio medium: a pure, deterministic event model of one shared channel.

Units: positions in metres, powers in dBm, SNR and margins in dB, times in seconds (the
simulation's virtual clock, passed in).

**Propagation.** The mean RSSI from ``a`` at ``b`` follows the log-distance model of
:class:`agent.core.distance.PathLoss` (``P_1m - 10 n log10(d)``), plus log-normal shadowing: a
Gaussian in dB, per pair of nodes, symmetric and fixed for the run (``shadowing_sigma_db``), drawn
from an RNG seeded by ``(seed, a, b)`` so it does not depend on the order of questions; plus, if
``fading_sigma_db`` is set, a Gaussian per reception, drawn from the medium's seeded RNG in receiver
order at transmit time. Propagation delay is neglected (10 us over 3 km).

**Reception.** The noise floor is ``-174 dBm/Hz + 10 log10(BW) + NF`` (thermal noise at 290 K and
the receiver's noise figure, 6 dB by default); the SNR is RSSI minus the noise floor; a LoRa frame is
demodulated down to the SX127x datasheet's SNR limit for its SF (-7.5 dB at SF7 to -20 dB at SF12),
so the sensitivity is noise floor plus that limit (-124.5 dBm at SF7/125 kHz). A frame is lost at a
receiver, for that receiver only, when

- it is below the sensitivity there (``weak``: out of range);
- the receiver transmitted at any moment of the frame (``half_duplex``: a radio that sends hears
  nothing, and one that finishes sending mid-frame has missed the preamble);
- the frames overlapping it in time, from other senders, sum at that receiver to less than
  ``capture_margin_db`` (6 dB) below it (``collision``). Equal-power overlaps lose both; a frame
  6 dB stronger than the rest survives (capture). Hidden terminals fall out of this: two senders
  that cannot hear each other still overlap at a receiver between them. (Real LoRa capture also
  depends on which preamble locked first; this model does not.)

**Transmitters.** Each node has one half-duplex radio and one duty-cycle ledger
(:class:`agent.core.duty_cycle.DutyCycle`, from its :class:`~agent.core.duty_cycle.Region`): a
transmission while the radio sends, or beyond the allowance, raises. Airtime comes from the same
:class:`~agent.core.airtime.AirtimeModel` the engine will use.

**The event model.** ``transmit(sender, payload, now)`` puts a frame on the air and returns when it
ends; ``deliveries(now)`` resolves every frame that ended by ``now`` into :class:`Delivery` values
(receiver, sender, payload, rssi, snr, time), in order of end time, then sender, then receiver. A
frame is resolved only once it ended, so every frame that overlaps it has been submitted: time must
not run backwards across calls (a call earlier than the latest raises). Nothing reads a clock.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.core.airtime import AirtimeModel, LoRaModulation
from agent.core.distance import PathLoss
from agent.core.duty_cycle import EU868_G1, DutyCycle, Region
from agent.core.errors import PresenceError
from agent.core.media_limits import (
    CAPTURE_MARGIN_DB,
    DUTY_CYCLE_WINDOW,
    LORA_SNR_LIMIT_DB,
    PATH_LOSS_EXPONENT,
    RECEIVER_NOISE_FIGURE_DB,
    SIM_RSSI_AT_1M,
    THERMAL_NOISE_DBM_HZ,
)

Position = tuple[float, float]


class RadioError(PresenceError):
    """The simulated medium was asked for something a radio cannot do."""


class RadioBusyError(RadioError):
    """The sender's radio is still transmitting its previous frame."""


class DutyCycleExceededError(RadioError):
    """The sender's allowance does not cover this frame now; ``ready_at`` says when it would."""

    def __init__(self, sender: int, now: float, ready_at: float) -> None:
        super().__init__(
            f"node {sender} has no airtime allowance left at {now:.3f}: this frame may go at {ready_at:.3f}; "
            "wait for RadioMedium.ready_at"
        )
        self.ready_at = ready_at


@dataclass(frozen=True, slots=True)
class RadioConfig:
    """One channel: its airtime model, propagation, receiver and capture parameters."""

    airtime: AirtimeModel = field(default_factory=LoRaModulation)
    #: Occupied bandwidth (Hz), for the noise floor.
    bandwidth: float = 125_000.0
    #: The lowest SNR at which a frame is still demodulated (dB).
    snr_limit_db: float = LORA_SNR_LIMIT_DB[7]
    path_loss: PathLoss = field(default_factory=lambda: PathLoss(SIM_RSSI_AT_1M, PATH_LOSS_EXPONENT))
    shadowing_sigma_db: float = 0.0
    fading_sigma_db: float = 0.0
    noise_figure_db: float = RECEIVER_NOISE_FIGURE_DB
    capture_margin_db: float = CAPTURE_MARGIN_DB

    def __post_init__(self) -> None:
        if self.shadowing_sigma_db < 0 or self.fading_sigma_db < 0 or self.capture_margin_db < 0:
            raise RadioError("shadowing, fading and capture margin are dB values of zero or more")
        if not self.bandwidth > 0:
            raise RadioError(f"a bandwidth of {self.bandwidth} Hz: give a positive bandwidth")

    @classmethod
    def lora(cls, modulation: LoRaModulation | None = None, **kwargs: object) -> RadioConfig:
        """A LoRa channel: bandwidth and SNR limit from the modulation's BW and SF."""
        modulation = modulation or LoRaModulation()
        return cls(
            airtime=modulation,
            bandwidth=modulation.bandwidth,
            snr_limit_db=LORA_SNR_LIMIT_DB[modulation.sf],
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def noise_floor_dbm(self) -> float:
        """``-174 + 10 log10(BW) + NF`` (dBm)."""
        return THERMAL_NOISE_DBM_HZ + 10.0 * math.log10(self.bandwidth) + self.noise_figure_db

    @property
    def sensitivity_dbm(self) -> float:
        """The weakest RSSI still received (dBm): noise floor plus the SNR limit."""
        return self.noise_floor_dbm + self.snr_limit_db

    @property
    def range_m(self) -> float:
        """The median range (m): where the mean RSSI, without shadowing, reaches the sensitivity."""
        return self.path_loss.distance(self.sensitivity_dbm)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A frame a receiver got: who sent it, the payload, its RSSI and SNR, and when it ended."""

    receiver: int
    sender: int
    payload: bytes
    rssi: float
    snr: float
    time: float


@dataclass(frozen=True, slots=True)
class Loss:
    """A frame a receiver in range did not get, and why (``half_duplex`` or ``collision``)."""

    receiver: int
    sender: int
    reason: str
    time: float


@dataclass(eq=False, slots=True)
class _Flight:
    sender: int
    payload: bytes
    start: float
    end: float
    rssi: dict[int, float]  # at each receiver, fading included


class RadioMedium:
    """One shared channel among nodes at fixed positions (see the module docstring)."""

    def __init__(
        self,
        positions: Sequence[Position],
        config: RadioConfig | None = None,
        *,
        seed: int = 0,
        region: Region = EU868_G1,
        window: float = DUTY_CYCLE_WINDOW,
    ) -> None:
        self.positions = tuple((float(x), float(y)) for x, y in positions)
        self.config = config or RadioConfig.lora()
        self.seed = seed
        self.region = region
        self._rng = random.Random(seed)
        self._ledgers = [region.ledger(window) for _ in self.positions]
        self._busy_until = [-math.inf] * len(self.positions)
        self._flights: list[_Flight] = []  # by start: unresolved ones and those that may overlap them
        self._ends: list[tuple[float, int, _Flight]] = []  # unresolved, by end
        self._order = 0
        self._now = -math.inf
        self._mean: dict[tuple[int, int], float] = {}
        #: Counts of ``sent``, ``delivered`` and each loss reason per receiver (``weak`` counts every
        #: receiver a frame did not reach, near or far).
        self.stats: Counter[str] = Counter()
        #: Seconds each node has spent transmitting since the medium was made (never trimmed, unlike
        #: the duty-cycle ledgers' one-hour window): what benchmarks divide by the time they watched.
        self.airtime_used = [0.0] * len(self.positions)
        #: The losses of receivers in range, in the order they were resolved (bounded by the caller's
        #: reading: call :meth:`take_losses`).
        self._losses: list[Loss] = []

    # ------------------------------------------------------------------ propagation

    def distance(self, a: int, b: int) -> float:
        (xa, ya), (xb, yb) = self.positions[a], self.positions[b]
        return math.hypot(xa - xb, ya - yb)

    def mean_rssi(self, sender: int, receiver: int) -> float:
        """The RSSI of ``sender`` at ``receiver`` before per-frame fading (dBm); symmetric."""
        key = (min(sender, receiver), max(sender, receiver))
        rssi = self._mean.get(key)
        if rssi is None:
            rssi = self.config.path_loss.rssi(self.distance(sender, receiver))
            if self.config.shadowing_sigma_db:
                pair_rng = random.Random(f"{self.seed}:{key[0]}:{key[1]}")
                rssi += pair_rng.gauss(0.0, self.config.shadowing_sigma_db)
            self._mean[key] = rssi
        return rssi

    def in_range(self, sender: int, receiver: int) -> bool:
        """Whether the mean RSSI reaches the sensitivity (fading may still lose or carry a frame)."""
        return sender != receiver and self.mean_rssi(sender, receiver) >= self.config.sensitivity_dbm

    def neighbours(self, node: int) -> list[int]:
        """The nodes ``node`` reaches on the mean, in index order."""
        return [other for other in range(len(self.positions)) if self.in_range(node, other)]

    # ------------------------------------------------------------------ transmitting

    def ledger(self, node: int) -> DutyCycle:
        """The node's duty-cycle ledger (read it; the medium records into it)."""
        return self._ledgers[node]

    def airtime(self, payload_len: int) -> float:
        return self.config.airtime.airtime(payload_len)

    def ready_at(self, sender: int, payload_len: int, now: float) -> float:
        """The earliest time from ``now`` at which ``sender`` may transmit ``payload_len`` bytes."""
        airtime = self.airtime(payload_len)
        return self._ledgers[sender].ready_at(max(now, self._busy_until[sender]), airtime)

    def transmit(self, sender: int, payload: bytes, now: float) -> float:
        """Put ``payload`` on the air from ``sender`` at ``now``; return when the frame ends."""
        self._advance(now)
        airtime = self.airtime(len(payload))
        if now < self._busy_until[sender]:
            raise RadioBusyError(
                f"node {sender} is transmitting until {self._busy_until[sender]:.6f}: "
                "a radio sends one frame at a time"
            )
        ledger = self._ledgers[sender]
        if not ledger.can_send(now, airtime):
            raise DutyCycleExceededError(sender, now, ledger.ready_at(now, airtime))
        ledger.record(now, airtime)
        self.airtime_used[sender] += airtime
        end = now + airtime
        self._busy_until[sender] = end
        rssi: dict[int, float] = {}
        fading = self.config.fading_sigma_db
        for receiver in range(len(self.positions)):
            if receiver != sender:
                mean = self.mean_rssi(sender, receiver)
                rssi[receiver] = mean + self._rng.gauss(0.0, fading) if fading else mean
        flight = _Flight(sender, bytes(payload), now, end, rssi)
        self._flights.append(flight)
        heapq.heappush(self._ends, (end, self._order, flight))
        self._order += 1
        self.stats["sent"] += 1
        return end

    def channel_busy(self, node: int, now: float) -> bool:
        """Whether ``node`` hears a frame on the air at ``now`` (for listen-before-talk)."""
        floor = self.config.sensitivity_dbm
        return any(
            f.start <= now < f.end and f.sender != node and f.rssi[node] >= floor for f in self._flights
        )

    # ------------------------------------------------------------------ receiving

    def next_end(self) -> float | None:
        """When the next unresolved frame ends (``None`` if none is on the air)."""
        return self._ends[0][0] if self._ends else None

    def deliveries(self, now: float) -> list[Delivery]:
        """Resolve every frame that ended by ``now``: what each receiver got."""
        self._advance(now)
        out: list[Delivery] = []
        ended: list[_Flight] = []
        while self._ends and self._ends[0][0] <= now:
            ended.append(heapq.heappop(self._ends)[2])
        ended.sort(key=lambda f: (f.end, f.sender))
        for flight in ended:
            out.extend(self._resolve(flight))
        self._prune(now)
        return out

    def take_losses(self) -> list[Loss]:
        """The losses of receivers in range since the last call (and forget them)."""
        losses, self._losses = self._losses, []
        return losses

    def _resolve(self, flight: _Flight) -> list[Delivery]:
        config = self.config
        floor, noise = config.sensitivity_dbm, config.noise_floor_dbm
        overlapping = [
            f for f in self._flights if f is not flight and f.start < flight.end and f.end > flight.start
        ]
        got = []
        for receiver in sorted(flight.rssi):
            rssi = flight.rssi[receiver]
            if rssi < floor:
                self.stats["weak"] += 1
                continue
            if any(f.sender == receiver for f in overlapping):
                reason = "half_duplex"
            else:
                interference_mw = sum(
                    10.0 ** (f.rssi[receiver] / 10.0) for f in overlapping if f.sender != receiver
                )
                if interference_mw and rssi - 10.0 * math.log10(interference_mw) < config.capture_margin_db:
                    reason = "collision"
                else:
                    got.append(
                        Delivery(receiver, flight.sender, flight.payload, rssi, rssi - noise, flight.end)
                    )
                    self.stats["delivered"] += 1
                    continue
            self.stats[reason] += 1
            self._losses.append(Loss(receiver, flight.sender, reason, flight.end))
        return got

    def _prune(self, now: float) -> None:
        # A resolved frame matters only while an unresolved one may overlap it.
        horizon = min((f.start for _, _, f in self._ends), default=now)
        self._flights = [f for f in self._flights if f.end > horizon]  # unresolved ones end after it

    def _advance(self, now: float) -> None:
        if now < self._now:
            raise RadioError(
                f"time ran backwards: asked at {now} after {self._now}; "
                "the medium's calls must come in time order"
            )
        self._now = now
