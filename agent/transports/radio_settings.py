"""``[radio]``: the serial radio transport's settings (USB dongles, docs/SERIAL_PROTOCOL.md).

Owned by :mod:`agent.transports.radio`; :mod:`agent.config` fills it from the TOML file, checks
the rule attached to each field, then :func:`relation_problem` (the rules that relate keys: the
frequency inside the region's band, frames that fit the region's dwell and allowance, keepalive
below the dead interval). The modulation keys apply to LoRa dongles; an ESP-NOW dongle takes
``channel`` and ``tx_power_dbm`` and has no duty cycle (2.4 GHz, region ``NONE``).

``region`` names a :class:`agent.core.duty_cycle.Region` as the serial protocol's ``RegionCode``
spells it: the region's name in upper case with ``_`` for spaces (``"EU868 g1"`` is
``"EU868_G1"``, ``"none"`` is ``"NONE"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Final

from agent.core.airtime import AirtimeModel, LoRaModulation, ModulationError
from agent.core.distance import PathLoss
from agent.core.duty_cycle import REGIONS, Region
from agent.core.limits import MIN_LINK_MTU
from agent.core.media_limits import PATH_LOSS_EXPONENT, RSSI_AT_1M
from agent.core.medium import (
    DEFAULT_DEAD_INTERVAL,
    DEFAULT_KEEPALIVE,
    MEDIUM_HEADER_BYTES,
    MediumSpec,
    longest_transmission,
)
from agent.core.settings import positive, rule, rule_of

__all__ = ["REGION_SETTINGS", "RadioSettings", "medium_spec", "relation_problem"]

#: ``[radio] region`` values -> the region (see the module docstring for the spelling).
REGION_SETTINGS: Final[dict[str, Region]] = {r.name.upper().replace(" ", "_"): r for r in REGIONS.values()}
#: Transmit power a dongle may be asked for (dBm): the SX126x family's range (SX127x: 2..20).
TX_POWER_MIN: Final = -9
TX_POWER_MAX: Final = 22
#: Wi-Fi channels of the 2.4 GHz band, where ESP-NOW transmits.
WIFI_CHANNELS: Final = range(1, 15)


def _lora_accepts(**value: Any) -> bool:
    """Whether one modulation parameter is one a LoRa modem has (agent.core.airtime decides)."""
    try:
        LoRaModulation(**value)
    except (ModulationError, TypeError):
        return False
    return True


def _is_port(text: str) -> bool:
    return bool(text) and "\x00" not in text and not text.isspace()


@dataclass(frozen=True, slots=True)
class RadioSettings:
    """``[radio]``: USB radio dongles as broadcast interfaces. Off by default. Times are seconds."""

    enabled: bool = False
    #: Serial ports of dongles; empty: every port whose USB id is a known ESP32 USB-serial chip.
    ports: tuple[str, ...] = rule((), "a list of serial port paths", lambda v: all(map(_is_port, v)))
    region: str = rule(
        "EU868_G1", "one of " + ", ".join(f'"{n}"' for n in REGION_SETTINGS), REGION_SETTINGS.__contains__
    )
    frequency_hz: int = rule(868_100_000, "a frequency in Hz (an integer > 0)", lambda v: v > 0)
    bandwidth_hz: int = rule(
        125_000,
        "a LoRa bandwidth in Hz (usually 125000, 250000 or 500000)",
        lambda v: _lora_accepts(bandwidth=v),
    )
    spreading_factor: int = rule(7, "a spreading factor in 5..12", lambda v: _lora_accepts(sf=v))
    #: The denominator of the coding rate 4/5..4/8.
    coding_rate: int = rule(5, "an integer in 5..8 (4/5..4/8)", lambda v: _lora_accepts(coding_rate=v))
    tx_power_dbm: int = rule(
        14, f"an integer in {TX_POWER_MIN}..{TX_POWER_MAX} (dBm)", lambda v: TX_POWER_MIN <= v <= TX_POWER_MAX
    )
    preamble_symbols: int = rule(8, "an integer in 1..65535", lambda v: _lora_accepts(preamble=v))
    sync_word: int = rule(18, "an integer in 0..255 (0x12: private LoRa networks)", lambda v: 0 <= v <= 255)
    #: ESP-NOW's Wi-Fi channel; all dongles of a mesh must share it.
    channel: int = rule(1, "a Wi-Fi channel in 1..14", WIFI_CHANNELS.__contains__)
    #: Share of the duty-cycle allowance presence traffic may use.
    presence_share: float = rule(0.5, "a number in (0, 1]", lambda v: 0 < v <= 1)
    keepalive_interval: float = positive(DEFAULT_KEEPALIVE)
    #: A neighbour not heard this long is gone (agent.core.medium.DEAD_KEEPALIVES keepalives: with
    #: fewer, a lossy field keeps declaring live neighbours dead and re-forming).
    dead_interval: float = positive(DEFAULT_DEAD_INTERVAL)
    #: The distance model (log-distance, agent.core.distance.PathLoss) that turns a neighbour's
    #: RSSI into the connection's distance: the RSSI at 1 m of this radio's transmit power and
    #: antennas, and the path-loss exponent of the site. The defaults are ESPresense's (BLE
    #: indoors); calibrate them for LoRa by reading the RSSI at a known distance.
    rssi_at_1m_dbm: float = rule(RSSI_AT_1M, "a power in dBm (a finite number)", math.isfinite)
    path_loss_exponent: float = rule(
        PATH_LOSS_EXPONENT, "a number in 1..6 (2 free space, 2.7-3.5 in clutter)", lambda v: 1 <= v <= 6
    )

    @property
    def region_limits(self) -> Region:
        return REGION_SETTINGS[self.region]


def relation_problem(settings: RadioSettings) -> tuple[str, str] | None:
    """The first problem (key, "expected ..., got ...") among the rules that relate ``[radio]``
    keys, or of any field's own rule (for settings built in code); None when there is none."""
    for f in fields(settings):
        found = rule_of(f)
        value = getattr(settings, f.name)
        if found is not None and not found.valid(value):
            return f.name, f"expected {found.expected}, got {value!r}"
    region = settings.region_limits
    if (
        region.low_hz is not None
        and region.high_hz is not None
        and not region.contains(settings.frequency_hz)
    ):
        band = f"{region.low_hz / 1e6:g}..{region.high_hz / 1e6:g} MHz"
        return (
            "frequency_hz",
            f"expected a frequency inside {region.name} ({band}), got {settings.frequency_hz}",
        )
    if settings.dead_interval <= settings.keepalive_interval:
        return "dead_interval", (
            f"expected a number > radio.keepalive_interval ({settings.keepalive_interval:g}), "
            f"got {settings.dead_interval:g}"
        )
    smallest = MEDIUM_HEADER_BYTES + MIN_LINK_MTU
    try:
        model = LoRaModulation(
            settings.spreading_factor, settings.bandwidth_hz, settings.coding_rate, settings.preamble_symbols
        )
    except ModulationError as exc:
        return "spreading_factor", f"expected a modulation a LoRa modem has: {exc}"
    spec = medium_spec(settings, model, region.duty_cycle, region.dwell)
    if model.airtime(smallest) > longest_transmission(spec):
        return "spreading_factor", (
            f"expected settings whose {smallest}-byte frames fit {region.name}'s limits "
            f"({longest_transmission(spec) * 1000:.0f} ms per frame), got frames of "
            f"{model.airtime(smallest) * 1000:.0f} ms: use a lower spreading factor or a wider bandwidth"
        )
    return None


def medium_spec(
    settings: RadioSettings, model: AirtimeModel, allowance: float, dwell: float | None
) -> MediumSpec:
    """The broadcast medium of a dongle with airtime ``model``, ``allowance`` and ``dwell``."""
    return MediumSpec(
        model,
        allowance=allowance,
        dwell=dwell,
        presence_share=settings.presence_share,
        keepalive_interval=settings.keepalive_interval,
        dead_interval=settings.dead_interval,
        path_loss=PathLoss(settings.rssi_at_1m_dbm, settings.path_loss_exponent),
    )
