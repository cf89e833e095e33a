"""Emulated radio dongles on real ptys: N dongles on one simulated channel, in real time.

Each emulated dongle is a pseudo-terminal whose slave end the production driver opens by path,
exactly as it opens ``/dev/ttyUSB0`` (through a symlink this module owns, ``<dir>/ttyEMU<i>``, so
the path survives an unplug and replug). Behind the master end runs the dongle firmware's own
core, ``firmware_bridge/micropython/dongle.py`` (the very file flashed onto an ESP32), driving an
emulated radio on one :class:`agent.sim.radio.RadioMedium`: positions, path loss, collisions,
half-duplex radios, and a duty-cycle ledger per transmitter that raises if ever exceeded (the
firmware must refuse first). Everything runs on one thread with real time; only the radio chip
is emulated.

The channel's modulation is fixed when the field is made (:class:`~agent.sim.radio.RadioConfig`):
a CONFIG_SET asking for another spreading factor or bandwidth is echoed with the value in force,
and the host, checking the echo, refuses the dongle with one line naming the field. ``unplug(i)`` closes the
pty (the host's reads fail as on a USB unplug) and ``replug(i)`` opens a new one behind the same
path; ``inject(i, data)`` writes raw bytes towards the host (garbage, half a frame).
"""

from __future__ import annotations

import importlib
import os
import selectors
import threading
import time
import tty
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from agent.core.airtime import LoRaModulation
from agent.core.duty_cycle import EU868_G1, Region
from agent.sim.radio import Position, RadioConfig, RadioError, RadioMedium

#: The firmware's modules, imported from firmware_bridge/micropython (the files a dongle runs).
_DONGLE: Any = importlib.import_module("firmware_bridge.micropython.dongle")
_AIRTIME: Any = importlib.import_module("firmware_bridge.micropython.airtime")

FIRMWARE_VERSION: Final = (0, 1, 0)
#: Region name (agent.core.duty_cycle) -> the serial protocol's region code.
REGION_CODES: Final = {"none": 0, "EU868 g1": 1, "EU868 g2": 2, "EU868 g3": 3, "US915": 4}
#: TX power an emulated SX126x applies (dBm); a request outside is clamped, as the chip does.
TX_POWER_RANGE: Final = (-9, 22)
#: No byte from the host for this long: the firmware drops half a frame (FRAME_SILENCE).
_SILENCE_S: Final = 0.1


class _EmulatedRadio:
    """The firmware's radio interface (dongle.py's docstring) over the simulated channel."""

    def __init__(self, field: DongleField, node: int) -> None:
        self._field = field
        self._node = node
        modulation = field.modulation
        self.kind = 2  # SX126x
        self.mtu = modulation.mtu
        self._settings = {
            2: 868_100_000,  # FREQUENCY_HZ
            3: int(modulation.bandwidth),  # BANDWIDTH_HZ
            4: modulation.sf,  # SPREADING_FACTOR
            5: modulation.coding_rate,  # CODING_RATE
            6: 14,  # TX_POWER_DBM
            7: modulation.preamble,  # PREAMBLE_SYMBOLS
            8: 0x12,  # SYNC_WORD
        }

    def configure(self, fields: dict[int, int]) -> dict[int, int]:
        fixed = {3: self._settings[3], 4: self._settings[4], 5: self._settings[5], 7: self._settings[7]}
        for key, value in fields.items():
            if key in fixed and value != fixed[key]:
                continue  # the channel's modulation is the field's: not applied
            if key == 6:
                value = max(TX_POWER_RANGE[0], min(TX_POWER_RANGE[1], value))
            if key in self._settings:
                self._settings[key] = value
        return {key: self._settings[key] for key in (fields or self._settings) if key in self._settings}

    def airtime_us(self, length: int) -> int:
        s = self._settings
        result: int = _AIRTIME.lora_airtime_us(_AIRTIME.SX126X, length, s[4], s[3], s[5], s[7])
        return result

    def transmit(self, payload: bytes) -> None:
        try:
            self._field.medium.transmit(self._node, payload, self._field.now_s)
        except RadioError as exc:  # the firmware let through what the channel refuses: a bug
            self._field.stats[f"radio_refused.{type(exc).__name__}"] += 1

    def channel_busy(self) -> bool:
        return self._field.medium.channel_busy(self._node, self._field.now_s)

    def noise_floor_dbm(self) -> int:
        return round(self._field.medium.config.noise_floor_dbm)


class _Port:
    """One dongle's pty and firmware core."""

    def __init__(self, field: DongleField, node: int, link: Path) -> None:
        self.node = node
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None
        self.core: Any = None
        self.silent_since: float | None = None
        self.field = field

    def plug(self, now_ms: int) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes are bytes (0x03 is data)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)
        identity = {
            "firmware_version": self.field.firmware_version,
            "dongle_id": bytes([0xEE, 0, 0, 0, 0, self.node]),
            "queue_capacity": self.field.queue_capacity,
            "region": self.field.region_code,
        }
        # A replugged dongle boots afresh: a new core, empty queue, as after a power cycle.
        self.core = _DONGLE.Dongle(_EmulatedRadio(self.field, self.node), identity, now_ms)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    @property
    def plugged(self) -> bool:
        return self.master is not None


