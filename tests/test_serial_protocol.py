"""The serial protocol to radio dongles (docs/SERIAL_PROTOCOL.md): the host codec, the dongle's
MicroPython module, and the committed vectors between them.

The host (``firmware_bridge.protocol``) makes the vectors (tests/serial_vectors.py); the dongle's
module (``firmware_bridge/micropython/serial_protocol.py``) must encode every message to the same
bytes and decode every stream as the host does, under CPython (as the emulator will run it) and
under real MicroPython (one WebAssembly run). Hypothesis properties: no byte stream makes a decoder
raise or hold more than one frame, a frame is recovered from any garbage before it and after any
reset mid-frame, and the two decoders agree on random streams.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest
import serial_vectors
import vectors_support
from hypothesis import given, settings
from hypothesis import strategies as st
from micropython_support import FIRMWARE, require_micropython, run_batch

from firmware_bridge import limits
from firmware_bridge.protocol import (
    CONFIG_FORMATS,
    MESSAGES,
    STATS,
    Config,
    ConfigKey,
    ConfigMismatch,
    ConfigSet,
    Credit,
    Credits,
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
    ProtocolError,
    RadioKind,
    RegionCode,
    Rx,
    Status,
    Tx,
    TxDone,
    VersionMismatch,
    check_echo,
    check_info,
    crc16,
    decode_message,
    encode,
)

VECTORS: dict[str, Any] = json.loads(serial_vectors.VECTORS_PATH.read_text(encoding="utf-8"))


def load_dongle_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serial_protocol", FIRMWARE / "serial_protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DONGLE = load_dongle_module()


def unhex(value: Any) -> Any:
    if isinstance(value, dict):
        return (
            bytes.fromhex(value["hex"]) if set(value) == {"hex"} else {k: unhex(v) for k, v in value.items()}
        )
    if isinstance(value, list):
        return [unhex(v) for v in value]
    return value


def dongle_json(value: Any) -> Any:
    """The dongle module's fields as the vectors spell them."""
    if isinstance(value, bytes | bytearray):
        return {"hex": bytes(value).hex()}
    if isinstance(value, dict):
        return {k: dongle_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [dongle_json(v) for v in value]
    return value


# --- the host codec ------------------------------------------------------------------------------


def test_the_committed_vectors_are_what_the_host_makes() -> None:
    assert vectors_support.render(serial_vectors.build()) == serial_vectors.VECTORS_PATH.read_text(
        encoding="utf-8"
    )


def test_crc_is_ccitt_false_with_its_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert VECTORS["crc"]["check"] == "29b1" and DONGLE.crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_every_frame_type_has_a_message_and_a_vector() -> None:
    assert set(MESSAGES) == set(FrameType)
    assert {m["type"] for m in VECTORS["messages"]} == {t.name for t in FrameType}
    assert set(DONGLE.TYPES) == {int(t) for t in FrameType}


def test_the_dongle_module_spells_the_hosts_limits() -> None:
    for name in ("PROTOCOL_VERSION", "MAGIC", "MAX_PAYLOAD", "MAX_FRAME", "MAX_RADIO_PAYLOAD", "RX_HEADER"):
        assert getattr(DONGLE, name) == getattr(limits, name), name
    for name in ("MAX_DONGLE_ID", "MAX_LOG_TEXT", "MAX_QUEUE"):
        assert getattr(DONGLE, name) == getattr(limits, name), name
    assert limits.FRAME_SILENCE * 1000 == DONGLE.FRAME_SILENCE_MS
    assert DONGLE.STATS == STATS
    assert {int(k): v for k, v in CONFIG_FORMATS.items()} == DONGLE.CONFIG_FORMATS
    assert set(DONGLE.NAK_REASONS) == {int(r) for r in NakReason}
    assert set(DONGLE.REGIONS) == {int(r) for r in RegionCode}
    assert set(DONGLE.RADIOS) == {int(r) for r in RadioKind}
    assert set(DONGLE.LOG_LEVELS) == {int(v) for v in LogLevel}


@pytest.mark.parametrize(
    "index", range(len(serial_vectors.MESSAGES)), ids=[m[0] for m in serial_vectors.MESSAGES]
)
def test_every_message_round_trips_on_the_host(index: int) -> None:
    _, seq, message = serial_vectors.MESSAGES[index]
    decoder = Decoder()
    [got] = decoder.feed(encode(message, seq))
    assert (got.seq, got.message) == (seq, message)
    assert decoder.stats["frames"] == 1 and sum(decoder.stats.values()) == 1


@pytest.mark.parametrize("vector", VECTORS["refused"], ids=[v["name"] for v in VECTORS["refused"]])
def test_refused_frames_are_dropped_and_counted(vector: dict[str, Any]) -> None:
    decoder = Decoder()
    assert decoder.feed(bytes.fromhex(vector["wire"])) == []
    assert decoder.stats[vector["counter"]] == 1 and decoder.stats["frames"] == 0


def test_streams_resynchronise_and_count_what_they_drop() -> None:
    streams = {s["name"]: s for s in VECTORS["streams"]}
    assert streams["boot noise then a frame"]["stats"]["garbage_bytes"] > 40
    reset = streams["reset mid-frame: resynchronised at the next FEND"]
    assert [m[0] for m in reset["messages"]] == [FrameType.CREDIT, FrameType.LOG] and reset["stats"][
        "bad_crc"
    ] == 1
    assert streams["half a frame dropped after a silence"]["stats"]["dropped_idle"] == 1
    assert streams["idle with nothing pending counts nothing"]["stats"]["dropped_idle"] == 0
    assert streams["an oversize frame then a good one"]["stats"]["oversize"] == 1
    assert streams["an INFO of another protocol version is reported, not dropped"]["messages"] == [
        [2, 5, {"protocol_version": 2}]
    ]


def test_message_errors_are_one_actionable_line() -> None:
    with pytest.raises(ProtocolError, match=r"^TX radio payload is 256 bytes, expected 1\.\.255$"):
        Tx(bytes(256)).encode()
    with pytest.raises(ProtocolError, match="unknown frame type 0x7f"):
        decode_message(0x7F, b"")
    with pytest.raises(ProtocolError, match="NAK payload is 4 bytes, expected 5"):
        Nak.decode(bytes(4))
    with pytest.raises(ProtocolError, match="TX_POWER_DBM: a value is out of range"):
        ConfigSet(((ConfigKey.TX_POWER_DBM, 200),)).encode()
    with pytest.raises(ProtocolError, match="key REGION appears twice"):
        ConfigSet(((ConfigKey.REGION, 1), (ConfigKey.REGION, 2))).encode()


def test_a_dongle_of_another_protocol_version_is_refused_naming_the_port() -> None:
    info = serial_vectors.SX127X
    assert check_info(info, "/dev/ttyUSB0") is info
    [got] = Decoder().feed(bytes.fromhex(VECTORS["streams"][-1]["steps"][0][1]))
    assert got.message == OtherVersion(2)
    with pytest.raises(VersionMismatch) as caught:
        check_info(got.message, "/dev/ttyUSB0")
    line = str(caught.value)
    assert "\n" not in line and line.startswith("/dev/ttyUSB0: the dongle speaks serial protocol version 2")
    assert "this agent speaks version 1" in line


def test_the_config_echo_is_checked_value_by_value() -> None:
    asked = serial_vectors.LORA
    check_echo(asked, Config(asked.fields), "/dev/ttyACM0")
    check_echo(asked, Config(tuple(reversed(asked.fields))), "/dev/ttyACM0")  # order is free
    clamped = Config(tuple((k, 14 if k == ConfigKey.TX_POWER_DBM else v) for k, v in asked.fields))
    with pytest.raises(ConfigMismatch, match=r"^/dev/ttyACM0: .*TX_POWER_DBM asked -4, in force 14$"):
        check_echo(asked, clamped, "/dev/ttyACM0")
    missing = Config(asked.fields[1:])
    with pytest.raises(ConfigMismatch, match="REGION asked 1, in force None"):
        check_echo(asked, missing, "/dev/ttyACM0")


def test_credits_never_allow_a_tx_the_dongle_has_no_slot_for() -> None:
    credits = Credits()
    credits.sent(0, tx=False)  # HELLO
    assert not credits.can_send()  # no TX before the first CREDIT
    credits.grant(Credit(2, 0))
    assert credits.available() == 2
    credits.sent(1, tx=True)
    credits.sent(2, tx=True)
    assert not credits.can_send()
    credits.grant(Credit(2, 0))  # sent before the dongle read 1 and 2: they still count
    assert credits.available() == 0
    credits.grant(Credit(0, 2))  # read both, queue full
    assert credits.available() == 0
    credits.sent(3, tx=False)  # STATUS_GET
    credits.grant(Credit(1, 2))  # one TX done; a CREDIT before this one was lost: no matter
    assert credits.available() == 1
    credits.sent(4, tx=True)
    assert credits.available() == 0
    credits.grant(Credit(1, 3))  # read STATUS_GET, not yet the TX numbered 4
    assert credits.available() == 0
    credits.grant(Credit(1, 4))
    assert credits.available() == 1


def test_credits_remember_a_bounded_window() -> None:
    credits = Credits()
    for seq in range(1000):
        credits.sent(seq % 256, tx=False)
    assert len(credits._pending) == Credits.WINDOW


# --- properties ----------------------------------------------------------------------------------

radio = st.binary(min_size=1, max_size=255)
messages: st.SearchStrategy[Message] = st.one_of(
    st.sampled_from([m for _, _, m in serial_vectors.MESSAGES]),
    st.builds(Tx, radio),
    st.builds(
        Rx,
        st.integers(-32768, 32767),
        st.none() | st.integers(-32767, 32767),
        st.integers(0, 2**32 - 1),
        radio,
    ),
    st.builds(TxDone, st.integers(0, 2**32 - 1)),
    st.builds(Credit, st.integers(0, 64), st.integers(0, 255)),
    st.builds(Log, st.sampled_from(LogLevel), st.text(max_size=60)),
    st.builds(
        Status, *[st.integers(0, 2**32 - 1)] * 2, *[st.integers(0, 255)] * 2, st.none() | st.integers(-200, 0)
    ),
    st.builds(
        Info,
        st.tuples(*[st.integers(0, 255)] * 3),
        st.sampled_from(RadioKind),
        st.integers(1, 255),
        st.sampled_from(RegionCode),
        st.integers(0, 10**6),
        st.integers(0, 65535),
        st.integers(1, 64),
        st.binary(min_size=1, max_size=16),
    ),
    st.builds(Hello, st.integers(0, 255)),
)
seqs = st.integers(0, 255)
#: Streams biased towards the bytes that matter: FEND, FESC, TFEND, TFESC and frame pieces.
noise = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\xc0", b"\xdb", b"\xdc", b"\xdd", b"\xdb\xdc", b"\xc0\xc0"]),
        st.builds(lambda m, s: encode(m, s)[: len(encode(m, s)) // 2], messages, seqs),
        st.builds(encode, messages, seqs),
        st.just(b"\xc0" + b"x" * 400),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(noise, st.none()), max_size=6))
def test_no_byte_stream_makes_the_decoder_raise_or_grow(chunks: list[bytes | None]) -> None:
    decoder = Decoder()
    for chunk in chunks:
        if chunk is None:
            decoder.idle()
            continue
        for at in range(0, len(chunk), 97):
            decoder.feed(chunk[at : at + 97])
            assert len(decoder._frame) <= limits.MAX_FRAME
    assert set(decoder.stats) == set(STATS)


@settings(max_examples=150, deadline=None)
@given(noise, messages, seqs)
def test_a_frame_after_any_garbage_is_recovered(garbage: bytes, message: Message, seq: int) -> None:
    got = Decoder().feed(garbage + encode(message, seq))
    assert got and (got[-1].seq, got[-1].message) == (seq, message)


@settings(max_examples=150, deadline=None)
@given(messages, messages, st.integers(0, 1000), seqs)
def test_a_reset_mid_frame_resynchronises_at_the_next_fend(
    first: Message, second: Message, cut: int, seq: int
) -> None:
    wire = encode(first, 1)
    half = wire[: 1 + cut % (len(wire) - 1)]  # a FEND and part of a frame, never all of it
    decoder = Decoder()
    got = decoder.feed(half + b"\x00\xff ets boot" + encode(second, seq))
    assert [(r.seq, r.message) for r in got] == [(seq, second)]
    assert decoder.stats["frames"] == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(noise, st.none()), max_size=5))
