"""The dongle firmware's MicroPython sources, imported by CPython: the emulator runs them as they are.

The firmware is ``firmware_bridge/micropython/*.py`` (package data of the wheel; beside ``agent/``
in a checkout and in site-packages alike, so it is found by path, not imported through the
``firmware_bridge`` package, which ``agent.sim`` may not import). Its modules import each other by
bare name (``import serial_protocol``), as MicroPython's ``/lib`` does, so :func:`load` imports one
with that directory on ``sys.path`` for the import only; the modules then sit in ``sys.modules``
under their bare names (``dongle``, ``serial_protocol``, ``airtime``, ``duty_cycle``, ...). A module
of the same name from anywhere else is refused rather than silently mixed in.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from types import ModuleType

from agent.core.errors import PresenceError

#: Where the firmware's sources are.
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "micropython"

_LOCK = threading.Lock()


class FirmwareError(PresenceError, ImportError):
    """The firmware's sources are missing, or a module of the same name is already imported."""


def load(name: str) -> ModuleType:
    """The firmware module ``name`` (e.g. ``"dongle"``), imported from :data:`FIRMWARE_DIR`."""
    source = FIRMWARE_DIR / f"{name}.py"
    if not source.is_file():
        raise FirmwareError(f"{source} is missing: the dongle firmware ships in firmware_bridge/micropython/")
    with _LOCK:
        module = sys.modules.get(name)
        if module is None:
            sys.path.insert(0, str(FIRMWARE_DIR))
            try:
                module = importlib.import_module(name)
            finally:
                sys.path.remove(str(FIRMWARE_DIR))
        where = Path(getattr(module, "__file__", "") or "").resolve()
        if where != source.resolve():
            raise FirmwareError(
                f"a module named {name!r} is already imported from {where}: "
                f"the firmware's {source.name} cannot be loaded beside it"
            )
        return module
