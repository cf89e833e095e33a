"""A neighbour's link quality from what is heard: distance from RSSI, smoothed RSSI/SNR, reception ratio.

Units: RSSI and reference power in dBm, SNR in dB, distances in metres, ratios in [0, 1].

**Log-distance path loss** (Rappaport, *Wireless Communications*, §4.9; as ESPresense uses it):
``RSSI(d) = P_1m - 10 n log10(d)``, so ``d = 10 ^ ((P_1m - RSSI) / (10 n))``, with the RSSI at 1 m
``P_1m`` and the exponent ``n`` configurable (defaults -59 dBm and 2.7, ESPresense's). Distances below
a decimetre are reported as 0.1 m (the links record counts decimetres).

**Smoothing**: an exponentially weighted moving average, ``x <- x + alpha (sample - x)``, the first
sample taken as is (alpha 0.15 by default: a sample's weight halves in about 4.3 samples). RSSI is
averaged in dB, as the radios report it.

**Reception ratio**: from sequence numbers, the share heard of the last ``window`` (64) numbers up to
the highest heard (a bit mask, so memory is one integer whatever the traffic); numbers are compared
in serial-number arithmetic (RFC 1982) modulo ``modulus`` (2^16), a duplicate counts once, a late
number inside the window fills its bit, and a number more than a window *behind* the highest means
the sender restarted its counter: the window starts again there (a restart to a number still inside
the window looks like late frames until the counter passes its old highest). Without sequence numbers,
:class:`ExpectedHeard` smooths heard / expected per interval.

**When a distance is reported** (:class:`DistanceReporter`): a new distance, computed from the
*smoothed* RSSI, replaces the one last reported only when it differs from it by at least 40 % of
the larger of the two **and** by at least 1 m. The relative bound is a fixed RSSI step,
``10 n log10(1 / 0.6)`` = 6.0 dB at n = 2.7: four times the smoothed noise of a link with 3 dB of
raw RSSI noise (``3 * sqrt(alpha / (2 - alpha))`` = 0.85 dB), so a link at rest is reported once
or twice, not re-signed for noise, while a neighbour that moves by a factor of 1.7 is reported
within a few frames. (Log-distance estimates are rarely better than a factor of two anyway.) The
absolute bound keeps near neighbours (centimetres of jitter at 0.5 m) quiet. The first distance is
always reported. A changed distance is an update of the link (a new links record), never a new link.

Everything here is pure: samples and times come in as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.core.errors import PresenceError
from agent.core.media_limits import (
    DISTANCE_REPORT_METRES,
    DISTANCE_REPORT_RATIO,
    PATH_LOSS_EXPONENT,
    RECEPTION_WINDOW,
    RSSI_AT_1M,
    SMOOTHING_ALPHA,
)

#: The shortest distance reported (m): the links record counts decimetres.
MIN_DISTANCE: float = 0.1


class LinkQualityError(PresenceError, ValueError):
    """A link-quality model was given parameters or samples that cannot mean anything."""


@dataclass(frozen=True, slots=True)
class PathLoss:
    """The log-distance model: ``RSSI(d) = rssi_at_1m - 10 * exponent * log10(d)``."""

    rssi_at_1m: float = RSSI_AT_1M
    exponent: float = PATH_LOSS_EXPONENT

    def __post_init__(self) -> None:
        if not math.isfinite(self.rssi_at_1m):
            raise LinkQualityError(
                f"RSSI at 1 m of {self.rssi_at_1m} dBm: give a finite power (ESPresense: -59)"
            )
        if not 1.0 <= self.exponent <= 6.0:
            raise LinkQualityError(
                f"path-loss exponent {self.exponent}: give 1..6 (2 free space, 2.7-3.5 indoors or in clutter)"
            )

    def distance(self, rssi: float) -> float:
        """Metres at which this model expects ``rssi`` dBm (at least :data:`MIN_DISTANCE`)."""
        if not math.isfinite(rssi):
            raise LinkQualityError(f"an RSSI of {rssi} dBm cannot give a distance")
        exponent = (self.rssi_at_1m - rssi) / (10.0 * self.exponent)
        return max(MIN_DISTANCE, float(10.0 ** min(exponent, 300.0)))

    def rssi(self, distance: float) -> float:
        """The RSSI (dBm) this model expects at ``distance`` metres (at least :data:`MIN_DISTANCE`)."""
        if not distance >= 0 or not math.isfinite(distance):
            raise LinkQualityError(f"a distance of {distance} m: give a finite distance >= 0")
        return self.rssi_at_1m - 10.0 * self.exponent * math.log10(max(distance, MIN_DISTANCE))


class Ewma:
    """An exponentially weighted moving average; ``None`` until the first sample."""

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float = SMOOTHING_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise LinkQualityError(f"a smoothing weight of {alpha}: give one in (0, 1] (1 keeps no history)")
        self.alpha = alpha
        self.value: float | None = None

    def update(self, sample: float) -> float:
        """Fold ``sample`` in; return the new average."""
        if not math.isfinite(sample):
            raise LinkQualityError(f"a sample of {sample} cannot be averaged")
        self.value = sample if self.value is None else self.value + self.alpha * (sample - self.value)
        return self.value


class ReceptionRatio:
    """The share heard of the last ``window`` sequence numbers (see the module docstring)."""

    __slots__ = ("_highest", "_mask", "_span", "modulus", "window")

    def __init__(self, window: int = RECEPTION_WINDOW, modulus: int = 1 << 16) -> None:
        if not 1 <= window <= modulus // 2:
            raise LinkQualityError(f"a window of {window} numbers: give 1..{modulus // 2} (half the modulus)")
        self.window = window
        self.modulus = modulus
        self._highest: int | None = None
        self._mask = 0  # bit i: highest - i was heard
        self._span = 0  # numbers the window covers so far (at most window)

    def heard(self, seq: int) -> None:
        """Count a frame carrying sequence number ``seq``."""
        if not 0 <= seq < self.modulus:
            raise LinkQualityError(f"sequence number {seq} is outside 0..{self.modulus - 1}")
        if self._highest is None:
            self._restart(seq)
            return
        delta = (seq - self._highest) % self.modulus
        if delta >= self.modulus // 2:
            delta -= self.modulus  # behind the highest (RFC 1982)
        if delta > 0:
            self._mask = ((self._mask << delta) | 1) & ((1 << self.window) - 1)
            self._span = min(self.window, self._span + delta)
            self._highest = seq
        elif -delta < self._span:
            self._mask |= 1 << -delta  # late or repeated: its bit, once
        elif -delta < self.window:
            self._mask |= 1 << -delta  # before the first one heard, still inside the window
            self._span = -delta + 1
        else:
            self._restart(seq)  # far behind: the sender restarted its counter

    @property
    def ratio(self) -> float | None:
        """Heard over expected in the window; ``None`` before anything was heard."""
        if self._highest is None:
            return None
        return self._mask.bit_count() / self._span

    def _restart(self, seq: int) -> None:
        self._highest, self._mask, self._span = seq, 1, 1


class ExpectedHeard:
    """Reception ratio without sequence numbers: smoothed heard / expected per interval."""

    __slots__ = ("_average",)

    def __init__(self, alpha: float = SMOOTHING_ALPHA) -> None:
        self._average = Ewma(alpha)

    def interval(self, expected: int, heard: int) -> float:
        """Fold in one interval in which ``expected`` frames were due and ``heard`` arrived."""
        if expected < 1 or heard < 0:
            raise LinkQualityError(f"expected {expected} and heard {heard}: need expected >= 1, heard >= 0")
        return self._average.update(min(1.0, heard / expected))

    @property
    def ratio(self) -> float | None:
        return self._average.value


class DistanceReporter:
    """Decides when a new distance is worth reporting (the rule is in the module docstring)."""

    __slots__ = ("metres", "ratio", "reported")

    def __init__(self, ratio: float = DISTANCE_REPORT_RATIO, metres: float = DISTANCE_REPORT_METRES) -> None:
        if not 0 < ratio < 1 or not metres >= 0:
            raise LinkQualityError(
                f"report thresholds {ratio} and {metres} m: need 0 < ratio < 1 and metres >= 0"
            )
        self.ratio = ratio
        self.metres = metres
        self.reported: float | None = None

    def changed_enough(self, distance: float) -> bool:
        """Whether ``distance`` differs from the last report by both thresholds (True if none yet)."""
        last = self.reported
        if last is None:
            return True
        change = abs(distance - last)
        return change >= self.ratio * max(distance, last) and change >= self.metres

    def offer(self, distance: float) -> float | None:
        """The distance to report now (and remember), or ``None`` to keep the last one."""
        if not self.changed_enough(distance):
            return None
        self.reported = distance
        return distance


class LinkQuality:
    """One neighbour on a medium: smoothed RSSI and SNR, reception ratio, and its distance reports."""

    __slots__ = ("heard_at", "model", "reception", "reporter", "rssi", "snr")

    def __init__(
        self,
        model: PathLoss | None = None,
        *,
        alpha: float = SMOOTHING_ALPHA,
        window: int = RECEPTION_WINDOW,
        reporter: DistanceReporter | None = None,
    ) -> None:
        self.model = model or PathLoss()
        self.rssi = Ewma(alpha)
        self.snr = Ewma(alpha)
        self.reception = ReceptionRatio(window)
        self.reporter = reporter or DistanceReporter()
        #: When a frame was last heard from this neighbour (first-hand liveness), ``None`` before.
        self.heard_at: float | None = None

    def heard(
        self, now: float, rssi: float, snr: float | None = None, seq: int | None = None
    ) -> float | None:
        """Fold in a frame heard at ``now``; return a distance to report, or ``None`` to keep the last."""
        self.heard_at = now
        smoothed = self.rssi.update(rssi)
        if snr is not None:
            self.snr.update(snr)
        if seq is not None:
            self.reception.heard(seq)
        return self.reporter.offer(self.model.distance(smoothed))

    @property
    def distance(self) -> float | None:
        """The distance the smoothed RSSI gives now (reported or not); ``None`` before a frame."""
        return None if self.rssi.value is None else self.model.distance(self.rssi.value)
