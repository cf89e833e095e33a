"""A bench radio for the dongle core, and a step runner: the same code under CPython and MicroPython.

``BenchRadio`` is the dongle's radio interface (firmware_bridge/micropython/dongle.py) with the
firmware's own SX126x rules for what a CONFIG applies (radio_sx126x.settings()) and airtime, that
records what it is asked to send instead of sending it, fails a send of ``b"fail"`` (OSError, as a
broken SPI bus would), and reports a busy channel when told to. ``run(settings, steps)`` drives one
``Dongle`` through JSON steps and returns the hex it wrote to the host after each one::

    ["feed", hex, now_ms]   ["poll", now_ms]   ["sent", now_ms]   ["idle", now_ms]
    ["heard", hex, rssi_dbm, snr_qdb, now_ms]   ["busy", true|false]

tests/test_dongle.py imports this module under CPython and inlines its source into the MicroPython
batch, so the two runs are byte-for-byte comparable. MicroPython-compatible: no typing, no f-strings.
"""

import dongle
import dongle_settings
import radio_sx126x


class BenchRadio:
    kind = radio_sx126x.KIND
    mtu = 255

    def __init__(self):
        self.chip = radio_sx126x.settings()
        self.sent = []
        self.busy = False

    def configure(self, fields):
        return self.chip.settle(fields)

    def settings(self):
        return dict(self.chip.fields)

    def airtime_us(self, payload_len):
        return self.chip.airtime_us(payload_len)

    def send(self, payload):
        if payload == b"fail":
            raise OSError("SPI bus error")
        self.sent.append(bytes(payload))

    def channel_busy(self):
        return self.busy

    def noise_floor_dbm(self):
        return -117


def run(settings, steps):
    """The hex the dongle wrote after boot and after each step, its counters and its decoder's."""
    radio = BenchRadio()
    d = dongle.Dongle(radio, dongle_settings.parse(settings), b"\x24\xa1\x60\x01\x02\x03", 0)
    out = [d.take().hex()]
    for step in steps:
        kind = step[0]
        if kind == "feed":
            out.append(d.feed(bytes.fromhex(step[1]), step[2]).hex())
        elif kind == "poll":
            out.append(d.poll(step[1]).hex())
        elif kind == "sent":
            out.append(d.sent(step[1]).hex())
        elif kind == "idle":
            out.append(d.idle(step[1]).hex())
        elif kind == "heard":
            out.append(d.heard(bytes.fromhex(step[1]), step[2], step[3], step[4]).hex())
        else:
            radio.busy = step[1]
            out.append("")
    return {
        "out": out,
        "counters": d.counters,
        "stats": d.decoder.stats,
        "sent": [p.hex() for p in radio.sent],
    }
