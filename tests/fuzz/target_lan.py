"""LAN beacons (``agent.transports.lan``): datagrams from anyone on the multicast group.

``beacon``: a ``LanTransport`` (LOCAL's key, default ``[lan]`` settings, a
virtual clock) receives datagrams through its ``DatagramProtocol`` from a few
source addresses. Dials are replaced by a stand-in that fails or hangs as the
input says (no socket is opened). Operations until the input ends::

    op % 4 == 0   u8 length, datagram    datagram_received from address (op >> 2) % 4
    op % 4 == 1   u8 t                   the clock moves t/10 s
    op % 4 == 2                          every dial in flight fails (the endpoint backs off)
    op % 4 == 3                          the engine holds the next beacon's key (back_off)

Contract: nothing raises; dials in flight stay within ``max_dials_in_flight``
and ``MAX_DIALS_PER_KEY`` per key; per-key discovery state within
``MAX_TRACKED_PEERS``; a beacon for our own key, for port 0 or of the wrong
size never starts a dial.
"""

from __future__ import annotations

import asyncio
import random
from typing import Final

from agent.transports.lan import (
    BEACON_BYTES,
    BEACON_MAGIC,
    MAX_DIALS_PER_KEY,
    MAX_TRACKED_PEERS,
    Endpoint,
    LanTransport,
    _BeaconProtocol,
)
from agent.transports.lan_settings import LanSettings

from . import world
from .contract import Reader, Target, require

ADDRESSES: Final = ("127.0.0.1", "10.0.0.2", "192.168.1.3", "169.254.0.9")
_SETTINGS: Final = LanSettings()


class _Lan(LanTransport):
    """The transport with dials that never leave the process: they wait until failed by the input."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(
            _SETTINGS, world.key(world.LOCAL).public, rng=random.Random(7), clock=lambda: clock[0]
        )
        self.dialled: list[Endpoint] = []
        self.release = asyncio.Event()

    async def _dial(self, endpoint: Endpoint) -> None:
        self.dialled.append(endpoint)
        await self.release.wait()
        self._in_flight.discard(endpoint)
        self._dial_failed(endpoint, "fuzz: refused")


def _check(lan: _Lan) -> None:
    in_flight = lan._in_flight
    require(len(in_flight) <= _SETTINGS.max_dials_in_flight, f"{len(in_flight)} dials in flight")
    keys = [endpoint[0] for endpoint in in_flight]
    require(all(keys.count(k) <= MAX_DIALS_PER_KEY for k in keys), "too many dials to one key")
    require(len(lan._heard_since) <= MAX_TRACKED_PEERS, "beacons heard grew past the bound")
    require(len(lan._dial_backoff) <= MAX_TRACKED_PEERS, "dial back-off grew past the bound")


async def _run(data: bytes) -> None:
    clock = [100.0]
    lan = _Lan(clock)
    protocol = _BeaconProtocol(lan)
    reader = Reader(data)
    hold_next = False
    while reader:
        op = reader.u8()
        if op % 4 == 0:
            datagram = reader.take(reader.u8())
            before = len(lan.dialled)
            if hold_next and len(datagram) >= 36:
                lan.back_off(datagram[4:36], clock[0] + 30)
                hold_next = False
            protocol.datagram_received(datagram, (ADDRESSES[(op >> 2) % 4], 47777))
            await asyncio.sleep(0)  # the dial task starts
            if len(lan.dialled) > before:
                key, port = datagram[4:36], int.from_bytes(datagram[36:38], "big")
                ok = len(datagram) == BEACON_BYTES and datagram.startswith(BEACON_MAGIC)
                require(ok and key != lan.public_key and port != 0, "a dial from a beacon it should ignore")
        elif op % 4 == 1:
            clock[0] += reader.u8() / 10
        elif op % 4 == 2:
            lan.release.set()
            await asyncio.sleep(0)
            lan.release = asyncio.Event()
        else:
            hold_next = True
        _check(lan)
    lan.release.set()
    await asyncio.gather(*lan._dials)


_LOOP = asyncio.new_event_loop()


def beacon(data: bytes) -> None:
    _LOOP.run_until_complete(_run(data))


TARGETS = (Target("beacon", beacon),)
