"""A scripted radio dongle on a real pty, for the driver and transport tests (imported by bare name).

The driver opens it by path exactly as it opens ``/dev/ttyUSB0``: the path is a symlink (in the
test's directory) to the pty's slave end, and the dongle answers on the master end, in the test's
event loop, with the host codec (``firmware_bridge.protocol``). It behaves as the protocol says --
INFO then CREDIT for every HELLO, the CONFIG echo, one TX at a time taking ``airtime`` seconds,
then TX_DONE and CREDIT -- unless a test tells it to misbehave: stay silent, speak another version,
echo other values, refuse the configuration, refuse or never answer a TX, or write anything at all. It
checks the host too: every TX beyond the credit window it granted is counted in ``overruns``.

``unplug()`` closes the pty (the host's reads fail) and removes the path; ``replug()`` opens a new
pty behind the same path, as a USB dongle plugged in again comes back as the same ``/dev/ttyUSB0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    RadioKind,
    RegionCode,
    Rx,
    Status,
    StatusGet,
    Tx,
    TxDone,
    encode,
)

#: An ESP-NOW dongle: no duty cycle, short frames, so tests run in seconds.
ESPNOW_INFO = Info(
    (1, 0, 0), RadioKind.ESP_NOW, 250, RegionCode.NONE, 1_000_000, 0, 4, b"\x24\x6f\x28\x01\x02\x03"
)
#: An SX1262 dongle in EU868 g1 (1 %).
LORA_INFO = Info(
    (1, 0, 0), RadioKind.SX126X, 255, RegionCode.EU868_G1, 10_000, 0, 4, b"\x24\x6f\x28\x0a\x0b\x0c"
)


@dataclass
class Script:
    """How the dongle behaves; every field a test may change, even while it runs."""

    info: Info = ESPNOW_INFO
    #: The protocol version its INFO names (another one: the host must refuse it).
    version: int = 1
    answer_hello: bool = True
    #: Written instead of INFO when answering HELLO (and ``answer_hello`` is then ignored).
    hello_reply: bytes | None = None
    #: CONFIG echo values that differ from what was asked.
    echo_override: dict[ConfigKey, int] = field(default_factory=dict)
    nak_config: bool = False
    #: Seconds each TX occupies the air before its TX_DONE.
    airtime: float = 0.005
    answer_tx: bool = True
    #: Answer every TX with this NAK instead of transmitting it (a dongle out of allowance).
    nak_tx: Nak | None = None
    send_credits: bool = True
    #: Called with every radio payload transmitted (the air between dongles).
    on_air: Callable[[bytes], None] | None = None


class ScriptedDongle:
    """One scripted dongle behind ``path`` (see the module docstring)."""

    def __init__(self, path: Path, script: Script | None = None) -> None:
        self.path = path
        self.script = script or Script()
        #: Every host frame read, in order.
        self.frames: list[Message] = []
        self.transmitted: list[bytes] = []
        #: TX frames that arrived beyond the credit window (the host overran the dongle).
        self.overruns = 0
        self.decoder = Decoder()
        self._master = -1
        self._slave = -1
        self._seq = 0
        self._last_host_seq = 0
        self._queue: list[tuple[int, bytes]] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._unsent = bytearray()

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def plug(self) -> ScriptedDongle:
        """Open a pty and point ``path`` at it (call on the test's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary-clean before the host opens it
        os.set_blocking(self._master, False)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.symlink_to(os.ttyname(self._slave))
        self.decoder = Decoder()
        self._queue.clear()
        self._busy = False
        self._loop.add_reader(self._master, self._readable)
        return self

    def unplug(self) -> None:
        """The USB cable pulled: the pty closes under the host and the path disappears."""
        if not self.plugged:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        self._unsent.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    replug = plug

    # ------------------------------------------------------------------ what a test makes it say

    def write(self, data: bytes) -> None:
        """Raw bytes to the host (garbage, half frames, anything)."""
        if not self.plugged:
            return
        assert self._loop is not None
        if not self._unsent:
            with contextlib.suppress(BlockingIOError):
                data = data[os.write(self._master, data) :]
            if data:
                self._loop.add_writer(self._master, self._writable)
        self._unsent += data

    def _writable(self) -> None:
        assert self._loop is not None
        try:
            del self._unsent[: os.write(self._master, self._unsent)]
        except BlockingIOError:
            return
        except OSError:
            self._unsent.clear()
        if not self._unsent:
            self._loop.remove_writer(self._master)

    def send(self, message: Message, seq: int | None = None) -> None:
        """``message`` to the host, numbered ``seq`` (default: the dongle's own counter)."""
        if seq is None:
            seq, self._seq = self._seq, (self._seq + 1) % 256
        self.write(encode(message, seq))

    def hear(self, payload: bytes, rssi: int = -70, snr_qdb: int | None = 20) -> None:
        """A radio frame heard: RX to the host."""
        self.send(Rx(rssi, snr_qdb, 0, payload))

    def frames_of(self, kind: type) -> list[Message]:
        return [f for f in self.frames if isinstance(f, kind)]

    # ------------------------------------------------------------------ the protocol

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        for received in self.decoder.feed(data):
            self._last_host_seq = received.seq
            self.frames.append(received.message)
            self._answer(received.seq, received.message)

    def _credit(self) -> None:
        if self.script.send_credits:
            free = self.script.info.queue_capacity - len(self._queue) - self._busy
            self.send(Credit(free, self._last_host_seq))

    def _answer(self, seq: int, message: object) -> None:
        script = self.script
        if isinstance(message, Hello):
            if script.hello_reply is not None:
                self.write(script.hello_reply)
            elif script.answer_hello:
                info = script.info
                if script.version != info.protocol_version:
                    info = Info(
                        info.firmware_version,
                        info.radio,
                        info.mtu,
                        info.region,
                        info.duty_cycle_ppm,
                        info.dwell_ms,
                        info.queue_capacity,
                        info.dongle_id,
                        script.version,
                    )
                self.send(info, seq)
                self._credit()
        elif isinstance(message, ConfigSet):
            if script.nak_config:
                self.send(Nak(NakReason.BAD_CONFIG), seq)
            else:
                fields = tuple((k, script.echo_override.get(k, v)) for k, v in message.fields)
                self.send(Config(fields), seq)
        elif isinstance(message, Tx):
            if script.nak_tx is not None:
                self.send(script.nak_tx, seq)
                self._credit()
                return
            if len(self._queue) + self._busy >= script.info.queue_capacity:
                self.overruns += 1
                self.send(Nak(NakReason.QUEUE_FULL), seq)
                self._credit()
                return
            self._queue.append((seq, message.payload))
            self._next_tx()
        elif isinstance(message, StatusGet):
            self.send(Status(0, 0, len(self._queue), script.info.queue_capacity, -100), seq)

    def _next_tx(self) -> None:
        if self._busy or not self._queue:
            return
        assert self._loop is not None
        self._busy = True
        seq, payload = self._queue.pop(0)
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self._loop.call_later(self.script.airtime, self._tx_ended, seq, payload))

    def _tx_ended(self, seq: int, payload: bytes) -> None:
        self._busy = False
        self.transmitted.append(payload)
        if self.script.on_air is not None:
            self.script.on_air(payload)
        if self.script.answer_tx:
            self.send(TxDone(int(self.script.airtime * 1e6)), seq)
        self._credit()
        self._next_tx()


def pair(a: ScriptedDongle, b: ScriptedDongle, rssi: int = -65, snr_qdb: int = 24) -> None:
    """Whatever one transmits the other hears (the air between two dongles)."""
    a.script.on_air = lambda payload: b.hear(payload, rssi, snr_qdb) if b.plugged else None
    b.script.on_air = lambda payload: a.hear(payload, rssi, snr_qdb) if a.plugged else None
