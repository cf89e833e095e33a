"""Emulated radio dongles on real ptys: the host's serial code cannot tell them from hardware.

Each :class:`EmulatedDongle` is a pseudo-terminal (``os.openpty``) whose slave the host opens by
path, exactly as it opens ``/dev/ttyUSB0``, through a symlink the emulator owns
(``<directory>/ttyEMU<i>``) so that the path survives a replug. Behind it runs the dongle
firmware's own core, ``firmware_bridge/micropython/dongle.py`` (imported from that very file by
:mod:`agent.sim.firmware`), with an :class:`EmulatedRadio` on one shared
:class:`~agent.sim.radio.RadioMedium` (positions, path loss, airtime, collisions, half-duplex,
each transmitter's duty-cycle ledger). Node ``i`` of the medium is dongle ``i``.

**Real time, one thread.** :class:`DongleEmulator` runs every dongle on one background thread: a
``selectors`` loop over the ptys' master ends with the wall clock (``time.monotonic``) as the
dongles' millisecond clock and the medium's clock (whole milliseconds, so the two agree). Calls
from other threads (:meth:`~DongleEmulator.unplug`, :meth:`~DongleEmulator.inject`, ...) run on that
thread and return when done, so the medium is only ever asked in time order.

**Faults.** ``unplug(i)`` closes the pty and removes the symlink (the host's reads fail, as when a
USB dongle is pulled); ``replug(i)`` opens a new pty, points the symlink at it and boots a fresh core
(a dongle loses its RAM, its duty-cycle ledger included, when it loses power; the medium's ledger
for the node keeps counting). ``inject(i, data)`` writes raw bytes to the host (garbage);
``reset(i)`` writes the first half of a frame, then boot noise, and reboots the core (a reset
mid-frame).

**Bare radios** (an attacker in range). With ``dongles=N`` below the medium's node count, nodes
``N`` and up get no dongle and no agent: :meth:`~DongleEmulator.transmit` puts any payload on the
air from one (forged frames, replays; the medium's half-duplex rule and the node's duty-cycle
ledger apply as to any radio; :meth:`~DongleEmulator.channel_busy` lets it listen before talking)
and :meth:`~DongleEmulator.heard` returns what it received (a sniffer's capture, the last
:data:`BARE_RADIO_CAPTURE` frames), so a test can inject and replay frames on the channel itself
rather than on a host's serial line.

**What is counted** (:meth:`DongleEmulator.stats`): the dongle decoder's counters (what the host sent
that it dropped), the core's counters (TX answers, NAK reasons, RX), ``host_dropped_bytes``
(output the pty had no room for: nobody reading), ``medium_refused`` (transmissions the medium
refused: the dongle's own ledger must make this 0), ``boots``, ``medium_airtime_us`` (microseconds the
dongle's node has transmitted since the medium was made, from the medium's accounting).

The medium is one channel: FREQUENCY_HZ, SYNC_WORD and TX_POWER_DBM are kept as the chip driver
would set them but not modelled; a CONFIG_SET of another spreading factor, bandwidth, coding rate or
preamble than the medium's is not applied (the CONFIG echo leaves it out, and the host refuses the
dongle with its one line).
"""

from __future__ import annotations

import collections
import errno
import heapq
import math
import os
import queue
import selectors
import threading
import time
import tty
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from agent.core.airtime import Chip, EspNowModel, LoRaModulation
from agent.core.errors import PresenceError
from agent.sim.firmware import load
from agent.sim.radio import RadioError, RadioMedium

T = TypeVar("T")

#: What an ESP32 prints at power-on (ROM bootloader at 115200 baud) before the firmware runs.
BOOT_NOISE = (
    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    b"configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\nentry 0x400805e4\r\n"
)
#: How long a call from another thread waits for the emulator's thread (generous: a loaded CI).
CALL_TIMEOUT = 30.0
#: Largest read from one pty at a time.
READ_SIZE = 4096
#: Frames a bare radio keeps of what it heard (the oldest forgotten first).
BARE_RADIO_CAPTURE = 256
#: Modulation keys the shared medium fixes: BANDWIDTH_HZ, SPREADING_FACTOR, CODING_RATE, PREAMBLE.
_MODULATION_KEYS = (3, 4, 5, 7)


