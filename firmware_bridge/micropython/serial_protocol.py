"""The dongle's side of the serial protocol to the host (docs/SERIAL_PROTOCOL.md).

The same framing, CRC and messages as the host's ``firmware_bridge/protocol.py`` (its docstring
has the byte layout), for MicroPython: no dataclasses, no typing, one frame of buffer. It runs
under CPython too (the emulator imports this very file). Messages are dicts with the host's field
names; byte fields are ``bytes``, enums plain ints, "not measured" is ``None``::

    wire = encode(INFO, seq, {"protocol_version": 1, "firmware_version": (0, 1, 0), ...})
    dec = Decoder()
    for kind, seq, fields in dec.feed(uart.read() or b""):   # never raises
        ...
    dec.idle()   # after FRAME_SILENCE_MS without a byte: drop half a frame
    dec.stats    # {"frames": ..., "bad_crc": ..., ...}, as the host counts

``encode`` raises ``ProtocolError`` (a ``ValueError``) for a message the host would refuse.
"""

import struct

PROTOCOL_VERSION = 1
MAGIC = b"PRES"
MAX_PAYLOAD = 300
MAX_FRAME = 2 + MAX_PAYLOAD + 2
MAX_RADIO_PAYLOAD = 255
RX_HEADER = 8
MAX_DONGLE_ID = 16
MAX_LOG_TEXT = MAX_PAYLOAD - 1
MAX_QUEUE = 64
FRAME_SILENCE_MS = 100
NOT_MEASURED = -32768

FEND = 0xC0
FESC = 0xDB
TFEND = 0xDC
TFESC = 0xDD

HELLO = 0x01
INFO = 0x02
CONFIG_SET = 0x10
CONFIG_GET = 0x11
CONFIG = 0x12
TX = 0x20
TX_DONE = 0x21
NAK = 0x22
CREDIT = 0x23
RX = 0x30
STATUS_GET = 0x31
STATUS = 0x32
LOG = 0x40
TYPES = (HELLO, INFO, CONFIG_SET, CONFIG_GET, CONFIG, TX, TX_DONE, NAK, CREDIT, RX, STATUS_GET, STATUS, LOG)

RADIOS = (1, 2, 3)  # SX127x, SX126x, ESP-NOW
REGIONS = (0, 1, 2, 3, 4)  # none, EU868 g1, g2, g3, US915
NAK_QUEUE_FULL = 1
NAK_DUTY_CYCLE = 2
NAK_TOO_LONG = 3
NAK_BAD_CONFIG = 4
NAK_MALFORMED = 5
NAK_REASONS = (1, 2, 3, 4, 5)
LOG_LEVELS = (0, 1, 2, 3)

#: CONFIG key -> struct format of its value (see the host's ConfigKey for the meanings).
CONFIG_FORMATS = {
    1: ">B",  # REGION
    2: ">I",  # FREQUENCY_HZ
    3: ">I",  # BANDWIDTH_HZ
    4: ">B",  # SPREADING_FACTOR
    5: ">B",  # CODING_RATE
    6: ">b",  # TX_POWER_DBM
    7: ">H",  # PREAMBLE_SYMBOLS
    8: ">B",  # SYNC_WORD
    9: ">B",  # CHANNEL
    10: ">H",  # STATUS_INTERVAL_S
}
_SIZES = {">B": 1, ">b": 1, ">H": 2, ">I": 4}

STATS = (
    "frames",
    "garbage_bytes",
    "bad_crc",
    "bad_escape",
    "runt",
    "oversize",
    "unknown_type",
    "malformed",
    "dropped_idle",
)

_INFO = ">4sBBBBBHBIHBB"
_INFO_SIZE = 20
_STATUS = ">IIBBh"


class ProtocolError(ValueError):
    pass


def _make_table():
    table = bytearray(512)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
        table[2 * i] = crc >> 8
        table[2 * i + 1] = crc & 0xFF
    return bytes(table)


_TABLE = _make_table()


def crc16(data):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): 0x29B1 for b"123456789"."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        i = 2 * ((crc >> 8) ^ byte)
        crc = ((crc << 8) & 0xFFFF) ^ ((table[i] << 8) | table[i + 1])
    return crc


def _check(ok, message):
    if not ok:
        raise ProtocolError(message)


