"""The host's dongle driver (firmware_bridge.driver) against scripted dongles on real ptys.

Each dongle is a pty opened by pyserial through a path, as ``/dev/ttyUSB0`` would be
(tests/scripted_dongle.py). The driver is the production one; the dongle answers with the host
codec and misbehaves where a test says so: silence, garbage, another protocol version, a wrong
echo, lost answers, floods. Waits poll for a condition with generous deadlines; nothing here
measures how fast anything is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import termios
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from scripted_dongle import LORA_INFO, Script, ScriptedDongle
from serial.tools.list_ports_common import ListPortInfo

from firmware_bridge.driver import (
    HOST_QUEUE,
    LOG_BURST,
    LOG_RATE,
    ConfigRefused,
    DongleDriver,
    DongleLost,
    NoAnswer,
)
from firmware_bridge.limits import FRAME_SILENCE, HELLO_ATTEMPTS, MAX_LOG_TEXT
from firmware_bridge.ports import KNOWN_USB_IDS, PortUnavailable, find_dongle_ports, open_serial
from firmware_bridge.protocol import (
    Config,
    ConfigKey,
    ConfigMismatch,
    ConfigSet,
    Hello,
    Log,
    LogLevel,
    NakReason,
    Rx,
    Tx,
    VersionMismatch,
    encode,
    encode_frame,
)

T = TypeVar("T")

ASKED = ConfigSet(((ConfigKey.CHANNEL, 6), (ConfigKey.TX_POWER_DBM, 14)))


class Listener:
    """What the driver reports, kept for the test to read."""

    def __init__(self) -> None:
        self.rx: list[Rx] = []
        self.unplugged_because: list[str] = []
        self.refusals: list[tuple[NakReason, float]] = []
        self.counts: Counter[str] = Counter()

    def received(self, rx: Rx) -> None:
        self.rx.append(rx)

    def unplugged(self, reason: str) -> None:
        self.unplugged_because.append(reason)

    def refused(self, reason: NakReason, wait: float) -> None:
        self.refusals.append((reason, wait))

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


async def eventually(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``condition`` every 20 ms until it is truthy; fail after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` on a fresh loop; any exception escaping into the loop fails the test."""

    async def checked() -> None:
        escaped: list[object] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: escaped.append(context))
        await scenario()
        assert not escaped, f"exceptions escaped into the event loop: {escaped}"

    asyncio.run(checked())


async def opened(
    tmp_path: Path, script: Script | None = None
) -> tuple[ScriptedDongle, DongleDriver, Listener]:
    dongle = ScriptedDongle(tmp_path / "ttyDONGLE", script).plug()
    listener = Listener()
    driver = DongleDriver(str(dongle.path), listener)
    await driver.open(lambda _info: ASKED)
    return dongle, driver, listener


# ---------------------------------------------------------------------------- the port


def test_the_port_opens_raw_exclusive_and_without_hang_up_on_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle = ScriptedDongle(tmp_path / "ttyUSB0").plug()
        port = open_serial(str(dongle.path))
        try:
            _, _, cflag, lflag, *_ = termios.tcgetattr(port.fileno())
            assert not cflag & termios.HUPCL  # closing the port later lowers no line: no reset
            assert not lflag & (termios.ICANON | termios.ECHO)  # raw: every byte is data
            with pytest.raises(PortUnavailable, match=f"^{dongle.path}: cannot open the serial port"):
                open_serial(str(dongle.path))  # exclusive: a second opener is refused
        finally:
            port.close()
            dongle.unplug()
        with pytest.raises(PortUnavailable, match=f"^{tmp_path}/absent: cannot open"):
            open_serial(str(tmp_path / "absent"))

    run(scenario)


