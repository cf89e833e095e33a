"""A hostile peer built on the project's codec, and the records it sends.

:class:`HostilePeer` is one TCP link to an agent, spoken by hand as the engine
speaks it (HELLO, PROOF, ACCEPT, then RECORDS): it completes the handshake with
a genuine key, so the agent admits it, and can then send anything. A
:class:`LinkKeeper` keeps any number of such links alive from one thread: it
drains what the agents send and answers each agent's SUMMARY with the same
hash, so an agent believes its hostile neighbour holds what it holds and never
pushes it a sync. Floods are sent through :meth:`HostilePeer.send_paced`, below
the agent's per-link receive limit (a faster link is closed as flooding: the
attacker gets the most an agent accepts from one link).

Records: :func:`forged_cards` makes cards from fresh keys whose signature is
random bytes (free to make: no key generation, no signing);
:func:`sybil_cards` genuine self-signed cards from fresh keys; :func:`tree`
a tree of genuine peers (cards and links records) under the peer, all reachable.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.core import cose
from agent.core.keys import peer_id
from agent.core.limits import HANDSHAKE_CONTEXT, MAX_COUNTER, NONCE_BYTES, PROTOCOL_VERSION
from agent.core.records import (
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    card_payload,
    decode_record,
    make_card,
    sign_record,
)
from agent.core.wire import FRAME_WHOLE, ROUTER, MessageType, decode_message, encode_message
from agent.transports.lan_settings import LanSettings

_LENGTH = struct.Struct(">I")
#: Below the LAN transport's default receive limit (1 MB/s, 2 MB burst), like the benchmark's feeder.
FEED_BYTES_PER_S = 800_000
#: Records that outlive any run.
RECORD_TTL_S = 24 * 3600
#: The latest expiry a record can carry (2106), as the issue's Sybil flood used.
FAR_EXPIRY = MAX_COUNTER


def keypair() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def frame_of(message: bytes) -> bytes:
    """A message as the LAN transport frames it: length prefix, whole-frame marker."""
    return _LENGTH.pack(len(message) + 1) + bytes([FRAME_WHOLE]) + message


class HostilePeer:
    """One admitted link to an agent, with a genuine key; after the handshake it sends what it likes."""

    def __init__(
        self,
        port: int,
        private_key: Ed25519PrivateKey | None = None,
        name: str = "hostile",
        timeout: float = 10.0,
    ) -> None:
        if private_key is None:
            private_key, _ = keypair()
        self.private_key = private_key
        self.public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        expiry = int(time.time() + RECORD_TTL_S)
        self.card = sign_record(
            private_key, self.public_key, 1, expiry, make_card(name, "Linux", __version__, {})
        )
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.agent_key = b""
        self.agent_summary = b""
        self.closed = False
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._buffer = bytearray()

    # ------------------------------------------------------------ framing

    def send(self, kind: MessageType, *fields: object) -> None:
        self.send_frame(frame_of(encode_message(kind, *fields)))

    def send_frame(self, framed: bytes) -> None:
        with self._lock:
            self.sock.sendall(framed)
            self.bytes_sent += len(framed)

    def _exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the agent closed the link")
            data += chunk
        return bytes(data)

    def _receive(self) -> tuple[MessageType, tuple[object, ...]] | None:
        (length,) = _LENGTH.unpack(self._exactly(4))
        frame = self._exactly(length)
        if frame[0] != FRAME_WHOLE:
            return None
        return decode_message(frame[1:])

    # ------------------------------------------------------------ protocol

    def handshake(self) -> None:
        """HELLO, PROOF and ACCEPT both ways; raises if the agent refuses or closes."""
        self.send(
            MessageType.HELLO, PROTOCOL_VERSION, os.urandom(NONCE_BYTES), self.card.raw, ROUTER.encode()
        )
        proved = accepted = False
        while not (proved and accepted):
            received = self._receive()
            if received is None:
                continue
            kind, fields = received
            if kind is MessageType.HELLO and not self.agent_key:
                raw = fields[2]
                assert isinstance(raw, bytes) and isinstance(fields[1], bytes)
                self.agent_key = decode_record(raw).public_key
                signed = HANDSHAKE_CONTEXT + fields[1] + self.public_key + self.agent_key
                self.send(MessageType.PROOF, self.private_key.sign(signed))
            elif kind is MessageType.PROOF:
                proved = True
                self.send(MessageType.ACCEPT)
            elif kind is MessageType.ACCEPT:
                accepted = True
            elif kind is MessageType.DENY:
                raise ConnectionError("the agent denied the link")
            elif kind is MessageType.SUMMARY and isinstance(fields[0], bytes):
                self.agent_summary = fields[0]

    def links(self, children: Iterable[bytes] = (), counter: int = 2) -> Record:
        """Our links record: the agent and ``children`` (peer ids), signed with our key."""
        entries = [LinkEntry(peer_id(self.agent_key), ConnectionType.ACCESS_POINT)]
        entries += [LinkEntry(child, ConnectionType.RADIO, 10) for child in children]
        entries.sort(key=lambda e: (e.peer_id, e.connection_type.value))
        return sign_record(
            self.private_key, self.public_key, counter, self.card.expiry, Links(tuple(entries))
        )

    def send_paced(self, frames: Iterable[bytes], bytes_per_s: float = FEED_BYTES_PER_S) -> int:
        """Send framed messages at ``bytes_per_s``; the bytes sent (stops early if the link closes)."""
        started = time.perf_counter()
        sent = 0
        for framed in frames:
            if self.closed:
                break
            try:
                self.send_frame(framed)
            except OSError:
                self.closed = True
                break
            sent += len(framed)
            ahead = started + sent / bytes_per_s - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        return sent

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    # ------------------------------------------------------------ for the keeper

    def _take(self, data: bytes) -> None:
        """Buffer received bytes; note each small frame that is a SUMMARY."""
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 4 + length:
                return
            frame = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            if length <= 64 and frame[:1] == bytes([FRAME_WHOLE]):
                with contextlib.suppress(ValueError):
                    kind, fields = decode_message(frame[1:])
                    if kind is MessageType.SUMMARY and isinstance(fields[0], bytes):
                        self.agent_summary = fields[0]


class LinkKeeper(threading.Thread):
    """Keeps hostile links alive from one thread: drains them, echoes each agent's SUMMARY."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="link-keeper")
        self._selector = selectors.DefaultSelector()
        self._peers: list[HostilePeer] = []
        self._added: list[HostilePeer] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.closed_by_agent = 0

    def add(self, peer: HostilePeer) -> None:
        with self._lock:
            self._added.append(peer)

    @property
    def alive(self) -> int:
        with self._lock:
            return sum(not p.closed for p in self._peers + self._added)

    def run(self) -> None:
        interval = LanSettings().keepalive_interval * 0.8
        next_keepalive = time.monotonic()
        while not self._halt.is_set():
            with self._lock:
                for peer in self._added:
                    self._selector.register(peer.sock, selectors.EVENT_READ, peer)
                    self._peers.append(peer)
                self._added.clear()
            if not self._peers:
                self._halt.wait(0.05)
                continue
            for key, _ in self._selector.select(0.05):
                peer = key.data
                try:
                    data = peer.sock.recv(1 << 16)
                except OSError:
                    data = b""
                if data:
                    peer._take(data)
                else:
                    self._forget(peer, by_agent=not peer.closed)
            if time.monotonic() >= next_keepalive:
                next_keepalive = time.monotonic() + interval
                for peer in list(self._peers):
                    if peer.agent_summary and not peer.closed:
                        try:
                            peer.send(MessageType.SUMMARY, peer.agent_summary)
                        except OSError:
                            self._forget(peer, by_agent=True)

    def _forget(self, peer: HostilePeer, by_agent: bool) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        with self._lock:
            if peer in self._peers:
                self._peers.remove(peer)
        self.closed_by_agent += by_agent
        peer.closed = True

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        with self._lock:
            for peer in self._peers + self._added:
                peer.close()
        self._selector.close()


