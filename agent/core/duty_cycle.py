"""A transmitter's airtime allowance over a rolling window, and the dwell limit per transmission.

Units: seconds throughout (times, airtimes, windows); fractions are of the window.

**The rule.** A transmitter with allowance fraction ``f`` over a window ``W`` (one hour by default)
may transmit at most ``A = f * W`` seconds in *any* interval of length ``W``, not just in clock
hours: ETSI EN 300 220-2 defines duty cycle as the ratio of transmitting time over one hour of
observation, and a rolling window is the reading that no observer can catch out. A single
transmission may not last longer than the dwell limit (US915: 400 ms), nor longer than ``A``.

**Exact accounting.** The ledger keeps each transmission as ``(start, airtime)``, in order and not
overlapping (one radio sends one frame at a time). The most airtime any window of length ``W``
holds is always reached by a window that *ends* where some transmission ends: slide any window to
the right while its right edge is inside a transmission and it gains at least what it loses; to
the left while its right edge is in a gap and it loses nothing. Each transmission is the newest
when it is recorded, so the only windows it can overfill are those ending where it ends, and a
transmission of ``a`` seconds starting at ``t`` is permitted exactly when
``used in (t + a - W, t + a] + a <= A`` (counting partial overlaps exactly). The allowance keeps
:data:`~agent.core.media_limits.DUTY_CYCLE_SLACK` (1 ns) in hand, more than the rounding of the sums
(at most ``max_entries`` terms of at most ``W`` seconds, each off by half an ulp): float rounding
never lets a window exceed ``A``.

**Bounded memory.** Entries that have left every window that still matters (ended at or before
``now - W``) are dropped. Beyond ``max_entries`` (default 1024) the two neighbours with the smallest
gap between them merge into one that keeps their total airtime but ends where the later one ended:
``(start2 - a1, a1 + a2)``, the earlier one moved right by the gap. Moving airtime later can only
add to the windows still to be checked (their left edges only move right), so a merge is
conservative, never permissive, exact for frames sent back to back, and costs at most that gap in
allowance returned late. So a ledger holds at most ``max_entries`` entries whatever the frame rate, and is
exact while a window holds no more than that many transmissions (a 1 % hour at SF7 holds ~700).

**Regions** (:data:`REGIONS`): the EU868 sub-bands of CEPT ERC Recommendation 70-03 Annex 1 and
ETSI EN 300 220-2 that LoRaWAN's EU863-870 regional parameters (RP002) refer to, named as LoRaWAN
stacks name them: g1 868.0-868.6 MHz 1 %, g2 868.7-869.2 MHz 0.1 % (its own band N since EN 300
220-2 V3.2.1, as LoRaMac-node PR 750 notes), g3 869.4-869.65 MHz 10 %; US902-928 (FCC part
15.247 as LoRaWAN's US915 applies it): no duty cycle, 400 ms dwell per transmission; and ``NONE``
for ESP-NOW at 2.4 GHz, where EN 300 328 asks for listen-before-talk rather than a duty cycle.
Each also gives the most transmit power a radio may be set to (``max_tx_power_dbm``): 25 mW
e.r.p. (14 dBm) in g1 and g2 and 500 mW (27 dBm) in g3 (ERC 70-03 Annex 1 bands h1.4-h1.6), 1 W
conducted (30 dBm) in US915 (FCC 15.247(b)(3)), 100 mW e.i.r.p. (20 dBm) at 2.4 GHz (EN 300 328).

**Presence share** (:class:`SharedAllowance`): presence traffic gets ``share`` (default half, as
Meshtastic gives NodeInfo) of the allowance, in a ledger of its own beside the whole one; a presence
frame must fit both, other traffic only the whole, so applications always keep the rest.

Times are passed in; this module reads no clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from agent.core.errors import PresenceError
from agent.core.media_limits import (
    DUTY_CYCLE_MAX_ENTRIES,
    DUTY_CYCLE_SLACK,
    DUTY_CYCLE_WINDOW,
    PRESENCE_SHARE,
)


class DutyCycleError(PresenceError, ValueError):
    """A transmission can never be permitted (too long), or the ledger was fed out of order."""


class DwellTimeError(DutyCycleError):
    """One transmission would last longer than the dwell limit or the whole allowance."""


class DutyCycle:
    """A rolling-window airtime ledger for one transmitter (see the module docstring for the rule)."""

    __slots__ = (
        "_busy_until",
        "_entries",
        "_total",
        "allowance",
        "dwell",
        "fraction",
        "max_entries",
        "window",
    )

    def __init__(
        self,
        allowance_fraction: float,
        window: float = DUTY_CYCLE_WINDOW,
        dwell: float | None = None,
        *,
        max_entries: int = DUTY_CYCLE_MAX_ENTRIES,
    ) -> None:
        if not 0 < allowance_fraction <= 1:
            raise DutyCycleError(
                f"an allowance of {allowance_fraction} of the window: give a fraction in (0, 1] (1 % is 0.01)"
            )
        if not 0 < window < math.inf:
            raise DutyCycleError(f"a window of {window} s: give a positive duration (one hour is 3600)")
        if dwell is not None and not 0 < dwell < math.inf:
            raise DutyCycleError(f"a dwell limit of {dwell} s: give a positive duration or None")
        if max_entries < 2:
            raise DutyCycleError(f"max_entries must be at least 2, got {max_entries}")
        self.fraction = allowance_fraction
        self.window = float(window)
        self.dwell = dwell
        self.max_entries = max_entries
        #: Seconds of airtime any window of ``window`` seconds may hold.
        self.allowance = allowance_fraction * self.window
        self._entries: deque[tuple[float, float]] = deque()  # (start, airtime), in order
        self._total = 0.0  # the entries' airtime, summed afresh on every record
        self._busy_until = -math.inf

    def __repr__(self) -> str:
        return (
            f"DutyCycle({self.fraction}, window={self.window}, dwell={self.dwell}, "
            f"entries={len(self._entries)})"
        )

    def __len__(self) -> int:
        """Entries held (at most ``max_entries``)."""
        return len(self._entries)

    @property
    def busy_until(self) -> float:
        """When the last recorded transmission ends (``-inf`` before the first)."""
        return self._busy_until

    def check(self, airtime: float) -> None:
        """Raise :class:`DwellTimeError` if a transmission of ``airtime`` seconds can never be sent."""
        if not 0 < airtime < math.inf:
            raise DutyCycleError(f"an airtime of {airtime} s: a transmission lasts a positive time")
        if self.dwell is not None and airtime > self.dwell:
            raise DwellTimeError(
                f"a transmission of {airtime * 1000:.1f} ms exceeds the "
                f"{self.dwell * 1000:.0f} ms dwell limit: send a shorter frame "
                "(a smaller payload or a faster data rate)"
            )
        if airtime > self.allowance - DUTY_CYCLE_SLACK:
            raise DwellTimeError(
                f"a transmission of {airtime:.3f} s exceeds the whole allowance of {self.allowance:.3f} s "
                f"per {self.window:.0f} s: send a shorter frame"
            )

    def can_send(self, now: float, airtime: float) -> bool:
        """Whether a transmission of ``airtime`` seconds may start at ``now``."""
        self.check(airtime)
        if now < self._busy_until:
            return False
        end = now + airtime
        return self._used_between(end - self.window, end) + airtime <= self.allowance - DUTY_CYCLE_SLACK

    def ready_at(self, now: float, airtime: float) -> float:
        """The earliest time, not before ``now``, at which :meth:`can_send` of ``airtime`` is true.

        Exact for the ledger: the window's left edge moves right until enough airtime has left it,
        then float steps make sure :meth:`can_send` agrees at the answer.
        """
        self.check(airtime)
        start = max(now, self._busy_until)
        if self.can_send(start, airtime):
            return start
        budget = self.allowance - DUTY_CYCLE_SLACK - airtime
        left = start + airtime - self.window  # the window (left, left + W] ending where we would end
        held = self._used_between(left, math.inf)
        if held > budget:
            for s, a in self._entries:
                end = s + a
                if end <= left:
                    continue
                inside = end - max(left, s)
                if held - inside <= budget:
                    left = max(left, s) + (held - budget)
                    break
                held -= inside
                left = end
        at = max(start, left + self.window - airtime)
        step = math.ulp(at) if at else math.ulp(1.0)
        while not self.can_send(at, airtime):  # rounding left it a hair short: step up
            at += step
            step *= 2
        return at

    def wait_time(self, now: float, airtime: float) -> float:
        """Seconds from ``now`` until a transmission of ``airtime`` may start (0 if it may now)."""
        at = self.ready_at(now, airtime)
        if at <= now:
            return 0.0
        wait = at - now
        while now + wait < at:
            wait = math.nextafter(wait, math.inf)
        return wait

    def record(self, now: float, airtime: float) -> None:
        """Account a transmission of ``airtime`` seconds starting at ``now``.

        Recording what :meth:`can_send` refused is allowed (a driver reports what the radio did),
        but the ledger must stay in order: a start before the previous transmission ends raises.
        """
        self.check(airtime)
        if now < self._busy_until:
            raise DutyCycleError(
                f"a transmission at {now} overlaps the previous one, which ends at {self._busy_until}: "
                "a radio sends one frame at a time; start it when the previous one ends"
            )
        self._trim(now)
        self._entries.append((now, airtime))
        self._busy_until = now + airtime
        if len(self._entries) > self.max_entries:
            self._merge_closest()
        self._total = sum(a for _, a in self._entries)

    def mark_busy(self, until: float) -> None:
        """The radio is busy until ``until`` with a frame another ledger accounts for."""
        self._busy_until = max(self._busy_until, until)

    def used(self, now: float) -> float:
        """Seconds transmitted in the window ``(now - W, now]`` (a transmission under way counts so far)."""
        return self._used_between(now - self.window, now)

    def remaining(self, now: float) -> float:
        """The allowance less :meth:`used` (never below 0)."""
        return max(0.0, self.allowance - self.used(now))

    def _used_between(self, left: float, right: float) -> float:
        # Entries are in order and apart, and nearly every question is about a window that holds
        # all of them but the oldest or newest few: so the total, less what lies outside the window
        # at either end (the engine asks this for every frame it considers: a loop over every
        # entry made it most of a radio simulation's time).
        entries = self._entries
        if not entries:
            return 0.0
        total = self._total
        for s, a in entries:
            if s >= left:
                break
            total -= min(a, left - s)
        for s, a in reversed(entries):
            if s + a <= right:
                break
            total -= min(a, s + a - right)
        return max(0.0, total)

    def _merge_closest(self) -> None:
        # Merge the neighbours with the smallest gap: the first moves right by that gap only
        # (exact when they were back to back).
        entries = self._entries
        best, best_gap = 0, math.inf
        for i in range(len(entries) - 1):
            gap = entries[i + 1][0] - (entries[i][0] + entries[i][1])
            if gap < best_gap:
                best, best_gap = i, gap
        (_, a1), (s2, a2) = entries[best], entries[best + 1]
        entries[best] = (s2 - a1, a1 + a2)
        del entries[best + 1]

    def _trim(self, now: float) -> None:
        # Only record() trims, at the start of the newest transmission: every later question is
        # about a window whose left edge is past now - W, and an entry that ended by then lies
        # left of all of them. (Questions about earlier times are about the past: not asked.)
        horizon = now - self.window
        entries = self._entries
        while entries and entries[0][0] + entries[0][1] <= horizon:
            entries.popleft()


class SharedAllowance:
    """One transmitter's allowance, of which presence traffic may use only ``share``.

    Both ledgers share the window and the dwell limit. A presence frame is recorded in both,
    any other frame in the whole one only; a presence frame may go when both permit it.
    """

    __slots__ = ("presence", "share", "total")

    def __init__(self, total: DutyCycle, share: float = PRESENCE_SHARE) -> None:
        if not 0 < share <= 1:
            raise DutyCycleError(f"a presence share of {share}: give a fraction in (0, 1] (half is 0.5)")
        self.total = total
        self.share = share
        self.presence = DutyCycle(
            total.fraction * share, total.window, total.dwell, max_entries=total.max_entries
        )

    def can_send(self, now: float, airtime: float, *, presence: bool = True) -> bool:
        ok = self.total.can_send(now, airtime)
        return ok and (not presence or self.presence.can_send(now, airtime))

    def ready_at(self, now: float, airtime: float, *, presence: bool = True) -> float:
        # Each ledger, once it permits a frame, keeps permitting it later (nothing new is recorded),
        # so the earliest time both permit is the later of their earliest times.
        at = self.total.ready_at(now, airtime)
        if presence:
            at = self.presence.ready_at(at, airtime)
        return at

    def record(self, now: float, airtime: float, *, presence: bool = True) -> None:
        self.total.record(now, airtime)
        if presence:
            self.presence.record(now, airtime)


@dataclass(frozen=True, slots=True)
class Region:
    """A band's limits for one transmitter: allowance fraction (1.0: none) and dwell per transmission."""

    name: str
    #: The band's edges (Hz); ``None`` where the band is not one range (``NONE``).
    low_hz: float | None
    high_hz: float | None
    duty_cycle: float
    dwell: float | None
    #: Where the figures come from.
    source: str
    #: The most transmit power a radio may be set to here (dBm), for an antenna without gain:
    #: EU868's limits are e.r.p. (relative to a dipole), US915's is FCC's conducted limit, the
    #: 2.4 GHz band's is e.i.r.p. An antenna with gain takes its gain off this figure.
    max_tx_power_dbm: float | None = None

    def ledger(self, window: float = DUTY_CYCLE_WINDOW) -> DutyCycle:
        """A fresh :class:`DutyCycle` for one transmitter in this band."""
        return DutyCycle(self.duty_cycle, window, self.dwell)

    def contains(self, frequency_hz: float) -> bool:
        """Whether ``frequency_hz`` lies inside the band (always False for a band without edges)."""
        if self.low_hz is None or self.high_hz is None:
            return False
        return self.low_hz <= frequency_hz <= self.high_hz