def test_autodetection_keeps_the_usb_serial_chips_of_esp32_boards_only() -> None:
    def port(device: str, vid: int | None, pid: int | None) -> ListPortInfo:
        info = ListPortInfo(device)
        info.vid, info.pid = vid, pid
        return info

    ports = [
        port("/dev/ttyUSB1", 0x1A86, 0x7523),  # CH340
        port("/dev/ttyACM0", 0x303A, 0x1001),  # ESP32-S3 native USB
        port("/dev/ttyUSB0", 0x10C4, 0xEA60),  # CP2102
        port("/dev/ttyACM1", 0x2341, 0x0043),  # an Arduino Uno: not a dongle
        port("/dev/ttyS0", None, None),  # the Pi's UART: no USB id
    ]
    assert find_dongle_ports(ports) == ["/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert find_dongle_ports([port(f"/dev/x{i}", *ids) for i, ids in enumerate(KNOWN_USB_IDS)]) == sorted(
        f"/dev/x{i}" for i in range(len(KNOWN_USB_IDS))
    )


# ---------------------------------------------------------------------------- the handshake


def test_the_handshake_detects_the_dongle_and_checks_the_echo(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, _ = await opened(tmp_path, Script(info=LORA_INFO))
        assert driver.info == LORA_INFO and driver.is_up
        assert driver.config == Config(ASKED.fields)
        assert dongle.frames == [Hello(), ASKED]  # one HELLO answered at once, then the configuration
        driver.close()
        dongle.unplug()

    run(scenario)


def test_another_protocol_version_is_refused_with_the_documented_line(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle = ScriptedDongle(tmp_path / "ttyUSB0", Script(version=2)).plug()
        driver = DongleDriver(str(dongle.path), Listener())
        with pytest.raises(VersionMismatch) as refused:
            await driver.open(lambda _info: ASKED)
        assert str(refused.value) == (
            f"{dongle.path}: the dongle speaks serial protocol version 2, this agent speaks version 1: "
            "flash the firmware of this agent's release (scripts/flash-dongle)"
        )
        assert not dongle.frames_of(ConfigSet)  # nothing is configured on a dongle it cannot drive
        assert not driver.is_up
        dongle.unplug()

    run(scenario)


def test_silence_garbage_and_another_protocol_are_no_dongle_named_with_what_was_heard(tmp_path: Path) -> None:
    other_protocol = encode_frame(0x02, 0, b"RNOD\x01" + bytes(20))  # valid CRC, wrong magic
    scripts = {
        "silent": Script(answer_hello=False),
        "garbage": Script(hello_reply=bytes(range(1, 100))),
        "other": Script(hello_reply=other_protocol),
    }

    async def refused(name: str, script: Script) -> tuple[ScriptedDongle, str]:
        dongle = ScriptedDongle(tmp_path / name, script).plug()
        with pytest.raises(NoAnswer) as caught:
            await DongleDriver(str(dongle.path), Listener()).open(lambda _info: ASKED)
        dongle.unplug()
        return dongle, str(caught.value)

    async def scenario() -> None:
        results = await asyncio.gather(*(refused(name, script) for name, script in scripts.items()))
        for (dongle, message), name in zip(results, scripts, strict=True):
            assert message.startswith(f"{dongle.path}: no presence-agent dongle answered HELLO"), message
            assert len(dongle.frames_of(Hello)) == HELLO_ATTEMPTS, name
        messages = {name: message for name, (_, message) in zip(scripts, results, strict=True)}
        assert messages["silent"].endswith("heard: nothing)")
        assert "garbage_bytes 297" in messages["garbage"]  # 99 bytes before any FEND, three times
        assert "malformed 3" in messages["other"]

    run(scenario)


def test_a_wrong_echo_is_refused_naming_each_field_and_a_nak_names_its_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle = ScriptedDongle(
            tmp_path / "ttyACM0", Script(echo_override={ConfigKey.TX_POWER_DBM: 10})
        ).plug()
        with pytest.raises(ConfigMismatch) as mismatch:
            await DongleDriver(str(dongle.path), Listener()).open(lambda _info: ASKED)
        assert str(mismatch.value) == (
            f"{dongle.path}: the dongle did not apply its configuration: TX_POWER_DBM asked 14, in force 10"
        )
        dongle.script = Script(nak_config=True)
        driver = DongleDriver(str(dongle.path), Listener())
        with pytest.raises(ConfigRefused, match="NAK BAD_CONFIG"):
            await driver.open(lambda _info: ASKED)
        assert not driver.is_up
        dongle.unplug()

    run(scenario)


def test_a_dongle_unplugged_during_the_handshake_is_lost_not_silent(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle = ScriptedDongle(tmp_path / "ttyUSB0", Script(answer_hello=False)).plug()
        opening = asyncio.ensure_future(DongleDriver(str(dongle.path), Listener()).open(lambda _info: ASKED))
        await eventually(lambda: dongle.frames, "the first HELLO")
        dongle.unplug()
        with pytest.raises(DongleLost, match=f"^{dongle.path}: the port went away during the handshake"):
            await asyncio.wait_for(opening, 5.0)  # well before the three HELLO timeouts would end

    run(scenario)


# ---------------------------------------------------------------------------- receiving


def test_garbage_and_a_reset_mid_frame_resynchronise_and_are_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        frame = encode(Rx(-80, 12, 1000, b"first"), 40)
        await asyncio.sleep(3 * FRAME_SILENCE)  # quiet after the handshake: the decoder hunts again
        dongle.write(b"boot noise\r\n" + frame)  # garbage before a frame's FEND is skipped
        await eventually(lambda: len(listener.rx) == 1, "the first RX")
        dongle.write(frame[: len(frame) // 2])  # the dongle resets mid-frame, then stays quiet
        await eventually(lambda: driver.decoder.stats["dropped_idle"] == 1, "the half frame dropped")
        dongle.write(encode(Rx(-81, None, 1001, b"second"), 41))
        dongle.write(frame[:9] + encode(Rx(-82, -8, 1002, b"third"), 42))  # reset, rebooted at once
        await eventually(lambda: len(listener.rx) == 3, "the RX after the resets")
        assert [rx.payload for rx in listener.rx] == [b"first", b"second", b"third"]
        assert listener.rx[0].rssi_dbm == -80 and listener.rx[0].snr_db == 3.0
        assert listener.rx[1].snr_db is None
        stats = driver.decoder.stats
        assert stats["garbage_bytes"] == len(b"boot noise\r\n")
        assert stats["bad_crc"] == 1  # the frame cut by the second reset, ended by the next FEND
        for name in ("garbage_bytes", "dropped_idle", "bad_crc"):
            assert listener.counts[f"serial.{name}"] == stats[name]  # passed on to the owner
        assert driver.is_up
        driver.close()
        dongle.unplug()

    run(scenario)


def test_dongle_log_lines_go_to_the_logger_named_by_port_and_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        loop = asyncio.get_running_loop()
        started = loop.time()
        dongle.send(Log(LogLevel.WARNING, "radio busy\x1b[2J\nforged line"))
        await eventually(lambda: listener.counts["log"] == 1, "the LOG line")
        for _ in range(200):
            dongle.send(Log(LogLevel.INFO, "x" * MAX_LOG_TEXT))
        await eventually(
            lambda: listener.counts["log"] + listener.counts["log_suppressed"] == 201, "the flood"
        )
        refilled = LOG_RATE * (loop.time() - started)
        assert listener.counts["log"] <= LOG_BURST + refilled + 1  # the burst and the rate, no more
        assert listener.counts["log_suppressed"] > 0
        driver.close()
        dongle.unplug()

    with caplog.at_level(logging.DEBUG, logger="firmware_bridge.driver"):
        run(scenario)
    shown = [r.getMessage() for r in caplog.records if r.name == "firmware_bridge.driver"]
    assert shown[0] == f"{tmp_path}/ttyDONGLE: dongle: radio busy\ufffd[2J\ufffdforged line"
    assert caplog.records[0].levelno == logging.WARNING


# ---------------------------------------------------------------------------- transmitting


def test_credits_never_overrun_the_dongle_and_a_full_host_queue_drops_and_counts(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path, Script(airtime=0.01))
        capacity = dongle.script.info.queue_capacity
        payloads = [bytes([i]) * (1 + i) for i in range(capacity + HOST_QUEUE + 4)]
        accepted = [driver.send(p) for p in payloads]
        # The first `capacity` leave at once on the credit that came with INFO, HOST_QUEUE wait, 4 drop.
        assert accepted == [True] * (capacity + HOST_QUEUE) + [False] * 4
        assert listener.counts["tx_dropped"] == 4
        await eventually(lambda: len(dongle.transmitted) == capacity + HOST_QUEUE, "every queued frame")
        assert dongle.transmitted == payloads[: capacity + HOST_QUEUE]  # in order
        assert dongle.overruns == 0  # never a TX beyond the window the dongle granted
        await eventually(lambda: listener.counts["tx_done"] == capacity + HOST_QUEUE, "every TX_DONE")
        assert driver.outstanding == 0 and driver.queued == 0
        assert driver.info is not None
        assert not driver.send(b"") and not driver.send(bytes(driver.info.mtu + 1))  # outside 1..MTU
        assert listener.counts["tx_too_long"] == 2
        driver.close()
        dongle.unplug()

    run(scenario)


def test_a_lost_tx_done_times_out_and_lost_credits_are_asked_for_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        driver.send(b"answered")
        await eventually(lambda: listener.counts["tx_done"] == 1, "the first TX_DONE")
        dongle.script.answer_tx = False  # TX_DONE and CREDIT lost on the wire from here on
        dongle.script.send_credits = False
        capacity = dongle.script.info.queue_capacity
        for i in range(capacity + 2):
            driver.send(bytes([i + 1]) * 8)
        await eventually(lambda: listener.counts["tx_lost"] == capacity, "the unanswered TX timed out")
        assert driver.queued == 2  # no credit: the rest waits, nothing overruns the dongle
        dongle.script.send_credits = True  # the wire is clean again
        await eventually(lambda: listener.counts["credit_resync"] >= 1, "a HELLO asking for credit")
        await eventually(lambda: len(dongle.transmitted) == capacity + 3, "the waiting frames sent")
        assert dongle.overruns == 0 and driver.is_up
        driver.close()
        dongle.unplug()

    run(scenario)


# ---------------------------------------------------------------------------- unplugging


def test_an_unplugged_dongle_is_reported_once_and_the_driver_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        dongle.unplug()
        await eventually(lambda: listener.unplugged_because, "the unplug")
        await asyncio.sleep(0.3)  # a housekeeping tick later: still reported once
        assert len(listener.unplugged_because) == 1 and not driver.is_up
        assert not driver.send(b"after") and listener.counts["tx_not_up"] == 1

    run(scenario)


def test_a_port_whose_device_file_vanishes_is_unplugged(tmp_path: Path) -> None:
    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        os.unlink(dongle.path)  # the node went (a hub reset) while the pty itself is still open
        reason = await eventually(lambda: listener.unplugged_because, "the unplug")
        assert reason == ["the port's device file is gone"] and not driver.is_up
        dongle.unplug()

    run(scenario)


# ---------------------------------------------------------------------------- a hostile dongle


def test_nothing_a_hostile_dongle_sends_raises_or_grows_memory(tmp_path: Path) -> None:
    rng = random.Random(11)

    async def scenario() -> None:
        dongle, driver, listener = await opened(tmp_path)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(16):  # 256 KiB of noise (FENDs and escapes among the random bytes)
                dongle.write(rng.randbytes(16384))
                await asyncio.sleep(0)
            dongle.write(b"\xdb" * 5000 + bytes(5000))  # an endless frame: oversize, then garbage
            flood = encode(Rx(-90, 0, 0, bytes(200)), 7) * 1000  # 1000 RX back to back
            dongle.write(b"\xc0" + flood)
            dongle.write(encode(LORA_INFO, 9))  # an INFO nobody asked for
            dongle.write(encode(Tx(b"host only"), 10))  # a frame only a host sends
            await eventually(lambda: listener.counts["frame_unexpected"], "the flood read", timeout=30.0)
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert len(listener.rx) >= 1000
        assert grown < 2_000_000  # what is kept: the listener's 1000 RX (about 0.3 MB); no buffer grew
        assert driver.is_up
        assert listener.counts["answer_unexpected"] >= 1 and listener.counts["frame_unexpected"] >= 1
        assert driver.decoder.stats["oversize"] >= 1
        driver.send(b"still works")
        await eventually(lambda: dongle.transmitted == [b"still works"], "a TX after the abuse")
        driver.close()
        dongle.unplug()

    run(scenario)
