"""The dongle's boot entry point: copied to the board as ``main.py`` beside the firmware's modules.

At boot, after a ``BOOT_WINDOW_MS`` window in which Ctrl-C still reaches the REPL (mpremote's way
in after the board's RST): ``micropython.kbd_intr(-1)`` (a 0x03 from the host is data); the settings
from ``dongle.json`` (dongle_settings.py; missing file: the defaults; a bad one: the defaults and a
LOG error naming the key); the radio its ``radio`` names (radio_sx127x.py, radio_sx126x.py or
radio_espnow.py, built from ``pins``; one that does not start is logged and every TX refused,
but the dongle still answers the host); the dongle id from ``machine.unique_id()`` (an ESP32's MAC);
then one asyncio task that runs :class:`Loop` for ever.

The serial line is the USB REPL (``sys.stdin.buffer`` / ``sys.stdout.buffer``, read when
``select.poll`` says there is a byte), or a ``machine.UART`` when ``pins`` has ``"uart": {"id": 1,
"tx": 17, "rx": 16, "baudrate": 115200}``. Nothing else may ever write to it: no ``print``.

:class:`Loop` is one pass of the dongle's work, with its port, radio and clock injected: host
bytes to the core, ``idle()`` after FRAME_SILENCE_MS without a byte, the radio's events
(``radio.poll() -> (sent, packet)``) to the core, its timers, and everything the core returns to the
port. An exception in a pass never stops the dongle: it goes to the host as a LOG error line, is
counted, and the next pass runs. :class:`Clock` turns ``time.ticks_ms`` (which wraps) into the
core's never-decreasing milliseconds.

Verified: ``Clock``, ``Loop`` and ``read_settings`` run under CPython and the MicroPython
WebAssembly port with stand-in ports and radios (tests/test_dongle_glue.py); the file compiles
with mpy-cross. **Not verified on hardware**: ``main()`` (the REPL stream, UART, ``machine``).
"""

import dongle_settings
import serial_protocol as sp
from dongle import LOG_ERROR, Dongle

#: After a reset, how long Ctrl-C still interrupts (mpremote's way in) before 0x03 becomes data.
BOOT_WINDOW_MS = 1500

SETTINGS_FILE = "dongle.json"
#: Rest between passes when a pass found nothing to do (ms): a byte at 115200 baud takes 0.09 ms
#: and the USB and UART drivers buffer far more than 5 ms of them.
IDLE_MS = 5
#: Most bytes read from the port in one pass (one max-length wire frame is 610).
READ_MAX = 256
RADIO_MODULES = {"sx127x": "radio_sx127x", "sx126x": "radio_sx126x", "espnow": "radio_espnow"}


class Clock:
    """Milliseconds since boot that never wrap, from a wrapping ``ticks_ms`` and its ``ticks_diff``."""

    def __init__(self, ticks_ms, ticks_diff):
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self._last = ticks_ms()
        self.now = 0

    def __call__(self):
        ticks = self._ticks_ms()
        self.now += max(0, self._ticks_diff(ticks, self._last))
        self._last = ticks
        return self.now


def read_settings(read_text):
    """(settings, error line or None): ``read_text()`` gives dongle.json's text or raises OSError."""
    try:
        return dongle_settings.loads(read_text()), None
    except OSError:
        return dongle_settings.parse({}), None  # no dongle.json: the defaults
    except ValueError as exc:
        return dongle_settings.parse({}), "%s; booted on the defaults" % (exc,)


