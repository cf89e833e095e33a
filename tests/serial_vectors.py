"""The serial protocol's test vectors (docs/SERIAL_PROTOCOL.md), made with ``firmware_bridge.protocol``.

::

    python tests/serial_vectors.py --write   # (re)writes docs/serial-protocol-vectors.json
    python tests/serial_vectors.py           # exit 1 if the committed file differs from what the host makes

``messages``: one frame per message, its ``fields`` as JSON (bytes as ``{"hex": ...}``, enums as
numbers, "not measured" as null) and its ``wire`` bytes. ``refused``: frames the decoder drops, each
with the one counter it raises. ``streams``: byte streams (``["feed", hex]`` and ``["idle"]`` steps)
with the messages a decoder returns and its final counters. A dongle implementation passes when it
encodes every message to its ``wire``, and decodes every stream and refused frame as listed
(tests/test_serial_protocol.py runs firmware_bridge/micropython/serial_protocol.py so under MicroPython).
"""

from __future__ import annotations

import dataclasses
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the code of this checkout
    sys.path.insert(0, str(ROOT))

from vectors_support import vectors_main  # noqa: E402

from firmware_bridge.limits import MAX_FRAME, PROTOCOL_VERSION  # noqa: E402
from firmware_bridge.protocol import (  # noqa: E402
    Config,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    Credit,
    Decoder,
    FrameType,
    Hello,
    Info,
    Log,
    LogLevel,
    Message,
    Nak,
    NakReason,
    OtherVersion,
    RadioKind,
    Received,
    RegionCode,
    Rx,
    Status,
    StatusGet,
    Tx,
    TxDone,
    crc16,
    encode,
    encode_frame,
    escape,
)

VECTORS_PATH = ROOT / "docs" / "serial-protocol-vectors.json"

ALL_BYTES = bytes(range(256))[:255]  # every value but 0xFF, so 0xC0 and 0xDB are escaped
LORA = ConfigSet(
    (
        (ConfigKey.REGION, RegionCode.EU868_G1),
        (ConfigKey.FREQUENCY_HZ, 869_525_000),
        (ConfigKey.BANDWIDTH_HZ, 125_000),
        (ConfigKey.SPREADING_FACTOR, 7),
        (ConfigKey.CODING_RATE, 5),
        (ConfigKey.TX_POWER_DBM, -4),
        (ConfigKey.PREAMBLE_SYMBOLS, 8),
        (ConfigKey.SYNC_WORD, 0x12),
        (ConfigKey.STATUS_INTERVAL_S, 60),
    )
)
SX127X = Info(
    (0, 1, 0), RadioKind.SX127X, 255, RegionCode.EU868_G1, 10_000, 0, 8, bytes.fromhex("24a160c0db01")
)

#: (name, seq, message): every frame type, every enum value, the edges of every field.
MESSAGES: list[tuple[str, int, Message]] = [
    ("hello", 0, Hello()),
    ("hello from a newer host", 1, Hello(2)),
    ("info SX127x EU868 g1 (id with FEND and FESC bytes)", 1, SX127X),
    (
        "info SX126x US915 (400 ms dwell)",
        2,
        Info((1, 22, 333 % 256), RadioKind.SX126X, 255, RegionCode.US915, 1_000_000, 400, 16, b"\xff" * 16),
    ),
    (
        "info ESP-NOW no region",
        3,
        Info((255, 0, 9), RadioKind.ESP_NOW, 250, RegionCode.NONE, 10**6, 0, 64, b"E"),
    ),
    ("info EU868 g2 0.1 %", 4, Info((0, 1, 0), RadioKind.SX127X, 64, RegionCode.EU868_G2, 1000, 0, 1, b"\0")),
    ("config set LoRa", 5, LORA),
    ("config echo LoRa", 5, Config(LORA.fields)),
    ("config echo with a value clamped", 6, Config(((ConfigKey.TX_POWER_DBM, 14),))),
    ("config set ESP-NOW", 7, ConfigSet(((ConfigKey.CHANNEL, 6), (ConfigKey.REGION, RegionCode.NONE)))),
    ("config set nothing", 8, ConfigSet(())),
    ("config get all", 9, ConfigGet()),
    ("config get two", 10, ConfigGet((ConfigKey.FREQUENCY_HZ, ConfigKey.SPREADING_FACTOR))),
    ("config edges", 11, Config(((ConfigKey.FREQUENCY_HZ, 2**32 - 1), (ConfigKey.TX_POWER_DBM, -128)))),
    ("tx one byte", 12, Tx(b"\xc0")),
    ("tx 255 bytes", 0xC0, Tx(ALL_BYTES)),
    ("tx_done", 0xC0, TxDone(56_576)),
    ("tx_done longest", 0xDB, TxDone(2**32 - 1)),
    *[(f"nak {r.name.lower()}", 13, Nak(r, 1234 if r == NakReason.DUTY_CYCLE else 0)) for r in NakReason],
    ("credit", 0, Credit(8, 0xDB)),
    ("credit none free", 1, Credit(0, 255)),
    ("rx LoRa", 2, Rx(-117, -38, 123_456_789, b"\x01\x02\xc0\xdb")),
    ("rx ESP-NOW (no SNR)", 3, Rx(-40, None, 2**32 - 1, ALL_BYTES[:250])),
    ("rx edges", 4, Rx(-32768, 32767, 0, b"\x00")),
    ("status_get", 14, StatusGet()),
    ("status", 5, Status(1500, 36_000, 3, 8, -120)),
    ("status no noise floor", 6, Status(0, 2**32 - 1, 0, 64, None)),
    *[(f"log {lv.name.lower()}", 7 + lv, Log(lv, f"radio {lv.name}: Küche 温度 🌡")) for lv in LogLevel],
    ("log empty", 12, Log(LogLevel.INFO, "")),
    ("log longest", 13, Log(LogLevel.ERROR, "x" * 299)),
]


