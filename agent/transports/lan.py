"""LAN transport (connection type ``AccessPoint``): UDP multicast discovery, TCP links.

Discovery: every ``beacon_interval`` each agent sends a beacon to the multicast
group (default 239.255.77.77:47777, TTL 1, loopback on so agents on one host
see each other)::

    b"PAB1" + public_key(32) + tcp_port(2, big-endian)            38 bytes

A beacon only says where to dial; nothing in it is trusted. Authentication is
the engine's handshake over the TCP link (each side signs the other's nonce).

Links: TCP, each frame preceded by its length (uint32 big-endian); a length
above ``max_frame_bytes`` closes the connection. One link per peer pair: the
peer with the lower key dials; the higher one dials too if it keeps hearing a
lower peer that never dials it (one-way multicast). If both links come up, both
sides keep the one dialled by the lower key. Failed dials back off
exponentially with jitter: the n-th consecutive failure waits
``min(dial_backoff_max, dial_backoff_initial * 2^(n-1)) * (1 + U[0, 0.5])``
(:class:`agent.core.backoff.Backoff`); a peer that denied us is not redialled
before the engine's ``retry_at``. Back-off state is kept for at most
:data:`MAX_TRACKED_PEERS` entries, the oldest forgotten first.

A beacon is a hint, never a reason to penalise the key it names: a failed dial
backs off that *endpoint* (key, address, port), never the key, so a forged
beacon naming a peer's key with a wrong port cannot keep that peer from being
dialled where it really listens. Only the engine, after the peer proved its key,
holds a key back (``back_off``).

Bounded resources, each with its policy (a limit reached is counted as
``transport.lan.<kind>`` and logged at most once per :data:`LOG_INTERVAL`):

- *pending inbound*: at most ``max_pending_connections`` connections not yet
  admitted; a newcomer is never refused for them: it closes the oldest one
  (``pending_evicted``). Every connection, either way, that the engine has not
  admitted within ``admission_timeout`` of opening is closed
  (``admission_timeout``): proving nothing holds a slot only briefly.
- *dials in flight*: at most ``max_dials_in_flight`` of our dials not yet
  admitted, at most :data:`MAX_DIALS_PER_KEY` per key; a separate budget, so
  inbound connections never stop our own dials. Beacons beyond it are dropped
  (``dial_budget_full``).
- *admitted links*: at most ``max_links``; beyond it new inbound connections
  are closed at once (``refused_max_links``), and a pending one admitted
  beyond it is closed. We stop dialling new peers at :data:`MAX_DIALED_LINKS`
  links and dials.
- *per-key discovery state* (back-off, beacons heard): at most
  :data:`MAX_TRACKED_PEERS` entries per table.

Times are monotonic (``time.monotonic()``, the runtime loop's ``loop.time()``):
this transport never signs or checks expiry, so it never needs the wall clock.
``back_off`` times are the engine's, which runs on the same monotonic clock.

Hostile input -- garbage, an oversized length, a connection that never
completes its handshake (slowloris), a peer sending faster than
``max_receive_bytes_per_second`` (a :class:`agent.core.pacing.TokenBucket`
holding two seconds of it) -- closes that connection only, logged at most once
per :data:`LOG_INTERVAL` per kind and counted (``transport.lan.*``). Beacons with
ever new keys cannot grow any per-peer table past :data:`MAX_TRACKED_PEERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from agent.core.backoff import DEFAULT_MAX_KEYS, Backoff, BackoffTracker
from agent.core.engine import LinkSpec
from agent.core.pacing import TokenBucket
from agent.core.records import ConnectionType
from agent.transports.base import LinkHost
from agent.transports.lan_budget import lan_send_budget
from agent.transports.lan_settings import LanSettings

log = logging.getLogger("agent.transports.lan")

BEACON_MAGIC: Final = b"PAB1"
BEACON_BYTES: Final = len(BEACON_MAGIC) + 32 + 2
_LENGTH: Final = struct.Struct(">I")
#: Stop dialling new peers at this many LAN links: the mesh stays connected through
#: others, and a links record (at most 64 entries) never overflows on a big LAN.
MAX_DIALED_LINKS: Final = 24
#: A link whose unsent bytes exceed this is dropped (the peer is not reading).
MAX_UNSENT_BYTES: Final = 4 * 1024 * 1024
#: Peers whose dial back-off, or whose beacons heard before they dialled, are remembered;
#: beyond it the one remembered longest is forgotten (it may then be dialled sooner).
MAX_TRACKED_PEERS: Final = DEFAULT_MAX_KEYS
#: The receive limit's bucket holds this many seconds of ``max_receive_bytes_per_second``.
RECEIVE_BURST_SECONDS: Final = 2.0
#: Our dials in flight to one key (at different endpoints), at most: a forged beacon naming
#: an honest key cannot stop its real endpoint being dialled, nor take the whole dial budget.
MAX_DIALS_PER_KEY: Final = 2
#: A limit reached, or hostile input of one kind, is logged at most once per this many seconds.
LOG_INTERVAL: Final = 10.0
#: A link's reader hands the loop back after this much work on frames already buffered: a flood
#: on one link (forged records cost a signature check each) never holds up the control socket,
#: the other links or the timers for longer.
READ_TURN_SECONDS: Final = 0.005

#: Where a beacon says a peer listens: (key, address, port). Dial back-off is per endpoint.
Endpoint = tuple[bytes, str, int]


@dataclass(eq=False)
class _Conn:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    outbound: bool
    expected_peer: bytes | None
    opened_at: float
    received: TokenBucket
    #: Our dial's endpoint (outbound connections only).
    endpoint: Endpoint | None = None
    peer_key: bytes | None = None
    established: bool = False
    #: The remote proved its key (the handler decides now): no longer evicted by newcomers,
    #: and the engine's own deadlines bound it instead of ``admission_timeout``.
    proved: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Closes the connection if the engine has not admitted it by ``admission_timeout``.
    admission: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def link(self) -> tuple[str, int]:
        return ("lan", self.id)


class _BeaconProtocol(asyncio.DatagramProtocol):
    def __init__(self, transport: LanTransport) -> None:
        self._owner = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._owner._on_beacon(data, addr[0])

    def error_received(self, exc: Exception) -> None:
        self._owner._count_limited("beacon_error", f"beacon socket error: {exc}")


class LanTransport:
    """Discovers peers by multicast beacons and links to them over TCP."""

    def __init__(
        self,
        config: LanSettings,
        public_key: bytes,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic: dial back-off, handshake bounds and the receive limit run on it."""
        self.config = config
        self.public_key = public_key
        self._rng = rng or random.Random()
        self._clock = clock
        self._host: LinkHost | None = None
        self._server: asyncio.AbstractServer | None = None
        self._beacon_transport: asyncio.DatagramTransport | None = None
        self._beacon_task: asyncio.Task[None] | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_id = 1
        #: Our dials not yet admitted (connecting, or in the handshake), by endpoint.
        self._in_flight: set[Endpoint] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self._by_peer: dict[bytes, _Conn] = {}
        self._dial_backoff: BackoffTracker[Endpoint] = BackoffTracker(
            Backoff(config.dial_backoff_initial, config.dial_backoff_max, jitter=0.5),
            max_keys=MAX_TRACKED_PEERS,
        )
        #: The engine's holds (``back_off``): only a peer that proved its key is held by key.
        self._holds: BackoffTracker[bytes] = BackoffTracker(
            Backoff(config.dial_backoff_initial, config.dial_backoff_max), max_keys=MAX_TRACKED_PEERS
        )
        self._heard_since: dict[bytes, float] = {}
        #: kind -> (when last logged, how many since then).
        self._logged: dict[str, tuple[float, int]] = {}
        self.tcp_port = 0
        self._beacon = b""
        self._send_addresses: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: LinkHost) -> None:
        self._host = host
        loop = asyncio.get_running_loop()
        bind_host = self._tcp_bind_host()
        self._server = await asyncio.start_server(self._accepted, host=bind_host, port=self.config.tcp_port)
        self.tcp_port = self._server.sockets[0].getsockname()[1]
        self._beacon = BEACON_MAGIC + self.public_key + struct.pack(">H", self.tcp_port)
        sock = self._multicast_socket()
        self._beacon_transport, _ = await loop.create_datagram_endpoint(
            lambda: _BeaconProtocol(self), sock=sock
        )
        self._beacon_task = asyncio.ensure_future(self._beacon_forever())
        log.info(
            "LAN transport: TCP port %d, beacons to %s:%d on %s",
            self.tcp_port,
            self.config.multicast_group,
            self.config.multicast_port,
            ", ".join(self._send_addresses) or "the default interface",
        )

    async def stop(self) -> None:
        if self._beacon_task is not None:
            self._beacon_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beacon_task
        if self._beacon_transport is not None:
            self._beacon_transport.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            self._drop(conn, "agent stopping", notify=False)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # ------------------------------------------------------------------ Transport

    def send(self, link: Any, frame: bytes) -> None:
        conn = self._conns.get(link[1])
        if conn is None or conn.writer.is_closing():
            return
        if conn.writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            # The peer stopped reading: drop it rather than buffer without bound.
            self._count_limited("peer_not_reading", "closing a link whose peer stopped reading")
            self._drop(conn, "peer not reading")
            return
        conn.writer.write(_LENGTH.pack(len(frame)) + frame)

    def close_link(self, link: Any) -> None:
        conn = self._conns.get(link[1])
        if conn is not None:
            self._drop(conn, "closed by the engine", notify=False)

    def proved(self, link: Any) -> None:
        """The remote proved its key: its handler may take its time (the engine bounds it)."""
        conn = self._conns.get(link[1])
        if conn is not None and not conn.established:
            conn.proved = True
            self._cancel_admission(conn)

    def established(self, link: Any, peer_key: bytes) -> None:
        conn = self._conns.get(link[1])
        if conn is None:
            return
        if not conn.outbound and self._link_count() >= self.config.max_links:
            self._count_limited(
                "refused_max_links",
                f"closing a newly admitted link: {self.config.max_links} links (max_links)",
            )
            self._drop(conn, "too many links")
            return
        conn.established = True
        conn.peer_key = peer_key
        self._cancel_admission(conn)
        if conn.endpoint is not None:
            self._in_flight.discard(conn.endpoint)
            self._dial_backoff.succeeded(conn.endpoint)
        self._holds.succeeded(peer_key)
        other = self._by_peer.get(peer_key)
        if other is not None and other is not conn and other.id in self._conns:
            # Both sides dialled: keep the link dialled by the lower key, on both ends.
            keep = conn if self._dialer(conn) < self._dialer(other) else other
            drop = other if keep is conn else conn
            self._by_peer[peer_key] = keep
            self._count("duplicate_link_closed")
            self._drop(drop, "duplicate link to the same peer")
            return
        self._by_peer[peer_key] = conn

    def back_off(self, peer_key: bytes, until: float) -> None:
        """Do not dial ``peer_key`` before ``until`` (the engine's monotonic time, a ``retry_at``).

        The engine asks this only of a peer that proved its key, so here a key is held, at every address.
        """
        self._holds.hold(peer_key, until)

    # ------------------------------------------------------------------ discovery

    def _multicast_socket(self) -> socket.socket:
        group = self.config.multicast_group
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", self.config.multicast_port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        addresses = self._interface_addresses()
        self._send_addresses = addresses
        for address in addresses or ["0.0.0.0"]:
            membership = socket.inet_aton(group) + socket.inet_aton(address)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                sock.close()
                raise OSError(f"cannot join multicast group {group} on {address}: {exc}") from exc
        sock.setblocking(False)
        return sock

    def _interface_addresses(self) -> list[str]:
        addresses = []
        for item in self.config.interfaces:
            try:
                ipaddress.IPv4Address(item)
                addresses.append(item)
            except ValueError:
                addresses.append(_address_of_interface(item))
        return addresses

    def _tcp_bind_host(self) -> str:
        # Listening on the selected interfaces only when they are all loopback
        # (several agents on one host); otherwise on all, as peers dial our LAN address.
        addresses = self._interface_addresses()
        if addresses and all(ipaddress.IPv4Address(a).is_loopback for a in addresses):
            return addresses[0]
        # IPv4 only: beacons are IPv4, and host=None would also open an IPv6 socket
        # on a different ephemeral port, which the beacon could then announce.
        return "0.0.0.0"

    async def _beacon_forever(self) -> None:
        assert self._beacon_transport is not None
        sock = self._beacon_transport.get_extra_info("socket")
        while True:
            targets: list[str | None] = list(self._send_addresses) or [None]
            for address in targets:
                try:
                    if address is not None:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
                    self._beacon_transport.sendto(
                        self._beacon, (self.config.multicast_group, self.config.multicast_port)
                    )
                except OSError as exc:
                    self._count_limited("beacon_send_failed", f"cannot send beacon: {exc}")
            jitter = 1 + (self._rng.random() - 0.5) * 0.2
            await asyncio.sleep(self.config.beacon_interval * jitter)

    def _on_beacon(self, data: bytes, address: str) -> None:
        if len(data) != BEACON_BYTES or not data.startswith(BEACON_MAGIC):
            self._count_limited("beacon_malformed", f"ignoring malformed beacons (first from {address})")
            return
        key = data[4:36]
        (port,) = struct.unpack(">H", data[36:38])
        if key == self.public_key or port == 0:
            return
        now = self._clock()
        endpoint = (key, address, port)
        if key in self._by_peer or endpoint in self._in_flight:
            self._heard_since.pop(key, None)
            return
        if not self._holds.may_retry(key, now) or not self._dial_backoff.may_retry(endpoint, now):
            return
        if self._link_count() + len(self._in_flight) >= MAX_DIALED_LINKS:
            return
        heard = self._heard_since.setdefault(key, now)
        if len(self._heard_since) > MAX_TRACKED_PEERS:
            del self._heard_since[next(iter(self._heard_since))]  # the longest heard; never ``key``
        # The lower key dials; the higher one only if the lower has not dialled for a while.
        patience = 4 * self.config.beacon_interval
        if self.public_key > key and now - heard < patience:
            return
        if len(self._in_flight) >= self.config.max_dials_in_flight or (
            sum(1 for e in self._in_flight if e[0] == key) >= MAX_DIALS_PER_KEY
        ):
            self._count_limited(
                "dial_budget_full",
                f"dropping beacons: {len(self._in_flight)} dials in flight (max_dials_in_flight)",
            )
            return
        self._in_flight.add(endpoint)
        task = asyncio.ensure_future(self._dial(endpoint))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _dial(self, endpoint: Endpoint) -> None:
        key, address, port = endpoint
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), self.config.handshake_timeout
            )
        except (OSError, TimeoutError) as exc:
            self._in_flight.discard(endpoint)
            self._dial_failed(endpoint, f"cannot connect to {address}:{port}: {exc}")
            return
        except asyncio.CancelledError:
            self._in_flight.discard(endpoint)
            raise
        # The endpoint stays in flight until the link is admitted or dropped, so beacons
        # heard meanwhile do not open a second connection to it.
        self._heard_since.pop(key, None)
        self._open(reader, writer, outbound=True, expected_peer=key, endpoint=endpoint)

    def _dial_failed(self, endpoint: Endpoint, reason: str) -> None:
        """Back off the endpoint a beacon gave, never its key: beacons are hints, not proof."""
        self._count("dial_failed")
        now = self._clock()
        retry_at = self._dial_backoff.failed(endpoint, now, self._rng.random())
        log.debug("%s; next try in about %.1f s", reason, retry_at - now)

    # ------------------------------------------------------------------ links

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._link_count() >= self.config.max_links:
            self._count_limited(
                "refused_max_links", f"refusing connections: {self.config.max_links} links (max_links)"
            )
            writer.close()
            return
        pending = [c for c in self._conns.values() if not c.established and not c.outbound]
        if len(pending) >= self.config.max_pending_connections:
            # The oldest that proved nothing makes room (the oldest of all if every one
            # proved its key), so a flood can delay a newcomer but never lock one out.
            unproven = [c for c in pending if not c.proved] or pending
            self._count_limited(
                "pending_evicted",
                f"{len(pending)} connections pending (max_pending_connections): closing the oldest",
            )
            self._drop(min(unproven, key=lambda c: c.id), "evicted by a newer connection")
        self._open(reader, writer, outbound=False, expected_peer=None)

    def _link_count(self) -> int:
        """Admitted links, both directions."""
        return sum(1 for c in self._conns.values() if c.established)

    def _admission_expired(self, conn: _Conn) -> None:
        conn.admission = None
        if conn.id in self._conns and not conn.established:
            self._count_limited(
                "admission_timeout",
                "closing a connection the engine did not admit within "
                f"{self.config.admission_timeout:g} s (admission_timeout)",
            )
            self._drop(conn, "not admitted in time")

    def _cancel_admission(self, conn: _Conn) -> None:
        if conn.admission is not None:
            conn.admission.cancel()
            conn.admission = None

    def _open(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        expected_peer: bytes | None,
        endpoint: Endpoint | None = None,
    ) -> None:
        assert self._host is not None
        now = self._clock()
        rate = float(self.config.max_receive_bytes_per_second)
        received = TokenBucket(rate, RECEIVE_BURST_SECONDS * rate, now)
        conn = _Conn(self._next_id, reader, writer, outbound, expected_peer, now, received, endpoint)
        self._next_id += 1
        self._conns[conn.id] = conn
        conn.admission = asyncio.get_running_loop().call_later(
            self.config.admission_timeout, self._admission_expired, conn
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._host.register_link(conn.link, self)
        self._host.link_up(
            conn.link,
            LinkSpec(
                connection_type=ConnectionType.ACCESS_POINT,
                mtu=self.config.max_frame_bytes,
                expected_peer=expected_peer,
                keepalive_interval=self.config.keepalive_interval,
                dead_interval=self.config.dead_interval,
                **lan_send_budget(self.config.max_receive_bytes_per_second, RECEIVE_BURST_SECONDS),
            ),
        )
        conn.task = asyncio.ensure_future(self._read(conn))

    async def _read(self, conn: _Conn) -> None:
        assert self._host is not None
        limit = self.config.max_frame_bytes
        # Slowloris guard: the first frame (HELLO) must arrive within handshake_timeout,
        # and every frame must arrive whole within it once its length was read. Silence
        # between frames is the engine's business (its handshake deadline covers a
        # handler that takes its full 10 s; keepalives cover established links).
        first = True
        turn_started = self._clock()
        try:
            while True:
                wait = self._handshake_left(conn) if first else None
                header = await asyncio.wait_for(conn.reader.readexactly(4), wait)
                (length,) = _LENGTH.unpack(header)
                if length == 0 or length > limit:
                    self._count_limited("frame_oversized", f"closing a link that sent a {length}-byte frame")
                    break
                body_wait = self._handshake_left(conn) if first else self.config.handshake_timeout
                frame = await asyncio.wait_for(conn.reader.readexactly(length), body_wait)
                first = False
                if not self._within_rate(conn, length + 4):
                    self._count_limited("peer_flooding", "closing a link that sends faster than allowed")
                    break
                self._host.receive(conn.link, frame)
                if self._clock() - turn_started >= READ_TURN_SECONDS:
                    await asyncio.sleep(0)  # buffered frames need no wait: yield explicitly
                    turn_started = self._clock()
        except TimeoutError:
            self._count_limited(
                "handshake_timeout", "closing a connection that stalled mid-handshake or mid-frame"
            )
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            return
        self._drop(conn, "connection ended")

    def _handshake_left(self, conn: _Conn) -> float:
        return max(0.01, conn.opened_at + self.config.handshake_timeout - self._clock())

    def _within_rate(self, conn: _Conn, size: int) -> bool:
        # A frame the bucket cannot pay for closes the link, so it never needs to run into debt.
        return conn.received.try_take(size, self._clock())

    def _drop(self, conn: _Conn, reason: str, *, notify: bool = True) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        if conn.peer_key is not None and self._by_peer.get(conn.peer_key) is conn:
            del self._by_peer[conn.peer_key]
        self._cancel_admission(conn)
        if conn.endpoint is not None:
            self._in_flight.discard(conn.endpoint)
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()
        with contextlib.suppress(Exception):
            conn.writer.close()
        if not conn.established and conn.endpoint is not None:
            self._dial_failed(conn.endpoint, f"link to a peer failed before admission: {reason}")
        if notify and self._host is not None:
            self._host.link_down(conn.link)

    def _dialer(self, conn: _Conn) -> bytes:
        assert conn.peer_key is not None
        return self.public_key if conn.outbound else conn.peer_key

    def _count(self, name: str) -> None:
        if self._host is not None:
            self._host.count(f"lan.{name}")

    def _count_limited(self, name: str, message: str) -> None:
        """Count ``name``; log ``message`` at most once per :data:`LOG_INTERVAL`, with the count since."""
        self._count(name)
        now = self._clock()
        last, since = self._logged.get(name, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL and name in self._logged:
            self._logged[name] = (last, since + 1)
            return
        self._logged[name] = (now, 0)
        log.warning(
            "%s (%d more since the last such line; counted as transport.lan.%s)", message, since, name
        )


def _address_of_interface(name: str) -> str:
    """The IPv4 address of a network interface, by name (Linux)."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(
                probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15])
            )  # SIOCGIFADDR
        except OSError as exc:
            raise OSError(f"interface {name!r} has no IPv4 address: {exc}") from exc
    return socket.inet_ntoa(packed[20:24])
