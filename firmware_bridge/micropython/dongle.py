"""The dongle's core: the serial protocol's dongle side over one radio, without I/O.

MicroPython and CPython (the emulator, ``agent/sim/dongles.py``, runs this very file). Fed the
bytes read from the host and what the radio hears, with a millisecond clock passed in; returns the
bytes to write to the host. ``dongle_main.py`` wires it to a UART and a real radio.

    core = Dongle(radio, identity, now_ms)
    out = core.from_host(data, now_ms)        # bytes read from the host -> bytes to write
    out = core.heard(payload, rssi, snr, now_ms)   # a radio frame -> an RX frame
    out = core.poll(now_ms)                   # time passed: start, finish, report
    core.next_poll_ms(now_ms)                 # when poll() has something to do (None: nothing)

**The radio** is any object with:

- ``kind`` (1 SX127x, 2 SX126x, 3 ESP-NOW) and ``mtu`` (largest payload);
- ``configure(fields)`` -> the fields now in force, a dict key -> value: a value clamped is
  returned clamped, a key the radio cannot apply is left out;
- ``airtime_us(length)``: one frame's time on air with the settings in force (``airtime.py``);
- ``transmit(payload)``: start sending; the core counts the frame as on the air for its airtime;
- ``channel_busy()``: channel activity detection where the radio has it, else ``False``;
- ``noise_floor_dbm()``: an int, or ``None`` when not measured.

**What it enforces** (docs/SERIAL_PROTOCOL.md): at most ``queue_capacity`` TX frames queued (a TX
beyond is NAK queue full); a TX over the MTU or the region's dwell limit is NAK too long; a TX that
would take the transmitter past the region's duty cycle over the last hour is NAK duty cycle with
the wait until it could go — whatever the host asks, counted with the same airtime formula. Airtime
is kept in 10-second slots over the hour (361 integers), each frame in the slot where it ends: a
slot leaves the window only once all of it is older than an hour, so the count is never below the
truth. Listen before talk: a busy channel defers the next frame by a random 1..8 short frames.
"""

try:
    import serial_protocol as sp
except ImportError:  # CPython: the host's loader (agent/sim/dongles.py) imports the package path
    from firmware_bridge.micropython import serial_protocol as sp

#: Region code -> (duty cycle in parts per million over an hour, dwell limit in ms, 0: none).
#: The same limits as the host's agent/core/duty_cycle.py (a test keeps them equal).
REGION_LIMITS = {
    0: (1000000, 0),  # none (ESP-NOW, 2.4 GHz)
    1: (10000, 0),  # EU868 g1: 1 %
    2: (1000, 0),  # EU868 g2: 0.1 %
    3: (100000, 0),  # EU868 g3: 10 %
    4: (1000000, 400),  # US915: 400 ms dwell per transmission
}
WINDOW_MS = 3600000
SLOT_MS = 10000
SLOTS = WINDOW_MS // SLOT_MS + 1  # the window's slots and the one it starts in
SHORT_MS = 60000
DEFAULT_QUEUE = 8


class DutyLedger:
    """Airtime sent over the last hour, in fixed slots (bounded memory whatever is sent)."""

    def __init__(self):
        self._slots = [0] * SLOTS
        self._stamp = [-1] * SLOTS  # which slot number each entry holds

    def _index(self, slot):
        return slot % SLOTS

    def record(self, end_ms, airtime_ms):
        """A frame that ends at ``end_ms`` (counted in that slot: never leaves early)."""
        slot = end_ms // SLOT_MS
        i = self._index(slot)
        if self._stamp[i] != slot:
            self._stamp[i] = slot
            self._slots[i] = 0
        self._slots[i] += airtime_ms

    def used(self, now_ms, span_ms=WINDOW_MS):
        """Airtime (ms) in slots that overlap the last ``span_ms``."""
        newest = now_ms // SLOT_MS
        oldest = (now_ms - span_ms) // SLOT_MS
        total = 0
        for i in range(SLOTS):
            if oldest <= self._stamp[i] <= newest:
                total += self._slots[i]
        return total

    def wait_ms(self, now_ms, need_ms, allowance_ms):
        """How long until ``need_ms`` more fits the allowance (0: now)."""
        used = self.used(now_ms)
        if used + need_ms <= allowance_ms:
            return 0
        newest = now_ms // SLOT_MS
        oldest = (now_ms - WINDOW_MS) // SLOT_MS
        held = sorted(
            (self._stamp[i], self._slots[i]) for i in range(SLOTS) if oldest <= self._stamp[i] <= newest
        )
        for slot, amount in held:
            used -= amount
            if used + need_ms <= allowance_ms:
                return (slot + 1) * SLOT_MS + WINDOW_MS - now_ms
        return WINDOW_MS


