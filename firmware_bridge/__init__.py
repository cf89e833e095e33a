"""Radio dongles and BLE nodes from the host's side, and the code that runs on the boards.

Two kinds of source live here, and only one of them goes onto a board:

- ``firmware_bridge/micropython/*.py``: **board code** (the dongle firmware and the BLE node
  library), MicroPython, flat, importing each other by bare name. Every file compiles with
  ``mpy-cross`` (tests/test_micropython_compile.py) and runs under real MicroPython in the tests.
- ``firmware_bridge/*.py`` (this package): **host code**, CPython 3.11+ on the Pi or the
  operator's machine, never copied to a board (type annotations, f-strings, dataclasses,
  pyserial); it still compiles with ``mpy-cross`` too (no unpacking inside displays, so a check
  that compiles the whole package passes): the serial protocol codec (``protocol``, ``limits``), the
  asyncio driver (``driver``, ``ports``), and the tools behind ``scripts/flash-dongle``,
  ``scripts/configure-dongle`` and ``scripts/provision-node`` (``flash_dongle``,
  ``configure_dongle``, ``provision_node``, ``dongle_config``, ``board_tools``, ``images``).
"""
