"""Test helpers for the BLE tests; the virtual Bluetooth itself is ``agent.sim.ble``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent.transports.ble_settings import BleSettings

#: Fast retries (the tests wait for reconnections), node links timed as the virtual nodes are
#: (VirtualNode: keepalive 1 s, dead 3 s).
SETTINGS = BleSettings(
    enabled=True,
    reconnect_backoff_initial=0.2,
    reconnect_backoff_max=1.0,
    keepalive_interval=1.0,
    dead_interval=3.0,
)
#: Generous deadlines for a loaded 2-core machine.
ATTACH = 30.0


async def wait_for(condition: Callable[[], bool], timeout: float, what: str = "the condition") -> None:
    """Poll ``condition`` every 50 ms until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)