def test_the_dongle_decoder_agrees_with_the_host_on_any_stream(chunks: list[bytes | None]) -> None:
    host, dongle = Decoder(), DONGLE.Decoder()
    for chunk in chunks:
        if chunk is None:
            host.idle()
            dongle.idle()
            continue
        got = [serial_vectors.received_json(r) for r in host.feed(chunk)]
        assert [[k, s, dongle_json(f)] for k, s, f in dongle.feed(chunk)] == got
    assert dongle.stats == dict(host.stats)


@settings(max_examples=150, deadline=None)
@given(messages, seqs)
def test_the_dongle_encodes_any_message_as_the_host_does(message: Message, seq: int) -> None:
    fields = unhex(serial_vectors.message_json(message))
    assert DONGLE.encode(int(message.TYPE), seq, fields) == encode(message, seq)


# --- the dongle's module against the vectors, under CPython and under MicroPython ----------------

BATCH = """
import serial_protocol as sp

def unhex(v):
    if isinstance(v, dict):
        if list(v) == ["hex"]:
            return bytes.fromhex(v["hex"])
        return {k: unhex(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unhex(x) for x in v]
    return v

def tojson(v):
    if isinstance(v, (bytes, bytearray)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, dict):
        return {k: tojson(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [tojson(x) for x in v]
    return v

def run(steps):
    d = sp.Decoder()
    got = []
    for step in steps:
        if step[0] == "idle":
            d.idle()
        else:
            got.extend(d.feed(bytes.fromhex(step[1])))
    return [[k, s, tojson(f)] for k, s, f in got], d.stats

out = {"crc": "%04x" % sp.crc16(b"123456789"), "wire": [], "decoded": [], "refused": [], "streams": []}
for m in INPUT["messages"]:
    try:
        out["wire"].append(sp.encode(m["code"], m["seq"], unhex(m["fields"])).hex())
    except Exception as exc:
        out["wire"].append("error: %r" % (exc,))
    out["decoded"].append(run([["feed", m["wire"]]])[0])
for r in INPUT["refused"]:
    out["refused"].append(run([["feed", r["wire"]]]))
for s in INPUT["streams"]:
    out["streams"].append(run(s["steps"]))
print(json.dumps(out))
"""