def _ranged(value, low, high, what):
    _check(
        isinstance(value, int) and low <= value <= high, "%s %r is not in %d..%d" % (what, value, low, high)
    )
    return value


def _radio(payload, what):
    _check(1 <= len(payload) <= MAX_RADIO_PAYLOAD, "%s radio payload is %d bytes" % (what, len(payload)))
    return bytes(payload)


def _measured(value):
    return NOT_MEASURED if value is None else value


def _optional(value):
    return None if value == NOT_MEASURED else value


def _encode_fields(fields, what):
    out = bytearray()
    seen = []
    for key, value in fields:
        _check(key in CONFIG_FORMATS, "%s: unknown config key %r" % (what, key))
        _check(key not in seen, "%s: key %d appears twice" % (what, key))
        seen.append(key)
        fmt = CONFIG_FORMATS[key]
        _ranged(value, *_BOUNDS[fmt], what="%s key %d" % (what, key))
        out += bytes((key, _SIZES[fmt])) + struct.pack(fmt, value)
    return bytes(out)


_BOUNDS = {">B": (0, 255), ">b": (-128, 127), ">H": (0, 65535), ">I": (0, 2**32 - 1)}


def _decode_fields(payload, what):
    fields = []
    seen = []
    at = 0
    while at < len(payload):
        _check(at + 2 <= len(payload), "%s: a field header is cut" % what)
        key = payload[at]
        _check(key in CONFIG_FORMATS, "%s: unknown config key %d" % (what, key))
        fmt = CONFIG_FORMATS[key]
        size = _SIZES[fmt]
        _check(payload[at + 1] == size and at + 2 + size <= len(payload), "%s: bad length" % what)
        _check(key not in seen, "%s: key %d appears twice" % (what, key))
        seen.append(key)
        fields.append((key, struct.unpack(fmt, payload[at + 2 : at + 2 + size])[0]))
        at += 2 + size
    return fields


def _encode_info(f):
    dongle_id = bytes(f["dongle_id"])
    _ranged(len(dongle_id), 1, MAX_DONGLE_ID, "INFO dongle id length")
    _ranged(f["queue_capacity"], 1, MAX_QUEUE, "INFO queue capacity")
    _ranged(f["mtu"], 1, MAX_RADIO_PAYLOAD, "INFO mtu")
    _ranged(f["duty_cycle_ppm"], 0, 1000000, "INFO duty cycle ppm")
    _check(f["radio"] in RADIOS, "INFO: unknown radio %r" % f["radio"])
    _check(f["region"] in REGIONS, "INFO: unknown region %r" % f["region"])
    major, minor, patch = f["firmware_version"]
    version = f.get("protocol_version", PROTOCOL_VERSION)
    for value in (version, major, minor, patch):
        _ranged(value, 0, 255, "INFO version")
    _ranged(f["dwell_ms"], 0, 65535, "INFO dwell")
    head = struct.pack(
        _INFO, MAGIC, version, major, minor, patch, f["radio"], f["mtu"], f["region"],
        f["duty_cycle_ppm"], f["dwell_ms"], f["queue_capacity"], len(dongle_id),
    )  # fmt: skip
    return head + dongle_id


def _decode_info(p):
    _check(len(p) >= 5 and p[:4] == MAGIC, "INFO: not a presence-agent dongle (magic)")
    if p[4] != PROTOCOL_VERSION:
        return {"protocol_version": p[4]}  # another layout may follow: read no further
    _check(len(p) >= _INFO_SIZE, "INFO payload is %d bytes" % len(p))
    _, version, major, minor, patch, radio, mtu, region, ppm, dwell, queue, id_len = struct.unpack(
        _INFO, p[:_INFO_SIZE]
    )
    _check(len(p) == _INFO_SIZE + id_len, "INFO payload is %d bytes" % len(p))
    f = {
        "protocol_version": version,
        "firmware_version": (major, minor, patch),
        "radio": radio,
        "mtu": mtu,
        "region": region,
        "duty_cycle_ppm": ppm,
        "dwell_ms": dwell,
        "queue_capacity": queue,
        "dongle_id": bytes(p[_INFO_SIZE:]),
    }
    _encode_info(f)  # the same range checks as the sender's
    return f


