"""Emulated dongles on real ptys (agent.sim.dongles), driven through pyserial with the host codec.

What is checked: a dongle answers HELLO with INFO and a CREDIT; CONFIG is echoed as in force (a
TX power clamped, a spreading factor the channel does not run echoed as the one in force); a TX
is heard as an RX by a dongle in range and not by one out of range, and answered TX_DONE with
the firmware's airtime; the firmware refuses what would exceed the region's duty cycle (NAK with
a wait) before the channel would; garbage from the host is skipped and counted by the firmware;
an unplugged dongle's port fails like a USB unplug, and a replugged one answers again at the
same path, freshly booted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from agent.core.airtime import LoRaModulation
from agent.core.duty_cycle import EU868_G2
from agent.sim.dongles import DongleField
from firmware_bridge.protocol import (
    Config,
    ConfigKey,
    ConfigSet,
    Credit,
    Decoder,
    Hello,
    Info,
    Message,
    Nak,
    NakReason,
    Rx,
    Tx,
    TxDone,
    encode,
)

IN_RANGE = [(0.0, 0.0), (100.0, 0.0), (50_000.0, 0.0)]  # node 2 is far beyond SF7's range


class Host:
    """One port opened as the production driver opens it: by path, with pyserial."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0.05)
        self.decoder = Decoder()
        self.seq = 0

    def send(self, message: Message) -> int:
        self.seq = (self.seq + 1) % 256
        self.port.write(encode(message, self.seq))
        return self.seq

    def until(self, wanted: type, timeout: float = 10.0) -> list[Message]:
        """Messages read until one of type ``wanted`` arrives (polling, so a loaded CI waits)."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for received in self.decoder.feed(self.port.read(4096)):
                got.append(received.message)  # type: ignore[arg-type]
                if isinstance(received.message, wanted):
                    return got
        raise AssertionError(f"no {wanted.__name__} within {timeout} s; got {got}")

    def quiet(self, seconds: float) -> list[Message]:
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got += [r.message for r in self.decoder.feed(self.port.read(4096))]  # type: ignore[misc]
        return got

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def field(tmp_path: Path) -> Iterator[DongleField]:
    with DongleField(IN_RANGE, tmp_path / "dev") as running:
        yield running


def test_a_dongle_answers_hello_with_its_info_then_a_credit(field: DongleField) -> None:
    host = Host(field.path(0))
    seq = host.send(Hello(1))
    got = host.until(Credit)
    info = next(m for m in got if isinstance(m, Info))
    assert (info.protocol_version, info.mtu, info.queue_capacity) == (1, 255, 8)
    assert info.duty_cycle_ppm == 10_000  # EU868 g1: 1 %
    assert isinstance(got[-1], Credit) and got[-1].free == 8 and got[-1].ack_seq == seq
    host.close()


def test_configuration_is_echoed_as_in_force_clamped_or_left_out(field: DongleField) -> None:
    host = Host(field.path(0))
    host.send(ConfigSet(((ConfigKey.TX_POWER_DBM, 30), (ConfigKey.SPREADING_FACTOR, 12))))
    config = host.until(Config)[-1]
    assert isinstance(config, Config)
    assert config.get(ConfigKey.TX_POWER_DBM) == 22  # the chip's most
    assert config.get(ConfigKey.SPREADING_FACTOR) == 7  # the channel runs SF7: 12 is not applied
    host.close()


def test_a_frame_sent_is_heard_in_range_only_and_costs_its_airtime(field: DongleField) -> None:
    near, far, sender = Host(field.path(1)), Host(field.path(2)), Host(field.path(0))
    sender.send(Hello(1))
    sender.until(Credit)
    seq = sender.send(Tx(b"presence"))
    done = sender.until(TxDone)[-1]
    assert isinstance(done, TxDone)
    assert done.airtime_us == pytest.approx(LoRaModulation().airtime(8) * 1e6, abs=1)
    heard = near.until(Rx)[-1]
    assert isinstance(heard, Rx) and heard.payload == b"presence" and heard.snr_db is not None
    assert not [m for m in far.quiet(0.5) if isinstance(m, Rx)]
    assert seq == 2
    for host in (near, far, sender):
        host.close()


def test_the_firmware_refuses_beyond_the_duty_cycle_before_the_channel_would(tmp_path: Path) -> None:
    # EU868 g2 allows 0.1 %: 3.6 s an hour, about nine 255-byte frames at SF7 (0.4 s each).
    with DongleField(IN_RANGE[:2], tmp_path / "dev", region=EU868_G2) as field:
        host = Host(field.path(0))
        naks: list[Nak] = []
        sent = 0
        while not naks and sent < 20:
            host.send(Tx(bytes(255)))
            sent += 1
            answer = host.until(Credit)
            naks += [m for m in answer if isinstance(m, Nak)]
        assert naks and naks[0].reason is NakReason.DUTY_CYCLE
        assert 8 <= sent - 1 <= 9
        assert 3_000_000 <= naks[0].wait_ms <= 3_610_000  # the first frames leave the window in an hour
        ledger = field.medium.ledger(0)
        assert ledger.used(field.now_s) <= 3.6
        assert not field.stats  # the channel never had to refuse a frame
        host.close()


def test_garbage_from_the_host_is_skipped_and_counted_by_the_firmware(field: DongleField) -> None:
    host = Host(field.path(0))
    host.port.write(b"\x03\x03boot noise\xc0\x00\x01\x02\xc0")
    host.send(Hello(1))
    host.until(Credit)
    counts = field.counts(0)
    assert counts["decoder.garbage_bytes"] >= 12 and counts["decoder.runt"] == 1
    assert counts["decoder.frames"] == 1
    host.close()


def test_an_unplugged_dongle_fails_the_port_and_a_replugged_one_boots_afresh(field: DongleField) -> None:
    host = Host(field.path(0))
    host.send(Hello(1))
    host.until(Credit)
    field.unplug(0)
    with pytest.raises(serial.SerialException):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            host.port.read(1)  # a vanished device: the read fails, as after a USB unplug
    host.close()
    assert not Path(field.path(0)).exists()
    field.replug(0)
    deadline = time.monotonic() + 5
    while not Path(field.path(0)).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    again = Host(field.path(0))
    again.send(Hello(1))
    assert any(isinstance(m, Info) for m in again.until(Credit))
    again.close()