def check_dongle_results(results: Any) -> None:
    assert results["crc"] == VECTORS["crc"]["check"]
    for vector, wire, decoded in zip(VECTORS["messages"], results["wire"], results["decoded"], strict=True):
        assert wire == vector["wire"], vector["name"]
        assert decoded == [[vector["code"], vector["seq"], vector["fields"]]], vector["name"]
    for vector, (got, stats) in zip(VECTORS["refused"], results["refused"], strict=True):
        host = Decoder()
        host.feed(bytes.fromhex(vector["wire"]))
        assert got == [] and stats == dict(host.stats), vector["name"]
    for vector, (got, stats) in zip(VECTORS["streams"], results["streams"], strict=True):
        assert got == vector["messages"] and stats == vector["stats"], vector["name"]


def test_the_dongle_module_passes_the_vectors_under_cpython() -> None:
    # What the emulator will run: the firmware's file itself, imported by CPython.
    namespace: dict[str, Any] = {"INPUT": VECTORS, "json": json}
    lines: list[str] = []
    namespace["print"] = lines.append
    exec(BATCH.replace("import serial_protocol as sp", "sp = DONGLE"), {**namespace, "DONGLE": DONGLE})
    check_dongle_results(json.loads(lines[-1]))


def test_the_dongle_module_passes_the_vectors_under_micropython() -> None:
    require_micropython()
    check_dongle_results(run_batch(BATCH, VECTORS))
