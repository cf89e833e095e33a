"""The radio dongle's core: serial protocol to the host, TX queue and credits, airtime, RX, STATUS.

Sans-I/O (MicroPython and CPython): it reads no clock, no serial port and no radio by itself. The
boot loop (``dongle_main.py``) or the emulator (``agent/sim/dongles.py``) feeds it host bytes and
radio events with a millisecond clock, and writes what each call returns to the host::

    d = Dongle(radio, settings, dongle_id, now_ms)   # settings: dongle_settings.parse(...)
    out = d.feed(data, now_ms)            # bytes from the host -> bytes for the host
    out = d.idle(now_ms)                  # FRAME_SILENCE_MS without a byte: drop half a frame
    out = d.poll(now_ms)                  # timers: start the next TX, periodic STATUS, TX guard
    out = d.sent(now_ms)                  # the radio finished the transmission it was given
    out = d.heard(payload, rssi_dbm, snr_qdb, now_ms)   # the radio received a frame
    d.next_wake_ms()                      # when poll() has something to do (None: only on input)
    d.log(level, text); out = d.take()    # a LOG line of the caller's (the boot loop's errors)

``now_ms`` never decreases (ms since boot; ``dongle_main`` counts it with ``ticks_diff`` so it does
not wrap). Each call returns at most the frames it caused; nothing is buffered between calls.

**The radio interface** (one file per radio: radio_sx127x.py, radio_sx126x.py, radio_espnow.py; the
emulator's radio is one more)::

    radio.kind                  serial protocol RadioKind: 1 SX127x, 2 SX126x, 3 ESP-NOW
    radio.mtu                   largest payload (bytes)
    radio.configure(fields)     fields {ConfigKey: int} of the radio's own keys -> {key: value in
                                force} for those it applied (clamped values as clamped; keys it cannot
                                apply left out); never raises for a bad value
    radio.settings()            {ConfigKey: int} of every radio key in force
    radio.airtime_us(n)         microseconds on air for n bytes with the settings in force (airtime.py)
    radio.send(payload)         start a transmission; OSError if the radio cannot
    radio.channel_busy()        True / False by channel activity detection; None where not offered
    radio.noise_floor_dbm()     an int, or None where not measured

The dongle owns REGION and STATUS_INTERVAL_S; every other CONFIG key is the radio's. A LoRa radio's
frequency must lie in the band of the region in force (a REGION or FREQUENCY_HZ that would break
that is not applied), so the host cannot escape the duty cycle by naming another region.

**What it answers** (docs/SERIAL_PROTOCOL.md): every HELLO with INFO then CREDIT; CONFIG_SET with a
CONFIG of the fields asked for as now in force, or NAK bad config if none was applied; CONFIG_GET
with a CONFIG; STATUS_GET with STATUS (and one every ``status_interval_s``); TX with exactly one
TX_DONE (the airtime counted) or NAK, each followed by a CREDIT; a D>H frame type sent to it with
NAK malformed. A TX waits in a queue of ``queue_capacity`` slots (its slot is free once answered);
at the head it is refused NAK too long (over the MTU, the dwell limit or the whole allowance) or
NAK duty cycle with ``wait_ms`` if the ledger (duty_cycle.py) does not permit it now; otherwise,
where the radio offers channel activity detection, it waits a random back-off of 1..8 slots (a
32-byte frame's airtime) while the channel is busy, at most :data:`MAX_LBT_DEFERRALS` times, then
it goes. After a transmission, a queued frame waits one back-off too (no hogging the channel).
Frames heard go to the host as RX; what does not fit one (0 or more than 255 bytes) is counted in
``counters["rx_dropped"]``. A radio that raises is logged (LOG error) and the TX refused NAK bad
config (the protocol has no better reason); one that never reports the end of a transmission is
given up on after its airtime plus :data:`TX_GUARD_MS` (LOG error, TX_DONE: the airtime counted).
"""

import serial_protocol as sp
from airtime import AirtimeError
from duty_cycle import REGIONS, SHORT_WINDOW_S, Ledger, region, region_contains, region_for

FIRMWARE_VERSION = (0, 1, 0)
REGION_KEY = 1
FREQUENCY_KEY = 2
STATUS_INTERVAL_KEY = 10
#: Consecutive busy channels after which a frame goes anyway (listen-before-talk never deadlocks).
MAX_LBT_DEFERRALS = 8
#: Contention back-off: 1..BACKOFF_SLOTS slots of a BACKOFF_FRAME-byte frame's airtime.
BACKOFF_SLOTS = 8
BACKOFF_FRAME = 32
#: A transmission not reported done this long after its airtime ended is given up on.
TX_GUARD_MS = 2000
LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR = 0, 1, 2, 3

