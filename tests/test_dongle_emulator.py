"""Emulated dongles (agent.sim.dongles) on real ptys, opened with pyserial by path as a host opens
/dev/ttyUSB0 and spoken to with the host codec (firmware_bridge.protocol): detection, the CONFIG
echo, a frame sent on one dongle heard on another in range and not on one out of range, the
dongle's own duty cycle, unplug and replug at the same path, garbage and a reset mid-frame, and the
production driver configuring a dongle again after it rebooted behind the port.
Every wait polls for its condition with a generous deadline (a loaded 2-core CI machine).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from agent.core.airtime import LoRaModulation
from agent.core.duty_cycle import EU868_G2
from agent.sim.dongles import DongleEmulator
from agent.sim.radio import RadioConfig, RadioMedium
from firmware_bridge.driver import DongleDriver
from firmware_bridge.protocol import (
    Config,
    ConfigKey,
    ConfigMismatch,
    ConfigSet,
    Credit,
    Decoder,
    Hello,
    Info,
    Message,
    Nak,
    NakReason,
    RadioKind,
    RegionCode,
    Rx,
    Tx,
    TxDone,
    check_echo,
    encode,
)

DEADLINE = 20.0
#: The [radio] table's defaults, as the host's driver asks for them.
DEFAULT_CONFIG = ConfigSet(
    (
        (ConfigKey.REGION, RegionCode.EU868_G1),
        (ConfigKey.FREQUENCY_HZ, 868_100_000),
        (ConfigKey.BANDWIDTH_HZ, 125_000),
        (ConfigKey.SPREADING_FACTOR, 7),
        (ConfigKey.CODING_RATE, 5),
        (ConfigKey.TX_POWER_DBM, 14),
        (ConfigKey.PREAMBLE_SYMBOLS, 8),
        (ConfigKey.SYNC_WORD, 18),
    )
)


class Port:
    """The host's end of one dongle: pyserial on the path, the host codec, what arrived so far."""

    def __init__(self, path: str) -> None:
        self.serial = serial.Serial(path, 115200, timeout=0.05)
        self.decoder = Decoder()
        self.seq = 0
        self.heard: list[tuple[int, Message]] = []

    def close(self) -> None:
        self.serial.close()

    def send(self, message: Message) -> int:
        self.seq = (self.seq + 1) % 256
        self.serial.write(encode(message, self.seq))
        return self.seq

    def read(self) -> None:
        self.heard += [(r.seq, r.message) for r in self.decoder.feed(self.serial.read(4096))]  # type: ignore[misc]

    def wait_for(self, found: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            self.read()
            if (value := found()) is not None and value is not False:
                return value
        raise AssertionError(f"{self.serial.port}: no {what} within {DEADLINE:.0f} s; heard {self.heard}")

    def answer(self, message: Message, kind: type[Any]) -> Any:
        """Send ``message`` and return the first ``kind`` answering its seq."""
        seq = self.send(message)
        return self.wait_for(
            lambda: next((m for s, m in self.heard if s == seq and isinstance(m, kind)), None), kind.__name__
        )

    def messages(self, kind: type[Any]) -> list[Any]:
        self.read()
        return [m for _, m in self.heard if isinstance(m, kind)]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DongleEmulator]:
    # Dongles 0 and 1 are 100 m apart; dongle 2 is 50 km away, far out of SF7's ~3 km.
    medium = RadioMedium([(0, 0), (100, 0), (50_000, 0)])
    with DongleEmulator(medium, tmp_path / "dev") as emulator:
        yield emulator


@pytest.fixture
def ports(emulator: DongleEmulator) -> Iterator[list[Port]]:
    opened = [Port(path) for path in emulator.paths]
    yield opened
    for port in opened:
        port.close()


def test_each_dongle_is_a_pty_at_a_stable_path_that_answers_hello_with_info(
    emulator: DongleEmulator, ports: list[Port]
) -> None:
    for index, port in enumerate(ports):
        link = Path(emulator.path(index))
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
        info = port.answer(Hello(), Info)
        assert (info.radio, info.region, info.mtu) == (RadioKind.SX126X, RegionCode.EU868_G1, 255)
        assert info.dongle_id == b"\x02EMU" + bytes((0, index))
        assert port.wait_for(lambda p=port: p.messages(Credit), "CREDIT")[0].free == 8


def test_the_config_echo_holds_what_the_medium_allows(ports: list[Port]) -> None:
    port = ports[0]
    echo = port.answer(DEFAULT_CONFIG, Config)
    check_echo(DEFAULT_CONFIG, echo, port.serial.port)
    other = ConfigSet(((ConfigKey.SPREADING_FACTOR, 9), (ConfigKey.TX_POWER_DBM, 20)))
    echo = port.answer(other, Config)
    assert echo == Config(((ConfigKey.TX_POWER_DBM, 20),))  # the shared channel is SF7
    with pytest.raises(ConfigMismatch, match=r"SPREADING_FACTOR asked 9, in force None"):
        check_echo(other, echo, port.serial.port)