class Dongle:
    """The serial protocol's dongle side (see the module docstring)."""

    def __init__(self, radio, identity, now_ms, rng=None):
        """``identity``: a dict with ``firmware_version`` (3 ints), ``dongle_id`` (bytes),
        ``queue_capacity`` (1..64) and ``region`` (a region code); ``rng(n)`` gives 0..n-1."""
        self.radio = radio
        self.firmware_version = tuple(identity["firmware_version"])
        self.dongle_id = bytes(identity["dongle_id"])
        self.capacity = max(1, min(sp.MAX_QUEUE, identity.get("queue_capacity", DEFAULT_QUEUE)))
        self.region = identity.get("region", 0)
        self.status_interval_s = 0
        self.decoder = sp.Decoder()
        self.ledger = DutyLedger()
        self.queue = []  # (seq, payload) waiting for the radio
        self.sending = None  # (seq, airtime_us, end_ms) on the air
        self.defer_until = 0
        self.last_host_seq = 0
        self.seq = 0
        self.status_due = None
        self.counts = {"tx": 0, "nak": 0, "rx": 0, "lbt_deferred": 0}
        self._rng = rng or _counter_rng()
        self.last_byte_ms = now_ms

    # ------------------------------------------------------------ output helpers

    def _own(self, kind, fields):
        self.seq = (self.seq + 1) & 0xFF
        return sp.encode(kind, self.seq, fields)

    def _credit(self):
        free = self.capacity - len(self.queue) - (1 if self.sending else 0)
        return self._own(sp.CREDIT, {"free": max(0, free), "ack_seq": self.last_host_seq})

    def _nak(self, seq, reason, wait_ms=0):
        self.counts["nak"] += 1
        return sp.encode(sp.NAK, seq, {"reason": reason, "wait_ms": min(wait_ms, 2**32 - 1)})

    def log(self, level, text):
        """A LOG frame (text cut to what one frame carries)."""
        raw = text.encode("utf-8")[: sp.MAX_LOG_TEXT]
        return self._own(sp.LOG, {"level": level, "text": raw.decode("utf-8", "ignore")})

    def info_fields(self):
        ppm, dwell = REGION_LIMITS.get(self.region, (1000000, 0))
        return {
            "firmware_version": self.firmware_version,
            "radio": self.radio.kind,
            "mtu": self.radio.mtu,
            "region": self.region,
            "duty_cycle_ppm": ppm,
            "dwell_ms": dwell,
            "queue_capacity": self.capacity,
            "dongle_id": self.dongle_id,
        }

    # ------------------------------------------------------------ input

    def from_host(self, data, now_ms):
        """Bytes read from the host; returns the bytes to write back."""
        self.last_byte_ms = now_ms
        out = []
        for kind, seq, fields in self.decoder.feed(data):
            self.last_host_seq = seq
            out.append(self._handle(kind, seq, fields, now_ms))
        return b"".join(out)

    def idle(self):
        """No byte for FRAME_SILENCE_MS: drop half a frame."""
        self.decoder.idle()

    def _handle(self, kind, seq, fields, now_ms):
        if kind == sp.HELLO:
            return sp.encode(sp.INFO, seq, self.info_fields()) + self._credit()
        if kind == sp.CONFIG_SET:
            return self._configure(seq, fields["fields"], now_ms)
        if kind == sp.CONFIG_GET:
            keys = fields["keys"] or sorted(sp.CONFIG_FORMATS)
            current = self._in_force()
            return sp.encode(sp.CONFIG, seq, {"fields": [(k, current[k]) for k in keys if k in current]})
        if kind == sp.TX:
            return self._enqueue(seq, fields["payload"], now_ms)
        if kind == sp.STATUS_GET:
            return sp.encode(sp.STATUS, seq, self._status_fields(now_ms))
        return b""  # a dongle-to-host type sent to us: ignored (the host never does this)

    def _in_force(self):
        current = dict(self.radio.configure({}))
        current[1] = self.region
        current[10] = self.status_interval_s
        return current

    def _configure(self, seq, asked, now_ms):
        radio_fields = {}
        applied = {}
        for key, value in asked:
            if key == 1:
                if value in REGION_LIMITS:
                    self.region = value
                    applied[key] = value
            elif key == 10:
                self.status_interval_s = value
                self.status_due = now_ms + 1000 * value if value else None
                applied[key] = value
            else:
                radio_fields[key] = value
        if radio_fields:
            in_force = self.radio.configure(radio_fields)
            for key in radio_fields:
                if key in in_force:
                    applied[key] = in_force[key]
        if not applied:
            return self._nak(seq, sp.NAK_BAD_CONFIG)
        # The echo: every field asked for, as now in force, in the order asked.
        echo = [(key, applied[key]) for key, _ in asked if key in applied]
        return sp.encode(sp.CONFIG, seq, {"fields": echo})

    def _enqueue(self, seq, payload, now_ms):
        dwell_ms = REGION_LIMITS.get(self.region, (1000000, 0))[1]
        if len(payload) > self.radio.mtu:
            return self._nak(seq, sp.NAK_TOO_LONG) + self._credit()
        airtime_ms = -(-self.radio.airtime_us(len(payload)) // 1000)
        if dwell_ms and airtime_ms > dwell_ms:
            return self._nak(seq, sp.NAK_TOO_LONG) + self._credit()
        if len(self.queue) + (1 if self.sending else 0) >= self.capacity:
            return self._nak(seq, sp.NAK_QUEUE_FULL) + self._credit()
        self.queue.append((seq, bytes(payload)))
        return self.poll(now_ms)

    def heard(self, payload, rssi_dbm, snr_db, now_ms):
        """A frame the radio received; returns the RX frame for the host."""
        if not 1 <= len(payload) <= sp.MAX_RADIO_PAYLOAD:
            return b""
        self.counts["rx"] += 1
        snr = None if snr_db is None else max(-32767, min(32767, round(snr_db * 4)))
        rssi = max(-32768, min(32767, round(rssi_dbm)))
        fields = {"rssi_dbm": rssi, "snr_qdb": snr, "time_ms": now_ms & 0xFFFFFFFF, "payload": payload}
        return self._own(sp.RX, fields)

    # ------------------------------------------------------------ time

    def poll(self, now_ms):
        """Finish the frame on the air, start the next one, send STATUS when due."""
        out = []
        if self.sending is not None and now_ms >= self.sending[2]:
            seq, airtime_us, _ = self.sending
            self.sending = None
            out.append(sp.encode(sp.TX_DONE, seq, {"airtime_us": airtime_us}))
            out.append(self._credit())
        while self.sending is None and self.queue and now_ms >= self.defer_until:
            seq, payload = self.queue[0]
            airtime_us = self.radio.airtime_us(len(payload))
            airtime_ms = -(-airtime_us // 1000)
            ppm, _ = REGION_LIMITS.get(self.region, (1000000, 0))
            allowance_ms = WINDOW_MS * ppm // 1000000
            wait = self.ledger.wait_ms(now_ms, airtime_ms, allowance_ms) if ppm < 1000000 else 0
            if wait:
                self.queue.pop(0)
                out.append(self._nak(seq, sp.NAK_DUTY_CYCLE, wait))
                out.append(self._credit())
                continue
            if self.radio.channel_busy():
                self.counts["lbt_deferred"] += 1
                self.defer_until = now_ms + max(1, (1 + self._rng(8)) * self._short_frame_ms())
                break
            self.queue.pop(0)
            self.radio.transmit(payload)
            self.ledger.record(now_ms + airtime_ms, airtime_ms)
            self.counts["tx"] += 1
            self.sending = (seq, airtime_us, now_ms + airtime_ms)
        if self.status_due is not None and now_ms >= self.status_due:
            self.status_due = now_ms + 1000 * self.status_interval_s
            out.append(self._own(sp.STATUS, self._status_fields(now_ms)))
        return b"".join(out)

    def _short_frame_ms(self):
        return -(-self.radio.airtime_us(32) // 1000)

    def next_poll_ms(self, now_ms):
        """When :meth:`poll` next has something to do, or ``None``."""
        due = []
        if self.sending is not None:
            due.append(self.sending[2])
        elif self.queue:
            due.append(max(now_ms, self.defer_until))
        if self.status_due is not None:
            due.append(self.status_due)
        return min(due) if due else None

    def _status_fields(self, now_ms):
        return {
            "airtime_short_ms": self.ledger.used(now_ms, SHORT_MS),
            "airtime_long_ms": self.ledger.used(now_ms),
            "queue_depth": len(self.queue) + (1 if self.sending else 0),
            "queue_capacity": self.capacity,
            "noise_floor_dbm": self.radio.noise_floor_dbm(),
        }


def _counter_rng():
    state = [12345]

    def rng(n):
        # A small LCG: LBT back-off only needs spread, not secrecy (real firmware passes os.urandom).
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] % n

    return rng