# ---------------------------------------------------------------- records


def records_frames(raws: Iterable[bytes], mtu: int) -> Iterator[bytes]:
    """RECORDS messages of at most ``mtu`` bytes each (framed), packed greedily."""
    batch: list[bytes] = []
    size = 8  # CBOR array header and message type, generously
    for raw in raws:
        cost = len(raw) + 5
        if batch and size + cost > mtu - 1:
            yield frame_of(encode_message(MessageType.RECORDS, *batch))
            batch, size = [], 8
        batch.append(raw)
        size += cost
    if batch:
        yield frame_of(encode_message(MessageType.RECORDS, *batch))


def forged_cards(count: int) -> Iterator[bytes]:
    """``count`` cards from fresh 32-byte keys whose signature is random bytes: nothing signs them."""
    placeholder = b"\xa5" * 32
    payload = card_payload(placeholder, 1, FAR_EXPIRY, make_card("forged", "Linux", __version__, {}))
    at = payload.index(placeholder)
    template = cose.envelope(payload, b"\x00" * 64)
    head, tail = template[: template.index(payload) + at], template[template.index(payload) + at + 32 :]
    tail = tail[:-64]
    for _ in range(count):
        random = os.urandom(96)
        yield head + random[:32] + tail + random[32:]


def sybil_cards(count: int, metadata_bytes: int) -> Iterator[bytes]:
    """``count`` genuine cards, each from a fresh key, expiring in 2106, ``metadata_bytes`` of padding."""
    metadata = {"pad": "x" * metadata_bytes} if metadata_bytes else {}
    for i in range(count):
        private, public = keypair()
        card = make_card(f"sybil-{i:06d}", "Linux", __version__, metadata)
        yield cose.sign(private, card_payload(public, 1, FAR_EXPIRY, card))


@dataclass(frozen=True, slots=True)
class Tree:
    """Genuine peers in a tree under the hostile peer (node 0): each links to its parent and
    children, so every one is reachable through the peer; ``children`` are node 0's ids."""

    children: tuple[bytes, ...]
    records: tuple[Record, ...]

    @property
    def bytes(self) -> int:
        return sum(len(r.raw) for r in self.records)


def tree(root_key: bytes, peers: int, metadata_bytes: int, fan_out: int = 4) -> Tree:
    """``peers`` peers under ``root_key`` (cards with ``metadata_bytes`` of padding, links records)."""
    expiry = int(time.time() + RECORD_TTL_S)
    keys = [(None, root_key)] + [keypair() for _ in range(peers)]
    ids = [peer_id(public) for _, public in keys]
    metadata = {"pad": "x" * metadata_bytes} if metadata_bytes else {}
    records: list[Record] = []
    for k in range(1, len(keys)):
        private, public = keys[k]
        assert private is not None
        records.append(
            sign_record(private, public, 1, expiry, make_card(f"fed-{k:05d}", "Linux", "0", metadata))
        )
        neighbours = [(k - 1) // fan_out, *range(fan_out * k + 1, min(fan_out * k + fan_out + 1, len(keys)))]
        entries = tuple(LinkEntry(ids[j], ConnectionType.RADIO, 10) for j in sorted(neighbours))
        records.append(sign_record(private, public, 2, expiry, Links(entries)))
    children = tuple(ids[j] for j in range(1, min(fan_out + 1, len(keys))))
    return Tree(children, tuple(records))
