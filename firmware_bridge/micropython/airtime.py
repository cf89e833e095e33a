"""Time on air of one radio frame, in microseconds, for the dongle (MicroPython and CPython).

The same formulas as the host's ``agent/core/airtime.py`` (its docstring cites the sources; a test
keeps the two equal): LoRa per Semtech AN1200.13 and the SX127x / SX126x datasheets, ESP-NOW as
an 802.11b long-preamble frame at 1 Mbit/s with 43 bytes around the payload. Integers only where
MicroPython ports have no double-precision float: the result is rounded up to a whole microsecond,
so the dongle never counts less airtime than the host.
"""

SX127X = 1
SX126X = 2
ESP_NOW = 3

#: Low-data-rate optimisation is on when a symbol lasts longer than this (us).
LDRO_SYMBOL_US = 16000
ESPNOW_OVERHEAD = 43
ESPNOW_PREAMBLE_US = 192
ESPNOW_RATE_BPS = 1000000


def lora_airtime_us(chip, payload_len, sf, bandwidth_hz, coding_rate, preamble=8, crc=True, implicit=False):
    """Microseconds a LoRa frame of ``payload_len`` bytes occupies the air (rounded up)."""
    # Symbol time 2^SF / BW, kept as a fraction (numerator us * BW) so nothing is lost to floats.
    ldro = (1 << sf) * 1000000 > LDRO_SYMBOL_US * bandwidth_hz
    low = chip == SX126X and sf < 7
    bits = 8 * payload_len + (16 if crc else 0) - 4 * sf + (0 if low else 8) + (0 if implicit else 20)
    per_block = 4 * (sf - (2 if ldro else 0))
    blocks = max(-(-bits // per_block), 0)
    # Symbols x4 to keep the 4.25 / 6.25 fixed preamble symbols integral.
    symbols_x4 = 4 * preamble + (25 if low else 17) + 4 * (8 + blocks * coding_rate)
    numerator = symbols_x4 * (1 << sf) * 1000000
    denominator = 4 * bandwidth_hz
    return -(-numerator // denominator)


def espnow_airtime_us(payload_len):
    """Microseconds an ESP-NOW frame of ``payload_len`` bytes occupies the air."""
    return ESPNOW_PREAMBLE_US + -(-8 * (payload_len + ESPNOW_OVERHEAD) * 1000000 // ESPNOW_RATE_BPS)
