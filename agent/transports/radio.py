"""Serial radio transport (connection type ``Radio``): one broadcast interface per USB radio dongle.

Each dongle's port is watched by one task. It opens the port with
:class:`firmware_bridge.driver.DongleDriver`, detects the dongle, configures it from ``[radio]``
(:func:`configuration`: the LoRa keys for an SX127x/SX126x dongle, channel and power for ESP-NOW),
builds the interface's :class:`~agent.core.medium.MediumSpec` (:func:`medium_for`) and calls
``host.interface_up(f"radio:{path}", spec, self)``. Frames the engine addresses
``Broadcast(interface)`` go to the dongle as TX; every RX is ``host.receive_on(interface,
payload, rssi, snr)``. The distance from RSSI is the engine's, through the spec's path loss.

**The medium.** The airtime model is the dongle's modulation (``LoRaModulation`` with the chip of
INFO's radio kind, or ``EspNowModel``) with INFO's MTU; the allowance and dwell are the stricter of
the configured region (``NONE`` for ESP-NOW) and INFO's ``duty_cycle_ppm`` / ``dwell_ms``. The MTU is
cut to the longest frame that fits both (:func:`agent.transports.radio_settings.longest_transmission`),
so the engine never meets a frame its budget can never send.

**Ports.** ``[radio] ports`` names them; empty, the ports whose USB id is a known ESP32 USB-serial
chip are watched, rescanned every :data:`SCAN_INTERVAL` (at most :data:`MAX_DONGLES`). A port whose
device file is absent is looked at again every :data:`REPLUG_POLL` seconds, silently: a replugged
dongle is up again within about a second. A port that answers garbage, another protocol version,
the wrong configuration or nothing gets one warning naming the port and what was expected, then
retries with back-off (:data:`RETRY_BACKOFF`); the same failure again is not logged again (a
different one is). Unplugged, the interface goes down (its neighbours' links with it), the agent
runs on with its other transports, and the port is watched for the dongle's return.

Counters (``host.count``, shown by ``stats`` as ``transport.radio.*``): ``up``, ``down``,
``refused``, ``send_no_dongle``, ``too_many_ports``, and the driver's and its decoder's
(``tx_sent``, ``tx_done``, ``tx_lost``, ``tx_dropped``, ``tx_nak.<reason>``, ``rx``, ``log``,
``serial.bad_crc``, ``serial.garbage_bytes``, ...; see :mod:`firmware_bridge.driver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from typing import Any, Final

from agent.core.airtime import AirtimeModel, Chip, EspNowModel, LoRaModulation, ModulationError
from agent.core.backoff import Backoff
from agent.core.duty_cycle import REGIONS, Region
from agent.core.errors import PresenceError
from agent.core.limits import MIN_LINK_MTU
from agent.core.media_limits import ESPNOW_MAX_PAYLOAD, LORA_MAX_PAYLOAD
from agent.core.medium import MEDIUM_HEADER_BYTES, Broadcast, MediumSpec, fitted, longest_transmission
from agent.transports.base import LinkHost
from agent.transports.radio_settings import RadioSettings, medium_spec, relation_problem
from firmware_bridge.driver import DongleDriver, DongleError
from firmware_bridge.ports import find_dongle_ports
from firmware_bridge.protocol import (
    REGION_NAMES,
    ConfigKey,
    ConfigSet,
    Info,
    NakReason,
    ProtocolError,
    RadioKind,
    Rx,
)

__all__ = [
    "MAX_DONGLES",
    "REPLUG_POLL",
    "RadioSettingsError",
    "RadioTransport",
    "UnusableDongle",
    "configuration",
    "medium_for",
]

log = logging.getLogger("agent.transports.radio")

#: A watched port whose device file is absent is looked at again this often (s).
REPLUG_POLL: Final = 0.5
#: Autodetection lists the serial ports again this often (s).
SCAN_INTERVAL: Final = 1.0
#: Dongles watched at most (autodetected ones beyond it are ignored and counted).
MAX_DONGLES: Final = 8
#: Retries of a port that answered wrongly (or not at all): 1 s doubling to 30 s, jittered.
RETRY_BACKOFF: Final = Backoff(1.0, 30.0, jitter=0.5)

#: The region each wire region code names, and back.
_REGION_CODES: Final = {name: code for code, name in REGION_NAMES.items()}
_CHIPS: Final = {RadioKind.SX127X: Chip.SX127X, RadioKind.SX126X: Chip.SX126X}


class RadioSettingsError(PresenceError, ValueError):
    """``[radio]`` settings built in code break a rule: ``radio.<key>: expected ..., got ...``."""


class UnusableDongle(DongleError):
    """A dongle answered, but its radio cannot carry presence frames with these settings."""


def configuration(settings: RadioSettings, info: Info) -> ConfigSet:
    """The CONFIG_SET for a dongle of INFO's radio kind: LoRa keys, or ESP-NOW's channel and power."""
    if info.radio is RadioKind.ESP_NOW:
        return ConfigSet(
            (
                (ConfigKey.REGION, _REGION_CODES[REGIONS["none"].name]),
                (ConfigKey.CHANNEL, settings.channel),
                (ConfigKey.TX_POWER_DBM, settings.tx_power_dbm),
            )
        )
    return ConfigSet(
        (
            (ConfigKey.REGION, _REGION_CODES[settings.region_limits.name]),
            (ConfigKey.FREQUENCY_HZ, settings.frequency_hz),
            (ConfigKey.BANDWIDTH_HZ, settings.bandwidth_hz),
            (ConfigKey.SPREADING_FACTOR, settings.spreading_factor),
            (ConfigKey.CODING_RATE, settings.coding_rate),
            (ConfigKey.TX_POWER_DBM, settings.tx_power_dbm),
            (ConfigKey.PREAMBLE_SYMBOLS, settings.preamble_symbols),
            (ConfigKey.SYNC_WORD, settings.sync_word),
        )
    )


def medium_for(settings: RadioSettings, info: Info, port: str) -> MediumSpec:
    """The broadcast medium of a dongle configured from ``settings`` (module docstring); raises
    :class:`UnusableDongle` (one line naming ``port``) if no presence frame fits its limits."""
    region: Region = REGIONS["none"] if info.radio is RadioKind.ESP_NOW else settings.region_limits
    allowance = min(region.duty_cycle, info.duty_cycle_ppm / 1_000_000)
    dwells = [d for d in (region.dwell, info.dwell_ms / 1000 if info.dwell_ms else None) if d is not None]
    dwell = min(dwells) if dwells else None
    if allowance <= 0:
        raise UnusableDongle(f"{port}: the dongle allows no transmission (duty cycle 0 ppm in its INFO)")
    model: LoRaModulation | EspNowModel
    try:
        if info.radio is RadioKind.ESP_NOW:
            model = EspNowModel(mtu=min(info.mtu, ESPNOW_MAX_PAYLOAD))
        else:
            model = LoRaModulation(
                settings.spreading_factor,
                float(settings.bandwidth_hz),
                settings.coding_rate,
                settings.preamble_symbols,
                chip=_CHIPS[info.radio],
                mtu=min(info.mtu, LORA_MAX_PAYLOAD),
            )
    except ModulationError as exc:
        raise UnusableDongle(
            f"{port}: the dongle's {info.radio.name} radio cannot use [radio]: {exc}"
        ) from exc
    smallest = MEDIUM_HEADER_BYTES + MIN_LINK_MTU
    if model.mtu < smallest:
        raise UnusableDongle(
            f"{port}: the dongle's MTU of {info.mtu} bytes is below the {smallest} presence needs"
        )
    spec = medium_spec(settings, model, allowance, dwell)
    fit = fitted(spec)
    if fit is None:
        raise UnusableDongle(
            f"{port}: a {smallest}-byte frame takes {model.airtime(smallest) * 1000:.0f} ms, over the "
            f"{longest_transmission(spec) * 1000:.0f} ms this dongle's duty cycle and dwell allow: "
            "lower the spreading factor"
        )
    return fit


def _airtime_of(model: AirtimeModel) -> Callable[[int], float]:
    """The airtime of a TX of ``n`` bytes (the driver's lost-TX timeout)."""

    def airtime(n: int) -> float:
        return model.airtime(min(n, model.mtu))

    return airtime


class _Dongle:
    """One watched port: its driver while the dongle is up, and the driver's listener."""

    def __init__(self, transport: RadioTransport, path: str) -> None:
        self.transport = transport
        self.path = path
        self.interface = f"radio:{path}"
        self.driver: DongleDriver | None = None
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # DongleListener

    def received(self, rx: Rx) -> None:
        host = self.transport.host
        host.receive_on(self.interface, rx.payload, float(rx.rssi_dbm), rx.snr_db)

    def unplugged(self, reason: str) -> None:
        log.warning(
            "%s: dongle unplugged (%s): its interface is down; watching the port for its return",
            self.path,
            reason,
        )
        self.gone.set()

    def refused(self, reason: NakReason, wait: float) -> None:
        # Only the duty cycle says something about the air: a full queue frees up with the next
        # TX_DONE, and a frame too long is the engine's bug (it is counted either way).
        if reason is NakReason.DUTY_CYCLE:
            self.transport.host.interface_refused(self.interface, wait)

    def count(self, name: str, n: int = 1) -> None:
        self.transport.host.count(f"radio.{name}", n)


class RadioTransport:
    """USB radio dongles as broadcast interfaces (see the module docstring)."""

    def __init__(
        self,
        settings: RadioSettings,
        *,
        find_ports: Callable[[], list[str]] = find_dongle_ports,
        rng: random.Random | None = None,
    ) -> None:
        problem = relation_problem(settings)
        if problem is not None:
            raise RadioSettingsError(f"radio.{problem[0]}: {problem[1]}")
        self.settings = settings
        self._find_ports = find_ports
        self._rng = rng or random.Random()
        self._host: LinkHost | None = None
        self._dongles: dict[str, _Dongle] = {}
        self._by_interface: dict[str, _Dongle] = {}
        self._scan: asyncio.Task[None] | None = None
        self._too_many_logged = False

    @property
    def host(self) -> LinkHost:
        if self._host is None:
            raise RuntimeError("the radio transport has not been started")
        return self._host

    @property
    def up(self) -> dict[str, Info]:
        """The ports whose dongle is up, with its INFO."""
        return {
            d.path: d.driver.info
            for d in self._dongles.values()
            if d.driver is not None and d.driver.is_up and d.driver.info is not None
        }

    def status(self) -> dict[str, Any]:
        """What ``presence-agent status`` shows: each watched port, and the dongle up on it."""
        up = self.up
        ports = []
        for path in self._dongles:
            info = up.get(path)
            ports.append(
                {"port": path, "up": False}
                if info is None
                else {
                    "port": path,
                    "up": True,
                    "radio": info.radio.name,
                    "firmware": ".".join(map(str, info.firmware_version)),
                    "dongle_id": info.dongle_id.hex(),
                    "mtu": info.mtu,
                }
            )
        return {"transport": "radio", "ports": ports}

    # ------------------------------------------------------------------ Transport

    async def start(self, host: LinkHost) -> None:
        self._host = host
        if self.settings.ports:
            for path in self.settings.ports:
                self._watch(path)
            log.info("radio transport: watching %s", ", ".join(self.settings.ports))
        else:
            self._scan = asyncio.ensure_future(self._scan_forever())
            log.info("radio transport: looking for dongles by USB id")

    async def stop(self) -> None:
        tasks = [t for t in (self._scan, *(d.task for d in self._dongles.values())) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def send(self, link: Any, frame: bytes) -> None:
        dongle = self._by_interface.get(str(link.interface)) if isinstance(link, Broadcast) else None
        if dongle is None or dongle.driver is None:
            self.host.count("radio.send_no_dongle")
            return
        dongle.driver.send(frame)

    def close_link(self, link: Any) -> None:
        """Neighbours on a broadcast interface have no connection of their own to close."""

    def proved(self, link: Any) -> None:
        pass

    def established(self, link: Any, peer_key: bytes) -> None:
        pass

    def back_off(self, peer_key: bytes, until: float) -> None:
        """Nothing is dialled on the air: neighbours are heard, not called."""

    # ------------------------------------------------------------------ ports

    def _watch(self, path: str) -> None:
        if path in self._dongles:
            return
        if len(self._dongles) >= MAX_DONGLES:
            self.host.count("radio.too_many_ports")
            if not self._too_many_logged:
                self._too_many_logged = True
                log.warning(
                    "radio transport: ignoring %s: already %d dongles (MAX_DONGLES)", path, MAX_DONGLES
                )
            return
        dongle = _Dongle(self, path)
        self._dongles[path] = dongle
        self._by_interface[dongle.interface] = dongle
        dongle.task = asyncio.ensure_future(self._run(dongle))

    async def _scan_forever(self) -> None:
        while True:
            try:
                found = self._find_ports()
            except OSError as exc:  # sysfs unreadable: try again next time
                log.debug("radio transport: cannot list serial ports: %s", exc)
                found = []
            for path in found:
                self._watch(path)
            await asyncio.sleep(SCAN_INTERVAL)

    async def _run(self, dongle: _Dongle) -> None:
        """Keep ``dongle``'s port up: open, detect, configure, serve until unplugged, again."""
        failures = 0
        logged: type[Exception] | None = None
        while True:
            if not os.path.exists(dongle.path):
                await asyncio.sleep(REPLUG_POLL)
                continue
            driver = DongleDriver(dongle.path, dongle)
            try:
                info = await driver.open(lambda info: configuration(self.settings, info))
                spec = medium_for(self.settings, info, dongle.path)
            except (DongleError, ProtocolError, OSError) as exc:
                driver.close()
                if not os.path.exists(dongle.path):
                    continue  # unplugged meanwhile: the replug poll takes over, quietly
                failures += 1
                self.host.count("radio.refused")
                if type(exc) is not logged:
                    logged = type(exc)
                    log.warning("%s (retrying with back-off; counted as transport.radio.refused)", exc)
                await asyncio.sleep(RETRY_BACKOFF.delay(failures, self._rng.random()))
                continue
            failures, logged = 0, None
            driver.airtime = _airtime_of(spec.airtime)
            await self._serve(dongle, driver, info, spec)

    async def _serve(self, dongle: _Dongle, driver: DongleDriver, info: Info, spec: MediumSpec) -> None:
        dongle.gone.clear()
        dongle.driver = driver
        self.host.interface_up(dongle.interface, spec, self)
        self.host.count("radio.up")
        log.info(
            "%s: %s dongle %s (firmware %s) up as %s: MTU %d, duty cycle %g %%, dwell %s",
            dongle.path,
            info.radio.name,
            info.dongle_id.hex(),
            ".".join(map(str, info.firmware_version)),
            dongle.interface,
            spec.airtime.mtu,
            spec.allowance * 100,
            f"{spec.dwell * 1000:.0f} ms" if spec.dwell is not None else "none",
        )
        try:
            await dongle.gone.wait()
        finally:
            driver.close()
            dongle.driver = None
            self.host.interface_down(dongle.interface)
            self.host.count("radio.down")
