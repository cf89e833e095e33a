"""The BLE central transport: scan for nodes (docs/BLE_PROFILE.md), connect a bounded number, one
link per connected node over its frame channel. On bleak, with bleak-retry-connector.

**Scanning.** One :class:`bleak.BleakScanner` for the transport's life, filtered on the node
service; each advertisement's service data is parsed (:mod:`agent.transports.ble_profile`) into
the node's peer id and counter, and its RSSI goes into the node's :class:`RssiWindow`. Refused
advertisements are counted (``ble.adv.<fault>``), never raised. ``scan_mode = "passive"`` asks
BlueZ's advertisement monitor for the node service data; where it is missing (BlueZ without
experimental features, other platforms) the transport scans actively, with one warning.

**Connections.** At most ``max_connections`` nodes are connecting or connected. The others are
*waiting*: each is logged once when it starts waiting, counted (``ble.waiting``) and listed
(:attr:`BleTransport.waiting`), and connected in turn, oldest first, as slots free up. One
connection attempt runs at a time and the scanner is paused during it, because BlueZ answers a
second discovery or connection in progress with ``org.bluez.Error.InProgress`` and connecting
while discovering often ends in ``le-connection-abort-by-local`` (hbldh/bleak #859, #1603, #993,
#631). The device connected to is always the one from our own scan, never an address (which
would make bleak start a discovery of its own). ``bleak_retry_connector.establish_connection``
retries the transient errors (InProgress, abort-by-local, D-Bus hiccups) a few times with short
back-offs; when it gives up, or a connection is lost, the node is tried again after an
exponential back-off (``reconnect_backoff_*``), which an established link resets.

**Links.** A connected node is one link: ``LinkSpec(BLUETOOTH, mtu, distance, expected_peer=its
advertised peer id, keepalive and dead interval from [ble])``; the handshake refuses any other
key. The leaf profile does not negotiate the intervals, so ``[ble]``'s must be the nodes' own
(node.json ``keepalive_s``/``dead_s``; both default to 5 s / 15 s), never the LAN's. The link
comes up, then the Pi subscribes to the frame channel, then frames are written (write without
response), so the node's first notification always finds the link up and the node never gets a
write before it knows the link. The MTU is the characteristic's
``max_write_without_response_size`` (a frame per write); a later larger value updates the link.
The distance is the log-distance model (:class:`agent.core.distance.PathLoss`) of the window's
RSSI, reported when it moved enough (:class:`agent.core.distance.DistanceReporter`) as an update
of the link, never a new link. A disconnect is ``link_down``. At most :data:`MAX_QUEUED_FRAMES`
frames wait per link; beyond it
frames are dropped and counted (``ble.send_dropped``): the leaf protocol repairs with DIGEST.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from agent.core.backoff import Backoff, BackoffTracker
from agent.core.distance import DistanceReporter, PathLoss
from agent.core.events import LinkId
from agent.core.keys import peer_id as peer_id_of
from agent.core.linkspec import LinkSpec
from agent.core.records import ConnectionType
from agent.transports.base import LinkHost
from agent.transports.ble_profile import (
    ATT_HEADER_BYTES,
    FRAME_UUID,
    SERVICE_UUID,
    SERVICE_UUID_LE,
    AdvertisementError,
    frame_mtu,
    parse_service_data,
)
from agent.transports.ble_settings import BleSettings, ScanMode
from agent.transports.rssi_window import RssiWindow

__all__ = ["MAX_QUEUED_FRAMES", "MAX_TRACKED_NODES", "BleTransport", "NodeState", "WaitingNode"]

log = logging.getLogger("agent.transports.ble")

#: Nodes tracked at most (seen, waiting or connected); advertisements of more are counted, not kept.
MAX_TRACKED_NODES: Final = 256
#: A node not heard for this long, and not connected, is forgotten (seconds).
FORGET_AFTER: Final = 120.0
#: Frames queued for one link's writer at most.
MAX_QUEUED_FRAMES: Final = 512
#: Restarting the scanner after an error (InProgress included): first and longest wait (seconds).
SCAN_RETRY_INITIAL: Final = 0.5
SCAN_RETRY_MAX: Final = 30.0
#: What a Bluetooth stack raises for a failed operation (D-Bus sockets: EOF, broken pipe).
_BLE_ERRORS: Final = (BleakError, EOFError, BrokenPipeError)
#: An RSSI outside this range is a "not available" marker (bleak uses -127, some stacks 127).
_RSSI_RANGE: Final = (-126, 19)


class NodeState(enum.Enum):
    """Where a node stands with this Pi."""

    SEEN = "seen"  # advertising; no attempt due yet or none needed
    WAITING = "waiting"  # due for a connection, but every slot is taken
    CONNECTING = "connecting"
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class WaitingNode:
    """A node the Pi would serve but has no slot for (what ``status`` shows)."""

    peer_id: str  # hex
    since: float  # the transport's clock (the engine's)
    counter: int  # advertised, mod 2^16


class _Node:
    """One node heard advertising, and its connection when it has one."""

    __slots__ = (
        "counter",
        "device",
        "heard_at",
        "link",
        "lost_at",
        "peer_id",
        "rssi",
        "state",
        "waiting_since",
    )

    def __init__(self, peer_id: bytes, device: BLEDevice, rssi_window: float) -> None:
        self.peer_id = peer_id
        self.device = device
        self.counter = 0
        self.heard_at = 0.0
        #: When its last link ended: it is tried again only once heard after that.
        self.lost_at = -1.0
        self.rssi = RssiWindow(rssi_window)
        self.state = NodeState.SEEN
        self.waiting_since: float | None = None
        self.link: _Link | None = None


class _Link:
    """One connected node's link: the client, its frame channel, the writer and the distance."""

    __slots__ = ("channel", "client", "id", "mtu", "queue", "reporter", "subscribed", "writer")

    def __init__(self, link_id: LinkId, client: BleakClient, channel: BleakGATTCharacteristic) -> None:
        self.id = link_id
        self.client = client
        self.channel = channel
        self.mtu = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.reporter = DistanceReporter()
        self.subscribed = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None