EU868_G1 = Region(
    "EU868 g1",
    868.0e6,
    868.6e6,
    0.01,
    None,
    "ERC Rec 70-03 Annex 1 band h1.4 (25 mW e.r.p.), ETSI EN 300 220-2; LoRaWAN RP002 EU863-870",
    14.0,
)
EU868_G2 = Region(
    "EU868 g2",
    868.7e6,
    869.2e6,
    0.001,
    None,
    "ETSI EN 300 220-2 V3.2.1 band N, ERC Rec 70-03 Annex 1 band h1.5 (25 mW e.r.p.); "
    "LoRaWAN RP002 EU863-870",
    14.0,
)
EU868_G3 = Region(
    "EU868 g3",
    869.4e6,
    869.65e6,
    0.10,
    None,
    "ERC Rec 70-03 Annex 1 band h1.6 (500 mW e.r.p.), ETSI EN 300 220-2; LoRaWAN RP002 EU863-870",
    27.0,
)
US915 = Region(
    "US915",
    902.0e6,
    928.0e6,
    1.0,
    0.4,
    "FCC 47 CFR 15.247 (1 W conducted, (b)(3)) as LoRaWAN RP002 US902-928 applies it",
    30.0,
)
NONE = Region(
    "none",
    None,
    None,
    1.0,
    None,
    "ESP-NOW at 2.4 GHz: ETSI EN 300 328 asks for LBT, not a duty cycle, and 100 mW e.i.r.p.",
    20.0,
)

#: Every region by name: the one table of regulatory limits.
REGIONS: dict[str, Region] = {r.name: r for r in (EU868_G1, EU868_G2, EU868_G3, US915, NONE)}


def region_for(frequency_hz: float) -> Region:
    """The region whose band holds ``frequency_hz``; raises if none of the table does."""
    for region in REGIONS.values():
        if region.contains(frequency_hz):
            return region
    raise DutyCycleError(
        f"{frequency_hz / 1e6:.3f} MHz is in no band of the table ({', '.join(REGIONS)}): "
        "pick a channel inside one, or name the region explicitly"
    )
