"""The serial protocol between the host and a radio dongle: framing, CRC, messages (pure, no I/O).

docs/SERIAL_PROTOCOL.md is the implementer's description; this docstring is the byte layout, and
``firmware_bridge/micropython/serial_protocol.py`` is the same protocol for the dongle's firmware.

Framing (KISS/SLIP style)::

    FEND | escape(type(1) | seq(1) | payload(0..300) | crc(2)) | FEND

``FEND`` is 0xC0; inside a frame 0xC0 is sent as ``FESC TFEND`` (0xDB 0xDC) and 0xDB as ``FESC
TFESC`` (0xDB 0xDD). Every frame starts *and* ends with FEND, so whatever came before it (boot noise,
half a frame from before a reset) ends at its first FEND and is thrown away there. ``crc`` is
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor; check value 0x29B1 for
``b"123456789"``), big-endian, over ``type | seq | payload``. All integers are big-endian; ``i8``,
``i16`` are two's complement.

``seq`` is the sender's frame counter (mod 256). An answer (INFO, CONFIG, TX_DONE, NAK, STATUS when
asked) carries the seq of the host frame it answers; frames the dongle sends on its own (RX, STATUS,
CREDIT, LOG) carry the dongle's own counter.

Payloads, by type (host -> dongle: H>D; dongle -> host: D>H)::

    0x01 HELLO      H>D  magic "PRES"(4) | version u8
    0x02 INFO       D>H  magic "PRES"(4) | version u8 | firmware major u8 | minor u8 | patch u8
                         | radio u8 (1 SX127x, 2 SX126x, 3 ESP-NOW) | mtu u16 | region u8
                         | duty_cycle_ppm u32 | dwell_ms u16 (0: none) | queue_capacity u8
                         | id_len u8 | dongle_id(id_len, 1..16)
                         (magic and version are at these offsets in every version, forever)
    0x10 CONFIG_SET H>D  { key u8 | len u8 | value(len) }*   values per ConfigKey (width, sign)
    0x11 CONFIG_GET H>D  key u8 *   (none: every key)
    0x12 CONFIG     D>H  { key u8 | len u8 | value(len) }*   what is now in force (the echo)
    0x20 TX         H>D  radio payload (1..mtu); needs a credit
    0x21 TX_DONE    D>H  airtime_us u32   (seq: the TX's)
    0x22 NAK        D>H  reason u8 | wait_ms u32   (seq: the refused frame's; wait 0: unknown)
    0x23 CREDIT     D>H  free u8 | ack_seq u8
    0x30 RX         D>H  rssi_dbm i16 | snr_qdb i16 (quarter dB; -32768: none) | time_ms u32
                         | radio payload (1..255)
    0x31 STATUS_GET H>D  (empty)
    0x32 STATUS     D>H  airtime_short_ms u32 (last 60 s) | airtime_long_ms u32 (last hour)
                         | queue_depth u8 | queue_capacity u8 | noise_floor_dbm i16 (-32768: none)
    0x40 LOG        D>H  level u8 (0 debug, 1 info, 2 warning, 3 error) | UTF-8 text

Flow control: the dongle's CREDIT says it had ``free`` TX slots once it had read the host frame
numbered ``ack_seq``; the host may have ``free`` minus (its TX frames sent after ``ack_seq``) TX
frames outstanding, and never sends a TX without one (:class:`Credits`). A CREDIT lost to a bad CRC
costs nothing: the next one states the whole window again.
"""

from __future__ import annotations

import binascii
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final, Self, TypeVar

from firmware_bridge.limits import (
    MAGIC,
    MAX_DONGLE_ID,
    MAX_FRAME,
    MAX_LOG_TEXT,
    MAX_PAYLOAD,
    MAX_QUEUE,
    MAX_RADIO_PAYLOAD,
    PROTOCOL_VERSION,
    RX_HEADER,
)