class _NotANode(Exception):
    """A device advertised the node service but serves no frame channel."""


class BleTransport:
    """Nodes over BLE: a bleak central. ``scanner_backend`` / ``client_backend`` choose bleak's
    backend classes (``None``: the platform's; tests pass ones over virtual controllers)."""

    def __init__(
        self,
        settings: BleSettings,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        path_loss: PathLoss | None = None,
        unit: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self._path_loss = path_loss or PathLoss()
        self._unit = unit
        self._host: LinkHost | None = None
        self._scanner: BleakScanner | None = None
        self._scanning = False
        self._nodes: dict[bytes, _Node] = {}
        self._links: dict[LinkId, _Node] = {}
        self._ids = itertools.count(1)
        self._retry = BackoffTracker[bytes](
            Backoff(settings.reconnect_backoff_initial, settings.reconnect_backoff_max),
            max_keys=MAX_TRACKED_NODES,
        )
        self._wake = asyncio.Event()
        self._server: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scan_mode = ScanMode(settings.scan_mode)
        self._scan_failures = 0
        self._stopping = False

    # ------------------------------------------------------------------ Transport

    async def start(self, host: LinkHost) -> None:
        self._host = host
        self._scanner = self._make_scanner()
        await self._start_scanning()
        self._server = asyncio.ensure_future(self._serve())

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server
        for timer in self._timers:
            timer.cancel()
        await self._stop_scanning()
        for node in list(self._links.values()):
            if node.link is not None:
                await self._disconnect(node.link)
            self._lost(node, notify=True)

    def send(self, link: LinkId, frame: bytes) -> None:
        node = self._links.get(link)
        if node is None or node.link is None:
            return
        try:
            node.link.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._count("ble.send_dropped")

    def close_link(self, link: LinkId) -> None:
        """The engine closed ``link`` (dead, denied, refused): disconnect, without ``link_down``."""
        node = self._links.get(link)
        if node is not None and node.link is not None:
            closing = node.link
            self._lost(node, notify=False)
            self._retry.failed(node.peer_id, self._now(), self._unit())
            self._spawn(self._disconnect(closing))

    def proved(self, link: LinkId) -> None:
        pass

    def established(self, link: LinkId, peer_key: bytes) -> None:
        node = self._links.get(link)
        if node is not None:
            self._retry.succeeded(node.peer_id)

    def back_off(self, peer_key: bytes, until: float) -> None:
        self._retry.hold(peer_id_of(peer_key), until)
        self._wake_at(until)

    # ------------------------------------------------------------------ what status shows

    @property
    def waiting(self) -> tuple[WaitingNode, ...]:
        """Nodes due for a connection that have no slot, oldest first."""
        found = [n for n in self._nodes.values() if n.state is NodeState.WAITING]
        found.sort(key=lambda n: n.waiting_since or 0.0)
        return tuple(WaitingNode(n.peer_id.hex(), n.waiting_since or 0.0, n.counter) for n in found)

    def status(self) -> dict[str, Any]:
        """What ``presence-agent status`` shows: the nodes connected and those waiting for a slot."""
        now = self._now()
        return {
            "transport": "ble",
            "max_connections": self.settings.max_connections,
            "connected": sorted(n.peer_id.hex() for n in self._links.values()),
            "waiting": [
                {"peer_id": w.peer_id, "waiting_s": round(now - w.since, 1), "counter": w.counter}
                for w in self.waiting
            ],
        }

    def state_of(self, peer_id: bytes) -> NodeState | None:
        node = self._nodes.get(peer_id)
        return None if node is None else node.state

    # ------------------------------------------------------------------ scanning

    def _make_scanner(self) -> BleakScanner:
        bluez: dict[str, Any] = {}
        if self.settings.adapter:
            bluez["adapter"] = self.settings.adapter
        mode = self._scan_mode
        if mode is ScanMode.PASSIVE:
            from bleak.args.bluez import OrPattern
            from bleak.assigned_numbers import AdvertisementDataType

            bluez["or_patterns"] = [OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID128, SERVICE_UUID_LE)]
        return BleakScanner(
            self._on_advertisement,
            [SERVICE_UUID],
            mode.value,
            bluez=bluez,  # type: ignore[arg-type]
            backend=self._scanner_backend,
        )

    async def _start_scanning(self) -> None:
        if self._scanning or self._stopping or self._scanner is None:
            return
        try:
            await self._scanner.start()
        except BleakError as exc:
            if self._scan_mode is ScanMode.PASSIVE:
                log.warning("passive BLE scanning is not available here (%s); scanning actively", exc)
                self._scan_mode = ScanMode.ACTIVE
                self._scanner = self._make_scanner()
            self._scan_failures += 1
            self._count("ble.scan_errors")
            delay = Backoff(SCAN_RETRY_INITIAL, SCAN_RETRY_MAX).delay(self._scan_failures, self._unit())
            log.warning("BLE scanning did not start (%s); retrying in %.1f s", exc, delay)
            self._later(delay, lambda: self._spawn(self._start_scanning()))
            return
        self._scanning = True
        self._scan_failures = 0

    async def _stop_scanning(self) -> None:
        if not self._scanning or self._scanner is None:
            return
        self._scanning = False
        try:
            await self._scanner.stop()
        except BleakError as exc:
            self._count("ble.scan_errors")
            log.warning("stopping the BLE scan failed: %s", exc)

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        data = adv.service_data.get(SERVICE_UUID)
        if data is None:
            return  # another device that lists the service (or a scan response without the data)
        try:
            advert = parse_service_data(data)
        except AdvertisementError as exc:
            self._count(f"ble.adv.{exc.fault.value}")
            return
        now = self._now()
        node = self._nodes.get(advert.peer_id)
        if node is None:
            node = self._track(advert.peer_id, device, now)
            if node is None:
                return
        node.device = device
        node.counter = advert.counter
        node.heard_at = now
        if _RSSI_RANGE[0] <= adv.rssi <= _RSSI_RANGE[1]:
            node.rssi.add(now, float(adv.rssi))
        if node.state is NodeState.CONNECTED:
            self._report_distance(node)
        elif node.state is NodeState.SEEN:
            self._wake.set()

    def _track(self, peer_id: bytes, device: BLEDevice, now: float) -> _Node | None:
        if len(self._nodes) >= MAX_TRACKED_NODES:
            for key, stale in list(self._nodes.items()):
                if stale.link is None and stale.heard_at < now - FORGET_AFTER:
                    del self._nodes[key]
        if len(self._nodes) >= MAX_TRACKED_NODES:
            self._count("ble.nodes_untracked")
            return None
        node = _Node(peer_id, device, self.settings.rssi_window)
        self._nodes[peer_id] = node
        return node

    # ------------------------------------------------------------------ serving slots

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (node := self._next_node()) is not None:
                try:
                    await self._connect(node)
                except Exception:  # a bug: log it, keep serving the other nodes
                    log.exception("BLE connection to %s crashed", node.peer_id.hex())
                    self._count("ble.errors")
                    self._lost(node, notify=True)
            await self._start_scanning()  # paused while connecting

    def _next_node(self) -> _Node | None:
        """The node to connect next (oldest waiting first), or ``None``; marks the ones left waiting."""
        now = self._now()
        due = [
            n
            for n in self._nodes.values()
            if n.state in (NodeState.SEEN, NodeState.WAITING)
            and now - FORGET_AFTER <= n.heard_at
            and n.heard_at > n.lost_at
            and self._retry.may_retry(n.peer_id, now)
        ]
        if not due:
            return None
        due.sort(key=lambda n: (n.waiting_since is None, n.waiting_since or 0.0, n.heard_at))
        busy = sum(1 for n in self._nodes.values() if n.state in (NodeState.CONNECTING, NodeState.CONNECTED))
        if busy < self.settings.max_connections:
            return due[0]
        for node in due:
            if node.state is not NodeState.WAITING:
                node.state = NodeState.WAITING
                node.waiting_since = now
                self._count("ble.waiting")
                log.info(
                    "BLE node %s waits for a connection slot (%d of %d in use: [ble] max_connections)",
                    node.peer_id.hex(),
                    busy,
                    self.settings.max_connections,
                )
        return None

    async def _connect(self, node: _Node) -> None:
        node.state = NodeState.CONNECTING
        await self._stop_scanning()  # never discover and connect at once (BlueZ: InProgress)
        name = f"node {node.peer_id.hex()}"
        client: BleakClient | None = None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                client = await establish_connection(
                    BleakClient,
                    node.device,
                    name,
                    disconnected_callback=lambda c: self._on_disconnected(node, c),
                    backend=self._client_backend,
                )
                channel = client.services.get_characteristic(FRAME_UUID)
                if channel is None:
                    raise _NotANode(f"{name} advertises {SERVICE_UUID} but has no frame channel")
                link = self._link_up(node, client, channel)
                await client.start_notify(channel, lambda _c, data: self._on_frame(link, data))
                link.subscribed.set()  # the engine may have closed it meanwhile: then nothing waits
        except (TimeoutError, _NotANode, *_BLE_ERRORS) as exc:
            self._count("ble.connect_failed")
            retry_at = self._retry.failed(node.peer_id, self._now(), self._unit())
            log.info(
                "BLE connection to %s failed (%r); next try in %.1f s", name, exc, retry_at - self._now()
            )
            if node.link is not None:
                self._lost(node, notify=True)
            else:
                node.state = NodeState.SEEN
            if client is not None:
                with contextlib.suppress(*_BLE_ERRORS):
                    await client.disconnect()
            self._wake_at(retry_at)

    def _link_up(self, node: _Node, client: BleakClient, channel: BleakGATTCharacteristic) -> _Link:
        assert self._host is not None
        link = _Link(("ble", next(self._ids)), client, channel)
        link.mtu = self._channel_mtu(link)
        node.link = link
        node.state = NodeState.CONNECTED
        node.waiting_since = None
        self._links[link.id] = node
        distance = self._distance(node)
        if distance is not None:
            link.reporter.offer(distance)
        self._host.register_link(link.id, self)
        self._host.link_up(
            link.id,
            LinkSpec(
                ConnectionType.BLUETOOTH,
                mtu=link.mtu,
                distance_dm=None if distance is None else round(distance * 10),
                expected_peer=node.peer_id,
                keepalive_interval=self.settings.keepalive_interval,
                dead_interval=self.settings.dead_interval,
            ),
        )
        link.writer = asyncio.ensure_future(self._write_frames(node, link))
        return link

    def _on_frame(self, link: _Link, data: bytearray) -> None:
        if link.id in self._links and self._host is not None:
            self._host.receive(link.id, bytes(data))

    async def _write_frames(self, node: _Node, link: _Link) -> None:
        await link.subscribed.wait()
        while True:
            frame = await link.queue.get()
            mtu = self._channel_mtu(link)
            if mtu > link.mtu and self._host is not None:
                link.mtu = mtu  # the exchange finished after connecting (BlueZ)
                self._host.update_link(link.id, mtu=mtu)
            try:
                await link.client.write_gatt_char(link.channel, frame, response=False)
            except _BLE_ERRORS as exc:
                self._count("ble.write_failed")
                log.info("BLE write to %s failed (%s); disconnecting", node.peer_id.hex(), exc)
                self._lost(node, notify=True)
                self._retry.failed(node.peer_id, self._now(), self._unit())
                await self._disconnect(link)
                return

    def _on_disconnected(self, node: _Node, client: BleakClient) -> None:
        if node.link is not None and node.link.client is client:
            self._count("ble.disconnected")
            self._lost(node, notify=True)
            self._retry.failed(node.peer_id, self._now(), self._unit())
            self._wake_at(self._retry.retry_at(node.peer_id) or self._now())

    def _lost(self, node: _Node, *, notify: bool) -> None:
        """Forget ``node``'s link (``link_down`` to the host if ``notify``); its slot is free."""
        link = node.link
        node.link = None
        node.state = NodeState.SEEN
        if link is None:
            return
        node.lost_at = self._now()
        self._links.pop(link.id, None)
        if link.writer is not None and link.writer is not asyncio.current_task():
            link.writer.cancel()
        if notify and self._host is not None:
            self._host.link_down(link.id)
        self._wake.set()

    async def _disconnect(self, link: _Link) -> None:
        with contextlib.suppress(*_BLE_ERRORS):
            await link.client.disconnect()

    # ------------------------------------------------------------------ distance

    def _distance(self, node: _Node) -> float | None:
        rssi = node.rssi.value(self._now())
        return None if rssi is None else self._path_loss.distance(rssi)

    def _report_distance(self, node: _Node) -> None:
        distance = self._distance(node)
        link = node.link
        if distance is None or link is None or self._host is None:
            return
        if link.reporter.offer(distance) is not None:
            self._host.update_link(link.id, distance_dm=round(distance * 10))

    @staticmethod
    def _channel_mtu(link: _Link) -> int:
        return frame_mtu(link.channel.max_write_without_response_size + ATT_HEADER_BYTES)

    # ------------------------------------------------------------------ small helpers

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _count(self, name: str) -> None:
        if self._host is not None:
            self._host.count(name)

    def _later(self, delay: float, callback: Callable[[], object]) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            if not self._stopping:
                callback()

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake_at(self, at: float) -> None:
        self._later(max(0.0, at - self._now()), self._wake.set)