def test_a_frame_sent_on_one_dongle_is_heard_in_range_and_not_out_of_range(
    emulator: DongleEmulator, ports: list[Port]
) -> None:
    sender, near, far = ports
    for port in ports:
        port.answer(Hello(), Info)
    payload = b"\xc0presence\xdb"
    done = sender.answer(Tx(payload), TxDone)
    assert done.airtime_us == pytest.approx(LoRaModulation().airtime(len(payload)) * 1e6, abs=1)
    [rx] = near.wait_for(lambda: near.messages(Rx), "RX")
    assert rx.payload == payload and -100 < rx.rssi_dbm < -60 and rx.snr_qdb is not None
    far.answer(Hello(), Info)  # a round trip after the frame ended: anything heard has arrived
    assert far.messages(Rx) == [] and sender.messages(Rx) == []
    assert emulator.stats(0)["tx_done"] == 1 and emulator.stats(1)["rx_frames"] == 1
    assert emulator.stats(2)["rx_frames"] == 0


def test_the_dongle_refuses_what_would_exceed_its_duty_cycle(tmp_path: Path) -> None:
    # EU868 g2 allows 0.1 % of an hour, 3.6 s: at SF12 a 40-byte frame takes about 2 s.
    modulation = LoRaModulation(sf=12)
    medium = RadioMedium([(0, 0), (10, 0)], RadioConfig.lora(modulation), region=EU868_G2)
    with DongleEmulator(medium, tmp_path / "dev") as emulator:
        port = Port(emulator.path(0))
        try:
            assert port.answer(Hello(), Info).duty_cycle_ppm == 1000
            assert port.answer(Tx(bytes(40)), TxDone).airtime_us > 1_800_000
            nak = port.answer(Tx(bytes(40)), Nak)
            assert nak.reason == NakReason.DUTY_CYCLE and nak.wait_ms > 3_500_000  # about an hour
        finally:
            port.close()
        stats = emulator.stats(0)
        assert (stats["tx_done"], stats["nak_duty_cycle"], stats["medium_refused"]) == (1, 1, 0)
        assert len(medium.ledger(0)) == 1  # the medium's own ledger saw the one frame only


def test_unplug_fails_the_hosts_reads_and_replug_answers_at_the_same_path(
    emulator: DongleEmulator, ports: list[Port]
) -> None:
    port = ports[1]
    port.answer(Hello(), Info)
    emulator.unplug(1)
    assert not os.path.lexists(emulator.path(1))
    with pytest.raises(serial.SerialException):
        for _ in range(100):
            port.serial.read(1)
    port.close()
    emulator.replug(1)
    again = Port(emulator.path(1))
    try:
        assert again.answer(Hello(), Info).dongle_id == b"\x02EMU\x00\x01"
    finally:
        again.close()
    assert emulator.stats(1)["boots"] == 2


def test_garbage_both_ways_is_skipped_and_counted(emulator: DongleEmulator, ports: list[Port]) -> None:
    port = ports[0]
    garbage = b"\x00\xffnot a frame\r\n\x03"  # to the dongle, before any FEND: garbage (0x03 is data)
    port.serial.write(garbage)
    port.answer(Hello(), Info)
    assert emulator.stats(0)["garbage_bytes"] == len(garbage)
    emulator.inject(0, b"\xc0\x12\x34garbage\xc0")  # to the host: a frame that fails its CRC
    port.answer(Hello(), Info)
    assert port.decoder.stats["bad_crc"] == 1


def test_a_reset_mid_frame_resynchronises_and_the_dongle_boots_again(
    emulator: DongleEmulator, ports: list[Port]
) -> None:
    port = ports[2]
    port.answer(Hello(), Info)
    emulator.reset(2)
    info = port.answer(Hello(), Info)
    assert info.dongle_id == b"\x02EMU\x00\x02"
    dropped = port.decoder.stats
    assert dropped["bad_crc"] + dropped["bad_escape"] + dropped["garbage_bytes"] > 0
    assert emulator.stats(2)["boots"] == 2


class Listener:
    """The driver's owner in the reboot test: what it heard and counted."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.unplugged_for: str | None = None

    def received(self, rx: Rx) -> None:
        pass

    def unplugged(self, reason: str) -> None:
        self.unplugged_for = reason

    def refused(self, reason: NakReason, wait: float) -> None:
        pass

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE:.0f} s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("flashed_power", [10, 14], ids=["dongle.json-differs", "dongle.json-agrees"])
def test_a_dongle_that_reboots_under_the_driver_is_read_back_and_configured_again(
    tmp_path: Path, flashed_power: int
) -> None:
    # The dongle's flash says TX power `flashed_power`; the agent configures 14 dBm. A reboot behind
    # a USB-serial bridge keeps the port and loses the agent's configuration.
    medium = RadioMedium([(0, 0), (100, 0)])
    asked = DEFAULT_CONFIG

    async def scenario(emulator: DongleEmulator) -> None:
        listener = Listener()
        driver = DongleDriver(emulator.path(0), listener)
        await driver.open(lambda _info: asked)
        try:
            assert emulator.config_in_force(0)[ConfigKey.TX_POWER_DBM] == 14
            emulator.reset(0)
            await _until(lambda: driver.stats["config_checked"] >= 1, "configuration read back")
            await _until(lambda: emulator.config_in_force(0)[ConfigKey.TX_POWER_DBM] == 14, "14 dBm again")
            assert driver.stats["reconfigured"] == (1 if flashed_power != 14 else 0)
            assert driver.is_up and listener.unplugged_for is None
            before = driver.stats["tx_done"]
            assert driver.send(b"after the reboot")
            await _until(lambda: driver.stats["tx_done"] > before, "TX_DONE after the reboot")
        finally:
            driver.close()

    with DongleEmulator(medium, tmp_path / "dev", settings={"tx_power_dbm": flashed_power}) as emulator:
        asyncio.run(scenario(emulator))