FEND: Final = 0xC0
FESC: Final = 0xDB
TFEND: Final = 0xDC
TFESC: Final = 0xDD
#: The quantity RX and STATUS send for "not measured" (SNR on ESP-NOW, a noise floor not sampled).
NOT_MEASURED: Final = -32768


class ProtocolError(ValueError):
    """A frame or message that breaks the serial protocol; the message says what and what was expected."""


class VersionMismatch(ProtocolError):
    """The dongle speaks another protocol version (its INFO says which)."""


class ConfigMismatch(ProtocolError):
    """The dongle's CONFIG echo differs from what the host asked for."""


class FrameType(IntEnum):
    """Frame types of protocol version 1. Never renumber; a new type is a new number."""

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


class RadioKind(IntEnum):
    SX127X = 1
    SX126X = 2
    ESP_NOW = 3


class RegionCode(IntEnum):
    """Regions on the wire; :data:`REGION_NAMES` maps them to ``agent.core.duty_cycle.REGIONS``."""

    NONE = 0
    EU868_G1 = 1
    EU868_G2 = 2
    EU868_G3 = 3
    US915 = 4


#: Wire region -> the name of its ``agent.core.duty_cycle.Region`` (the allowance and dwell table).
REGION_NAMES: Final = {
    RegionCode.NONE: "none",
    RegionCode.EU868_G1: "EU868 g1",
    RegionCode.EU868_G2: "EU868 g2",
    RegionCode.EU868_G3: "EU868 g3",
    RegionCode.US915: "US915",
}


class NakReason(IntEnum):
    QUEUE_FULL = 1
    DUTY_CYCLE = 2
    TOO_LONG = 3
    BAD_CONFIG = 4
    MALFORMED = 5


class LogLevel(IntEnum):
    DEBUG = 0
    INFO = 1
    WARNING = 2
    ERROR = 3


class ConfigKey(IntEnum):
    """CONFIG fields. Each value is an integer of the width and sign of :data:`CONFIG_FORMATS`."""

    REGION = 1  # u8, a RegionCode
    FREQUENCY_HZ = 2  # u32
    BANDWIDTH_HZ = 3  # u32
    SPREADING_FACTOR = 4  # u8, 5..12
    CODING_RATE = 5  # u8, the denominator of 4/5..4/8
    TX_POWER_DBM = 6  # i8
    PREAMBLE_SYMBOLS = 7  # u16
    SYNC_WORD = 8  # u8
    CHANNEL = 9  # u8, ESP-NOW's Wi-Fi channel
    STATUS_INTERVAL_S = 10  # u16, 0: STATUS only when asked


#: ``struct`` format (big-endian) of each key's value.
CONFIG_FORMATS: Final = {
    ConfigKey.REGION: ">B",
    ConfigKey.FREQUENCY_HZ: ">I",
    ConfigKey.BANDWIDTH_HZ: ">I",
    ConfigKey.SPREADING_FACTOR: ">B",
    ConfigKey.CODING_RATE: ">B",
    ConfigKey.TX_POWER_DBM: ">b",
    ConfigKey.PREAMBLE_SYMBOLS: ">H",
    ConfigKey.SYNC_WORD: ">B",
    ConfigKey.CHANNEL: ">B",
    ConfigKey.STATUS_INTERVAL_S: ">H",
}