def encode_payload(kind, f):
    """The payload of a message of type ``kind`` with fields ``f`` (a dict)."""
    if kind == HELLO:
        return MAGIC + bytes((_ranged(f.get("version", PROTOCOL_VERSION), 0, 255, "HELLO version"),))
    if kind == INFO:
        return _encode_info(f)
    if kind in (CONFIG_SET, CONFIG):
        return _encode_fields(f["fields"], "CONFIG")
    if kind == CONFIG_GET:
        for key in f.get("keys", ()):
            _check(key in CONFIG_FORMATS, "CONFIG_GET: unknown config key %r" % key)
        return bytes(f.get("keys", ()))
    if kind == TX:
        return _radio(f["payload"], "TX")
    if kind == TX_DONE:
        return struct.pack(">I", _ranged(f["airtime_us"], 0, 2**32 - 1, "TX_DONE airtime"))
    if kind == NAK:
        _check(f["reason"] in NAK_REASONS, "NAK: unknown reason %r" % f["reason"])
        return struct.pack(">BI", f["reason"], _ranged(f.get("wait_ms", 0), 0, 2**32 - 1, "NAK wait"))
    if kind == CREDIT:
        return bytes((_ranged(f["free"], 0, MAX_QUEUE, "CREDIT"), _ranged(f["ack_seq"], 0, 255, "ack_seq")))
    if kind == RX:
        _ranged(f["rssi_dbm"], -32768, 32767, "RX rssi")
        snr = _ranged(_measured(f["snr_qdb"]), -32768, 32767, "RX snr")
        head = struct.pack(">hhI", f["rssi_dbm"], snr, _ranged(f["time_ms"], 0, 2**32 - 1, "RX time"))
        return head + _radio(f["payload"], "RX")
    if kind == STATUS_GET:
        return b""
    if kind == STATUS:
        for name in ("airtime_short_ms", "airtime_long_ms"):
            _ranged(f[name], 0, 2**32 - 1, "STATUS " + name)
        noise = _ranged(_measured(f["noise_floor_dbm"]), -32768, 32767, "STATUS noise floor")
        depth = _ranged(f["queue_depth"], 0, 255, "STATUS queue depth")
        capacity = _ranged(f["queue_capacity"], 0, 255, "STATUS queue capacity")
        return struct.pack(_STATUS, f["airtime_short_ms"], f["airtime_long_ms"], depth, capacity, noise)
    if kind == LOG:
        _check(f["level"] in LOG_LEVELS, "LOG: unknown level %r" % f["level"])
        raw = f["text"].encode("utf-8")
        _check(len(raw) <= MAX_LOG_TEXT, "LOG text is %d bytes, at most %d" % (len(raw), MAX_LOG_TEXT))
        return bytes((f["level"],)) + raw
    raise ProtocolError("unknown frame type %r" % kind)


def _exact(p, size, what):
    _check(len(p) == size, "%s payload is %d bytes, expected %d" % (what, len(p), size))


def decode_payload(kind, p):
    """The fields (a dict) of a message of type ``kind``; raises ProtocolError as the host would."""
    if kind == HELLO:
        _check(len(p) == 5 and p[:4] == MAGIC, "HELLO: bad magic or length")
        return {"version": p[4]}
    if kind == INFO:
        return _decode_info(p)
    if kind in (CONFIG_SET, CONFIG):
        return {"fields": _decode_fields(p, "CONFIG")}
    if kind == CONFIG_GET:
        for key in p:
            _check(key in CONFIG_FORMATS, "CONFIG_GET: unknown config key %d" % key)
        return {"keys": list(p)}
    if kind == TX:
        return {"payload": _radio(p, "TX")}
    if kind == TX_DONE:
        _exact(p, 4, "TX_DONE")
        return {"airtime_us": struct.unpack(">I", p)[0]}
    if kind == NAK:
        _exact(p, 5, "NAK")
        reason, wait = struct.unpack(">BI", p)
        _check(reason in NAK_REASONS, "NAK: unknown reason %d" % reason)
        return {"reason": reason, "wait_ms": wait}
    if kind == CREDIT:
        _exact(p, 2, "CREDIT")
        _check(p[0] <= MAX_QUEUE, "CREDIT of %d" % p[0])
        return {"free": p[0], "ack_seq": p[1]}
    if kind == RX:
        _check(len(p) > RX_HEADER, "RX payload is %d bytes" % len(p))
        rssi, snr, time_ms = struct.unpack(">hhI", p[:RX_HEADER])
        return {
            "rssi_dbm": rssi,
            "snr_qdb": _optional(snr),
            "time_ms": time_ms,
            "payload": _radio(p[RX_HEADER:], "RX"),
        }
    if kind == STATUS_GET:
        _exact(p, 0, "STATUS_GET")
        return {}
    if kind == STATUS:
        _exact(p, 12, "STATUS")
        short, long, depth, capacity, noise = struct.unpack(_STATUS, p)
        return {
            "airtime_short_ms": short,
            "airtime_long_ms": long,
            "queue_depth": depth,
            "queue_capacity": capacity,
            "noise_floor_dbm": _optional(noise),
        }
    if kind == LOG:
        _check(len(p) >= 1 and p[0] in LOG_LEVELS, "LOG: no level or an unknown one")
        try:
            text = bytes(p[1:]).decode("utf-8")
        except UnicodeError:
            raise ProtocolError("LOG text is not UTF-8") from None
        return {"level": p[0], "text": text}
    raise ProtocolError("unknown frame type %r" % kind)