class EmulatorError(PresenceError):
    """The emulator was asked for something it cannot do (a bad index, a closed emulator)."""


def firmware() -> dict[str, ModuleType]:
    """The firmware modules the emulator runs, by bare name."""
    names = ("dongle", "dongle_settings", "duty_cycle", "radio_sx127x", "radio_sx126x", "radio_espnow")
    return {name: load(name) for name in names}


class EmulatedRadio:
    """The dongle's radio interface (see dongle.py's docstring) on node ``node`` of a medium.

    The chip's rules for what a CONFIG applies are the firmware's own (radio_sx127x / radio_sx126x
    / radio_espnow settings); transmissions go on the medium at the emulator's clock.
    """

    def __init__(self, medium: RadioMedium, node: int, clock: Callable[[], float]) -> None:
        fw = firmware()
        self.medium = medium
        self.node = node
        self._clock = clock
        model = medium.config.airtime
        self.mtu: int = model.mtu
        self._modulation: dict[int, int] = {}
        if isinstance(model, LoRaModulation):
            chip = fw["radio_sx126x"] if model.chip is Chip.SX126X else fw["radio_sx127x"]
            self.kind: int = chip.KIND
            self._settings = chip.settings()
            self._modulation = {
                3: int(model.bandwidth),
                4: model.sf,
                5: model.coding_rate,
                7: model.preamble,
            }
            self._settings.settle(self._modulation)
        elif isinstance(model, EspNowModel):
            self.kind = fw["radio_espnow"].KIND
            self._settings = fw["radio_espnow"].EspNowSettings()
        else:
            raise EmulatorError(f"the medium's airtime model {model!r} is neither LoRa nor ESP-NOW")
        #: When the transmission under way ends (medium seconds), or None.
        self.sending_until: float | None = None
        self.refused = 0

    def configure(self, fields: dict[int, int]) -> dict[int, int]:
        fixed = {k: v for k, v in fields.items() if k in _MODULATION_KEYS}
        applied: dict[int, int] = self._settings.settle({k: v for k, v in fields.items() if k not in fixed})
        applied.update({k: v for k, v in fixed.items() if self._modulation.get(k) == v})
        return applied

    def settings(self) -> dict[int, int]:
        return dict(self._settings.fields)

    def airtime_us(self, payload_len: int) -> int:
        if self.kind == 3:
            return int(firmware()["radio_espnow"].espnow_airtime_us(payload_len))
        return int(self._settings.airtime_us(payload_len))

    def send(self, payload: bytes) -> None:
        try:
            self.sending_until = self.medium.transmit(self.node, payload, self._clock())
        except RadioError as exc:
            self.refused += 1
            raise OSError(errno.EIO, f"the medium refused the transmission: {exc}") from None

    def channel_busy(self) -> bool:
        return self.medium.channel_busy(self.node, self._clock())

    def noise_floor_dbm(self) -> int:
        return round(self.medium.config.noise_floor_dbm)


@dataclass(eq=False)
class EmulatedDongle:
    """One dongle: its pty, its firmware core and its radio (node ``index`` of the medium)."""

    index: int
    link: Path
    dongle_id: bytes
    settings: dict[str, Any]
    radio: EmulatedRadio
    core: Any = None
    master: int | None = None
    slave: int | None = None
    last_byte_ms: int | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {"host_dropped_bytes": 0, "medium_refused": 0, "boots": 0}
    )

    @property
    def plugged(self) -> bool:
        return self.master is not None

    @property
    def slave_name(self) -> str:
        """The pty slave the symlink points at (changes on every replug)."""
        return os.readlink(self.link)