E = TypeVar("E", bound=IntEnum)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``binascii.crc_hqx`` with init 0xFFFF is exactly it)."""
    return binascii.crc_hqx(data, 0xFFFF)


def _pack(fmt: str, what: str, *values: object) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error:
        raise ProtocolError(f"{what}: a value is out of range for its field ({values})") from None


def _enum(kind: type[E], value: int, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(f"{what}: unknown {kind.__name__} {value}") from None


def _length(payload: bytes, size: int, what: str, *, exact: bool = True) -> None:
    if len(payload) < size or (exact and len(payload) != size):
        relation = "" if exact else "at least "
        raise ProtocolError(f"{what} payload is {len(payload)} bytes, expected {relation}{size}")


def _radio_payload(payload: bytes, what: str) -> bytes:
    if not 1 <= len(payload) <= MAX_RADIO_PAYLOAD:
        raise ProtocolError(f"{what} radio payload is {len(payload)} bytes, expected 1..{MAX_RADIO_PAYLOAD}")
    return bytes(payload)


def _measured(value: int | None) -> int:
    return NOT_MEASURED if value is None else value


def _optional(value: int) -> int | None:
    return None if value == NOT_MEASURED else value


@dataclass(frozen=True, slots=True)
class Hello:
    """The host's detection probe; a dongle answers every HELLO with its INFO, whatever the version."""

    TYPE: ClassVar = FrameType.HELLO
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        return MAGIC + _pack(">B", "HELLO", self.version)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 5, "HELLO")
        if payload[:4] != MAGIC:
            raise ProtocolError(f"HELLO magic is {payload[:4].hex()}, expected {MAGIC.hex()}")
        return cls(payload[4])


@dataclass(frozen=True, slots=True)
class Info:
    """The dongle: what it is, what it may send, and the protocol version it speaks."""

    TYPE: ClassVar = FrameType.INFO
    firmware_version: tuple[int, int, int]
    radio: RadioKind
    mtu: int
    region: RegionCode
    #: The region's allowance as the dongle enforces it, in millionths (1 %: 10000; none: 1000000).
    duty_cycle_ppm: int
    #: Longest single transmission (ms); 0: no dwell limit.
    dwell_ms: int
    #: TX slots; CREDIT never grants more.
    queue_capacity: int
    dongle_id: bytes
    protocol_version: int = PROTOCOL_VERSION

    _LAYOUT: ClassVar = ">4sBBBBBHBIHBB"

    def encode(self) -> bytes:
        if not 1 <= len(self.dongle_id) <= MAX_DONGLE_ID:
            raise ProtocolError(f"INFO dongle id is {len(self.dongle_id)} bytes, expected 1..{MAX_DONGLE_ID}")
        if not 1 <= self.queue_capacity <= MAX_QUEUE:
            raise ProtocolError(f"INFO queue capacity {self.queue_capacity} is not in 1..{MAX_QUEUE}")
        if not 1 <= self.mtu <= MAX_RADIO_PAYLOAD:
            raise ProtocolError(f"INFO mtu {self.mtu} is not in 1..{MAX_RADIO_PAYLOAD}")
        if not 0 <= self.duty_cycle_ppm <= 1_000_000:
            raise ProtocolError(f"INFO duty cycle {self.duty_cycle_ppm} ppm is not in 0..1000000")
        major, minor, patch = self.firmware_version
        head = _pack(
            self._LAYOUT,
            "INFO",
            *(MAGIC, self.protocol_version, major, minor, patch, self.radio, self.mtu, self.region),
            *(self.duty_cycle_ppm, self.dwell_ms, self.queue_capacity, len(self.dongle_id)),
        )
        return head + self.dongle_id

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 5, "INFO", exact=False)
        if payload[:4] != MAGIC:
            raise ProtocolError(f"INFO magic is {payload[:4].hex()}, expected {MAGIC.hex()}")
        if payload[4] != PROTOCOL_VERSION:  # another layout may follow: read no further
            raise VersionMismatch(f"INFO is protocol version {payload[4]}, expected {PROTOCOL_VERSION}")
        size = struct.calcsize(cls._LAYOUT)
        _length(payload, size, "INFO", exact=False)
        _, version, major, minor, patch, radio, mtu, region, ppm, dwell, queue, id_len = struct.unpack(
            cls._LAYOUT, payload[:size]
        )
        _length(payload, size + id_len, "INFO")
        info = cls(
            (major, minor, patch),
            _enum(RadioKind, radio, "INFO"),
            mtu,
            _enum(RegionCode, region, "INFO"),
            ppm,
            dwell,
            queue,
            payload[size:],
            version,
        )
        info.encode()  # the same range checks as the sender's
        return info