def _frame(kind: int, payload: bytes, seq: int = 9) -> str:
    return encode_frame(kind, seq, payload).hex()


def _raw_crc_frame(body: bytes, flip: int = 0) -> bytes:
    """Any body (no length check) and its CRC (xor ``flip``), escaped between FENDs."""
    return b"\xc0" + escape(body + (crc16(body) ^ flip).to_bytes(2, "big")) + b"\xc0"


def _info_with(offset: int, value: int) -> str:
    """The SX127x INFO with the byte at ``offset`` of its payload replaced by ``value``."""
    payload = bytearray(SX127X.encode())
    payload[offset] = value
    return _frame(FrameType.INFO, bytes(payload))


#: (name, wire hex, the one counter it raises): what every decoder must drop.
REFUSED: list[tuple[str, str, str]] = [
    ("hello bad magic", _frame(FrameType.HELLO, b"PREZ\x01"), "malformed"),
    ("hello one byte short", _frame(FrameType.HELLO, b"PRES"), "malformed"),
    ("info cut", _frame(FrameType.INFO, SX127X.encode()[:-1]), "malformed"),
    ("info with a trailing byte", _frame(FrameType.INFO, SX127X.encode() + b"\x00"), "malformed"),
    ("info unknown radio", _info_with(8, 9), "malformed"),
    ("info unknown region", _info_with(11, 9), "malformed"),
    ("info queue of 65", _info_with(18, 65), "malformed"),
    ("info mtu of 511", _info_with(9, 1), "malformed"),
    ("info empty id", _frame(FrameType.INFO, SX127X.encode()[:19] + b"\x00"), "malformed"),
    ("config unknown key", _frame(FrameType.CONFIG, b"\x63\x01\x00"), "malformed"),
    ("config wrong width", _frame(FrameType.CONFIG, b"\x02\x02\x00\x01"), "malformed"),
    ("config cut value", _frame(FrameType.CONFIG, b"\x02\x04\x00\x01"), "malformed"),
    ("config cut header", _frame(FrameType.CONFIG_SET, b"\x04\x01\x07\x04"), "malformed"),
    ("config duplicate key", _frame(FrameType.CONFIG_SET, b"\x04\x01\x07\x04\x01\x08"), "malformed"),
    ("config get unknown key", _frame(FrameType.CONFIG_GET, b"\x00"), "malformed"),
    ("tx empty", _frame(FrameType.TX, b""), "malformed"),
    ("tx 256 bytes", _frame(FrameType.TX, bytes(256)), "malformed"),
    ("tx_done short", _frame(FrameType.TX_DONE, b"\x00\x01"), "malformed"),
    ("nak unknown reason", _frame(FrameType.NAK, b"\x09\x00\x00\x00\x00"), "malformed"),
    ("credit of 65", _frame(FrameType.CREDIT, b"\x41\x00"), "malformed"),
    ("rx without payload", _frame(FrameType.RX, bytes(8)), "malformed"),
    ("status short", _frame(FrameType.STATUS, bytes(11)), "malformed"),
    ("status_get not empty", _frame(FrameType.STATUS_GET, b"\x00"), "malformed"),
    ("log without level", _frame(FrameType.LOG, b""), "malformed"),
    ("log unknown level", _frame(FrameType.LOG, b"\x07hi"), "malformed"),
    ("unknown type 0x7f", _frame(0x7F, b"future"), "unknown_type"),
    ("unknown type 0x00", _frame(0x00, b""), "unknown_type"),
    ("bad crc", _raw_crc_frame(bytes([FrameType.STATUS_GET, 9]), flip=1).hex(), "bad_crc"),
    ("runt of three bytes", "c0010203c0", "runt"),
    ("bad escape", "c00101db01c0", "bad_escape"),
    ("escape at the end", "c0010101dbc0", "bad_escape"),
    ("oversize", _raw_crc_frame(bytes([FrameType.LOG, 0, 1]) + b"x" * (MAX_FRAME - 4)).hex(), "oversize"),
]

