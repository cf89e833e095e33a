"""A dongle's settings (``dongle.json``), its board profile (``hw_configs/dongles/*.toml``), and the
checks both pass before anything is written to a board.

``dongle.json`` is one JSON object on the dongle's flash, read by its firmware at boot::

    {"radio": "sx127x" | "sx126x" | "espnow",
     "pins": {"spi": 1, "sck": 5, ...},          # per radio driver (integers or booleans)
     "region": 1,                                # a RegionCode of the serial protocol
     "frequency_hz": 868100000, "bandwidth_hz": 125000, "spreading_factor": 7, "coding_rate": 5,
     "tx_power_dbm": 14, "preamble_symbols": 8, "sync_word": 18, "channel": 1,
     "status_interval_s": 0,                     # every ConfigKey, in lower case (CONFIG_NAMES)
     "queue_capacity": 8}                        # TX slots, 1..MAX_QUEUE

A profile is TOML: ``[board]`` (``name``, ``chip``: esptool's chip family) and ``[dongle]``: the
same keys, except ``region`` by its RegionCode name (``"EU868_G1"``), and ``[dongle.pins]``.

**The checks** (:func:`check`), against the region's limits in ``agent.core.duty_cycle``: a LoRa
channel (centre +/- half its bandwidth) inside the region's band; spreading factor 7..12; a
bandwidth both Semtech families offer; coding rate 4/5..4/8; transmit power within the radio's
range and the region's limit; and a frame of the largest payload (``MAX_RADIO_PAYLOAD``) within
the region's dwell limit and allowance, timed by ``agent.core.airtime``. ESP-NOW: region NONE
(2.4 GHz), Wi-Fi channel 1..13. Every value must fit its CONFIG field (``CONFIG_FORMATS``). The keys
the checks need must be present: the firmware's defaults are the firmware's, not checked here.
"""

from __future__ import annotations

import json
import math
import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.core.airtime import Chip, EspNowModel, LoRaModulation
from agent.core.duty_cycle import REGIONS, DutyCycleError, Region
from agent.core.media_limits import ESPNOW_MAX_PAYLOAD
from firmware_bridge.limits import MAX_QUEUE, MAX_RADIO_PAYLOAD
from firmware_bridge.protocol import CONFIG_FORMATS, REGION_NAMES, ConfigKey, RadioKind, RegionCode

#: dongle.json's name of each CONFIG key.
CONFIG_NAMES: Final = {key: key.name.lower() for key in ConfigKey}
#: dongle.json's ``radio`` values.
RADIOS: Final = {"sx127x": RadioKind.SX127X, "sx126x": RadioKind.SX126X, "espnow": RadioKind.ESP_NOW}
LORA_CHIPS: Final = {"sx127x": Chip.SX127X, "sx126x": Chip.SX126X}
#: Bandwidths (Hz) both the SX127x and the SX126x offer (SX1276 datasheet RegModemConfig1; SX1261/2 §13.4.5).
LORA_BANDWIDTHS: Final = (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)
#: Spreading factors configured here (SF5/SF6 need an implicit header or an SX126x: not offered).
SPREADING_FACTORS: Final = range(7, 13)
CODING_RATES: Final = range(5, 9)
#: Transmit power a radio can be set to (dBm): SX1276 on PA_BOOST (+2..+20, the pin LoRa boards
#: wire), SX1262 (-9..+22), ESP32 Wi-Fi (esp_wifi_set_max_tx_power: 2..20 dBm).
TX_POWER_RANGE_DBM: Final = {"sx127x": (2, 20), "sx126x": (-9, 22), "espnow": (2, 20)}
#: ESP-NOW's Wi-Fi channels in ETSI's 2400-2483.5 MHz (the US allows 1..11 only).
ESPNOW_CHANNELS: Final = range(1, 14)
#: What the checks need, per radio (the rest may be left to the firmware's defaults).
REQUIRED: Final = {
    "lora": (
        ConfigKey.REGION,
        ConfigKey.FREQUENCY_HZ,
        ConfigKey.BANDWIDTH_HZ,
        ConfigKey.SPREADING_FACTOR,
        ConfigKey.CODING_RATE,
        ConfigKey.TX_POWER_DBM,
        ConfigKey.PREAMBLE_SYMBOLS,
    ),
    "espnow": (ConfigKey.REGION, ConfigKey.CHANNEL, ConfigKey.TX_POWER_DBM),
}
#: esptool's chip families and where a MicroPython image goes in their flash (MicroPython's
#: download pages: ESP32 and ESP32-S2 images start with the second-stage bootloader at 0x1000).
CHIP_OFFSETS: Final = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}

_PROFILE_BOARD_KEYS: Final = ("name", "chip")


class DongleConfigError(ValueError):
    """Settings or a profile that must not go onto a dongle; the message says what to change."""