@dataclass(frozen=True, slots=True)
class OtherVersion:
    """An INFO of another protocol version: only its version is read (``check_info`` refuses it)."""

    TYPE: ClassVar = FrameType.INFO
    protocol_version: int


def _encode_fields(fields: Iterable[tuple[ConfigKey, int]], what: str) -> bytes:
    out = bytearray()
    seen: set[int] = set()
    for key, value in fields:
        if key in seen:
            raise ProtocolError(f"{what}: key {ConfigKey(key).name} appears twice")
        seen.add(key)
        raw = _pack(CONFIG_FORMATS[ConfigKey(key)], f"{what} {ConfigKey(key).name}", value)
        out += bytes((key, len(raw))) + raw
    return bytes(out)


def _decode_fields(payload: bytes, what: str) -> tuple[tuple[ConfigKey, int], ...]:
    fields: list[tuple[ConfigKey, int]] = []
    at = 0
    while at < len(payload):
        if at + 2 > len(payload):
            raise ProtocolError(f"{what}: a field header is cut at byte {at}")
        key = _enum(ConfigKey, payload[at], what)
        fmt = CONFIG_FORMATS[key]
        if payload[at + 1] != struct.calcsize(fmt) or at + 2 + payload[at + 1] > len(payload):
            raise ProtocolError(
                f"{what} {key.name}: length {payload[at + 1]}, expected {struct.calcsize(fmt)}"
            )
        if any(k == key for k, _ in fields):
            raise ProtocolError(f"{what}: key {key.name} appears twice")
        (value,) = struct.unpack(fmt, payload[at + 2 : at + 2 + struct.calcsize(fmt)])
        fields.append((key, value))
        at += 2 + struct.calcsize(fmt)
    return tuple(fields)


@dataclass(frozen=True, slots=True)
class ConfigSet:
    """Set these fields; the dongle answers with a CONFIG of what is now in force (or a NAK)."""

    TYPE: ClassVar = FrameType.CONFIG_SET
    fields: tuple[tuple[ConfigKey, int], ...]

    def encode(self) -> bytes:
        return _encode_fields(self.fields, "CONFIG_SET")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(_decode_fields(payload, "CONFIG_SET"))


@dataclass(frozen=True, slots=True)
class ConfigGet:
    """Ask for these fields (none: all); answered by a CONFIG."""

    TYPE: ClassVar = FrameType.CONFIG_GET
    keys: tuple[ConfigKey, ...] = ()

    def encode(self) -> bytes:
        return bytes(ConfigKey(k) for k in self.keys)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(tuple(_enum(ConfigKey, k, "CONFIG_GET") for k in payload))


@dataclass(frozen=True, slots=True)
class Config:
    """The fields in force on the dongle, in answer to CONFIG_SET (the echo) or CONFIG_GET."""

    TYPE: ClassVar = FrameType.CONFIG
    fields: tuple[tuple[ConfigKey, int], ...]

    def encode(self) -> bytes:
        return _encode_fields(self.fields, "CONFIG")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(_decode_fields(payload, "CONFIG"))

    def get(self, key: ConfigKey) -> int | None:
        return next((value for k, value in self.fields if k == key), None)


@dataclass(frozen=True, slots=True)
class Tx:
    """Transmit one radio frame; costs one credit; answered by TX_DONE or NAK with the same seq."""

    TYPE: ClassVar = FrameType.TX
    payload: bytes

    def encode(self) -> bytes:
        return _radio_payload(self.payload, "TX")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(_radio_payload(payload, "TX"))


@dataclass(frozen=True, slots=True)
class TxDone:
    TYPE: ClassVar = FrameType.TX_DONE
    #: The airtime the transmission used, as the dongle counted it against its duty cycle.
    airtime_us: int

    def encode(self) -> bytes:
        return _pack(">I", "TX_DONE", self.airtime_us)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 4, "TX_DONE")
        return cls(*struct.unpack(">I", payload))


