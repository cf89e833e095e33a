"""Serial ports of radio dongles: which USB serial chips to autodetect, and opening one without a reset.

**Autodetection** (:func:`find_dongle_ports`) lists the serial ports (``serial.tools.list_ports``)
whose USB vendor:product id is one of :data:`KNOWN_USB_IDS`, the USB-serial chips of common ESP32
boards. A board whose chip is not listed (a TinyUSB CDC port has a board-specific product id) is
named in ``[radio] ports`` instead, which overrides autodetection.

**Opening without a reset** (:func:`open_serial`). On ESP32 boards DTR and RTS drive the chip's EN
(reset) and IO0 (boot mode) pins through two transistors, as esptool's reset sequences use them:
RTS asserted while DTR is not holds EN low (reset); DTR asserted while RTS is not pulls IO0 low
(harmless while EN stays high); both asserted or both released leaves the chip running. Linux
asserts both lines when a tty is opened, and drops both when it is closed if HUPCL is set. So
the port is opened as the kernel leaves it, with HUPCL cleared (closing then changes no line, as
Meshtastic's Python client does), and then RTS is released *before* DTR: the lines go (on, on) ->
(on, off) -> (off, off) and never pass the reset state (off, on) that releasing DTR first would
cross (pyserial's own order when given ``dtr=False, rts=False`` before opening). The USB-Serial/JTAG
port of the ESP32-S3/C3 (303a:1001) emulates the same circuit. On a pseudo-terminal (tests, the
emulator) the termios calls work and the modem-line ioctls, which a pty does not have, are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import termios
from collections.abc import Iterable
from typing import Final

import serial
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from agent.core.errors import PresenceError

__all__ = ["BAUD_RATE", "KNOWN_USB_IDS", "PortUnavailable", "find_dongle_ports", "open_serial"]

#: The dongle firmware's UART rate (its USB-serial chip's side; native USB ignores it).
BAUD_RATE: Final = 115200

#: USB (vendor id, product id) of the USB-serial chips on ESP32 boards -> the chip, as ``lsusb``
#: names it (the Linux kernel's usb-serial id tables and Espressif's USB-Serial/JTAG documentation).
KNOWN_USB_IDS: Final[dict[tuple[int, int], str]] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG (ESP32-S3, ESP32-C3)",
}

#: Errors of the modem-line ioctls on a port that has no modem lines (a pty): not a failure.
_NO_MODEM_LINES: Final = (errno.EINVAL, errno.ENOTTY)


class PortUnavailable(PresenceError, OSError):
    """A serial port cannot be opened (absent, busy, not permitted); one line naming the port."""


def find_dongle_ports(ports: Iterable[ListPortInfo] | None = None) -> list[str]:
    """Device paths of the serial ports (default: ``list_ports.comports()``) whose USB id is in
    :data:`KNOWN_USB_IDS`, sorted."""
    found = list_ports.comports() if ports is None else ports
    return sorted(p.device for p in found if p.vid is not None and (p.vid, p.pid) in KNOWN_USB_IDS)


def open_serial(path: str, baudrate: int = BAUD_RATE) -> serial.Serial:
    """``path`` opened non-blocking, raw, exclusively, with HUPCL cleared and DTR and RTS released
    without a reset (module docstring); :class:`PortUnavailable` if it cannot be opened."""
    port = serial.Serial(None, baudrate, timeout=0, write_timeout=0, exclusive=True)
    port.port = path
    try:
        port.open()  # DTR and RTS stay as the kernel's open left them: both asserted, no transition
        fd = port.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        _release(port, "rts")
        _release(port, "dtr")
    except (serial.SerialException, OSError, termios.error, ValueError) as exc:
        with contextlib.suppress(Exception):
            port.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PortUnavailable(f"{path}: cannot open the serial port: {reason}") from exc
    return port


def _release(port: serial.Serial, line: str) -> None:
    try:
        setattr(port, line, False)
    except OSError as exc:
        if exc.errno not in _NO_MODEM_LINES:
            raise
