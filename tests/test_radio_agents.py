"""Radio-only agents over emulated dongles: the whole radio path, nothing but the chip emulated.

Runtime agents (agent.runtime.agent.Agent) in a line, each hearing only its neighbours, so the
ends are three radio hops apart. Each agent's RadioTransport opens its dongle by path through the
production driver; behind each path an emulated dongle (agent.sim.dongles) runs the firmware's
own core on one simulated channel. What is checked: the agents converge to one graph of Radio
connections with distances; a metadata change crosses the three hops; no emulated transmitter
ever exceeds its allowance (the channel would have refused it). In CI the line is ESP-NOW (no
duty cycle: it forms in seconds) and two LoRa agents; the LoRa line of four (2.5 km apart at
SF7/125 kHz, EU868 g3's 10 %, forming in 40 s to a few minutes) is slow-marked. Garbage and
resets mid-frame are tests/test_dongle_driver.py's and tests/test_dongle_emulator.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from agent.core.airtime import EspNowModel, LoRaModulation
from agent.core.duty_cycle import EU868_G3, NONE
from agent.core.records import ConnectionType
from agent.core.trust_settings import MESH_KEY_FILE
from agent.runtime.agent import Agent
from agent.sim.dongles import DongleEmulator
from agent.sim.radio import RadioConfig, RadioMedium
from agent.transports.radio import RadioTransport
from agent.transports.radio_settings import RadioSettings

T = TypeVar("T")
LINE = [(0.0, 0.0), (2500.0, 0.0), (5000.0, 0.0), (7500.0, 0.0)]
# EU868 g3 (869.4-869.65 MHz, 10 %) leaves room for a keepalive every 15 s: a test-sized formation.
# (At g1's 1 % the default minute-long keepalive is needed, and four agents form in about a minute.)
SETTINGS = RadioSettings(
    enabled=True, region="EU868_G3", frequency_hz=869_525_000, keepalive_interval=15.0, dead_interval=60.0
)


async def eventually(condition: Callable[[], T], what: str, timeout: float = 180.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := condition()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return value


def keys(agent: Agent) -> set[str]:
    return {p.peer_key_string for p in agent.engine.graph(agent.now()).peers()}


def metadata_of(viewer: Agent, subject: Agent) -> object:
    peer = next(
        (
            p
            for p in viewer.engine.graph(viewer.now()).peers()
            if p.peer_key_string == subject.peer_key_string
        ),
        None,
    )
    return None if peer is None else dict(peer.peer_metadata)


def test_two_radio_agents_over_emulated_dongles_converge_and_share_a_change(tmp_path: Path) -> None:
    run_line(tmp_path, LINE[:2])


def test_two_radio_agents_holding_the_fleet_mesh_key_seal_every_frame_and_still_converge(
    tmp_path: Path,
) -> None:
    mesh_key = os.urandom(32)
    for i in range(2):
        state = tmp_path / f"pi{i}"
        state.mkdir(mode=0o700)
        (state / MESH_KEY_FILE).write_bytes(mesh_key)
        (state / MESH_KEY_FILE).chmod(0o600)
    agents = run_line(tmp_path, LINE[:2])
    for agent in agents:
        stats = agent.engine.stats
        assert stats["medium.rejected.bad_tag"] == stats["medium.rejected.malformed"] == 0
        assert stats["interfaces.sealed"] == 1 and stats["links.established"] >= 1


def write_mesh_key(tmp_path: Path, names: list[str], mesh_key: bytes) -> None:
    for name in names:
        state = tmp_path / name
        state.mkdir(mode=0o700)
        (state / MESH_KEY_FILE).write_bytes(mesh_key)
        (state / MESH_KEY_FILE).chmod(0o600)


def with_counter_ahead(frame: bytes) -> bytes:
    """A sealed medium frame (sender 4, dest 4, counter 8, ...) with a counter far ahead of its own."""
    counter = int.from_bytes(frame[8:16], "big") + (1 << 20)
    return frame[:8] + counter.to_bytes(8, "big") + frame[16:]


def rejected(agent: Agent) -> dict[str, int]:
    return {k: v for k, v in agent.engine.stats.items() if k.startswith("medium.rejected.") and v}


def test_forged_and_replayed_frames_from_a_radio_in_range_are_dropped_and_counted_and_the_link_holds(
    tmp_path: Path,
) -> None:
    # Two agents 2.5 km apart and, half way, a bare radio that is no agent: it hears both, sends anything.
    write_mesh_key(tmp_path, ["pi0", "pi1"], os.urandom(32))
    positions = [*LINE[:2], (1250.0, 0.0)]
    rogue = 2
    medium = RadioMedium(positions, RadioConfig.lora(LoRaModulation()), seed=5, region=EU868_G3)

    async def on_air(emulator: DongleEmulator, payload: bytes) -> None:
        while emulator.channel_busy(rogue):  # it listens before talking, as the dongles do
            await asyncio.sleep(0.01)
        emulator.transmit(rogue, payload)
        # The next injection waits for this frame's end (a radio sends one at a time) plus a margin.
        await asyncio.sleep(medium.airtime(len(payload)) + 0.05)

    async def scenario(emulator: DongleEmulator) -> None:
        agents = [
            Agent(
                state_dir=tmp_path / f"pi{i}",
                name=f"pi{i}",
                transports=[RadioTransport(dataclasses.replace(SETTINGS, ports=(path,)))],
                control_socket=False,
            )
            for i, path in enumerate(emulator.paths)
        ]
        for agent in agents:
            await agent.start()
        try:
            everyone = {a.peer_key_string for a in agents}
            await eventually(lambda: all(keys(a) == everyone for a in agents), "both graphs complete", 30)

            def capture() -> dict[int, list[bytes]] | None:
                frames: dict[int, list[bytes]] = {0: [], 1: []}
                for sender, payload in emulator.heard(rogue):
                    frames[sender].append(payload)
                return frames if all(len(f) >= 2 for f in frames.values()) else None

            captured = await eventually(capture, "the bare radio to capture two frames of each agent", 30)
            established = [a.engine.stats["links.established"] for a in agents]
            opened = [a.engine.stats["links.opened"] for a in agents]
            assert all(rejected(a) == {} for a in agents)

            def counted() -> bool:
                # Each agent judges the other's frames (its own, heard back, are dropped as echoes).
                return all(
                    g.get("medium.rejected.replayed", 0) + g.get("medium.rejected.too_old", 0) >= 1
                    and g.get("medium.rejected.bad_tag", 0) >= 2
                    and g.get("medium.rejected.malformed", 0) >= 1
                    for g in (rejected(a) for a in agents)
                )

            # The rogue does not listen before talking: a frame can collide or reach a radio that is
            # sending; so rounds go on (a bounded number) until every kind was heard by both.
            for round_ in range(6):
                for sender in (0, 1):
                    frame = sorted(captured[sender], key=len)[round_ % 2]  # short ones: less airtime
                    await on_air(emulator, frame)  # replayed as heard
                    await on_air(emulator, with_counter_ahead(frame))  # a fresh counter, the old tag
                    forged = frame[:8] + os.urandom(
                        len(frame) - 8
                    )  # its sender and dest ids, the rest made up
                    await on_air(emulator, forged)
                await on_air(emulator, os.urandom(12))  # too short to be a sealed frame
                if counted():
                    break
            await eventually(counted, "every injected kind dropped and counted at both agents", 10)
            # The link held: no link closed or opened again, and both still see each other.
            assert [a.engine.stats["links.established"] for a in agents] == established
            assert [a.engine.stats["links.opened"] for a in agents] == opened  # no stranger got a link
            assert all(keys(a) == everyone for a in agents)
            assert all(a.engine.stats["links.closed"] == 0 for a in agents)
            agents[0].presence.set_peer_metadata({"role": "gateway"})
            await eventually(lambda: metadata_of(agents[1], agents[0]) == {"role": "gateway"}, "a change", 15)
        finally:
            for agent in agents:
                await agent.close()

    with DongleEmulator(medium, tmp_path / "dev", dongles=2) as emulator:
        asyncio.run(scenario(emulator))
        assert emulator.crash is None


@pytest.mark.slow  # about 75 s on 2 cores: the four agents forming over SF7; scripts/soak runs it
def test_radio_only_agents_on_a_line_converge_and_a_change_crosses_three_hops(tmp_path: Path) -> None:
    run_line(tmp_path, LINE)


#: ESP-NOW: no duty cycle, frames in a millisecond, so a line three hops long forms in seconds.
ESPNOW = RadioConfig(airtime=EspNowModel(), bandwidth=20e6, snr_limit_db=4.0)
ESPNOW_LINE = [(i * 0.75 * ESPNOW.range_m, 0.0) for i in range(4)]  # each hears its neighbours only
FAST = RadioSettings(enabled=True, keepalive_interval=1.0, dead_interval=4.0)


def test_radio_only_agents_on_an_espnow_line_converge_and_a_change_crosses_three_hops(
    tmp_path: Path,
) -> None:
    run_line(tmp_path, ESPNOW_LINE, RadioMedium(ESPNOW_LINE, ESPNOW, seed=5, region=NONE), FAST)


def run_line(
    tmp_path: Path,
    line: list[tuple[float, float]],
    medium: RadioMedium | None = None,
    settings: RadioSettings = SETTINGS,
) -> list[Agent]:
    """Agents on ``line`` (LoRa SF7 at EU868 g3 unless ``medium`` says otherwise): they converge,
    the far end's change reaches the near end, the channel never refuses a frame."""
    medium = medium or RadioMedium(line, RadioConfig.lora(LoRaModulation()), seed=5, region=EU868_G3)

    async def scenario() -> None:
        agents = [
            Agent(
                state_dir=tmp_path / f"pi{i}",
                name=f"pi{i}",
                transports=[RadioTransport(dataclasses.replace(settings, ports=(path,)))],
                control_socket=False,
            )
            for i, path in enumerate(emulator.paths)
        ]
        ran.extend(agents)
        for agent in agents:
            await agent.start()
        try:
            everyone = {a.peer_key_string for a in agents}
            started = asyncio.get_running_loop().time()
            await eventually(lambda: all(keys(a) == everyone for a in agents), "every graph complete")
            formed = asyncio.get_running_loop().time() - started
            print(f"\n{len(agents)} radio agents converged in {formed:.1f} s")
            graph = agents[0].engine.graph(agents[0].now())
            assert {c.connection_type for c in graph.connections()} == {ConnectionType.RADIO}
            assert all(c.approximate_distance_in_meters for c in graph.connections())
            far = next(p for p in graph.peers() if p.peer_key_string == agents[-1].peer_key_string)
            assert far.hops == len(line) - 1

            changed = asyncio.get_running_loop().time()
            agents[0].presence.set_peer_metadata({"role": "gateway"})
            await eventually(lambda: metadata_of(agents[-1], agents[0]) == {"role": "gateway"}, "the far end")
            took = asyncio.get_running_loop().time() - changed
            print(f"a metadata change crossed {len(agents) - 1} hop(s) in {took:.1f} s")
            assert all(keys(a) == everyone for a in agents)  # nobody left while that went on
        finally:
            for agent in agents:
                await agent.close()

    ran: list[Agent] = []
    with DongleEmulator(medium, tmp_path / "dev") as emulator:
        asyncio.run(scenario())
        assert emulator.crash is None
        for node in range(len(line)):
            stats = emulator.stats(node)
            print(f"dongle {node}: {stats}")
            assert stats["medium_refused"] == 0  # the channel never met a frame beyond the 1 %
    return ran
