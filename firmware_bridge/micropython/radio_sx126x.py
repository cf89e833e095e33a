"""An SX1262 LoRa radio (micropython-lib ``lora-sx126x`` + ``lora-sync``), e.g. Heltec WiFi LoRa 32
V3, LilyGO T-Beam Supreme. The shared logic is radio_lora.py; this file is the chip's limits and its
modem built from dongle.json's ``pins``::

    {"spi": 1, "sck": 9, "mosi": 10, "miso": 11, "cs": 8, "reset": 12, "busy": 13, "dio1": 14,
     "dio2_rf_sw": true, "dio3_tcxo_millivolts": 1800}    # the last two as the board wires them

Limits (micropython-lib's driver and the SX1261/2 datasheet): 150..960 MHz, SF5..12, TX power
-9..+22 dBm (the SX1262's range; the SX1261's -17..+15 is not offered). ``clamp_power`` and
``settings`` are tested under CPython and MicroPython; ``make_radio`` needs the board and is **not
verified on hardware** (it compiles with mpy-cross and follows the driver's README).
"""

from airtime import LORA_SF_MIN, SX126X
from radio_lora import LoRaRadio, LoRaSettings, optional_pin, spi_bus

KIND = 2  # serial protocol RadioKind.SX126X
FREQUENCY_RANGE = (150000000, 960000000)
POWER_RANGE = (-9, 22)


def clamp_power(dbm):
    """The output power micropython-lib's SX1262 driver sets for ``dbm`` asked."""
    return max(POWER_RANGE[0], min(POWER_RANGE[1], dbm))


def settings():
    return LoRaSettings(SX126X, FREQUENCY_RANGE, LORA_SF_MIN, clamp_power)


def make_radio(pins):
    """The radio on the board's SPI bus and pins (dongle.json ``pins``)."""
    from lora import SX1262
    from machine import Pin

    spi = spi_bus(pins)
    modem = SX1262(
        spi,
        Pin(pins["cs"]),
        busy=Pin(pins["busy"]),
        dio1=optional_pin(pins, "dio1"),
        dio2_rf_sw=pins.get("dio2_rf_sw", True),
        dio3_tcxo_millivolts=pins.get("dio3_tcxo_millivolts"),
        reset=optional_pin(pins, "reset"),
    )
    return LoRaRadio(KIND, modem, settings())
