"""Time on air on the dongle: the Semtech LoRa formula (SX127x / SX126x) and ESP-NOW, in integers.

The same numbers as the host's ``agent/core/airtime.py`` (its docstring cites the sources), for
MicroPython: no floats (an ESP32 port's floats are single precision), no dataclasses, no typing.
``tests/test_dongle.py`` keeps the constants below equal to ``agent/core/media_limits.py`` and
checks these functions against vectors the host makes (``docs/dongle-vectors.json``), under CPython
and under MicroPython.

**LoRa**, with ``Ts = 2^SF / BW`` and everything counted in quarter symbols (as micropython-lib's
``lora`` driver does in ``get_n_symbols_x4``)::

    symbols x4 = 4 * preamble + fixed + 4 * (8 + max(ceil(bits / (4 (SF - 2 DE))), 0) * CR)
    bits       = 8 PL + 16 CRC - 4 SF + 8 + 20 (1 - IH)     (SX126x at SF5/SF6: no "+ 8")
    fixed      = 17 (4.25 symbols; SX126x at SF5/SF6: 25, 6.25 symbols)
    airtime_us = ceil(symbols x4 * 2^SF * 10^6 / (4 BW))    (rounded up: never undercounted)

``DE`` (low-data-rate optimisation) is on when a symbol lasts longer than 16 ms unless given;
``CR`` is the coding-rate denominator 5..8 less 4. The SX127x has no SF5 and uses SF6 with an
implicit header only.

**ESP-NOW**: ``192 us`` of 802.11b long preamble and header, then ``payload + 43`` bytes at the
PHY rate (1 Mbit/s by default): ``192 + ceil(8 (PL + 43) 10^6 / rate)`` us.

Errors are ``AirtimeError`` (a ``ValueError``) naming what is out of range.
"""

LORA_MAX_PAYLOAD = 255
#: Low-data-rate optimisation is mandated above this symbol time (us).
LORA_LDRO_SYMBOL_US = 16000
LORA_SF_MIN = 5
LORA_SF_MAX = 12
LORA_BANDWIDTH_MIN = 7800
LORA_BANDWIDTH_MAX = 500000

ESPNOW_MAX_PAYLOAD = 250
ESPNOW_FRAME_OVERHEAD = 43
ESPNOW_RATE = 1000000
ESPNOW_PREAMBLE_US = 192

SX126X = "sx126x"
SX127X = "sx127x"


class AirtimeError(ValueError):
    pass


def _fits(payload_len, mtu):
    if not 0 <= payload_len <= mtu:
        raise AirtimeError("a payload of %d bytes does not fit a frame of 0..%d bytes" % (payload_len, mtu))


def low_data_rate(sf, bandwidth_hz):
    """Whether a symbol of ``2^SF / BW`` lasts longer than 16 ms."""
    return (1 << sf) * 1000000 > LORA_LDRO_SYMBOL_US * bandwidth_hz


def check_lora(sf, bandwidth_hz, coding_rate, preamble, implicit_header=False, chip=SX126X):
    """Raise AirtimeError unless the parameters describe a real modem of ``chip``."""
    low = LORA_SF_MIN if chip == SX126X else 6
    if chip not in (SX126X, SX127X):
        raise AirtimeError("unknown LoRa chip %r: sx126x or sx127x" % (chip,))
    if not low <= sf <= LORA_SF_MAX:
        raise AirtimeError(
            "spreading factor %d is not supported by %s: %d..%d" % (sf, chip, low, LORA_SF_MAX)
        )
    if chip == SX127X and sf == 6 and not implicit_header:
        raise AirtimeError("SF6 on an SX127x works only with an implicit header")
    if not LORA_BANDWIDTH_MIN <= bandwidth_hz <= LORA_BANDWIDTH_MAX:
        raise AirtimeError(
            "bandwidth %d Hz is outside %d..%d" % (bandwidth_hz, LORA_BANDWIDTH_MIN, LORA_BANDWIDTH_MAX)
        )
    if not 5 <= coding_rate <= 8:
        raise AirtimeError("coding rate 4/%d does not exist: 5..8" % coding_rate)
    if not 1 <= preamble <= 65535:
        raise AirtimeError("a preamble of %d symbols: 1..65535" % preamble)


def lora_symbols_x4(
    payload_len,
    sf,
    bandwidth_hz,
    coding_rate,
    preamble,
    crc=True,
    implicit_header=False,
    ldro=None,
    chip=SX126X,
):
    """Quarter symbols of a whole LoRa frame: preamble, its fixed symbols, header, payload, CRC."""
    check_lora(sf, bandwidth_hz, coding_rate, preamble, implicit_header, chip)
    _fits(payload_len, LORA_MAX_PAYLOAD)
    if ldro is None:
        ldro = low_data_rate(sf, bandwidth_hz)
    low_sf = chip == SX126X and sf < 7
    bits = 8 * payload_len + (16 if crc else 0) - 4 * sf + (0 if low_sf else 8)
    if not implicit_header:
        bits += 20
    per_block = 4 * (sf - (2 if ldro else 0))
    blocks = max(-(-bits // per_block), 0)
    fixed = 25 if low_sf else 17
    return 4 * preamble + fixed + 4 * (8 + blocks * coding_rate)


def lora_airtime_us(
    payload_len,
    sf,
    bandwidth_hz,
    coding_rate,
    preamble,
    crc=True,
    implicit_header=False,
    ldro=None,
    chip=SX126X,
):
    """Microseconds on air for ``payload_len`` bytes, rounded up."""
    x4 = lora_symbols_x4(
        payload_len, sf, bandwidth_hz, coding_rate, preamble, crc, implicit_header, ldro, chip
    )
    return -(-(x4 * (1 << sf) * 1000000) // (4 * bandwidth_hz))


def espnow_airtime_us(payload_len, rate=ESPNOW_RATE):
    """Microseconds on air for an ESP-NOW frame with ``payload_len`` bytes, rounded up."""
    _fits(payload_len, ESPNOW_MAX_PAYLOAD)
    if rate <= 0:
        raise AirtimeError("a PHY rate of %d bit/s: give a positive rate" % rate)
    return ESPNOW_PREAMBLE_US + -(-(8 * (payload_len + ESPNOW_FRAME_OVERHEAD) * 1000000) // rate)