@dataclass(frozen=True, slots=True)
class Nak:
    TYPE: ClassVar = FrameType.NAK
    reason: NakReason
    #: When the request could succeed (DUTY_CYCLE: the allowance frees up), in ms; 0: unknown.
    wait_ms: int = 0

    def encode(self) -> bytes:
        return _pack(">BI", "NAK", self.reason, self.wait_ms)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 5, "NAK")
        reason, wait = struct.unpack(">BI", payload)
        return cls(_enum(NakReason, reason, "NAK"), wait)


@dataclass(frozen=True, slots=True)
class Credit:
    """The dongle had ``free`` TX slots once it had read the host frame numbered ``ack_seq``."""

    TYPE: ClassVar = FrameType.CREDIT
    free: int
    ack_seq: int

    def encode(self) -> bytes:
        if not 0 <= self.free <= MAX_QUEUE:
            raise ProtocolError(f"CREDIT of {self.free} is not in 0..{MAX_QUEUE}")
        return _pack(">BB", "CREDIT", self.free, self.ack_seq)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 2, "CREDIT")
        credit = cls(payload[0], payload[1])
        credit.encode()
        return credit


@dataclass(frozen=True, slots=True)
class Rx:
    """A radio frame heard."""

    TYPE: ClassVar = FrameType.RX
    rssi_dbm: int
    #: SNR in quarter dB (the SX127x/SX126x register unit); None where the radio gives none (ESP-NOW).
    snr_qdb: int | None
    #: The dongle's clock (ms since boot, mod 2**32) at the end of the reception.
    time_ms: int
    payload: bytes

    def encode(self) -> bytes:
        head = _pack(">hhI", "RX", self.rssi_dbm, _measured(self.snr_qdb), self.time_ms)
        return head + _radio_payload(self.payload, "RX")

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, RX_HEADER + 1, "RX", exact=False)
        rssi, snr, time_ms = struct.unpack(">hhI", payload[:RX_HEADER])
        return cls(rssi, _optional(snr), time_ms, _radio_payload(payload[RX_HEADER:], "RX"))

    @property
    def snr_db(self) -> float | None:
        return None if self.snr_qdb is None else self.snr_qdb / 4


@dataclass(frozen=True, slots=True)
class StatusGet:
    TYPE: ClassVar = FrameType.STATUS_GET

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 0, "STATUS_GET")
        return cls()


@dataclass(frozen=True, slots=True)
class Status:
    TYPE: ClassVar = FrameType.STATUS
    #: Airtime the dongle transmitted in the last 60 s and in the last hour (its duty-cycle window).
    airtime_short_ms: int
    airtime_long_ms: int
    queue_depth: int
    queue_capacity: int
    noise_floor_dbm: int | None

    _LAYOUT: ClassVar = ">IIBBh"

    def encode(self) -> bytes:
        values = (self.airtime_short_ms, self.airtime_long_ms, self.queue_depth, self.queue_capacity)
        return _pack(self._LAYOUT, "STATUS", *values, _measured(self.noise_floor_dbm))

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, struct.calcsize(cls._LAYOUT), "STATUS")
        short, long, depth, capacity, noise = struct.unpack(cls._LAYOUT, payload)
        return cls(short, long, depth, capacity, _optional(noise))


@dataclass(frozen=True, slots=True)
class Log:
    TYPE: ClassVar = FrameType.LOG
    level: LogLevel
    text: str

    def encode(self) -> bytes:
        raw = self.text.encode("utf-8")
        if len(raw) > MAX_LOG_TEXT:
            raise ProtocolError(f"LOG text is {len(raw)} bytes, expected at most {MAX_LOG_TEXT}")
        return bytes((LogLevel(self.level),)) + raw

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        _length(payload, 1, "LOG", exact=False)
        # Text from a dongle is shown, never trusted: undecodable bytes become U+FFFD.
        return cls(_enum(LogLevel, payload[0], "LOG"), payload[1:].decode("utf-8", "replace"))


