"""Sealed LAN links between real ``presence-agent run`` processes, through an on-path attacker.

Two agents beacon on different multicast ports, so they never hear each other;
the test's relay hears both and announces each agent to the other at a TCP port
of its own, so the link between them runs through it, frame by frame. Once the
link is up (sealed: both agents offer a session), the relay changes one byte of
a frame, replays an old frame, swaps two frames and injects a plain DENY, all
towards one agent. That agent drops the changed, replayed and injected frames and
counts each under its reason, takes the swapped two, and the link stays up: no
link closes, each stays in the other's graph, and a change of metadata still
crosses it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lan_support import (
    GROUP,
    Mesh,
    Proc,
    ask,
    beacon_listener,
    graph_of,
    remote_keys,
    remote_peer,
    stats_of,
    tcp_port_from_beacons,
    wait_until,
)

from agent.core.keys import public_key_from_string
from agent.core.wire import FRAME_WHOLE, Deny
from agent.transports.lan import BEACON_MAGIC

_LENGTH = struct.Struct(">I")
#: More of ``[lan]``: keepalives every 0.1 s, so the relay has frames to tamper with at once.
FAST = "keepalive_interval = 0.1\ndead_interval = 1.0\n"


@dataclass
class Tamper:
    """What the relay does to the frames it carries towards one agent, one step after another."""

    steps: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    held: bytes | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, frame: bytes) -> list[bytes]:
        with self.lock:
            step = self.steps[0] if self.steps else None
            if step is None:
                return [frame]
            if step == "swap":
                if self.held is None:
                    self.held = frame
                    return []
                held, self.held = self.held, None
                return self._next([frame, held])
            if step == "flip":
                changed = bytearray(frame)
                changed[len(changed) // 2] ^= 0x10
                return self._next([bytes(changed)])
            if step == "replay":
                return self._next([frame, frame])  # the second copy is the replay
            assert step == "inject"
            return self._next([frame, bytes([FRAME_WHOLE]) + Deny().encode()])

    def _next(self, frames: list[bytes]) -> list[bytes]:
        self.done.append(self.steps.pop(0))
        return frames


class Relay:
    """Announces agent X to agent Y at a port of its own and carries their TCP link both ways."""

    def __init__(self, to_b: Tamper) -> None:
        self.to_b = to_b
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []

    def start(self, a: tuple[bytes, int, int], b: tuple[bytes, int, int]) -> None:
        """``a`` and ``b``: (key, TCP port, multicast port) of each agent."""
        # Whichever agent dials, the frames towards b are the tampered ones.
        relay_a, relay_b = self._listen(a[1], None, self.to_b), self._listen(b[1], self.to_b, None)
        self._thread(self._beacon, [(b[0], relay_b, a[2]), (a[0], relay_a, b[2])])

    def close(self) -> None:
        self.stop.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self.threads:
            thread.join(2)

    def _thread(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def _listen(self, agent_port: int, to_agent: Tamper | None, to_dialer: Tamper | None) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.2)
        self.sockets.append(server)
        self._thread(self._accept, server, agent_port, to_agent, to_dialer)
        port: int = server.getsockname()[1]
        return port

    def _accept(
        self, server: socket.socket, agent_port: int, to_agent: Tamper | None, to_dialer: Tamper | None
    ) -> None:
        while not self.stop.is_set():
            try:
                dialer, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            agent = socket.create_connection(("127.0.0.1", agent_port))
            self.sockets += [dialer, agent]
            self._thread(self._carry, dialer, agent, to_agent)
            self._thread(self._carry, agent, dialer, to_dialer)

    def _carry(self, source: socket.socket, sink: socket.socket, tamper: Tamper | None) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while not self.stop.is_set():
                (length,) = _LENGTH.unpack(_exactly(source, 4))
                frame = _exactly(source, length)
                for out in tamper(frame) if tamper is not None else [frame]:
                    sink.sendall(_LENGTH.pack(len(out)) + out)

    def _beacon(self, announcements: list[tuple[bytes, int, int]]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sockets.append(sock)
        while not self.stop.wait(0.2):
            for key, port, multicast_port in announcements:
                with contextlib.suppress(OSError):
                    sock.sendto(BEACON_MAGIC + key + struct.pack(">H", port), (GROUP, multicast_port))


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@pytest.fixture
def meshes(tmp_path: Path) -> Iterator[tuple[Mesh, Mesh]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Mesh(tmp_path / "a") as a, Mesh(tmp_path / "b") as b:
        yield a, b


def endpoint(agent: Proc, mesh: Mesh) -> tuple[bytes, int, int]:
    key = public_key_from_string(agent.peer_key)
    with contextlib.closing(beacon_listener(mesh.multicast_port)) as sock:
        return key, tcp_port_from_beacons(sock, key), mesh.multicast_port


def test_an_on_path_attacker_cannot_get_a_frame_accepted_and_the_sealed_link_stays_up(
    meshes: tuple[Mesh, Mesh],
) -> None:
    mesh_a, mesh_b = meshes
    alpha = mesh_a.start_agent("sealed-alpha", extra_config=FAST, wait=False)
    bravo = mesh_b.start_agent("sealed-bravo", extra_config=FAST, wait=False)
    mesh_a.wait_ready(alpha)
    mesh_b.wait_ready(bravo)
    tamper = Tamper()
    relay = Relay(to_b=tamper)
    try:
        relay.start(endpoint(alpha, mesh_a), endpoint(bravo, mesh_b))

        def joined() -> bool:
            return remote_keys(graph_of(alpha)) == {bravo.peer_key} and remote_keys(graph_of(bravo)) == {
                alpha.peer_key
            }

        wait_until(joined, 10, "the agents to link through the relay")
        assert stats_of(bravo).get("links.sealed") == 1
        with tamper.lock:
            tamper.steps = ["flip", "replay", "swap", "inject"]
        wait_until(lambda: len(tamper.done) == 4, 10, "the relay to tamper with four frames")
        dropped = ("session.rejected.bad_tag", "session.rejected.replayed", "session.rejected.unsealed")
        wait_until(lambda: all(stats_of(bravo).get(k) for k in dropped), 5, "bravo to count every drop")

        stats = stats_of(bravo)
        assert [stats.get(k) for k in dropped] == [1, 1, 1]  # and the swapped two were taken
        assert not stats.get("session.rejected.too_old") and not stats.get("links.closed")
        assert stats.get("links.established") == 1 and not stats_of(alpha).get("links.closed")

        assert ask(alpha, {"op": "metadata_set", "json": json.dumps({"after": "attack"})})["ok"]

        def crossed() -> bool:
            peer = remote_peer(graph_of(bravo), alpha.peer_key)
            return peer is not None and peer["peer_metadata"] == {"after": "attack"}

        wait_until(crossed, 5, "a metadata change to cross the attacked link")
        assert not stats_of(bravo).get("links.closed")
    finally:
        relay.close()
