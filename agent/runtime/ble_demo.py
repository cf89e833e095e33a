"""``presence-agent demo --ble``: Pis and BLE nodes on virtual Bluetooth, in one process, shown live.

Bumble's virtual air connects controllers inside one process only, so unlike the LAN demo
(:mod:`agent.runtime.demo`, one process per agent) the Pis here are in-process :class:`Agent`
runtimes in one asyncio loop: each has its own state directory and control socket (so
``presence-agent graph --state-dir DIR`` works from another terminal), the LAN transport on
loopback between them, and the production :class:`BleTransport` on its own virtual adapter.
Beside them, virtual nodes (Bumble peripherals running the node firmware's own leaf and
Ed25519) are each heard by some of the Pis. The first Pi's graph table is printed whenever it
changes; once every Pi sees every node, one node changes its metadata; on Ctrl-C (or after
``--duration``) the nodes are switched off and the Pis closed.

The runtime may not import the simulator (docs/ARCHITECTURE.md §1), so the virtual Bluetooth
comes in through :class:`BluetoothAir` (``agent.sim.ble.VirtualAir`` is one; ``agent.cli``
passes it). :func:`ble_pis` builds the Pis for the demo and for ``bench/ble.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.core.records import ConnectionType
from agent.runtime.agent import Agent
from agent.runtime.control import graph_document
from agent.runtime.render import LiveTable, graph_table
from agent.state.identity import load_or_create_identity
from agent.transports.ble import BleTransport
from agent.transports.ble_settings import BleSettings
from agent.transports.lan import LanTransport
from agent.transports.lan_settings import LanSettings


class BluetoothAdapter(Protocol):
    """One Pi's (virtual) adapter: bleak backend classes bound to it."""

    @property
    def scanner_backend(self) -> Any: ...

    @property
    def client_backend(self) -> Any: ...

    async def power_on(self) -> None: ...


class BluetoothNode(Protocol):
    """A node on the air: its peer key, switched on and off, its metadata changed on the node."""

    @property
    def name(self) -> str: ...

    @property
    def peer_key_string(self) -> str: ...

    async def start(self) -> None: ...

    async def power_off(self) -> None: ...

    def set_metadata(self, metadata: Mapping[str, Any]) -> None: ...


class BluetoothAir(Protocol):
    """Where adapters and nodes are made (``agent.sim.ble.VirtualAir``)."""

    def adapter(self, name: str) -> BluetoothAdapter: ...

    def node(
        self,
        name: str,
        metadata: Mapping[str, Any],
        heard: Mapping[Any, int | None],
        keepalive_s: float,
        dead_s: float,
    ) -> BluetoothNode:
        """A node (not yet started) heard by each adapter of ``heard`` at its RSSI (None: not)."""
        ...


@dataclass(frozen=True, slots=True)
class BlePi:
    agent: Agent
    adapter: BluetoothAdapter
    ble: BleTransport


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def ble_pis(
    root: Path,
    air: BluetoothAir,
    names: Sequence[str],
    settings: BleSettings,
    *,
    lan: bool = True,
    control_socket: bool = True,
) -> AsyncIterator[list[BlePi]]:
    """One started :class:`Agent` per name (state in ``root / name``), each with a BLE transport on
    its own adapter of ``air`` and, if ``lan``, the LAN transport on loopback (one fresh multicast
    port for them all); closed on exit."""
    lan_settings = LanSettings(interfaces=("127.0.0.1",), multicast_port=free_udp_port())
    async with AsyncExitStack() as stack:
        made = []
        for name in names:
            adapter = air.adapter(name)
            await adapter.power_on()
            ble = BleTransport(
                settings, scanner_backend=adapter.scanner_backend, client_backend=adapter.client_backend
            )
            state = root / name
            key = load_or_create_identity(state).public_key  # the LAN's beacons carry it
            transports: list[Any] = [LanTransport(lan_settings, key), ble] if lan else [ble]
            agent = Agent(
                AgentConfig(),
                state_dir=state,
                name=name,
                transports=transports,
                control_socket=control_socket,
            )
            await agent.start()
            stack.push_async_callback(agent.close)
            made.append(BlePi(agent, adapter, ble))
        yield made


def sees(agent: Agent, node: BluetoothNode) -> bool:
    """``node`` is in ``agent``'s graph with at least one Bluetooth connection."""
    graph = agent.engine.graph(agent.now())
    if graph.peer(node.peer_key_string) is None:
        return False
    return any(
        c.connection_type is ConnectionType.BLUETOOTH
        and node.peer_key_string in (c.peer_key_string1, c.peer_key_string2)
        for c in graph.connections()
    )


PIS = ("pi-kitchen", "pi-garden", "pi-garage")
#: Demo nodes: name, metadata, the RSSI each Pi hears it at (None: out of its range).
NODES: tuple[tuple[str, dict[str, Any], tuple[int | None, ...]], ...] = (
    ("node-fridge", {"room": "kitchen", "sensor": "door"}, (-59, -70, None)),
    ("node-bench", {"room": "garden", "sensor": "soil"}, (None, -62, None)),
    ("node-bike", {"room": "garage", "battery": "87%"}, (None, None, -65)),
)
#: The demo's [ble]: the node firmware's timing (5 s keepalive, 15 s dead) and quick retries.
DEMO_BLE = BleSettings(enabled=True, reconnect_backoff_initial=0.5, reconnect_backoff_max=5.0)


async def _demo(air: BluetoothAir, root: Path, nodes: int, duration: float | None) -> None:
    async with ble_pis(root, air, PIS, DEMO_BLE) as pis:
        made = []
        for name, metadata, rssi in NODES[:nodes]:
            heard = {pi.adapter: dbm for pi, dbm in zip(pis, rssi, strict=True)}
            node = air.node(name, metadata, heard, DEMO_BLE.keepalive_interval, DEMO_BLE.dead_interval)
            await node.start()
            made.append(node)
        print(
            f"started {len(pis)} Pis and {len(made)} BLE nodes on virtual Bluetooth in this process "
            f"(state under {root}); Ctrl-C stops them",
            flush=True,
        )
        print(f"from another terminal: presence-agent graph --state-dir {root / PIS[0]}\n", flush=True)
        started = time.monotonic()
        live = LiveTable(started)
        changed = False
        first = pis[0].agent
        try:
            while duration is None or time.monotonic() - started < duration:
                live.show(graph_table(graph_document(first, first.engine.graph(first.now()))))
                was_seen = live.all_seen_at is not None
                live.seen(
                    all(sees(p.agent, n) for p in pis for n in made), f"every Pi sees all {len(made)} nodes"
                )
                if was_seen and not changed and made:
                    changed = True
                    made[0].set_metadata({**NODES[0][1], "door": "open"})
                    print(f"{made[0].name} changed its metadata (door: open), signed on the node\n")
                await asyncio.sleep(0.2)
        finally:
            for node in made:
                with contextlib.suppress(Exception):  # stopping: a node already gone is fine
                    await node.power_off()


def run_ble_demo(air: BluetoothAir, nodes: int, duration: float | None) -> int:
    """Run the BLE demo; 0 when every Pi stopped cleanly."""
    nodes = max(1, min(nodes, len(NODES)))
    with tempfile.TemporaryDirectory(prefix="presence-demo-ble-") as tmp:
        try:
            asyncio.run(_demo(air, Path(tmp), nodes, duration))
        except KeyboardInterrupt:
            print("\nstopped", flush=True)
        print("all Pis stopped cleanly", flush=True)
        return 0