class DongleEmulator:
    """N emulated dongles on one medium, one pty each (see the module docstring).

    ``settings`` are dongle.json keys for every dongle (defaults: the medium's radio and
    modulation, its region, a frequency in its band, ``queue_capacity`` 8).
    """

    def __init__(
        self,
        medium: RadioMedium,
        directory: Path,
        *,
        settings: Mapping[str, Any] | None = None,
        boot_noise: bytes = BOOT_NOISE,
        dongles: int | None = None,
    ) -> None:
        count = len(medium.positions) if dongles is None else dongles
        if not 0 <= count <= len(medium.positions):
            raise EmulatorError(f"{dongles} dongles on a medium of {len(medium.positions)} nodes")
        self.medium = medium
        self.directory = Path(directory)
        self.boot_noise = boot_noise
        self._fw = firmware()
        self._t0 = time.monotonic()
        self._now_ms = 0
        self._selector = selectors.DefaultSelector()
        self._calls: queue.Queue[tuple[Callable[[], Any], _Result]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._timers: list[tuple[int, int, int]] = []  # (ms, order, dongle) when a TX ends
        self._order = 0
        self._stopping = False
        #: What stopped the emulator's thread, if a firmware core raised (a firmware bug).
        self.crash: BaseException | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dongles = [self._make(i, dict(settings or {})) for i in range(count)]
        #: What each bare radio (node ``count`` and up) heard: (sender node, payload), newest last.
        self._captured: dict[int, collections.deque[tuple[int, bytes]]] = {
            node: collections.deque(maxlen=BARE_RADIO_CAPTURE) for node in range(count, len(medium.positions))
        }
        for dongle in self.dongles:
            self._plug(dongle)
        self._thread = threading.Thread(target=self._loop, name="dongle-emulator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the test's side

    def path(self, index: int) -> str:
        """The port path the host opens for dongle ``index`` (a symlink to its current pty)."""
        return str(self._dongle(index).link)

    @property
    def paths(self) -> list[str]:
        return [str(d.link) for d in self.dongles]

    def unplug(self, index: int) -> None:
        self._call(lambda: self._unplug(self._dongle(index)))

    def replug(self, index: int) -> None:
        self._call(lambda: self._plug(self._dongle(index)))

    def inject(self, index: int, data: bytes) -> None:
        """Write ``data`` to the host as if the dongle sent it (garbage, half frames)."""
        self._call(lambda: self._write(self._dongle(index), data))

    def transmit(self, node: int, payload: bytes) -> float:
        """Put ``payload`` on the air from bare radio ``node`` now; returns when the frame ends
        (medium seconds). Raises :class:`~agent.sim.radio.RadioError` as the medium does (busy, no
        allowance left)."""
        self._bare(node)
        return self._call(lambda: self.medium.transmit(node, payload, self._clock_ms() / 1000.0))

    def channel_busy(self, node: int) -> bool:
        """Whether bare radio ``node`` hears a frame on the air now (to listen before it talks)."""
        self._bare(node)
        return self._call(lambda: self.medium.channel_busy(node, self._clock_ms() / 1000.0))

    def heard(self, node: int) -> list[tuple[int, bytes]]:
        """What bare radio ``node`` received so far: (sender node, payload), oldest first."""
        captured = self._bare(node)
        return self._call(lambda: list(captured))

    def reset(self, index: int, *, cut: bytes | None = None) -> None:
        """A reset mid-frame: the first half of a frame (``cut``, default half a LOG), boot noise,
        and a fresh core (its queue and ledger are gone)."""

        def run() -> None:
            dongle = self._dongle(index)
            sp = self._fw["dongle"].sp
            half = (
                cut if cut is not None else sp.encode(sp.LOG, 0, {"level": 1, "text": "about to reset"})[:9]
            )
            self._write(dongle, half + self.boot_noise)
            self._boot(dongle)

        self._call(run)

    def stats(self, index: int) -> dict[str, int]:
        """Dongle ``index``'s counters: its decoder's, its core's and the emulator's."""

        def run() -> dict[str, int]:
            dongle = self._dongle(index)
            airtime_us = round(self.medium.airtime_used[index] * 1_000_000)
            return {
                **dongle.core.decoder.stats,
                **dongle.core.counters,
                **dongle.counters,
                "medium_airtime_us": airtime_us,
            }

        return self._call(run)

    def medium_stats(self) -> dict[str, int]:
        """The shared medium's counts: frames ``sent``, ``delivered``, and each loss reason."""
        return self._call(lambda: dict(self.medium.stats))

    def config_in_force(self, index: int) -> dict[int, int]:
        """The CONFIG fields in force on dongle ``index`` ({ConfigKey: value})."""
        return self._call(lambda: dict(self._dongle(index).core.in_force()))

    def close(self) -> None:
        if self._wake_w < 0:
            return
        if self._thread.is_alive():
            self._call(self._shutdown)
            self._thread.join(CALL_TIMEOUT)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_w = -1
        self._selector.close()

    def __enter__(self) -> DongleEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ set-up

    def _make(self, index: int, overrides: dict[str, Any]) -> EmulatedDongle:
        radio = EmulatedRadio(self.medium, index, self._medium_now)
        settings = self._fw["dongle_settings"].parse({**self._defaults(radio), **overrides})
        dongle_id = b"\x02EMU" + index.to_bytes(2, "big")
        return EmulatedDongle(index, self.directory / f"ttyEMU{index}", dongle_id, settings, radio)

    def _defaults(self, radio: EmulatedRadio) -> dict[str, Any]:
        regions = self._fw["duty_cycle"].REGIONS
        code = next((c for c, r in regions.items() if r[0] == self.medium.region.name), 0)
        out: dict[str, Any] = {"region": code}
        if radio.kind == 3:
            out["radio"] = "espnow"
            return out
        out["radio"] = "sx126x" if radio.kind == 2 else "sx127x"
        fields = radio.settings()
        out.update(
            bandwidth_hz=fields[3],
            spreading_factor=fields[4],
            coding_rate=fields[5],
            preamble_symbols=fields[7],
        )
        _, low, high, _, _ = regions[code]
        if low is not None and not low <= fields[2] <= high:
            out["frequency_hz"] = (low + high) // 2000 * 1000
        return out

    def _plug(self, dongle: EmulatedDongle) -> None:
        if dongle.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline, before anyone opens it
        os.set_blocking(master, False)
        dongle.master, dongle.slave = master, slave
        temporary = dongle.link.with_name(dongle.link.name + ".new")
        with suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(os.ttyname(slave))
        temporary.replace(dongle.link)
        self._selector.register(master, selectors.EVENT_READ, dongle)
        self._write(dongle, self.boot_noise)
        self._boot(dongle)

    def _boot(self, dongle: EmulatedDongle) -> None:
        dongle.counters["boots"] += 1
        dongle.last_byte_ms = None
        dongle.radio.sending_until = None
        dongle.core = self._fw["dongle"].Dongle(dongle.radio, dongle.settings, dongle.dongle_id, self._now_ms)
        self._write(dongle, dongle.core.take())

    def _unplug(self, dongle: EmulatedDongle) -> None:
        if dongle.master is None or dongle.slave is None:
            return
        self._selector.unregister(dongle.master)
        os.close(dongle.master)
        os.close(dongle.slave)
        dongle.master = dongle.slave = None
        with suppress(FileNotFoundError):
            dongle.link.unlink()

    def _shutdown(self) -> None:
        for dongle in self.dongles:
            self._unplug(dongle)
        self._stopping = True

    # ------------------------------------------------------------------ the emulator's thread

    def _loop(self) -> None:
        try:
            while not self._stopping:
                self._tick()
                timeout = self._timeout()
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._run_calls()
                    else:
                        self._read(key.data)
                self._run_calls()
        except BaseException as exc:  # a firmware bug: stop loudly, every later call raises it
            self.crash = exc
            self._stopping = True
            for dongle in self.dongles:
                self._unplug(dongle)

    def _tick(self) -> None:
        now = self._clock_ms()
        medium_now = now / 1000.0
        if (end := self.medium.next_end()) is not None and end <= medium_now:
            for delivery in self.medium.deliveries(medium_now):
                if delivery.receiver >= len(self.dongles):
                    self._captured[delivery.receiver].append((delivery.sender, delivery.payload))
                    continue
                receiver = self.dongles[delivery.receiver]
                if receiver.plugged:
                    snr_qdb = round(delivery.snr * 4)
                    self._write(
                        receiver, receiver.core.heard(delivery.payload, round(delivery.rssi), snr_qdb, now)
                    )
        while self._timers and self._timers[0][0] <= now:
            _, _, index = heapq.heappop(self._timers)
            dongle = self.dongles[index]
            if dongle.plugged and dongle.radio.sending_until is not None:
                dongle.radio.sending_until = None
                self._write(dongle, dongle.core.sent(now))
                self._after(dongle)
        for dongle in self.dongles:
            if not dongle.plugged:
                continue
            if dongle.last_byte_ms is not None and now - dongle.last_byte_ms >= self._silence_ms():
                dongle.last_byte_ms = None
                self._write(dongle, dongle.core.idle(now))
                self._after(dongle)
            wake = dongle.core.next_wake_ms()
            if wake is not None and wake <= now:
                self._write(dongle, dongle.core.poll(now))
                self._after(dongle)

    def _timeout(self) -> float:
        now = self._clock_ms()
        wakes = [t for t, _, _ in self._timers[:1]]
        if (end := self.medium.next_end()) is not None:
            wakes.append(math.ceil(end * 1000))
        for dongle in self.dongles:
            if dongle.plugged:
                if (wake := dongle.core.next_wake_ms()) is not None:
                    wakes.append(wake)
                if dongle.last_byte_ms is not None:
                    wakes.append(dongle.last_byte_ms + self._silence_ms())
        return max(0.0, (min(wakes) - now) / 1000.0) if wakes else 1.0

    def _read(self, dongle: EmulatedDongle) -> None:
        if dongle.master is None:
            return
        try:
            data = os.read(dongle.master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open (cannot happen while the emulator holds one)
            return
        if data:
            now = self._clock_ms()
            dongle.last_byte_ms = now
            self._write(dongle, dongle.core.feed(data, now))
            self._after(dongle)

    def _after(self, dongle: EmulatedDongle) -> None:
        """Schedule the end of a transmission the core just started."""
        radio = dongle.radio
        if radio.refused:
            dongle.counters["medium_refused"] += radio.refused
            radio.refused = 0
        if radio.sending_until is not None and not any(i == dongle.index for _, _, i in self._timers):
            heapq.heappush(self._timers, (math.ceil(radio.sending_until * 1000), self._order, dongle.index))
            self._order += 1

    def _write(self, dongle: EmulatedDongle, data: bytes) -> None:
        if not data or dongle.master is None:
            return
        try:
            written = os.write(dongle.master, data)
        except BlockingIOError:
            written = 0
        except OSError:
            written = 0
        dongle.counters["host_dropped_bytes"] += len(data) - written

    def _silence_ms(self) -> int:
        return int(self._fw["dongle"].sp.FRAME_SILENCE_MS)

    def _clock_ms(self) -> int:
        self._now_ms = max(self._now_ms, int((time.monotonic() - self._t0) * 1000))
        return self._now_ms

    def _medium_now(self) -> float:
        return self._now_ms / 1000.0

    def _dongle(self, index: int) -> EmulatedDongle:
        if not 0 <= index < len(self.dongles):
            raise EmulatorError(f"no dongle {index}: the emulator has dongles 0..{len(self.dongles) - 1}")
        return self.dongles[index]

    def _bare(self, node: int) -> collections.deque[tuple[int, bytes]]:
        captured = self._captured.get(node)
        if captured is None:
            raise EmulatorError(
                f"node {node} is not a bare radio: this emulator's are {sorted(self._captured) or 'none'}"
            )
        return captured

    def _call(self, fn: Callable[[], T]) -> T:
        if self.crash is not None:
            raise EmulatorError(f"the dongle emulator's thread stopped: {self.crash!r}") from self.crash
        if self._stopping or not self._thread.is_alive():
            raise EmulatorError("the dongle emulator is closed")
        result: _Result = _Result()
        self._calls.put((fn, result))
        with suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")
        if not result.done.wait(CALL_TIMEOUT):
            raise EmulatorError(f"the dongle emulator's thread did not answer within {CALL_TIMEOUT:.0f} s")
        if result.error is not None:
            raise result.error
        return result.value  # type: ignore[no-any-return]

    def _run_calls(self) -> None:
        with suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass
        while True:
            try:
                fn, result = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                result.value = fn()
            except BaseException as exc:  # handed to the caller's thread
                result.error = exc
            result.done.set()


@dataclass(eq=False)
class _Result:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


@contextmanager
def emulated_dongles(
    medium: RadioMedium, directory: Path, *, settings: Mapping[str, Any] | None = None
) -> Iterator[DongleEmulator]:
    """A :class:`DongleEmulator` that is closed on leaving the block."""
    emulator = DongleEmulator(medium, directory, settings=settings)
    try:
        yield emulator
    finally:
        emulator.close()