@dataclass(frozen=True, slots=True)
class DongleSettings:
    """A checked dongle.json: the radio, its pins, the CONFIG fields given, the queue size."""

    radio: str
    pins: Mapping[str, int | bool]
    config: Mapping[ConfigKey, int]
    queue_capacity: int | None

    @property
    def region(self) -> Region:
        return REGIONS[REGION_NAMES[RegionCode(self.config[ConfigKey.REGION])]]

    def frame_airtime(self) -> float:
        """Seconds a frame of the largest payload takes at these settings."""
        if self.radio == "espnow":
            return EspNowModel().airtime(ESPNOW_MAX_PAYLOAD)
        return _modulation(self.radio, self.config).airtime(MAX_RADIO_PAYLOAD)

    def to_json(self) -> dict[str, object]:
        """The dongle.json object, keys in a fixed order."""
        obj: dict[str, object] = {"radio": self.radio, "pins": dict(self.pins)}
        obj.update({CONFIG_NAMES[key]: value for key, value in sorted(self.config.items())})
        if self.queue_capacity is not None:
            obj["queue_capacity"] = self.queue_capacity
        return obj

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def describe(self) -> str:
        """One line for people: what the dongle will do."""
        c = self.config
        region = RegionCode(c[ConfigKey.REGION]).name
        if self.radio == "espnow":
            radio = f"espnow, {region}, Wi-Fi channel {c[ConfigKey.CHANNEL]}"
        else:
            radio = (
                f"{self.radio}, {region} {c[ConfigKey.FREQUENCY_HZ] / 1e6:.3f} MHz, "
                f"SF{c[ConfigKey.SPREADING_FACTOR]} {c[ConfigKey.BANDWIDTH_HZ] / 1000:g} kHz "
                f"4/{c[ConfigKey.CODING_RATE]}"
            )
        dwell = self.region.dwell
        limit = f"dwell limit {dwell * 1000:.0f} ms" if dwell is not None else "no dwell limit"
        return (
            f"{radio}, {c[ConfigKey.TX_POWER_DBM]} dBm; a full frame takes "
            f"{self.frame_airtime() * 1000:.1f} ms ({limit})"
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """A board profile: the board, its chip family, and the dongle.json it gets."""

    path: Path
    name: str
    chip: str
    settings: DongleSettings


def region_code(name: str) -> int:
    """The RegionCode of a region's name (``EU868_G1``, any case); DongleConfigError if unknown."""
    try:
        return int(RegionCode[name.upper()])
    except KeyError:
        raise DongleConfigError(
            f"region {name!r} is not one of {', '.join(r.name for r in RegionCode)}"
        ) from None


def check(obj: Mapping[str, object], where: str) -> DongleSettings:
    """Check a dongle.json object against its radio and region; DongleConfigError names ``where``."""
    known = {"radio", "pins", "queue_capacity"} | set(CONFIG_NAMES.values())
    for name in obj:
        if name not in known:
            raise DongleConfigError(f"{where}: unknown key {name!r} (known: {', '.join(sorted(known))})")
    radio = obj.get("radio")
    if radio not in RADIOS:
        raise DongleConfigError(f"{where}: radio is {radio!r}, expected one of {', '.join(RADIOS)}")
    assert isinstance(radio, str)
    pins = obj.get("pins", {})
    if not isinstance(pins, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in pins.items()
    ):
        raise DongleConfigError(f"{where}: pins must map names to GPIO numbers (or true/false), got {pins!r}")
    config: dict[ConfigKey, int] = {}
    for key, name in CONFIG_NAMES.items():
        if name in obj:
            config[key] = _field(key, obj[name], where)
    queue = obj.get("queue_capacity")
    if queue is not None and not (isinstance(queue, int) and _is_int(queue) and 1 <= queue <= MAX_QUEUE):
        raise DongleConfigError(
            f"{where}: queue_capacity is {queue!r}, expected an integer in 1..{MAX_QUEUE}"
        )
    needed = REQUIRED["espnow" if radio == "espnow" else "lora"]
    missing = [CONFIG_NAMES[key] for key in needed if key not in config]
    if missing:
        raise DongleConfigError(f"{where}: {radio} needs {', '.join(missing)}, which are not set")
    settings = DongleSettings(radio, dict(pins), config, queue if isinstance(queue, int) else None)
    _check_limits(settings, where)
    return settings


def load_profile(path: Path) -> Profile:
    """Read and check a dongle profile; DongleConfigError (naming the file) if it is not right."""
    where = str(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise DongleConfigError(f"{where}: no such profile (see hw_configs/dongles/*.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DongleConfigError(f"{where}: not a readable TOML profile: {e}") from None
    for table in data:
        if table not in ("board", "dongle"):
            raise DongleConfigError(f"{where}: unknown table [{table}] (a profile has [board] and [dongle])")
    board = data.get("board", {})
    dongle = dict(data.get("dongle", {}))
    for key in board:
        if key not in _PROFILE_BOARD_KEYS:
            raise DongleConfigError(
                f"{where}: unknown key board.{key} (known: {', '.join(_PROFILE_BOARD_KEYS)})"
            )
    chip = board.get("chip")
    if chip not in CHIP_OFFSETS:
        raise DongleConfigError(f"{where}: board.chip is {chip!r}, expected one of {', '.join(CHIP_OFFSETS)}")
    name = board.get("name", path.stem)
    if isinstance(dongle.get("region"), str):
        dongle["region"] = region_code(dongle["region"])
    elif "region" in dongle:
        raise DongleConfigError(f'{where}: dongle.region must be a name such as "EU868_G1"')
    return Profile(path, str(name), chip, check(dongle, f"{where}: [dongle]"))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(key: ConfigKey, value: object, where: str) -> int:
    name = CONFIG_NAMES[key]
    if _is_int(value):
        assert isinstance(value, int)
        try:
            struct.pack(CONFIG_FORMATS[key], value)
            return value
        except struct.error:
            pass
    fmt = CONFIG_FORMATS[key][-1]
    bits = struct.calcsize(fmt) * 8
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt.islower() else (0, (1 << bits) - 1)
    raise DongleConfigError(f"{where}: {name} is {value!r}, expected an integer in {low}..{high}")


def _modulation(radio: str, config: Mapping[ConfigKey, int]) -> LoRaModulation:
    return LoRaModulation(
        sf=config[ConfigKey.SPREADING_FACTOR],
        bandwidth=float(config[ConfigKey.BANDWIDTH_HZ]),
        coding_rate=config[ConfigKey.CODING_RATE],
        preamble=config[ConfigKey.PREAMBLE_SYMBOLS],
        chip=LORA_CHIPS[radio],
    )


def _check_limits(s: DongleSettings, where: str) -> None:
    c = s.config
    if c[ConfigKey.REGION] not in {int(r) for r in RegionCode}:
        names = ", ".join(f"{int(r)} {r.name}" for r in RegionCode)
        raise DongleConfigError(f"{where}: region {c[ConfigKey.REGION]} is not a region code ({names})")
    region = s.region
    code = RegionCode(c[ConfigKey.REGION]).name
    if s.radio == "espnow":
        if c[ConfigKey.REGION] != RegionCode.NONE:
            raise DongleConfigError(f"{where}: ESP-NOW works at 2.4 GHz: its region is NONE, not {code}")
        channel = c[ConfigKey.CHANNEL]
        if channel not in ESPNOW_CHANNELS:
            raise DongleConfigError(f"{where}: channel {channel}: choose a Wi-Fi channel in 1..13")
    else:
        if region.low_hz is None or region.high_hz is None:
            lora = ", ".join(r.name for r in RegionCode if r is not RegionCode.NONE)
            raise DongleConfigError(f"{where}: region {code} has no LoRa band: choose {lora}")
        sf, bw, cr = (c[ConfigKey.SPREADING_FACTOR], c[ConfigKey.BANDWIDTH_HZ], c[ConfigKey.CODING_RATE])
        if sf not in SPREADING_FACTORS:
            raise DongleConfigError(f"{where}: spreading_factor {sf}: choose 7..12")
        if bw not in LORA_BANDWIDTHS:
            offered = ", ".join(str(b) for b in LORA_BANDWIDTHS)
            raise DongleConfigError(
                f"{where}: bandwidth_hz {bw} is not a LoRa bandwidth: choose one of {offered}"
            )
        if cr not in CODING_RATES:
            raise DongleConfigError(f"{where}: coding_rate {cr}: choose 5..8 (4/5..4/8)")
        if c[ConfigKey.PREAMBLE_SYMBOLS] < 1:
            raise DongleConfigError(
                f"{where}: preamble_symbols {c[ConfigKey.PREAMBLE_SYMBOLS]}: choose 1..65535"
            )
        frequency = c[ConfigKey.FREQUENCY_HZ]
        low, high = region.low_hz + bw / 2, region.high_hz - bw / 2
        if not low <= frequency <= high:
            raise DongleConfigError(
                f"{where}: frequency_hz {frequency} with a {bw / 1000:g} kHz channel is not inside "
                f"{code} ({region.low_hz / 1e6:.3f}-{region.high_hz / 1e6:.3f} MHz): "
                f"choose {math.ceil(low):d}..{math.floor(high):d}"
            )
    power = c[ConfigKey.TX_POWER_DBM]
    lowest, highest = TX_POWER_RANGE_DBM[s.radio]
    if not lowest <= power <= highest:
        raise DongleConfigError(
            f"{where}: tx_power_dbm {power}: a {s.radio} transmits at {lowest}..{highest} dBm"
        )
    if region.max_tx_power_dbm is not None and power > region.max_tx_power_dbm:
        raise DongleConfigError(
            f"{where}: tx_power_dbm {power} is over {code}'s limit of {region.max_tx_power_dbm:g} dBm "
            f"({region.source}): lower it"
        )
    airtime = s.frame_airtime()
    try:
        region.ledger().check(airtime)
    except DutyCycleError:
        limit = f"{region.dwell * 1000:.0f} ms dwell limit" if region.dwell else "allowance"
        raise DongleConfigError(
            f"{where}: a {MAX_RADIO_PAYLOAD}-byte frame takes {airtime * 1000:.1f} ms at these settings, "
            f"over {code}'s {limit}: lower the spreading factor or widen the bandwidth"
        ) from None
