"""How long a frame occupies the air: the Semtech LoRa formula and an ESP-NOW model.

Units: payload lengths in bytes, bandwidth in Hz, PHY rates in bit/s, every time in seconds.

**LoRa** (Semtech AN1200.13 "LoRa Modem Designer's Guide" §4; SX1276/77/78/79 datasheet §4.1.1.7;
SX1261/2 datasheet §6.1.4):

- symbol time ``Ts = 2^SF / BW``;
- preamble ``(n_preamble + 4.25) * Ts``;
- payload symbols ``8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) * (CR + 4), 0)``
  with ``CRC`` 1 when the payload CRC is on, ``IH`` 1 for an implicit header, ``DE`` 1 with
  low-data-rate optimisation and ``CR`` 1..4 for coding rates 4/5..4/8;
- time on air ``(n_preamble + 4.25 + payload symbols) * Ts``.

Low-data-rate optimisation is on when the symbol time exceeds 16 ms (SF11 and SF12 at 125 kHz,
SF12 at 250 kHz), unless set explicitly: the datasheets mandate it there, and both ends must agree.

The SX126x family's SF5 and SF6 differ (SX1261/2 datasheet §6.1.4): the preamble counts 6.25 fixed
symbols instead of 4.25 and the payload numerator has no ``+ 8`` (``8 PL + 16 CRC - 4 SF + 20 (1 - IH)``).
The SX127x family has no SF5, and uses SF6 with an implicit header only. micropython-lib's
``lora`` driver (``BaseModem.get_n_symbols_x4``) computes the same, and its tests check it against
Semtech's SX1261 calculator; ``tests/test_airtime.py`` checks this module against those figures.

**ESP-NOW** (ESP-IDF "ESP-NOW" API reference, frame format): a payload of at most 250 bytes in a
vendor-specific 802.11 action frame of 43 more bytes, sent by default at 1 Mbit/s, after the
802.11b long PLCP preamble and header (192 us at 1 Mbit/s). A broadcast is not acknowledged, so
the frame is the whole airtime; contention (DIFS, back-off) is the medium's business, not airtime.

Both models satisfy :class:`AirtimeModel`, which is all a medium needs: the largest payload and the
time a payload of a given length occupies the air.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol

from agent.core.errors import PresenceError
from agent.core.media_limits import (
    ESPNOW_DEFAULT_RATE,
    ESPNOW_FRAME_OVERHEAD,
    ESPNOW_MAX_PAYLOAD,
    ESPNOW_PHY_PREAMBLE,
    LORA_BANDWIDTH_MAX,
    LORA_BANDWIDTH_MIN,
    LORA_LDRO_SYMBOL_TIME,
    LORA_MAX_PAYLOAD,
    LORA_SF_MAX,
    LORA_SF_MIN,
)


class ModulationError(PresenceError, ValueError):
    """A radio's parameters cannot describe a real modem, or a payload does not fit its frame."""


class AirtimeModel(Protocol):
    """What a broadcast medium needs from a modulation: its MTU and a frame's time on the air."""

    @property
    def mtu(self) -> int:
        """The largest payload one frame carries (bytes)."""
        ...

    def airtime(self, payload_len: int) -> float:
        """Seconds a frame with ``payload_len`` bytes of payload occupies the air."""
        ...


class Chip(enum.Enum):
    """The modem family: they agree from SF7 up and differ at SF5/SF6."""

    SX126X = "sx126x"
    SX127X = "sx127x"


