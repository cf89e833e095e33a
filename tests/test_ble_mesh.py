"""A three-Pi mesh with BLE nodes: every graph shows every node, signed by the node itself.

Three :class:`Agent` runtimes in one process (Bumble's virtual air is in-process only), linked by
the LAN transport on loopback (one multicast port per test) and each running the production
:class:`BleTransport` over its own virtual adapter (agent/sim/ble.py). The nodes are Bumble GATT
peripherals running the node firmware's own leaf, Ed25519 and BLE profile modules. Which Pi
hears which node is set per adapter (heard at an RSSI, or out of range). What is checked: a node
appears in every Pi's graph with its name, OS and metadata and a Bluetooth connection with a
distance, whether the Pi hears it or reaches it over the LAN; a Pi on the 20-byte default ATT MTU
carries a node end to end; a metadata change on a node reaches every Pi; a node switched off
leaves every graph (the time is printed: the bound is 6 s, measured, not asserted); a node
advertising another's id, and one presenting a forged card, are refused and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ble_support import ATTACH, SETTINGS, wait_for

from agent.config import AgentConfig
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.sim.ble import VirtualCentral, VirtualNode, VirtualRadio
from agent.state.identity import load_or_create_identity
from agent.transports import ble_profile as bp
from agent.transports.ble import BleTransport
from agent.transports.lan import LanTransport
from agent.transports.lan_settings import LanSettings

BLE = ConnectionType.BLUETOOTH
#: The figures are printed, not asserted; this only stops a hang.
HANG_GUARD = 60.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclasses.dataclass
class Pi:
    agent: Agent
    central: VirtualCentral
    ble: BleTransport


@asynccontextmanager
async def pis(
    tmp_path: Path, radio: VirtualRadio, count: int, *, att_mtus: tuple[int, ...] = ()
) -> AsyncIterator[list[Pi]]:
    """``count`` Pis on one LAN (loopback), each with its own virtual adapter on ``radio``."""
    lan = LanSettings(interfaces=("127.0.0.1",), multicast_port=free_udp_port())
    async with AsyncExitStack() as stack:
        made = []
        for i in range(count):
            central = VirtualCentral(
                radio, f"pi{i}", att_mtu=(att_mtus[i : i + 1] or (bp.PREFERRED_ATT_MTU,))[0]
            )
            await central.power_on()
            ble = BleTransport(
                SETTINGS, scanner_backend=central.scanner_backend, client_backend=central.client_backend
            )
            state = tmp_path / f"pi{i}"
            key = load_or_create_identity(state).public_key  # the LAN's beacons carry it
            agent = Agent(
                AgentConfig(),
                state_dir=state,
                name=f"pi{i}",
                transports=[LanTransport(lan, key), ble],
                control_socket=False,
            )
            await agent.start()
            stack.push_async_callback(agent.close)
            made.append(Pi(agent, central, ble))
        yield made


async def node(
    radio: VirtualRadio, name: str, heard: dict[VirtualCentral, int | None], **kwargs: Any
) -> VirtualNode:
    """A node heard by each adapter of ``heard`` at its RSSI (``None``: out of its range)."""
    made = VirtualNode(radio, name, **kwargs)
    for central, dbm in heard.items():
        central.set_rssi(made, dbm)
    await made.start()
    return made


def shown(agent: Agent, node: VirtualNode) -> Any:
    return agent.engine.graph(agent.now()).peer(node.peer_key_string)


def bluetooth_to(agent: Agent, node: VirtualNode) -> dict[str, float | None]:
    """The peers ``node`` has a Bluetooth connection with in ``agent``'s graph, and its distance."""
    out = {}
    for c in agent.engine.graph(agent.now()).connections():
        ends = {c.peer_key_string1, c.peer_key_string2}
        if node.peer_key_string in ends and c.connection_type is BLE:
            (other,) = ends - {node.peer_key_string}
            out[other] = c.approximate_distance_in_meters
    return out


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))