_A = encode(Rx(-80, 20, 1000, b"hello"), 1)
_B = encode(Credit(4, 7), 2)
_C = encode(Log(LogLevel.WARNING, "late"), 3)
_FULL = _raw_crc_frame(bytes([FrameType.LOG, 4, 1]) + b"m" * (MAX_FRAME - 5))  # exactly MAX_FRAME
_OTHER = encode_frame(FrameType.INFO, 5, b"PRES\x02anything a newer layout holds")

#: (name, steps): each step ``("feed", bytes)`` or ``("idle",)``.
STREAMS: list[tuple[str, list[tuple[str, bytes] | tuple[str]]]] = [
    ("boot noise then a frame", [("feed", b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET)\r\n" + _A)]),
    ("reset mid-frame: resynchronised at the next FEND", [("feed", _A[:9] + b"\x00\xffboot" + _B + _C)]),
    ("half a frame dropped after a silence", [("feed", _A[:-3]), ("idle",), ("feed", _A[-3:] + _B)]),
    ("a frame split anywhere", [("feed", _A[:1]), ("feed", _A[1:2]), ("feed", _A[2:-1]), ("feed", _A[-1:])]),
    ("frames sharing their FENDs", [("feed", _A[:-1] + _B[:-1] + _C)]),
    ("empty frames between FENDs are nothing", [("feed", b"\xc0\xc0\xc0" + _A + b"\xc0\xc0")]),
    ("an oversize frame then a good one", [("feed", b"\xc0" + b"z" * 400 + _A)]),
    ("a frame of exactly MAX_FRAME bytes", [("feed", _FULL)]),
    ("idle with nothing pending counts nothing", [("idle",), ("feed", _A), ("idle",)]),
    ("an INFO of another protocol version is reported, not dropped", [("feed", _OTHER)]),
]


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value


def message_json(message: Message | OtherVersion) -> dict[str, Any]:
    return {f.name: jsonable(getattr(message, f.name)) for f in dataclasses.fields(message)}


def received_json(received: Received) -> list[Any]:
    return [int(received.message.TYPE), received.seq, message_json(received.message)]


def run_stream(steps: list[tuple[str, bytes] | tuple[str]]) -> tuple[list[Received], dict[str, int]]:
    decoder = Decoder()
    got: list[Received] = []
    for step in steps:
        if step[0] == "idle":
            decoder.idle()
        else:
            got.extend(decoder.feed(step[1]))  # type: ignore[misc]
    return got, dict(decoder.stats)


def build() -> dict[str, Any]:
    messages = [
        {
            "name": name,
            "type": message.TYPE.name,
            "code": int(message.TYPE),
            "seq": seq,
            "fields": message_json(message),
            "wire": encode(message, seq).hex(),
        }
        for name, seq, message in MESSAGES
    ]
    refused = [{"name": name, "wire": wire, "counter": counter} for name, wire, counter in REFUSED]
    streams = []
    for name, steps in STREAMS:
        got, stats = run_stream(steps)
        streams.append(
            {
                "name": name,
                "steps": [["idle"] if s[0] == "idle" else ["feed", s[1].hex()] for s in steps],  # type: ignore[misc]
                "messages": [received_json(r) for r in got],
                "stats": stats,
            }
        )
    return {
        "about": (
            "Test vectors of docs/SERIAL_PROTOCOL.md, made by tests/serial_vectors.py with "
            "firmware_bridge.protocol and checked by tests/test_serial_protocol.py. Bytes are lower-case hex."
        ),
        "protocol_version": PROTOCOL_VERSION,
        "crc": {
            "name": "CRC-16/CCITT-FALSE",
            "input": "313233343536373839",
            "check": f"{crc16(b'123456789'):04x}",
        },
        "messages": messages,
        "refused": refused,
        "streams": streams,
    }


def main(argv: list[str]) -> int:
    return vectors_main(argv, VECTORS_PATH, ROOT, build, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