class Loop:
    """One pass at a time of the dongle's work (see the module docstring)."""

    def __init__(self, core, port, radio, clock):
        self.core = core
        self.port = port  # read(n) -> bytes (b"" if none), write(bytes)
        self.radio = radio  # the dongle's radio, plus poll() -> (sent, (payload, rssi, snr_qdb) or None)
        self.clock = clock
        self.errors = 0
        self._last_byte = None

    def step(self):
        """One pass; True if it found something to do."""
        try:
            return self._step()
        except Exception as exc:  # never die: tell the host and go on
            self.errors += 1
            self.core.log(LOG_ERROR, "dongle loop: %s: %s" % (type(exc).__name__, exc))
            self.port.write(self.core.take())
            return False

    def _step(self):
        busy = False
        now = self.clock()
        data = self.port.read(READ_MAX)
        if data:
            busy = True
            self._last_byte = now
            self.port.write(self.core.feed(data, now))
        elif self._last_byte is not None and now - self._last_byte >= sp.FRAME_SILENCE_MS:
            self._last_byte = None
            self.port.write(self.core.idle(now))
        sent, packet = self.radio.poll()
        if sent:
            busy = True
            self.port.write(self.core.sent(self.clock()))
        if packet is not None:
            busy = True
            payload, rssi, snr_qdb = packet
            self.port.write(self.core.heard(payload, rssi, snr_qdb, self.clock()))
        self.port.write(self.core.poll(self.clock()))
        return busy


class ReplPort:
    """The USB REPL as a byte port: non-blocking reads through ``select.poll``."""

    def __init__(self, stdin, stdout, select_module):
        self._in = stdin
        self._out = stdout
        self._poll = select_module.poll()
        self._poll.register(stdin, select_module.POLLIN)

    def read(self, limit):
        out = bytearray()
        while len(out) < limit and self._poll.poll(0):
            byte = self._in.read(1)
            if not byte:
                break
            out += byte
        return bytes(out)

    def write(self, data):
        if data:
            self._out.write(data)


class UartPort:
    """A ``machine.UART`` as a byte port."""

    def __init__(self, uart):
        self._uart = uart

    def read(self, limit):
        waiting = self._uart.any()
        return (self._uart.read(min(limit, waiting)) or b"") if waiting else b""

    def write(self, data):
        if data:
            self._uart.write(data)


class Unavailable:
    """The radio that did not start (no board, a wrong pin): the dongle still answers the host, and
    every TX is refused with a LOG line saying why."""

    mtu = 255

    def __init__(self, kind, error):
        self.kind = kind
        self.error = "the radio did not start: %s: %s" % (type(error).__name__, error)

    def configure(self, fields):
        return {}

    def settings(self):
        return {}

    def airtime_us(self, payload_len):
        return 1000

    def send(self, payload):
        raise OSError(self.error)

    def channel_busy(self):
        return None

    def noise_floor_dbm(self):
        return None

    def poll(self):
        return False, None


def make_radio(settings):
    """(radio, error line or None): the radio dongle.json names, or :class:`Unavailable`."""
    module = __import__(RADIO_MODULES[settings["radio"]])
    try:
        return module.make_radio(settings["pins"]), None
    except Exception as exc:
        radio = Unavailable(module.KIND, exc)
        return radio, radio.error


def _read_file():
    with open(SETTINGS_FILE) as f:
        return f.read()


def _port(pins):
    uart = pins.get("uart")
    if uart:
        from machine import UART

        return UartPort(UART(uart["id"], baudrate=uart.get("baudrate", 115200), tx=uart["tx"], rx=uart["rx"]))
    import select
    import sys

    return ReplPort(sys.stdin.buffer, sys.stdout.buffer, select)


async def _run(loop):
    import asyncio

    while True:
        if not loop.step():
            await asyncio.sleep_ms(IDLE_MS)
        else:
            await asyncio.sleep_ms(0)


def main():
    import asyncio
    import time

    import machine
    import micropython

    # A maintenance window: for BOOT_WINDOW_MS after a reset Ctrl-C still reaches the REPL, so
    # mpremote (scripts/configure-dongle, a re-flash without --firmware) can get in after the
    # board's RST; after it, 0x03 from the host is data.
    time.sleep_ms(BOOT_WINDOW_MS)
    micropython.kbd_intr(-1)
    settings, problem = read_settings(_read_file)
    clock = Clock(time.ticks_ms, time.ticks_diff)
    radio, broken = make_radio(settings)
    core = Dongle(radio, settings, machine.unique_id()[: sp.MAX_DONGLE_ID], clock())
    for line in (problem, broken):
        if line:
            core.log(LOG_ERROR, line)
    port = _port(settings["pins"])
    port.write(core.take())
    asyncio.run(_run(Loop(core, port, radio, clock)))


if __name__ == "__main__":
    main()
