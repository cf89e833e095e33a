"""The node library (``firmware_bridge/micropython/*.py``) imported into CPython.

The node's modules import each other by their bare names (``import cbor``), as MicroPython finds
them in ``/lib`` on the board. The emulated BLE nodes and the tests run the very same files under
CPython; :func:`load` imports them with the library's directory on ``sys.path`` only while
importing, and takes their bare names back out of ``sys.modules`` afterwards, so a module named
``records`` or ``cbor`` never shadows anything else in the process.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from types import ModuleType

LIBRARY = Path(__file__).resolve().parent / "micropython"
_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    """The node library's module ``name`` (e.g. ``"leaf"``), imported once per process."""
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        before = set(sys.modules)
        sys.path.insert(0, str(LIBRARY))
        try:
            module = importlib.import_module(name)
        finally:
            sys.path.remove(str(LIBRARY))
            for added in set(sys.modules) - before:
                found = sys.modules[added]
                if Path(getattr(found, "__file__", "") or "").parent == LIBRARY:
                    _LOADED.setdefault(added, found)
                    del sys.modules[added]
        return module