@dataclass(frozen=True, slots=True)
class LoRaModulation:
    """One LoRa configuration; both ends of a link must use the same one.

    ``coding_rate`` is the denominator of 4/5..4/8 (5..8). ``ldro=None`` turns low-data-rate
    optimisation on exactly when the symbol time exceeds 16 ms.
    """

    sf: int = 7
    bandwidth: float = 125_000.0
    coding_rate: int = 5
    preamble: int = 8
    crc: bool = True
    implicit_header: bool = False
    ldro: bool | None = None
    chip: Chip = Chip.SX126X
    mtu: int = LORA_MAX_PAYLOAD

    def __post_init__(self) -> None:
        low = LORA_SF_MIN if self.chip is Chip.SX126X else 6
        if not low <= self.sf <= LORA_SF_MAX:
            raise ModulationError(
                f"spreading factor {self.sf} is not supported by {self.chip.value}: "
                f"choose {low}..{LORA_SF_MAX}"
            )
        if self.chip is Chip.SX127X and self.sf == 6 and not self.implicit_header:
            raise ModulationError("SF6 on an SX127x works only with an implicit header: set implicit_header")
        if not LORA_BANDWIDTH_MIN <= self.bandwidth <= LORA_BANDWIDTH_MAX:
            raise ModulationError(
                f"bandwidth {self.bandwidth} Hz is outside LoRa's {LORA_BANDWIDTH_MIN:.0f}.."
                f"{LORA_BANDWIDTH_MAX:.0f} Hz (usually 125000, 250000 or 500000)"
            )
        if not 5 <= self.coding_rate <= 8:
            raise ModulationError(f"coding rate 4/{self.coding_rate} does not exist: choose 5..8 (4/5..4/8)")
        if not 1 <= self.preamble <= 65535:
            raise ModulationError(f"preamble of {self.preamble} symbols: choose 1..65535 (LoRaWAN uses 8)")
        if not 1 <= self.mtu <= LORA_MAX_PAYLOAD:
            raise ModulationError(f"an MTU of {self.mtu} bytes: a LoRa frame carries 1..{LORA_MAX_PAYLOAD}")

    @property
    def symbol_time(self) -> float:
        """Seconds per symbol: ``2^SF / BW``."""
        return float(1 << self.sf) / self.bandwidth

    @property
    def low_data_rate_optimize(self) -> bool:
        """Whether low-data-rate optimisation is on (explicitly, or because a symbol exceeds 16 ms)."""
        return self.symbol_time > LORA_LDRO_SYMBOL_TIME if self.ldro is None else self.ldro

    def payload_symbols(self, payload_len: int) -> int:
        """Symbols after the preamble: the 8 fixed ones plus the header, payload and CRC."""
        self._check(payload_len)
        sx126x_low = self.chip is Chip.SX126X and self.sf < 7
        bits = 8 * payload_len + 16 * self.crc - 4 * self.sf + (0 if sx126x_low else 8)
        if not self.implicit_header:
            bits += 20
        per_block = 4 * (self.sf - 2 * self.low_data_rate_optimize)
        blocks = max(-(-bits // per_block), 0)  # ceil of an integer division
        return 8 + blocks * self.coding_rate

    def symbols(self, payload_len: int) -> float:
        """All symbols of the frame: preamble (with its 4.25 or 6.25 fixed symbols) and the rest."""
        fixed = 6.25 if self.chip is Chip.SX126X and self.sf < 7 else 4.25
        return self.preamble + fixed + self.payload_symbols(payload_len)

    def airtime(self, payload_len: int) -> float:
        """Seconds on the air for ``payload_len`` bytes of payload."""
        return self.symbols(payload_len) * self.symbol_time

    def _check(self, payload_len: int) -> None:
        _check_fits(payload_len, self.mtu)


@dataclass(frozen=True, slots=True)
class EspNowModel:
    """ESP-NOW frames: ``preamble + 8 * (payload + overhead) / rate`` seconds each."""

    rate: float = ESPNOW_DEFAULT_RATE
    mtu: int = ESPNOW_MAX_PAYLOAD
    overhead_bytes: int = ESPNOW_FRAME_OVERHEAD
    preamble: float = ESPNOW_PHY_PREAMBLE

    def __post_init__(self) -> None:
        if not 0 < self.rate < math.inf:
            raise ModulationError(f"a PHY rate of {self.rate} bit/s: give a positive rate (ESP-NOW: 1e6)")
        if self.mtu < 1:
            raise ModulationError(f"an MTU of {self.mtu} bytes: give at least 1 (ESP-NOW v1.0: 250)")
        if self.overhead_bytes < 0 or not 0 <= self.preamble < math.inf:
            raise ModulationError("frame overhead and preamble time must be zero or more")

    def airtime(self, payload_len: int) -> float:
        """Seconds on the air for ``payload_len`` bytes of payload."""
        _check_fits(payload_len, self.mtu)
        return self.preamble + 8 * (payload_len + self.overhead_bytes) / self.rate


def _check_fits(payload_len: int, mtu: int) -> None:
    if not 0 <= payload_len <= mtu:
        raise ModulationError(
            f"a payload of {payload_len} bytes does not fit a frame of 0..{mtu} bytes: split it or shorten it"
        )
