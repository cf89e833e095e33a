"""Broadcast interfaces through the real runtime: agents on one shared channel (issue 10).

The runtime routes frames the engine addresses ``Broadcast(interface)`` to the
transport that brought the interface up, and hands what that transport hears to
the engine with its RSSI. Here three real :class:`~agent.runtime.agent.Agent`\\ s,
each with its own state directory and event loop turn, share an in-process
channel that a radio transport will replace (issue 11): every frame one sends
reaches the other two, as on the air. Nothing else is simulated.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.config import AgentConfig
from agent.core.airtime import EspNowModel
from agent.core.events import LinkId
from agent.core.medium import Broadcast, MediumSpec
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.transports.base import LinkHost

# ESP-NOW: short frames, no duty cycle worth the name, so the test runs in seconds.
SPEC = MediumSpec(EspNowModel(), allowance=1.0, keepalive_interval=0.5, dead_interval=2.0)


class Air:
    """Every frame sent by one transport reaches every other, a moment later."""

    def __init__(self) -> None:
        self.radios: list[AirTransport] = []
        self.sent = 0

    def carry(self, sender: AirTransport, frame: bytes) -> None:
        self.sent += 1
        loop = asyncio.get_running_loop()
        for radio in self.radios:
            if radio is not sender and radio.host is not None and radio.on:
                loop.call_later(0.002, radio.hear, frame)


class AirTransport:
    """A broadcast transport on :class:`Air`: what a radio dongle transport will be."""

    def __init__(self, air: Air, rssi: float) -> None:
        self.air, self.rssi, self.on = air, rssi, True
        self.host: LinkHost | None = None
        air.radios.append(self)

    async def start(self, host: LinkHost) -> None:
        self.host = host
        host.interface_up("air", SPEC, self)

    def hear(self, frame: bytes) -> None:
        if self.host is not None and self.on:
            self.host.receive_on("air", frame, self.rssi, 5.0)

    def send(self, link: LinkId, frame: bytes) -> None:
        assert link == Broadcast("air"), link
        if self.on:
            self.air.carry(self, frame)

    def close_link(self, link: LinkId) -> None:
        raise AssertionError(f"a broadcast interface has no link to close: {link!r}")

    def proved(self, link: LinkId) -> None:
        pass

    def established(self, link: LinkId, peer_key: bytes) -> None:
        pass

    def back_off(self, peer_key: bytes, until: float) -> None:
        pass

    async def stop(self) -> None:
        if self.host is not None:
            self.host.interface_down("air")


async def wait_for(condition: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def keys(agent: Agent) -> set[str]:
    return {p.peer_key_string for p in agent.engine.graph(agent.now()).peers()}


def test_agents_on_one_channel_find_each_other_and_a_silent_one_leaves(tmp_path: Path) -> None:
    async def scenario() -> None:
        air = Air()
        radios = [AirTransport(air, rssi) for rssi in (-60.0, -70.0, -80.0)]
        agents = [
            Agent(AgentConfig(), state_dir=tmp_path / f"a{i}", transports=[radio], control_socket=False)
            for i, radio in enumerate(radios)
        ]
        for agent in agents:
            await agent.start()
        try:
            everyone = {a.engine.peer_key_string for a in agents}
            await wait_for(lambda: all(keys(a) == everyone for a in agents), 15.0)
            graph = agents[0].engine.graph(agents[0].now())
            assert {c.connection_type for c in graph.connections()} == {ConnectionType.RADIO}
            assert all(c.approximate_distance_in_meters is not None for c in graph.connections())
            radios[2].on = False  # switched off: nothing more is heard from it
            gone = agents[2].engine.peer_key_string
            await wait_for(lambda: all(gone not in keys(a) for a in agents[:2]), 10.0)
        finally:
            for agent in agents:
                await agent.close()

    asyncio.run(scenario())