class DongleField:
    """N emulated dongles on one channel (see the module docstring). Use as a context manager."""

    def __init__(
        self,
        positions: Sequence[Position],
        directory: Path,
        *,
        modulation: LoRaModulation | None = None,
        region: Region = EU868_G1,
        seed: int = 0,
        queue_capacity: int = 8,
        firmware_version: tuple[int, int, int] = FIRMWARE_VERSION,
        config: RadioConfig | None = None,
    ) -> None:
        self.modulation = modulation or LoRaModulation()
        self.medium = RadioMedium(
            positions, config or RadioConfig.lora(self.modulation), seed=seed, region=region
        )
        self.region_code = REGION_CODES[region.name]
        self.queue_capacity = queue_capacity
        self.firmware_version = firmware_version
        self.now_s = 0.0
        #: Bytes dropped towards a host that does not read (a full pty buffer), per dongle.
        self.stats: Counter[str] = Counter()
        directory.mkdir(parents=True, exist_ok=True)
        self._ports = [_Port(self, i, directory / f"ttyEMU{i}") for i in range(len(positions))]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._commands: list[tuple[str, int, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dongle-field", daemon=True)
        now_ms = self._now_ms()
        for port in self._ports:
            port.plug(now_ms)
            self._register(port)

    # ------------------------------------------------------------------ control (any thread)

    def path(self, node: int) -> str:
        """The port path the host opens for dongle ``node``."""
        return str(self._ports[node].link)

    @property
    def paths(self) -> list[str]:
        return [self.path(i) for i in range(len(self._ports))]

    def start(self) -> DongleField:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(10)
        for port in self._ports:
            if port.plugged:
                port.unplug()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> DongleField:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unplug(self, node: int) -> None:
        self._command("unplug", node)

    def replug(self, node: int) -> None:
        self._command("replug", node)

    def inject(self, node: int, data: bytes) -> None:
        """Write ``data`` towards the host as if the dongle sent it (garbage, half a frame)."""
        self._command("inject", node, data)

    def counts(self, node: int) -> dict[str, int]:
        """The firmware core's counters and its decoder's (what it dropped from the host)."""
        core = self._ports[node].core
        return {**core.counts, **{f"decoder.{k}": v for k, v in core.decoder.stats.items()}}

    def _command(self, kind: str, node: int, data: bytes = b"") -> None:
        with self._lock:
            self._commands.append((kind, node, data))
        os.write(self._wake_w, b"x")
        if not self._thread.is_alive():
            self._run_commands()

    # ------------------------------------------------------------------ the loop (its thread)

    def _now_ms(self) -> int:
        return int(time.monotonic() * 1000)

    def _register(self, port: _Port) -> None:
        assert port.master is not None
        self._selector.register(port.master, selectors.EVENT_READ, port)

    def _write(self, port: _Port, data: bytes) -> None:
        if not data or port.master is None:
            return
        try:
            written = os.write(port.master, data)
        except (BlockingIOError, OSError):
            written = 0
        if written < len(data):
            self.stats[f"dropped_to_host.{port.node}"] += len(data) - written

    def _run_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for kind, node, data in commands:
            port = self._ports[node]
            if kind == "unplug" and port.plugged:
                assert port.master is not None
                self._selector.unregister(port.master)
                port.unplug()
            elif kind == "replug" and not port.plugged:
                port.plug(self._now_ms())
                self._register(port)
            elif kind == "inject":
                self._write(port, data)

    def _run(self) -> None:
        while not self._stop.is_set():
            now_ms = self._now_ms()
            self.now_s = now_ms / 1000.0
            deadlines = [p.core.next_poll_ms(now_ms) for p in self._ports if p.plugged]
            end = self.medium.next_end()
            if end is not None:
                deadlines.append(int(end * 1000) + 1)
            silent = [p.silent_since + _SILENCE_S for p in self._ports if p.silent_since is not None]
            timeout = 0.2
            due = [d / 1000.0 for d in deadlines if d is not None] + silent
            if due:
                timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    self._run_commands()
                    continue
                self._read(key.data)
            self._tick()

    def _read(self, port: _Port) -> None:
        assert port.master is not None
        try:
            data = os.read(port.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # the host closed the port: nothing to read until it opens it again
        if not data:
            return
        now_ms = self._now_ms()
        self.now_s = now_ms / 1000.0
        port.silent_since = time.monotonic()
        self._write(port, port.core.from_host(data, now_ms))

    def _tick(self) -> None:
        now_ms = self._now_ms()
        self.now_s = now_ms / 1000.0
        mono = time.monotonic()
        for port in self._ports:
            if not port.plugged:
                continue
            if port.silent_since is not None and mono - port.silent_since >= _SILENCE_S:
                port.core.idle()
                port.silent_since = None
            self._write(port, port.core.poll(now_ms))
        for delivery in self.medium.deliveries(self.now_s):
            port = self._ports[delivery.receiver]
            if port.plugged:
                self._write(port, port.core.heard(delivery.payload, delivery.rssi, delivery.snr, now_ms))
