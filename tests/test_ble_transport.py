"""The BLE transport (agent/transports/ble.py) over virtual Bluetooth controllers (agent/sim/ble.py).

A real :class:`Agent` runs the production :class:`BleTransport` unmodified, through bleak's public
API, over Google Bumble's controllers on one in-process link; the nodes are Bumble GATT
peripherals advertising per docs/BLE_PROFILE.md that run the node firmware's own leaf and signer.
Every wait polls for its condition with a generous deadline (a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from ble_support import ATTACH, SETTINGS, wait_for

from agent.config import AgentConfig
from agent.core.distance import PathLoss
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.runtime.render import status_text
from agent.sim.ble import (
    VirtualCentral,
    VirtualNode,
    VirtualRadio,
    aborted_by_local,
    advertise_raw,
    in_progress,
)
from agent.transports import ble_profile as bp
from agent.transports.ble import BleTransport, NodeState
from agent.transports.ble_settings import BleSettings
from agent.transports.rssi_window import RssiWindow


def peers(agent: Agent) -> set[str]:
    return {p.peer_key_string for p in agent.engine.graph(agent.now()).peers()}


def connection_to(agent: Agent, node: VirtualNode) -> list[tuple[ConnectionType, float | None]]:
    return [
        (c.connection_type, c.approximate_distance_in_meters)
        for c in agent.engine.graph(agent.now()).connections()
        if node.peer_key_string in (c.peer_key_string1, c.peer_key_string2)
    ]


@asynccontextmanager
async def pi(
    tmp_path: Path, radio: VirtualRadio, settings: BleSettings = SETTINGS, *, att_mtu: int = 247
) -> AsyncIterator[tuple[Agent, BleTransport, VirtualCentral]]:
    central = VirtualCentral(radio, att_mtu=att_mtu)
    await central.power_on()
    transport = BleTransport(
        settings, scanner_backend=central.scanner_backend, client_backend=central.client_backend
    )
    agent = Agent(AgentConfig(), state_dir=tmp_path / "pi", transports=[transport], control_socket=False)
    await agent.start()
    try:
        yield agent, transport, central
    finally:
        await agent.close()


async def nodes(
    radio: VirtualRadio, central: VirtualCentral, count: int, *, rssi: int = -59, **kwargs: object
) -> list[VirtualNode]:
    """``count`` nodes, heard by ``central`` at ``rssi`` (-59 dBm: 1 m in the default model)."""
    made = [VirtualNode(radio, f"node-{i}", **kwargs) for i in range(count)]  # type: ignore[arg-type]
    for node in made:
        central.set_rssi(node, rssi)
        await node.start()
    return made


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_node_appears_in_the_graph_as_a_bluetooth_connection_with_a_distance(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio) as (agent, transport, central):
            (node,) = await nodes(radio, central, 1, metadata={"room": "kitchen"})
            await wait_for(lambda: node.peer_key_string in peers(agent), ATTACH, "the node in the graph")
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "both ends listing the link")
            [(kind, metres)] = connection_to(agent, node)
            assert kind is ConnectionType.BLUETOOTH
            assert metres == pytest.approx(1.0, abs=0.1)
            shown = agent.engine.graph(agent.now()).peer(node.peer_key_string)
            assert shown is not None and dict(shown.peer_metadata) == {"room": "kitchen"}
            assert shown.os == "MicroPython 1.27.0 virtual"
            assert transport.state_of(node.advertised_id) is NodeState.CONNECTED
            assert agent.stats().get("transport.ble.connect_failed", 0) == 0

    run(scenario)


def test_a_node_switched_off_is_a_link_down_and_leaves_the_graph(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio) as (agent, transport, central):
            (node,) = await nodes(radio, central, 1)
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "the node attached")
            await node.power_off()
            await wait_for(lambda: node.peer_key_string not in peers(agent), 15.0, "the node gone")
            assert agent.engine.established_links() == []
            assert agent.stats()["transport.ble.disconnected"] == 1
            assert transport.state_of(node.advertised_id) is NodeState.SEEN

    run(scenario)


def test_node_links_are_timed_by_ble_not_by_the_lan(tmp_path: Path) -> None:
    # The node sends a keepalive every 3 s: with the LAN's 2 s dead interval (this agent's [lan]
    # defaults) its link would be declared dead between keepalives; [ble]'s 9 s keeps it up.
    slow = dataclasses.replace(SETTINGS, keepalive_interval=3.0, dead_interval=9.0)

    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio, slow) as (agent, _transport, central):
            (node,) = await nodes(radio, central, 1, keepalive_s=3.0, dead_s=9.0)
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "the node attached")
            opened = agent.engine.stats["links.opened"]
            await asyncio.sleep(7.0)  # two of the node's keepalive gaps, each longer than 2 s
            assert agent.engine.stats.get("links.closed", 0) == 0
            assert agent.engine.stats["links.opened"] == opened
            assert connection_to(agent, node) != []

    run(scenario)


def test_a_node_that_arrives_while_another_is_connected_is_served_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio) as (agent, _transport, central):
            (first,) = await nodes(radio, central, 1)
            await wait_for(lambda: first.peer_key_string in peers(agent), ATTACH, "the first node")
            (second,) = await nodes(radio, central, 1)
            await wait_for(lambda: second.peer_key_string in peers(agent), ATTACH, "the second node")
            assert central.connections() == 2

    run(scenario)


def test_nodes_beyond_the_slots_are_reported_and_served_as_slots_free_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        settings = dataclasses.replace(SETTINGS, max_connections=2)
        async with pi(tmp_path, radio, settings) as (agent, transport, central):
            made = await nodes(radio, central, 3)
            await wait_for(lambda: len(agent.engine.established_links()) == 2, ATTACH, "two slots in use")
            await wait_for(lambda: len(transport.waiting) == 1, ATTACH, "the third node waiting")
            [waiting] = transport.waiting
            third = next(n for n in made if n.advertised_id.hex() == waiting.peer_id)
            assert transport.state_of(third.advertised_id) is NodeState.WAITING
            assert central.connections() == 2
            report = transport.status()  # what `presence-agent status` shows
            assert len(report["connected"]) == 2 and report["max_connections"] == 2
            assert [w["peer_id"] for w in report["waiting"]] == [waiting.peer_id]
            shown = status_text({"peer_key_string": "pk", "stats": {}, "transports": [report], "mqtt": None})
            assert f"ble      waiting for a slot: {waiting.peer_id}" in shown
            await asyncio.sleep(1.0)  # it keeps waiting, and is reported once
            assert agent.stats()["transport.ble.waiting"] == 1
            assert sum("waits for a connection slot" in r.getMessage() for r in caplog.records) == 1
            served = next(n for n in made if n is not third)
            await served.power_off()
            await wait_for(lambda: third.peer_key_string in peers(agent), ATTACH, "the third node served")
            assert transport.waiting == ()
            assert central.connections() == 2

    with caplog.at_level("INFO", logger="agent.transports.ble"):
        run(scenario)


def test_a_20_byte_mtu_carries_the_whole_leaf_protocol(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio, att_mtu=bp.DEFAULT_ATT_MTU) as (agent, _, central):
            (node,) = await nodes(radio, central, 1, metadata={"note": "x" * 200})
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "the node attached")
            shown = agent.engine.graph(agent.now()).peer(node.peer_key_string)
            assert shown is not None and shown.peer_metadata["note"] == "x" * 200
            assert node.largest_write == node.largest_notification == 20  # fragmented both ways

    run(scenario)


def test_injected_bluez_errors_are_survived(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        central = VirtualCentral(radio)
        await central.power_on()
        central.scan_faults.append(in_progress())  # the first scan start
        central.connect_faults.extend([in_progress(), aborted_by_local(), in_progress()])
        transport = BleTransport(
            SETTINGS, scanner_backend=central.scanner_backend, client_backend=central.client_backend
        )
        agent = Agent(AgentConfig(), state_dir=tmp_path / "pi", transports=[transport], control_socket=False)
        await agent.start()
        try:
            (node,) = await nodes(radio, central, 1)
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "the node attached")
            assert agent.stats()["transport.ble.scan_errors"] == 1
            assert central.connects >= 4 and not central.connect_faults
        finally:
            await agent.close()

    run(scenario)


def test_a_changed_distance_updates_the_link_without_reconnecting(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        settings = dataclasses.replace(SETTINGS, rssi_window=1.0)
        async with pi(tmp_path, radio, settings) as (agent, _, central):
            (node,) = await nodes(radio, central, 1)
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "the node attached")
            connects = central.connects
            far = round(PathLoss().rssi(10.0))  # 10 m
            central.set_rssi(node, far)

            def moved_away() -> bool:  # reported on the way out, then held by the hysteresis
                found = connection_to(agent, node)
                return bool(found) and (found[0][1] or 0.0) >= 5.0

            await wait_for(moved_away, ATTACH, "the distance past 5 m")
            assert agent.engine.stats["links.distance_updated"] >= 1
            assert central.connects == connects  # the same connection, the same link

    run(scenario)


def test_hostile_advertisements_are_counted_and_ignored(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio) as (agent, _, central):
            good = bp.advertising_data(bytes(8), 1)
            await advertise_raw(radio, good[:3] + bytes((26,)) + good[4:-1])  # 9 bytes of service data
            await wait_for(
                lambda: agent.stats().get("transport.ble.adv.wrong_length", 0) > 0, ATTACH, "the refusal"
            )
            (node,) = await nodes(radio, central, 1)
            await wait_for(lambda: connection_to(agent, node) != [], ATTACH, "a good node still attached")
            assert central.connects == 1

    run(scenario)


def test_a_node_advertising_another_nodes_id_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pi(tmp_path, radio) as (agent, _, central):
            (honest,) = await nodes(radio, central, 1)
            await wait_for(lambda: connection_to(agent, honest) != [], ATTACH, "the honest node attached")
            await honest.power_off()
            await wait_for(lambda: honest.peer_key_string not in peers(agent), 15.0, "the honest node gone")
            impostor = VirtualNode(radio, "impostor", public_key_override=honest.public_key)
            central.set_rssi(impostor, -59)
            await impostor.start()
            await wait_for(lambda: central.connects >= 3, ATTACH, "the impostor tried twice")
            assert impostor.peer_key_string not in peers(agent)
            assert agent.engine.established_links() == []

    run(scenario)


def test_rssi_is_the_interquartile_mean_of_a_bounded_window() -> None:
    window = RssiWindow(15.0)
    assert window.value(0.0) is None
    for t, rssi in enumerate([-60, -61, -59, -60, -20, -95, -60, -61]):  # two outliers
        window.add(float(t), rssi)
    assert window.value(7.0) == pytest.approx(-60.25)  # the middle half: -61, -60, -60, -60
    assert window.value(30.0) is None  # all older than 15 s
    for t in range(200):
        window.add(100.0 + t * 0.01, -70)
    assert len(window) == 64 and window.value(102.0) == -70
