"""Virtual Bluetooth: Google Bumble's controllers on one ``LocalLink``, bleak backends, virtual nodes.

**Needs Bumble** (``bumble`` on PyPI, a dev extra of this project: ``pip install -e '.[dev]'``);
importing this module without it raises :class:`VirtualBluetoothUnavailable`. Bumble's
``LocalLink`` connects controllers inside one process only, so everything on the virtual air
(the Pis' adapters and the nodes) lives in one asyncio loop.

Bleak has no Bumble backend (its own integration tests drive BlueZ through the kernel's VHCI,
which needs root and ``hci_vhci``), but it takes any backend class: ``BleakScanner(...,
backend=...)`` and ``BleakClient(..., backend=...)``. So each :class:`VirtualCentral` (one Pi's
adapter: a Bumble ``Controller`` and host ``Device``) makes a scanner and a client backend class
bound to it, and the *production* ``agent.transports.ble.BleTransport`` runs unmodified through
bleak's public API over them. Each :class:`VirtualNode` is a Bumble GATT peripheral doing what the
firmware's ``node_main.py`` does on a board: it serves the profile's frame channel, advertises
with the firmware's own ``ble_profile.py`` (docs/BLE_PROFILE.md) and runs the firmware's own
``leaf.py`` and pure-Python Ed25519 through :class:`agent.sim.leaf_node.LeafNode`.

What the virtual radio lacks, the central adds and says so: Bumble reports every advertisement
at -50 dBm, so :meth:`VirtualCentral.set_rssi` sets what a node is heard at (the path loss), and
BlueZ's refusals are emulated where the transport must avoid or survive them: starting a scan
while a connection is being made raises ``org.bluez.Error.InProgress``, connecting while scanning
raises ``le-connection-abort-by-local`` (hbldh/bleak #631), and :attr:`VirtualCentral.connect_faults`
/ :attr:`scan_faults` hold errors for the next attempts to raise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDBusError, BleakError

from agent.core.errors import PresenceError
from agent.sim.firmware import load
from agent.sim.leaf_node import LeafEventKind, LeafNode, NodeIdentity


class VirtualBluetoothUnavailable(PresenceError, ImportError):
    """Bumble is not installed: the virtual Bluetooth needs the dev extra."""


try:
    from bumble import ll
    from bumble.controller import Controller
    from bumble.core import UUID as BumbleUUID
    from bumble.core import AdvertisingData, BaseBumbleError
    from bumble.device import Advertisement, Connection, Device, Peer
    from bumble.gatt import Characteristic, CharacteristicValue, Service
    from bumble.gatt_client import CharacteristicProxy
    from bumble.hci import Address
    from bumble.host import Host
    from bumble.link import LocalLink
    from bumble.transport.common import AsyncPipeSink
except ImportError as exc:  # pragma: no cover - the dev extra is installed wherever tests run
    raise VirtualBluetoothUnavailable(
        f"virtual Bluetooth needs Google Bumble ({exc}): install the dev extra, pip install -e '.[dev]'"
    ) from exc

#: The node's side of the BLE profile: the firmware's own module (same constants as the host's).
bp: Any = load("ble_profile")

IN_PROGRESS = "org.bluez.Error.InProgress"
ABORT_BY_LOCAL = "le-connection-abort-by-local"

_addresses = itertools.count(1)


def _next_address() -> str:
    n = next(_addresses)
    return "C0:00:00:00:" + f"{n >> 8:02X}:{n & 0xFF:02X}"  # random static: top bits 11


def in_progress() -> BleakDBusError:
    """What BlueZ answers a second discovery or connection with (hbldh/bleak #859, #1603)."""
    return BleakDBusError(IN_PROGRESS, ["Operation already in progress"])


def aborted_by_local() -> BleakDBusError:
    """What BlueZ answers a connection cut short by its own side with (hbldh/bleak #993)."""
    return BleakDBusError("org.bluez.Error.Failed", [ABORT_BY_LOCAL])


def _uuid_str(value: BumbleUUID) -> str:
    return str(uuid.UUID(bytes=bytes(value.to_bytes(force_128=True))[::-1]))


class _NodeController(Controller):
    """A node's controller, claimed by one Pi's connection request at a time (see below)."""

    claimed = False

    def advertising_as(self, address: Address) -> bool:
        advertisers: list[Any] = [self.le_legacy_advertiser, *self.advertising_sets.values()]
        return any(a.enabled and a.address == address for a in advertisers)

    def on_le_connect_ind(self, packet: ll.ConnectInd) -> None:
        self.claimed = False
        super().on_le_connect_ind(packet)


class _CentralController(Controller):
    """A Pi's controller. Bumble's ``LocalLink`` delivers a connection request later than the
    advertisement that prompted it, so two Pis that heard the same advertisement would both
    "connect" while the node takes only the first (it stops advertising) and ignores the other,
    which then believes it is connected. On the air the second request finds nobody listening: so
    here a request goes only to a node still advertising and not already claimed by a request in
    flight; the others wait for the node's next advertisement."""

    def create_le_connection(self, peer_address: Address) -> None:
        peer = self.link.find_le_controller(peer_address) if self.link is not None else None
        if isinstance(peer, _NodeController):
            if peer.claimed or not peer.advertising_as(peer_address):
                return
            peer.claimed = True
        super().create_le_connection(peer_address)


def _make_device(link: LocalLink, name: str, controller: type[Controller] = Controller) -> Device:
    address = _next_address()
    made = controller(name, link=link, public_address=address)
    return Device(name=name, address=Address(address), host=Host(made, AsyncPipeSink(made)))


class VirtualRadio:
    """The air every virtual controller is on (a Bumble ``LocalLink``)."""

    def __init__(self) -> None:
        self.link = LocalLink()  # type: ignore[no-untyped-call]


class VirtualCentral:
    """One Pi's virtual adapter, and bleak backend classes bound to it."""

    def __init__(self, radio: VirtualRadio, name: str = "pi", *, att_mtu: int = bp.PREFERRED_ATT_MTU) -> None:
        self.device = _make_device(radio.link, name, _CentralController)
        #: The ATT MTU this adapter asks for (23: no exchange, 20-byte frames).
        self.att_mtu = att_mtu
        self.connect_faults: deque[Exception] = deque()
        self.scan_faults: deque[Exception] = deque()
        self.scanning = False
        self.connecting = False
        self.connects = 0
        self.rssi: dict[str, int | None] = {}
        central = self
        self.scanner_backend: type[BaseBleakScanner] = type(
            "BumbleScanner", (BumbleScanner,), {"central": central}
        )
        self.client_backend: type[BaseBleakClient] = type(
            "BumbleClient", (BumbleClient,), {"central": central}
        )

    async def power_on(self) -> None:
        await self.device.power_on()

    def set_rssi(self, node: VirtualNode, dbm: int | None) -> None:
        """Hear ``node``'s advertisements at ``dbm`` from now on (the virtual link has no path loss);
        ``None``: out of range, its advertisements are not heard at all."""
        self.rssi[str(node.device.random_address)] = dbm

    def connections(self) -> int:
        return len(self.device.connections)


class BumbleScanner(BaseBleakScanner):
    """Bleak's scanner backend over a :class:`VirtualCentral`'s Bumble device."""

    central: ClassVar[VirtualCentral]

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode == "active"

    async def start(self) -> None:
        central = self.central
        if central.scan_faults:
            raise central.scan_faults.popleft()
        if central.connecting:
            raise in_progress()
        self.seen_devices = {}
        central.device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await central.device.start_scanning(active=self._active, filter_duplicates=False)
        central.scanning = True

    async def stop(self) -> None:
        central = self.central
        central.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        if central.scanning:
            central.scanning = False
            await central.device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = advertisement.data
        service_data = {
            _uuid_str(u): bytes(v) for u, v in data.get_all(AdvertisingData.SERVICE_DATA_128_BIT_UUID)
        }
        uuids = [
            _uuid_str(u)
            for listed in data.get_all(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS)
            for u in listed
        ]
        names = data.get_all(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get_all(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        address = str(advertisement.address).split("/")[0]
        rssi = self.central.rssi.get(address, advertisement.rssi)
        if rssi is None:
            return  # out of this adapter's range
        adv = AdvertisementData(
            names[0] if names else None, {}, service_data, uuids, None, rssi, (advertisement,)
        )
        # BlueZ's device UUIDs include service data UUIDs heard in scan responses; Bumble's
        # scan responses repeat the advertising data, so the service data stands for both.
        if not self.is_allowed_uuid(uuids + list(service_data)):
            return
        device = self.create_or_update_device(address, address, adv.local_name, advertisement.address, adv)
        self.call_detection_callbacks(device, adv)


_PROPERTIES = {
    Characteristic.Properties.READ: "read",
    Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    Characteristic.Properties.WRITE: "write",
    Characteristic.Properties.NOTIFY: "notify",
    Characteristic.Properties.INDICATE: "indicate",
}


class BumbleClient(BaseBleakClient):
    """Bleak's client backend over a :class:`VirtualCentral`'s Bumble device."""

    central: ClassVar[VirtualCentral]

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.get("disconnected_callback"),
            timeout=kwargs.get("timeout", 10.0),
        )
        if not isinstance(address_or_ble_device, BLEDevice):
            raise BleakError("the virtual backend connects to scanned devices only")
        self._address: Address = address_or_ble_device.details
        self._connection: Connection | None = None
        self._peer: Peer | None = None

    @property
    def name(self) -> str:
        return str(self._address)

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else bp.DEFAULT_ATT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        central = self.central
        central.connects += 1
        if central.connect_faults:
            raise central.connect_faults.popleft()
        if central.scanning:
            raise aborted_by_local()
        central.connecting = True
        try:
            connection = await central.device.connect(self._address, timeout=self._timeout)
        except (BaseBumbleError, TimeoutError) as exc:
            raise BleakError(f"connection failed: {exc!r}") from exc
        finally:
            central.connecting = False
        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        peer = Peer(connection)
        self._peer = peer
        try:
            if central.att_mtu > bp.DEFAULT_ATT_MTU:
                await peer.request_mtu(central.att_mtu)
            await peer.discover_services()
            for service in peer.services:
                await peer.discover_characteristics(service=service)
            self.services = self._collection(peer, connection)
        except (BaseBumbleError, BleakError) as exc:
            await connection.disconnect()
            raise BleakError(f"service discovery failed: {exc!r}") from exc

    def _collection(self, peer: Peer, connection: Connection) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in peer.services:
            bleak_service = BleakGATTService(service, service.handle, _uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for proxy in service.characteristics:
                characteristic = BleakGATTCharacteristic(
                    proxy,
                    proxy.handle,
                    _uuid_str(proxy.uuid),
                    [name for flag, name in _PROPERTIES.items() if proxy.properties & flag],  # type: ignore[misc]
                    lambda: connection.att_mtu - bp.ATT_HEADER_BYTES,
                    bleak_service,
                )
                collection.add_characteristic(characteristic)  # adds it to its service too
        return collection

    def _on_disconnection(self, reason: int) -> None:
        self._connection = None
        self._peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _require(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def disconnect(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.disconnect()
            except BaseBumbleError as exc:
                raise BleakError(f"disconnect failed: {exc!r}") from exc

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("the virtual backend does not pair (the leaf protocol authenticates)")

    async def unpair(self) -> None:
        raise BleakError("the virtual backend does not pair")

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        return bytearray(await self._require().read_value(characteristic.obj))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, **kwargs: Any) -> bytearray:
        raise BleakError("descriptors are not emulated")

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        peer = self._require()
        if len(data) > characteristic.max_write_without_response_size:
            raise BleakError(f"a write of {len(data)} bytes exceeds the ATT MTU")
        try:
            await peer.write_value(characteristic.obj, bytes(data), with_response=response)
        except BaseBumbleError as exc:
            raise BleakError(f"write failed: {exc!r}") from exc

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        raise BleakError("descriptors are not emulated")

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        proxy: CharacteristicProxy[bytes] = characteristic.obj
        await self._require().subscribe(proxy, lambda value: callback(bytearray(value)))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        await self._require().unsubscribe(characteristic.obj)


class VirtualNode:
    """A BLE node: a Bumble peripheral with the profile's frame channel, running the firmware leaf."""

    def __init__(
        self,
        radio: VirtualRadio,
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        advertise: bool = True,
        public_key_override: bytes | None = None,
        seed: bytes | None = None,
        keepalive_s: float = 1.0,
        dead_s: float = 3.0,
    ) -> None:
        self.name = name
        self.device = _make_device(radio.link, name, _NodeController)
        #: The firmware leaf this node runs (its key, counters, card and links record).
        self.leaf = LeafNode(
            seed if seed is not None else os.urandom(32),
            NodeIdentity(name, metadata=dict(metadata or {})),
            keepalive_s=keepalive_s,
            dead_s=dead_s,
        )
        self.public_key = self.leaf.public_key
        self.peer_key_string = self.leaf.peer_key_string
        #: The peer id the node advertises (another's, to impersonate it).
        self.advertised_id: bytes = (public_key_override or self.public_key)[:8]
        self._advertise = advertise
        self.channel: Characteristic[bytes] = Characteristic(
            bp.FRAME_UUID,
            Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.NOTIFY,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self.device.add_service(Service(bp.SERVICE_UUID, [self.channel]))
        self.channel.on(Characteristic.EVENT_SUBSCRIPTION, self._on_subscription)
        self._links: dict[int, Connection] = {}
        self._queues: dict[int, asyncio.Queue[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._advertised: int | None = None
        self._advertising = asyncio.Lock()
        self.on = False
        #: The longest frame written to the node and notified by it (both within the link's MTU).
        self.largest_write = 0
        self.largest_notification = 0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        await self.device.power_on()
        self.on = True
        self.leaf.ensure_card()  # as node_main: signed once, before the first advertisement names it
        await self._advertise_now()
        self._schedule()

    def forge_card(self) -> None:
        """From now on, present a card whose signature does not verify (a hostile node)."""
        self.leaf.ensure_card()
        counter, expiry, raw = self.leaf.leaf.card
        self.leaf.leaf.card = (counter, expiry, raw[:-1] + bytes((raw[-1] ^ 0x01,)))

    def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """The node's metadata changed (``node.json`` on a board): the card is re-signed and sent."""
        self.leaf.set_metadata(metadata, self._now())
        self._flush()

    async def _advertise_now(self) -> None:
        async with self._advertising:  # one change at a time: power_off must find it settled
            if not self._advertise or not self.on:
                return
            counter = self.counter()
            if self.device.is_advertising:
                await self.device.stop_advertising()
            await self.device.start_advertising(
                advertising_data=bp.advertising_data(self.advertised_id, counter),
                scan_response_data=bp.scan_response(self.name),
                advertising_interval_min=100,
                advertising_interval_max=100,
            )
            self._advertised = counter

    def counter(self) -> int:
        """The newest counter the node signed (what it advertises)."""
        return self.leaf.newest_counter()

    async def power_off(self) -> None:
        """Switched off: its connections end and it stops advertising."""
        self.on = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._advertising:
            if self.device.is_advertising:
                await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            await connection.disconnect()

    # ---------------------------------------------------------------- GATT events

    def _on_subscription(self, connection: Connection, notify: bool, indicate: bool) -> None:
        handle = connection.handle
        if not notify or handle in self._links or not self.on:
            return
        self._links[handle] = connection
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues[handle] = queue
        self._spawn(self._notify_frames(connection, queue))
        connection.on(Connection.EVENT_DISCONNECTION, lambda _reason: self._on_disconnection(handle))
        self.leaf.link_up(handle, bp.frame_mtu(connection.att_mtu), self._now())
        self._flush()
        self._spawn(self._advertise_now())  # a node keeps advertising for the other Pis

    def _on_write(self, connection: Connection, value: bytes) -> None:
        self.largest_write = max(self.largest_write, len(value))
        if not self.on or connection.handle not in self._links:
            return
        self.leaf.receive(connection.handle, bytes(value), self._now())
        self._flush()

    def _on_disconnection(self, handle: int) -> None:
        self._links.pop(handle, None)
        self._queues.pop(handle, None)
        self.leaf.link_down(handle, self._now())
        self._flush()

    # ---------------------------------------------------------------- the leaf's outputs

    def _flush(self) -> None:
        """Send what the leaf produced, end links it closed, re-arm its timer, re-advertise a new counter."""
        for link, frame in self.leaf.take_output():
            queue = self._queues.get(link)  # type: ignore[call-overload]
            if queue is not None:
                queue.put_nowait(frame)
        for event in self.leaf.take_events():
            if event.kind is LeafEventKind.DOWN:
                self._close(event.link)
        if self.on:
            self._schedule()
            if self._advertised is not None and self.counter() != self._advertised:
                self._spawn(self._advertise_now())

    def _close(self, link: Hashable) -> None:
        connection = self._links.get(link)  # type: ignore[call-overload]
        if connection is not None:
            self._spawn(connection.disconnect())

    def _schedule(self) -> None:
        # next_tick is the earliest a tick may have work, measured from now: a later answer never
        # cancels an earlier timer (frames every 0.5 s would otherwise push the keepalive away).
        at = self.leaf.next_tick(self._now())
        if self._timer is not None:
            if self._timer.when() <= at:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.on:
            self.leaf.tick(self._now())
            self._flush()

    async def _notify_frames(self, connection: Connection, queue: asyncio.Queue[bytes]) -> None:
        while connection.handle in self._links:
            frame = await queue.get()
            self.largest_notification = max(self.largest_notification, len(frame))
            try:
                await self.device.notify_subscriber(connection, self.channel, frame)
            except BaseBumbleError:
                return

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def advertise_raw(radio: VirtualRadio, payload: bytes) -> Device:
    """A device on the air advertising ``payload`` as it is (a hostile or broken one)."""
    device = _make_device(radio.link, "raw")
    await device.power_on()
    await device.start_advertising(
        advertising_data=payload, advertising_interval_min=100, advertising_interval_max=100
    )
    return device