COUNTERS = (
    "tx_done",
    "nak_queue_full",
    "nak_duty_cycle",
    "nak_too_long",
    "nak_bad_config",
    "nak_malformed",
    "lbt_deferred",
    "lbt_gave_up",
    "rx_frames",
    "rx_dropped",
    "radio_errors",
)
_HOST_TYPES = (sp.HELLO, sp.CONFIG_SET, sp.CONFIG_GET, sp.TX, sp.STATUS_GET)


def log_text(text):
    """``text`` cut to fit one LOG frame (at most MAX_LOG_TEXT UTF-8 bytes, whole characters)."""
    text = text[: sp.MAX_LOG_TEXT]
    while len(text.encode("utf-8")) > sp.MAX_LOG_TEXT:
        text = text[:-1]
    return text


class Dongle:
    def __init__(self, radio, settings, dongle_id, now_ms, firmware_version=FIRMWARE_VERSION):
        self.radio = radio
        self.dongle_id = bytes(dongle_id)
        self.firmware_version = firmware_version
        self.queue_capacity = settings["queue_capacity"]
        self.decoder = sp.Decoder()
        self.counters = {name: 0 for name in COUNTERS}
        self._out = bytearray()
        self._seq = 0  # the dongle's own frame counter
        self._ack_seq = 0  # the last host frame read
        self._queue = []  # [seq, payload, lbt deferrals], oldest first
        self._sending = None  # (seq, airtime_us, give up at ms) while the radio transmits
        self._next_try = now_ms
        self._status_at = None
        self._rng = (sp.crc16(self.dongle_id) << 16 | (now_ms & 0xFFFF)) or 1
        # The strictest region until the boot settings are applied.
        self.region = min(REGIONS, key=lambda code: (REGIONS[code][3], -REGIONS[code][4]))
        self.status_interval_s = 0
        _, _, _, ppm, dwell = region(self.region)
        self.ledger = Ledger(ppm, dwell)
        self._boot(settings, now_ms)

    # ------------------------------------------------------------------ inputs

    def feed(self, data, now_ms):
        for kind, seq, fields in self.decoder.feed(data):
            self._ack_seq = seq
            self._handle(kind, seq, fields, now_ms)
        self._run(now_ms)
        return self._take()

    def idle(self, now_ms):
        self.decoder.idle()
        return self.poll(now_ms)

    def poll(self, now_ms):
        self._run(now_ms)
        return self._take()

    def sent(self, now_ms):
        self._finish(now_ms)
        self._run(now_ms)
        return self._take()

    def heard(self, payload, rssi_dbm, snr_qdb, now_ms):
        if not 1 <= len(payload) <= sp.MAX_RADIO_PAYLOAD:
            self.counters["rx_dropped"] += 1
            return self._take()
        self.counters["rx_frames"] += 1
        rssi = max(-32768, min(32767, int(rssi_dbm)))
        snr = None if snr_qdb is None else max(-32767, min(32767, int(snr_qdb)))
        fields = {"rssi_dbm": rssi, "snr_qdb": snr, "time_ms": now_ms & 0xFFFFFFFF, "payload": payload}
        self._emit(sp.RX, self._own_seq(), fields)
        return self._take()

    def log(self, level, text):
        """A LOG frame for the host (returned by the next call's bytes, or by :meth:`take`)."""
        self._emit(sp.LOG, self._own_seq(), {"level": level, "text": log_text(text)})

    def take(self):
        """Bytes for the host produced outside an input (by :meth:`log`)."""
        return self._take()

    def next_wake_ms(self):
        wakes = []
        if self._sending is not None:
            wakes.append(self._sending[2])
        elif self._queue:
            wakes.append(self._next_try)
        if self._status_at is not None:
            wakes.append(self._status_at)
        return min(wakes) if wakes else None

    @property
    def queue_depth(self):
        return len(self._queue) + (self._sending is not None)

    # ------------------------------------------------------------------ host frames

    def _handle(self, kind, seq, fields, now_ms):
        if kind not in _HOST_TYPES:
            self._nak(seq, sp.NAK_MALFORMED)
        elif kind == sp.HELLO:
            self._emit(sp.INFO, seq, self.info())
            self._credit()
        elif kind == sp.CONFIG_SET:
            self._config_set(seq, fields["fields"], now_ms)
        elif kind == sp.CONFIG_GET:
            self._config_get(seq, fields["keys"])
        elif kind == sp.TX:
            if len(self._queue) + (self._sending is not None) >= self.queue_capacity:
                self._nak(seq, sp.NAK_QUEUE_FULL)
                self._credit()
            else:
                self._queue.append([seq, fields["payload"], 0])
        else:  # STATUS_GET
            self._emit(sp.STATUS, seq, self.status(now_ms))

    def info(self):
        _, _, _, ppm, dwell = region(self.region)
        return {
            "firmware_version": self.firmware_version,
            "radio": self.radio.kind,
            "mtu": self.radio.mtu,
            "region": self.region,
            "duty_cycle_ppm": ppm,
            "dwell_ms": dwell,
            "queue_capacity": self.queue_capacity,
            "dongle_id": self.dongle_id,
        }

    def status(self, now_ms):
        now_us = now_ms * 1000
        return {
            "airtime_short_ms": self.ledger.used(now_us, SHORT_WINDOW_S * 1000000) // 1000,
            "airtime_long_ms": self.ledger.used(now_us) // 1000,
            "queue_depth": self.queue_depth,
            "queue_capacity": self.queue_capacity,
            "noise_floor_dbm": self.radio.noise_floor_dbm(),
        }

    def in_force(self):
        """{ConfigKey: value} of every key in force (the dongle's own and the radio's)."""
        fields = dict(self.radio.settings())
        fields[REGION_KEY] = self.region
        fields[STATUS_INTERVAL_KEY] = self.status_interval_s
        return fields

    def _config_set(self, seq, asked, now_ms):
        applied = self.apply(dict(asked), now_ms)
        if not applied:
            self._nak(seq, sp.NAK_BAD_CONFIG)
            return
        in_force = self.in_force()
        self._emit(sp.CONFIG, seq, {"fields": [(k, in_force[k]) for k, _ in asked if k in applied]})

    def _config_get(self, seq, keys):
        in_force = self.in_force()
        keys = keys or sorted(in_force)
        self._emit(sp.CONFIG, seq, {"fields": [(k, in_force[k]) for k in keys if k in in_force]})

    def apply(self, asked, now_ms):
        """Apply ``asked`` ({key: value}); return the set of keys applied."""
        applied = set()
        new_region = asked.get(REGION_KEY, self.region)
        frequency = asked.get(FREQUENCY_KEY, self.radio.settings().get(FREQUENCY_KEY))
        if not self._region_ok(new_region, frequency):
            asked.pop(REGION_KEY, None)
            frequency = asked.pop(FREQUENCY_KEY, None)  # it would leave the band of the region...
            if frequency is not None and self._region_ok(self.region, frequency):
                asked[FREQUENCY_KEY] = frequency  # ...unless it fits the band of the one in force
            self.log(
                LOG_WARNING, "region %r and frequency %r do not match: not applied" % (new_region, frequency)
            )
        if REGION_KEY in asked:
            self.region = asked.pop(REGION_KEY)
            _, _, _, ppm, dwell = region(self.region)
            self.ledger.set_limits(ppm, dwell)
            applied.add(REGION_KEY)
        if STATUS_INTERVAL_KEY in asked:
            self.status_interval_s = asked.pop(STATUS_INTERVAL_KEY)
            self._status_at = now_ms + self.status_interval_s * 1000 if self.status_interval_s else None
            applied.add(STATUS_INTERVAL_KEY)
        if asked:
            for key in self.radio.configure(asked):
                applied.add(key)
        return applied

    def _region_ok(self, code, frequency):
        try:
            region(code)
        except ValueError:
            return False
        if FREQUENCY_KEY not in self.radio.settings():
            return True  # ESP-NOW: no frequency to check
        return frequency is not None and region_contains(code, frequency)

    # ------------------------------------------------------------------ transmitting

    def _run(self, now_ms):
        if self._status_at is not None and now_ms >= self._status_at:
            self._emit(sp.STATUS, self._own_seq(), self.status(now_ms))
            self._status_at = now_ms + self.status_interval_s * 1000
        if self._sending is not None:
            if now_ms < self._sending[2]:
                return
            self.counters["radio_errors"] += 1
            self.log(LOG_ERROR, "the radio did not report the end of a transmission: given up")
            self._finish(now_ms)
        while self._queue and self._sending is None and now_ms >= self._next_try:
            self._try_head(now_ms)

    def _try_head(self, now_ms):
        head = self._queue[0]
        seq, payload = head[0], head[1]
        try:
            airtime_us = self.radio.airtime_us(len(payload)) if len(payload) <= self.radio.mtu else None
        except AirtimeError:
            airtime_us = None
        if airtime_us is None or not self.ledger.fits(airtime_us):
            self._refuse(sp.NAK_TOO_LONG)
            return
        now_us = now_ms * 1000
        busy = self.ledger.busy_until
        if busy is not None and now_us < busy:  # the radio said done a moment before its airtime ended
            self._next_try = -(-busy // 1000)
            return
        if not self.ledger.can_send(now_us, airtime_us):
            ready = self.ledger.ready_at(now_us, airtime_us)
            self._refuse(sp.NAK_DUTY_CYCLE, -(-(ready - now_us) // 1000))
            return
        if head[2] < MAX_LBT_DEFERRALS and self.radio.channel_busy():
            head[2] += 1
            self.counters["lbt_deferred"] += 1
            self._next_try = now_ms + self._backoff_ms()
            return
        if head[2] >= MAX_LBT_DEFERRALS:
            self.counters["lbt_gave_up"] += 1
        try:
            self.radio.send(payload)
        except OSError as exc:
            self.counters["radio_errors"] += 1
            self.log(LOG_ERROR, "radio send failed: %s: %s" % (type(exc).__name__, exc))
            self._refuse(sp.NAK_BAD_CONFIG)
            return
        self._queue.pop(0)
        self.ledger.record(now_us, airtime_us)
        self._sending = (seq, airtime_us, now_ms + -(-airtime_us // 1000) + TX_GUARD_MS)

    def _finish(self, now_ms):
        if self._sending is None:
            return
        seq, airtime_us, _ = self._sending
        self._sending = None
        self.counters["tx_done"] += 1
        self._emit(sp.TX_DONE, seq, {"airtime_us": airtime_us})
        self._credit()
        self._next_try = now_ms + self._backoff_ms() if self._queue else now_ms

    def _refuse(self, reason, wait_ms=0):
        seq = self._queue.pop(0)[0]
        self._nak(seq, reason, wait_ms)
        self._credit()

    def _backoff_ms(self):
        try:
            slot = self.radio.airtime_us(min(BACKOFF_FRAME, self.radio.mtu))
        except AirtimeError:
            slot = 1000
        # xorshift32: a cheap, seeded, allocation-free random number
        x = self._rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        return -(-(slot * (1 + x % BACKOFF_SLOTS)) // 1000)

    # ------------------------------------------------------------------ output

    def _nak(self, seq, reason, wait_ms=0):
        self.counters[_NAK_COUNTERS[reason]] += 1
        self._emit(sp.NAK, seq, {"reason": reason, "wait_ms": min(wait_ms, 0xFFFFFFFF)})

    def _credit(self):
        free = max(0, self.queue_capacity - self.queue_depth)
        self._emit(sp.CREDIT, self._own_seq(), {"free": free, "ack_seq": self._ack_seq})

    def _own_seq(self):
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        return seq

    def _emit(self, kind, seq, fields):
        self._out += sp.encode(kind, seq, fields)

    def _take(self):
        out = bytes(self._out)
        self._out = bytearray()
        return out

    def _boot(self, settings, now_ms):
        from dongle_settings import config_fields

        asked = config_fields(settings)
        frequency = asked[FREQUENCY_KEY]
        if FREQUENCY_KEY in self.radio.settings() and not self._region_ok(asked[REGION_KEY], frequency):
            # A LoRa radio's region follows its frequency's band; none: keep the strictest region.
            band = region_for(frequency)
            self.log(
                LOG_ERROR,
                "dongle.json: %r Hz is not in region %r; using region %r"
                % (frequency, asked[REGION_KEY], band),
            )
            asked[REGION_KEY] = self.region if band is None else band
        applied = self.apply(dict(asked), now_ms)
        missing = [k for k in asked if k not in applied and k in self.in_force()]
        if missing:
            self.log(LOG_WARNING, "dongle.json: keys %r not applied at boot" % (missing,))


_NAK_COUNTERS = {
    sp.NAK_QUEUE_FULL: "nak_queue_full",
    sp.NAK_DUTY_CYCLE: "nak_duty_cycle",
    sp.NAK_TOO_LONG: "nak_too_long",
    sp.NAK_BAD_CONFIG: "nak_bad_config",
    sp.NAK_MALFORMED: "nak_malformed",
}
