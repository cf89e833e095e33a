"""An SX1276/77/78/79 LoRa radio (micropython-lib ``lora-sx127x`` + ``lora-sync``), e.g. TTGO LoRa32,
Heltec WiFi LoRa 32 V2. The shared logic is radio_lora.py; this file is the chip's limits and its
modem built from dongle.json's ``pins``::

    {"spi": 1, "sck": 5, "mosi": 27, "miso": 19, "cs": 18, "reset": 14, "dio0": 26, "dio1": 33,
     "tx_ant": "PA_BOOST"}             # tx_ant: "PA_BOOST" (most boards, the default) or "RFO"

Limits (micropython-lib's driver and the SX1276 datasheet): 137..1020 MHz, SF7..12 (SF6 needs an
implicit header, which this dongle does not use), TX power on PA_BOOST +2..+17 dBm or +20 (18, 19
are set as 17), on RFO -4..+15 dBm. ``clamp_power`` and ``settings`` are tested under CPython and
MicroPython; ``make_radio`` needs the board and is **not verified on hardware** (it compiles with
mpy-cross and follows the driver's README).
"""

from airtime import SX127X
from radio_lora import LoRaRadio, LoRaSettings, optional_pin, spi_bus

KIND = 1  # serial protocol RadioKind.SX127X
FREQUENCY_RANGE = (137000000, 1020000000)
SF_MIN = 7


def clamp_power(dbm, pa_boost=True):
    """The output power micropython-lib's SX127x driver sets for ``dbm`` asked."""
    if pa_boost:
        return 20 if dbm >= 20 else max(2, min(17, dbm))
    return max(-4, min(15, dbm))


def settings(pa_boost=True):
    return LoRaSettings(SX127X, FREQUENCY_RANGE, SF_MIN, lambda dbm: clamp_power(dbm, pa_boost))


def make_radio(pins):
    """The radio on the board's SPI bus and pins (dongle.json ``pins``)."""
    from lora import SX1276
    from machine import Pin

    spi = spi_bus(pins)
    tx_ant = pins.get("tx_ant", "PA_BOOST")
    modem = SX1276(
        spi,
        Pin(pins["cs"]),
        dio0=optional_pin(pins, "dio0"),
        dio1=optional_pin(pins, "dio1"),
        reset=optional_pin(pins, "reset"),
    )
    return LoRaRadio(KIND, modem, settings(tx_ant.upper() == "PA_BOOST"), {"tx_ant": tx_ant})
