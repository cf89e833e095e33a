"""The dongle's own airtime ledger over a rolling window, and its region table.

The host's ``agent/core/duty_cycle.py`` states the rule and its sources; this is the same rule in
integer microseconds for MicroPython (no floats, no dataclasses, no typing), enforced by the dongle
whatever the host asks. ``tests/test_dongle.py`` keeps :data:`REGIONS` equal to the host's table and
checks the ledger against host-made vectors under CPython and under MicroPython.

**The rule.** A transmitter with an allowance of ``ppm`` millionths may transmit at most
``A = ppm * W / 10^6`` in *any* window of ``W`` (3600 s), and no single transmission may last longer
than the region's dwell limit, nor reach ``A``. A transmission of ``a`` starting at ``t`` is
permitted when ``used in (t + a - W, t + a] + a < A`` (integers: at least 1 us in hand, as the
host keeps 1 ns in hand against float rounding, so both answer alike on whole microseconds).

**Bounded memory.** Entries ``[start_us, airtime_us]`` that ended a window ago are dropped; beyond
:data:`MAX_ENTRIES` (256, a quarter of the host's 1024, for an ESP32's RAM) the two neighbours with
the smallest gap merge into one that keeps their airtime and ends where the later ended: moving
airtime later only ever refuses more, never permits more.

**Regions**, by the serial protocol's RegionCode::

    code: (name, low_hz, high_hz, duty_cycle_ppm, dwell_ms)    (None: no band edges; dwell 0: none)
"""

WINDOW_S = 3600
#: STATUS's short-term airtime covers the last minute (docs/SERIAL_PROTOCOL.md).
SHORT_WINDOW_S = 60
MAX_ENTRIES = 256

REGIONS = {
    0: ("none", None, None, 1000000, 0),
    1: ("EU868 g1", 868000000, 868600000, 10000, 0),
    2: ("EU868 g2", 868700000, 869200000, 1000, 0),
    3: ("EU868 g3", 869400000, 869650000, 100000, 0),
    4: ("US915", 902000000, 928000000, 1000000, 400),
}


class DutyCycleError(ValueError):
    pass


def region(code):
    """The region tuple of ``code``; DutyCycleError if the table has none."""
    if code not in REGIONS:
        raise DutyCycleError("unknown region code %r: one of %r" % (code, sorted(REGIONS)))
    return REGIONS[code]


def region_contains(code, frequency_hz):
    """Whether ``frequency_hz`` lies inside region ``code``'s band (never for a band without edges)."""
    _, low, high, _, _ = region(code)
    return low is not None and low <= frequency_hz <= high


def region_for(frequency_hz):
    """The code of the region whose band holds ``frequency_hz``, or None."""
    for code in sorted(REGIONS):
        if region_contains(code, frequency_hz):
            return code
    return None


class Ledger:
    """One transmitter's airtime in the last window; times and airtimes in integer microseconds."""

    def __init__(self, duty_cycle_ppm, dwell_ms=0, window_s=WINDOW_S, max_entries=MAX_ENTRIES):
        if max_entries < 2:
            raise DutyCycleError("max_entries must be at least 2")
        self.window_us = window_s * 1000000
        self.max_entries = max_entries
        self._entries = []  # [start_us, airtime_us], in order, not overlapping
        self._busy_until = None
        self.set_limits(duty_cycle_ppm, dwell_ms)

    def set_limits(self, duty_cycle_ppm, dwell_ms=0):
        """Another region's limits; the airtime already sent still counts."""
        if not 0 < duty_cycle_ppm <= 1000000:
            raise DutyCycleError("an allowance of %r ppm: give 1..1000000" % (duty_cycle_ppm,))
        if dwell_ms < 0:
            raise DutyCycleError("a dwell limit of %r ms: give 0 (none) or more" % (dwell_ms,))
        self.duty_cycle_ppm = duty_cycle_ppm
        self.dwell_us = dwell_ms * 1000
        self.allowance_us = duty_cycle_ppm * (self.window_us // 1000000)

    def __len__(self):
        return len(self._entries)

    @property
    def busy_until(self):
        """When the last recorded transmission ends (us; None before the first)."""
        return self._busy_until

    def fits(self, airtime_us):
        """Whether a transmission of ``airtime_us`` could ever be sent (dwell limit, whole allowance)."""
        if airtime_us <= 0:
            return False
        if self.dwell_us and airtime_us > self.dwell_us:
            return False
        return airtime_us < self.allowance_us

    def can_send(self, now_us, airtime_us):
        """Whether a transmission of ``airtime_us`` may start at ``now_us``."""
        if not self.fits(airtime_us):
            return False
        if self._busy_until is not None and now_us < self._busy_until:
            return False
        end = now_us + airtime_us
        return self.used_between(end - self.window_us, end) + airtime_us < self.allowance_us

    def ready_at(self, now_us, airtime_us):
        """The earliest time from ``now_us`` at which :meth:`can_send` is true; None if it never is."""
        if not self.fits(airtime_us):
            return None
        start = now_us if self._busy_until is None else max(now_us, self._busy_until)
        if self.can_send(start, airtime_us):
            return start
        budget = self.allowance_us - 1 - airtime_us  # the most the window may already hold
        left = start + airtime_us - self.window_us
        held = self.used_between(left, None)
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
        at = max(start, left + self.window_us - airtime_us)
        while not self.can_send(at, airtime_us):  # integers: at most a step or two
            at += 1
        return at

    def record(self, now_us, airtime_us):
        """Account a transmission of ``airtime_us`` starting at ``now_us`` (after the previous one)."""
        if airtime_us <= 0:
            raise DutyCycleError("an airtime of %r us: a transmission lasts a positive time" % (airtime_us,))
        if self._busy_until is not None and now_us < self._busy_until:
            raise DutyCycleError("a transmission at %d us overlaps the previous one" % now_us)
        horizon = now_us - self.window_us
        entries = self._entries
        while entries and entries[0][0] + entries[0][1] <= horizon:
            entries.pop(0)
        entries.append([now_us, airtime_us])
        self._busy_until = now_us + airtime_us
        if len(entries) > self.max_entries:
            self._merge_closest()

    def used(self, now_us, window_us=None):
        """Airtime in ``(now - window, now]`` (the ledger's window by default)."""
        return self.used_between(now_us - (window_us or self.window_us), now_us)

    def used_between(self, left, right):
        total = 0
        for s, a in self._entries:
            end = s + a if right is None else min(right, s + a)
            overlap = end - max(left, s)
            if overlap > 0:
                total += overlap
        return total

    def _merge_closest(self):
        entries = self._entries
        best, best_gap = 0, None
        for i in range(len(entries) - 1):
            gap = entries[i + 1][0] - (entries[i][0] + entries[i][1])
            if best_gap is None or gap < best_gap:
                best, best_gap = i, gap
        a1 = entries[best][1]
        s2, a2 = entries[best + 1]
        entries[best] = [s2 - a1, a1 + a2]
        del entries[best + 1]