def encode_frame(kind, seq, payload):
    """One frame on the wire: FEND, the escaped ``type | seq | payload | CRC``, FEND."""
    _check(len(payload) <= MAX_PAYLOAD, "a payload of %d bytes exceeds %d" % (len(payload), MAX_PAYLOAD))
    _check(0 <= kind <= 255 and 0 <= seq <= 255, "type and seq are one byte each")
    body = bytearray((kind, seq))
    body += payload
    crc = crc16(body)
    body.append(crc >> 8)
    body.append(crc & 0xFF)
    out = bytearray(b"\xc0")
    for byte in body:
        if byte == FEND:
            out += b"\xdb\xdc"
        elif byte == FESC:
            out += b"\xdb\xdd"
        else:
            out.append(byte)
    out.append(FEND)
    return bytes(out)


def encode(kind, seq, fields):
    """A message as one frame on the wire."""
    return encode_frame(kind, seq, encode_payload(kind, fields))


class Decoder:
    """Streaming decoder, as the host's: ``feed(data)`` returns ``[(type, seq, fields), ...]`` and
    never raises; it holds at most MAX_FRAME bytes; what it drops is counted in ``stats``."""

    def __init__(self):
        self.stats = {name: 0 for name in STATS}
        self._frame = bytearray(MAX_FRAME)  # preallocated: no allocation per byte
        self._len = 0
        self._escaped = False
        self._hunting = True

    def idle(self):
        if self._len or self._escaped:
            self.stats["dropped_idle"] += 1
        self._reset(True)

    def _reset(self, hunting):
        self._len = 0
        self._escaped = False
        self._hunting = hunting

    def _append(self, byte):
        if self._len >= MAX_FRAME:
            self.stats["oversize"] += 1
            self._reset(True)
        else:
            self._frame[self._len] = byte
            self._len += 1

    def feed(self, data):
        out = []
        stats = self.stats
        for byte in data:
            if byte == FEND:
                if not self._hunting and (self._len or self._escaped):
                    self._complete(out)
                self._reset(False)
            elif self._hunting:
                stats["garbage_bytes"] += 1
            elif self._escaped:
                self._escaped = False
                if byte == TFEND:
                    self._append(FEND)
                elif byte == TFESC:
                    self._append(FESC)
                else:
                    stats["bad_escape"] += 1
                    self._reset(True)
            elif byte == FESC:
                self._escaped = True
            else:
                self._append(byte)
        return out

    def _complete(self, out):
        stats = self.stats
        n = self._len
        frame = memoryview(self._frame)[:n]
        if self._escaped:
            stats["bad_escape"] += 1
        elif n < 4:
            stats["runt"] += 1
        elif crc16(frame[: n - 2]) != (frame[n - 2] << 8) | frame[n - 1]:
            stats["bad_crc"] += 1
        elif frame[0] not in TYPES:
            stats["unknown_type"] += 1
        else:
            try:
                fields = decode_payload(frame[0], bytes(frame[2 : n - 2]))
            except (ProtocolError, ValueError, IndexError):
                stats["malformed"] += 1
            else:
                stats["frames"] += 1
                out.append((frame[0], frame[1], fields))