Message = (
    Hello | Info | ConfigSet | ConfigGet | Config | Tx | TxDone | Nak | Credit | Rx | StatusGet | Status | Log
)
MESSAGES: Final[dict[FrameType, type[Message]]] = {
    m.TYPE: m
    for m in (Hello, Info, ConfigSet, ConfigGet, Config, Tx, TxDone, Nak, Credit, Rx, StatusGet, Status, Log)
}


def escape(frame: bytes) -> bytes:
    """``frame`` with FEND and FESC escaped (no FENDs added)."""
    return frame.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def encode_frame(kind: int, seq: int, payload: bytes) -> bytes:
    """One frame on the wire: FEND, the escaped ``type | seq | payload | CRC``, FEND."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"a payload of {len(payload)} bytes exceeds the maximum of {MAX_PAYLOAD}")
    if not (0 <= kind <= 255 and 0 <= seq <= 255):
        raise ProtocolError(f"frame type {kind} and seq {seq} must each be one byte")
    body = bytes((kind, seq)) + payload
    return b"\xc0" + escape(body + crc16(body).to_bytes(2, "big")) + b"\xc0"


def encode(message: Message, seq: int) -> bytes:
    """``message`` as one frame on the wire, numbered ``seq``."""
    if isinstance(message, OtherVersion):
        raise ProtocolError("an INFO of another protocol version is only ever decoded")
    return encode_frame(message.TYPE, seq, message.encode())


def decode_message(kind: int, payload: bytes) -> Message | OtherVersion:
    """The message of a frame that passed its CRC; raises ProtocolError (unknown type, bad payload)."""
    if kind not in MESSAGES:
        raise ProtocolError(f"unknown frame type 0x{kind:02x}")
    try:
        return MESSAGES[FrameType(kind)].decode(payload)
    except VersionMismatch:
        return OtherVersion(payload[4])


@dataclass(frozen=True, slots=True)
class Received:
    seq: int
    message: Message | OtherVersion


#: Counters of :attr:`Decoder.stats`, all present from the start.
STATS: Final = (
    "frames",  # messages delivered
    "garbage_bytes",  # bytes outside any frame (before the first FEND, after a dropped frame)
    "bad_crc",
    "bad_escape",  # FESC followed by neither TFEND nor TFESC
    "runt",  # a frame shorter than type + seq + CRC
    "oversize",  # a frame longer than MAX_FRAME: dropped at its MAX_FRAME + 1st byte
    "unknown_type",
    "malformed",  # a known type whose payload does not parse
    "dropped_idle",  # half a frame dropped by idle()
)


class Decoder:
    """Streaming decoder: ``feed(bytes)`` returns the messages completed; never raises, never holds
    more than one MAX_FRAME; everything it drops is counted in ``stats``.

    It starts *hunting*: bytes before the first FEND are garbage. ``idle()`` (the caller saw
    FRAME_SILENCE of quiet) drops a half-received frame and hunts again.
    """

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter(dict.fromkeys(STATS, 0))
        self._frame = bytearray()
        self._escaped = False
        self._hunting = True

    def idle(self) -> None:
        if self._frame or self._escaped:
            self.stats["dropped_idle"] += 1
        self._reset(hunting=True)

    def feed(self, data: bytes) -> list[Received]:
        out: list[Received] = []
        for byte in data:
            if byte == FEND:
                if not self._hunting and (self._frame or self._escaped):
                    self._complete(out)
                self._reset(hunting=False)
            elif self._hunting:
                self.stats["garbage_bytes"] += 1
            elif self._escaped:
                self._escaped = False
                if byte == TFEND:
                    self._append(FEND)
                elif byte == TFESC:
                    self._append(FESC)
                else:
                    self.stats["bad_escape"] += 1
                    self._reset(hunting=True)
            elif byte == FESC:
                self._escaped = True
            else:
                self._append(byte)
        return out

    def _append(self, byte: int) -> None:
        if len(self._frame) >= MAX_FRAME:
            self.stats["oversize"] += 1
            self._reset(hunting=True)
        else:
            self._frame.append(byte)

    def _reset(self, *, hunting: bool) -> None:
        self._frame.clear()
        self._escaped = False
        self._hunting = hunting

    def _complete(self, out: list[Received]) -> None:
        frame = bytes(self._frame)
        if self._escaped:
            self.stats["bad_escape"] += 1
        elif len(frame) < 4:
            self.stats["runt"] += 1
        elif crc16(frame[:-2]) != int.from_bytes(frame[-2:], "big"):
            self.stats["bad_crc"] += 1
        elif frame[0] not in MESSAGES:
            self.stats["unknown_type"] += 1
        else:
            try:
                message = decode_message(frame[0], frame[2:-2])
            except ProtocolError:
                self.stats["malformed"] += 1
            else:
                self.stats["frames"] += 1
                out.append(Received(frame[1], message))


def check_info(info: Info | OtherVersion, port: str) -> Info:
    """The INFO of a dongle this host can drive, or VersionMismatch: one line naming ``port``."""
    if isinstance(info, OtherVersion) or info.protocol_version != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"{port}: the dongle speaks serial protocol version {info.protocol_version}, this agent "
            f"speaks version {PROTOCOL_VERSION}: flash the firmware of this agent's release "
            "(scripts/flash-dongle)"
        )
    return info


def check_echo(asked: ConfigSet, echoed: Config, port: str) -> None:
    """Raise ConfigMismatch (one line naming ``port`` and every differing field) unless the dongle's
    echo holds every value asked for."""
    wrong = [
        f"{key.name} asked {value}, in force {echoed.get(key)}"
        for key, value in asked.fields
        if echoed.get(key) != value
    ]
    if wrong:
        raise ConfigMismatch(f"{port}: the dongle did not apply its configuration: {'; '.join(wrong)}")


class Credits:
    """The host's TX window (see the module docstring): ``can_send()`` before every TX, ``sent(seq,
    tx=...)`` after every frame the host sends, ``grant(credit)`` for every CREDIT. Starts closed: no
    TX before the first CREDIT."""

    #: Frames remembered after the last acknowledged one: half the seq space, so ``ack_seq`` is never
    #: ambiguous (a dongle acknowledges within a few frames; older ones are long read).
    WINDOW: ClassVar = 128

    def __init__(self) -> None:
        self._free = 0
        #: (seq, is_tx) of every host frame sent after the last CREDIT's ack_seq, oldest first.
        self._pending: list[tuple[int, bool]] = []

    def available(self) -> int:
        return max(0, self._free - sum(tx for _, tx in self._pending))

    def can_send(self) -> bool:
        return self.available() > 0

    def sent(self, seq: int, *, tx: bool) -> None:
        self._pending.append((seq, tx))
        if len(self._pending) > self.WINDOW:
            del self._pending[0]

    def grant(self, credit: Credit) -> None:
        seqs = [seq for seq, _ in self._pending]
        if credit.ack_seq in seqs:  # else it acknowledges a frame older than all pending ones
            del self._pending[: len(seqs) - seqs[::-1].index(credit.ack_seq)]
        self._free = credit.free


__all__ = [
    "CONFIG_FORMATS",
    "FEND",
    "FESC",
    "MESSAGES",
    "NOT_MEASURED",
    "REGION_NAMES",
    "STATS",
    "TFEND",
    "TFESC",
    "Config",
    "ConfigGet",
    "ConfigKey",
    "ConfigMismatch",
    "ConfigSet",
    "Credit",
    "Credits",
    "Decoder",
    "FrameType",
    "Hello",
    "Info",
    "Log",
    "LogLevel",
    "Message",
    "Nak",
    "NakReason",
    "OtherVersion",
    "ProtocolError",
    "RadioKind",
    "Received",
    "RegionCode",
    "Rx",
    "Status",
    "StatusGet",
    "Tx",
    "TxDone",
    "VersionMismatch",
    "check_echo",
    "check_info",
    "crc16",
    "decode_message",
    "encode",
    "encode_frame",
    "escape",
]
