"""A LoRa radio behind the dongle's radio interface (dongle.py), on micropython-lib's ``lora`` modem.

What SX127x and SX126x share; ``radio_sx127x.py`` and ``radio_sx126x.py`` give the chip's limits and
build its modem. Two parts:

- ``LoRaSettings`` (pure, tested under CPython and MicroPython): the CONFIG fields in force and how
  a chip takes new ones. FREQUENCY_HZ inside the chip's range, rounded to whole kHz (the driver's
  ``freq_khz``); BANDWIDTH_HZ one of :data:`BANDWIDTHS`; SPREADING_FACTOR in the chip's range;
  CODING_RATE 5..8; PREAMBLE_SYMBOLS clamped to 6..65535 and TX_POWER_DBM to what the chip's driver
  sets; SYNC_WORD any
  byte (the SX126x driver translates 8-bit sync words). A value outside these is not applied (the
  echo leaves it out); a clamped one is echoed clamped.
- ``LoRaRadio``: the modem calls, with micropython-lib's low-level API as its README documents it
  (``configure(lora_cfg)``, ``prepare_send`` / ``start_send`` / ``poll_send``, ``start_recv(continuous=
  True)`` / ``poll_recv`` returning an ``RxPacket`` with ``.rssi`` in dBm and ``.snr`` in quarter
  dB). Verified against that README and the driver source, and with a stand-in modem in
  tests/test_dongle_radios.py; **not verified on hardware**.

Channel activity detection: the micropython-lib drivers have no CAD call (the registers exist, the
API does not), so ``channel_busy()`` is None and a LoRa dongle does not listen before talking.
Noise floor: not measured (None).

Keys are the serial protocol's ConfigKey numbers: 2 FREQUENCY_HZ, 3 BANDWIDTH_HZ, 4 SPREADING_FACTOR,
5 CODING_RATE, 6 TX_POWER_DBM, 7 PREAMBLE_SYMBOLS, 8 SYNC_WORD.
"""

from airtime import LORA_MAX_PAYLOAD, LORA_SF_MAX, lora_airtime_us

FREQUENCY, BANDWIDTH, SPREADING_FACTOR, CODING_RATE, TX_POWER, PREAMBLE, SYNC_WORD = 2, 3, 4, 5, 6, 7, 8
KEYS = (FREQUENCY, BANDWIDTH, SPREADING_FACTOR, CODING_RATE, TX_POWER, PREAMBLE, SYNC_WORD)
#: LoRa bandwidths (Hz) -> the driver's ``bw`` string (kHz).
BANDWIDTHS = {
    7800: "7.8",
    10400: "10.4",
    15600: "15.6",
    20800: "20.8",
    31250: "31.25",
    41700: "41.7",
    62500: "62.5",
    125000: "125",
    250000: "250",
    500000: "500",
}
PREAMBLE_MIN = 6
PREAMBLE_MAX = 65535


def optional_pin(pins, name):
    """``machine.Pin(pins[name])``, or None where dongle.json leaves the pin out (on the board only)."""
    from machine import Pin

    return Pin(pins[name]) if pins.get(name) is not None else None


def spi_bus(pins):
    """The board's SPI bus to the radio from dongle.json ``pins`` (on the board only)."""
    from machine import SPI, Pin

    return SPI(
        pins.get("spi", 1),
        baudrate=2000000,
        sck=Pin(pins["sck"]),
        mosi=Pin(pins["mosi"]),
        miso=Pin(pins["miso"]),
    )


class LoRaSettings:
    """The fields in force on one chip; ``settle(asked)`` applies what the chip can."""

    def __init__(self, chip, frequency_range, sf_min, clamp_power, initial=None):
        self.chip = chip
        self.frequency_range = frequency_range
        self.sf_min = sf_min
        self.clamp_power = clamp_power  # dBm asked -> dBm the chip's driver sets
        self.fields = {
            FREQUENCY: 868100000,
            BANDWIDTH: 125000,
            SPREADING_FACTOR: 7,
            CODING_RATE: 5,
            TX_POWER: 14,
            PREAMBLE: 8,
            SYNC_WORD: 0x12,
        }
        self.settle(initial or {})

    def settle(self, asked):
        """Apply the keys of ``asked`` the chip can take; return {key: value in force} for those."""
        applied = {}
        for key in KEYS:
            if key in asked:
                value = self._accept(key, asked[key])
                if value is not None:
                    self.fields[key] = value
                    applied[key] = value
        return applied

    def _accept(self, key, value):
        if key == FREQUENCY:
            low, high = self.frequency_range
            return (value + 500) // 1000 * 1000 if low <= value <= high else None
        if key == BANDWIDTH:
            return value if value in BANDWIDTHS else None
        if key == SPREADING_FACTOR:
            return value if self.sf_min <= value <= LORA_SF_MAX else None
        if key == CODING_RATE:
            return value if 5 <= value <= 8 else None
        if key == TX_POWER:
            return self.clamp_power(value)
        if key == PREAMBLE:
            return max(PREAMBLE_MIN, min(PREAMBLE_MAX, value))
        return value & 0xFF  # SYNC_WORD

    def airtime_us(self, payload_len):
        f = self.fields
        return lora_airtime_us(
            payload_len, f[SPREADING_FACTOR], f[BANDWIDTH], f[CODING_RATE], f[PREAMBLE], chip=self.chip
        )

    def lora_cfg(self):
        """The fields in force as micropython-lib's ``configure()`` dict."""
        f = self.fields
        return {
            "freq_khz": f[FREQUENCY] // 1000,
            "bw": BANDWIDTHS[f[BANDWIDTH]],
            "sf": f[SPREADING_FACTOR],
            "coding_rate": f[CODING_RATE],
            "output_power": f[TX_POWER],
            "preamble_len": f[PREAMBLE],
            "syncword": f[SYNC_WORD],
            "crc_en": True,
            "implicit_header": False,
        }


class LoRaRadio:
    """The dongle's radio interface on a micropython-lib modem (see dongle.py's docstring)."""

    mtu = LORA_MAX_PAYLOAD

    def __init__(self, kind, modem, settings, extra_cfg=None):
        self.kind = kind
        self.modem = modem
        self._settings = settings
        self._extra = extra_cfg or {}
        self._apply()

    def _apply(self):
        cfg = self._settings.lora_cfg()
        cfg.update(self._extra)
        self.modem.configure(cfg)
        self.modem.start_recv(continuous=True)

    def configure(self, fields):
        applied = self._settings.settle(fields)
        if applied:
            self.modem.standby()
            self._apply()
        return applied

    def settings(self):
        return dict(self._settings.fields)

    def airtime_us(self, payload_len):
        return self._settings.airtime_us(payload_len)

    def send(self, payload):
        self.modem.prepare_send(payload)
        self.modem.start_send()

    def channel_busy(self):
        return None

    def noise_floor_dbm(self):
        return None

    def poll(self):
        """Events for the boot loop: ``(sent, packet)``; sent is True once per finished transmission,
        packet a ``(payload, rssi_dbm, snr_qdb)`` heard or None."""
        done = self.modem.poll_send()
        sent = done is not True and done is not False  # an int (ticks_ms) exactly once per send
        rx = self.modem.poll_recv()
        packet = None
        if rx is not True and rx is not False and rx is not None:
            packet = (bytes(rx), rx.rssi, rx.snr)
        return sent, packet