def test_nodes_appear_in_every_graph_of_three_pis_and_their_changes_and_departures_reach_every_pi(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        # pi2's adapter keeps the 20-byte default ATT MTU (no MTU exchange).
        async with pis(tmp_path, radio, 3, att_mtus=(247, 247, bp.DEFAULT_ATT_MTU)) as (p0, p1, p2):
            everyone = [p0, p1, p2]
            # kitchen: heard by pi0 at 1 m and pi1 at about 2 m; cellar: by pi2 alone, over 20 bytes.
            kitchen = await node(
                radio,
                "kitchen",
                {p0.central: -59, p1.central: -65, p2.central: None},
                metadata={"room": "kitchen"},
            )
            cellar = await node(
                radio,
                "cellar",
                {p0.central: None, p1.central: None, p2.central: -59},
                metadata={"room": "cellar", "note": "x" * 120},
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            pi_keys = {p.agent.peer_key_string for p in everyone}
            kitchen_pis = {p0.agent.peer_key_string, p1.agent.peer_key_string}

            def complete() -> bool:
                return all(
                    bluetooth_to(p.agent, kitchen).keys() == kitchen_pis
                    and bluetooth_to(p.agent, cellar).keys() == {p2.agent.peer_key_string}
                    and pi_keys
                    <= {q.peer_key_string for q in p.agent.engine.graph(p.agent.now()).peers()}
                    | {p.agent.peer_key_string}
                    for p in everyone
                )

            await wait_for(complete, ATTACH, "both nodes with their connections in every graph")
            print(f"\nboth nodes seen by every Pi {loop.time() - started:.2f} s after they started")
            for p in everyone:
                for n, room in ((kitchen, "kitchen"), (cellar, "cellar")):
                    peer = shown(p.agent, n)
                    assert peer.device_name == n.name and peer.os == "MicroPython 1.27.0 virtual"
                    assert peer.peer_metadata["room"] == room
                assert shown(p.agent, cellar).peer_metadata["note"] == "x" * 120
                distances = bluetooth_to(p.agent, kitchen)
                assert distances[p0.agent.peer_key_string] == pytest.approx(1.0, abs=0.1)
                assert distances[p1.agent.peer_key_string] == pytest.approx(2.0, rel=0.35)  # farther
                assert bluetooth_to(p.agent, cellar)[p2.agent.peer_key_string] == pytest.approx(1.0, abs=0.1)
            # pi2 and the cellar node spoke in 20-byte frames both ways.
            assert cellar.largest_write == cellar.largest_notification == 20

            kitchen.set_metadata({"room": "hall"})
            changed = loop.time()
            await wait_for(
                lambda: all(shown(p.agent, kitchen).peer_metadata == {"room": "hall"} for p in everyone),
                ATTACH,
                "the change in every graph",
            )
            print(f"a metadata change on a node reached every Pi in {loop.time() - changed:.2f} s")

            await kitchen.power_off()
            off = loop.time()
            await wait_for(
                lambda: all(shown(p.agent, kitchen) is None for p in everyone), 30.0, "kitchen gone"
            )
            print(f"a node switched off left every graph in {loop.time() - off:.2f} s (bound: 6 s)")
            assert all(shown(p.agent, cellar) is not None for p in everyone)  # the other one stays

    run(scenario)


def test_a_node_with_another_nodes_id_or_a_forged_card_is_refused_and_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        async with pis(tmp_path, radio, 2) as (p0, p1):
            hears: dict[VirtualCentral, int | None] = {p0.central: -59, p1.central: None}
            victim = VirtualNode(radio, "victim")  # never on the air: its id is borrowed
            impostor = VirtualNode(radio, "impostor", public_key_override=victim.public_key)
            forger = VirtualNode(radio, "forger")
            forger.forge_card()  # its card's signature does not verify
            honest = VirtualNode(radio, "honest")
            for made in (impostor, forger, honest):
                for central, dbm in hears.items():
                    central.set_rssi(made, dbm)
                await made.start()
            stats = p0.agent.stats
            await wait_for(
                lambda: (
                    stats().get("handshake.rejected.key_mismatch", 0) >= 1
                    and stats().get("handshake.rejected.bad_signature", 0) >= 1
                    and shown(p1.agent, honest) is not None
                ),
                ATTACH,
                "both refusals counted and the honest node everywhere",
            )
            for p in (p0, p1):
                assert shown(p.agent, impostor) is None and shown(p.agent, forger) is None
                assert shown(p.agent, victim) is None

    run(scenario)
