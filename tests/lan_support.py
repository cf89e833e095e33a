"""Real agent processes for the LAN runtime tests (imported by bare name: tests/ is on sys.path).

A :class:`Mesh` starts ``presence-agent run`` processes (or other scripts) that
share one multicast port chosen per test, so concurrent tests never see each
other's agents. Every wait polls every 0.1 s up to a bounded deadline; leftover
processes are killed when the mesh closes, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from agent.core.limits import HANDSHAKE_CONTEXT, NONCE_BYTES, PROTOCOL_VERSION
from agent.core.records import make_card, open_record, sign_record
from agent.core.wire import FRAME_WHOLE, ROUTER, MessageType, decode_message, encode_message
from agent.runtime.control import ControlError, request
from agent.state.identity import generate_identity
from agent.transports.lan import BEACON_BYTES, BEACON_MAGIC

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
POLL = 0.1
#: Default multicast group of the LAN transport.
GROUP = "239.255.77.77"


def free_udp_port() -> int:
    """A UDP port nobody is bound to right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` every 0.1 s until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def cli(*args: str, timeout: float = 30.0, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """``presence-agent ARGS`` as a subprocess (optionally inside a network namespace)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        env=child_env(),
    )


def try_request(state_dir: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """A control request, or None while the agent is not (yet) answering."""
    try:
        return request(state_dir, message, timeout=timeout)
    except (ControlError, OSError, ValueError):
        return None


def ask(target: Proc | Path, message: dict[str, Any]) -> dict[str, Any]:
    """A control request to an agent (a :class:`Proc` or its state directory) that must succeed."""
    answer = request(target.state if isinstance(target, Proc) else target, message)
    assert answer.get("ok"), answer
    return answer


def graph_of(target: Proc | Path) -> dict[str, Any]:
    """The agent's graph document (``graph --json``), through the control socket."""
    document: dict[str, Any] = ask(target, {"op": "graph"})["graph"]
    return document


def stats_of(target: Proc | Path) -> dict[str, int]:
    """The agent's engine and transport counters (the control ``status`` op)."""
    stats: dict[str, int] = ask(target, {"op": "status"})["stats"]
    return stats


def remote_keys(document: dict[str, Any]) -> set[str]:
    return {p["peer_key_string"] for p in document["remote_peers"]}


def remote_peer(document: dict[str, Any], key: str) -> dict[str, Any] | None:
    for peer in document["remote_peers"]:
        if peer["peer_key_string"] == key:
            found: dict[str, Any] = peer
            return found
    return None


def view(document: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """What a graph shows, independent of who looks: every peer key and every connection id."""
    peers = [document["local_peer"], *document["remote_peers"]]
    keys = frozenset(p["peer_key_string"] for p in peers)
    connections = frozenset(c["id"] for p in peers for c in p["connections"])
    return keys, connections


@dataclass(eq=False)
class Proc:
    """One child process of a :class:`Mesh` (an agent, a watcher, a handler agent)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    state_dir: Path | None = None
    config: Path | None = None
    netns: str | None = None
    peer_key: str = ""
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def state(self) -> Path:
        assert self.state_dir is not None, f"{self.name} has no state directory"
        return self.state_dir

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line (for processes started with ``capture_stdout``), or None by the deadline."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None


class Mesh:
    """Starts processes on one private multicast port; kills whatever is left when closed."""

    def __init__(self, root: Path, *, multicast_port: int | None = None) -> None:
        self.root = root
        self.multicast_port = multicast_port or free_udp_port()
        self.procs: list[Proc] = []

    # ------------------------------------------------------------ configuration

    def write_config(self, name: str, interface: str = "127.0.0.1", extra: str = "") -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(
            f'[lan]\ninterfaces = ["{interface}"]\nmulticast_port = {self.multicast_port}\n{extra}',
            encoding="utf-8",
        )
        return path

    def state_dir(self, name: str) -> Path:
        return self.root / f"state-{name}"

    # ------------------------------------------------------------ processes

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        capture_stdout: bool = False,
        state_dir: Path | None = None,
        config: Path | None = None,
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        log = self.root / f"{name}.{len(self.procs)}.log"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        with open(log, "wb") as err:
            popen = subprocess.Popen(
                [*prefix, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
                env=child_env(env),
            )
        proc = Proc(name, popen, log, state_dir=state_dir, config=config, netns=netns)
        self.procs.append(proc)
        if capture_stdout:
            assert popen.stdout is not None
            threading.Thread(target=_pump_lines, args=(popen.stdout, proc.lines), daemon=True).start()
        return proc

    def start_agent(
        self,
        name: str,
        *,
        extra_config: str = "",
        interface: str = "127.0.0.1",
        netns: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Proc:
        """``presence-agent run`` on ``state-<name>``; with ``wait``, returns once it answers ``status``."""
        config = self.write_config(name, interface, extra_config)
        state_dir = self.state_dir(name)
        argv = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        argv += ["--state-dir", str(state_dir), "--name", name]
        proc = self.spawn(name, argv, state_dir=state_dir, config=config, netns=netns, env=env)
        if wait:
            self.wait_ready(proc)
        return proc

    def restart(self, proc: Proc) -> Proc:
        """The same agent again: same name, configuration and state directory."""
        assert proc.state_dir is not None and proc.config is not None
        argv = [sys.executable, "-m", "agent.cli", "run", "--config", str(proc.config)]
        argv += ["--state-dir", str(proc.state_dir), "--name", proc.name]
        new = self.spawn(proc.name, argv, state_dir=proc.state_dir, config=proc.config, netns=proc.netns)
        self.wait_ready(new)
        return new

    def wait_ready(self, proc: Proc, timeout: float = 15.0) -> None:
        assert proc.state_dir is not None
        state_dir = proc.state_dir

        def answering() -> dict[str, Any] | None:
            if not proc.alive:
                raise AssertionError(
                    f"agent {proc.name} exited with {proc.popen.returncode}:\n{proc.stderr_text()}"
                )
            return try_request(state_dir, {"op": "status"})

        answer = wait_until(answering, timeout, f"agent {proc.name} to answer on its control socket")
        proc.peer_key = answer["peer_key_string"]

    def stop(self, proc: Proc, timeout: float = 10.0) -> int:
        """SIGTERM, wait, and insist on a clean exit (code 0)."""
        proc.popen.send_signal(signal.SIGTERM)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)
            raise AssertionError(f"{proc.name} did not stop within {timeout:g} s of SIGTERM") from None
        assert code == 0, f"{proc.name} exited with {code} after SIGTERM:\n{proc.stderr_text()}"
        return code

    def kill(self, proc: Proc) -> None:
        proc.popen.kill()
        proc.popen.wait(5)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            # Agents' logs explain most failures: show them with the test's report.
            for proc in self.procs:
                text = proc.stderr_text().strip()
                if text:
                    print(f"--- {proc.name} stderr ---\n{text[-4000:]}", file=sys.stderr)
        self.close()


def _pump_lines(stream: IO[bytes], lines: queue.Queue[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for raw in stream:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))


# ---------------------------------------------------------------- beacons


def beacon_listener(port: int, interface: str = "127.0.0.1", group: str = GROUP) -> socket.socket:
    """A UDP socket joined to the beacon group on ``interface`` (as the agents' own is)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", port))
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(interface)
    )
    return sock


def tcp_port_from_beacons(sock: socket.socket, public_key: bytes, timeout: float = 5.0) -> int:
    """The TCP port the agent with ``public_key`` announces in its beacons."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            break
        if len(data) == BEACON_BYTES and data.startswith(BEACON_MAGIC) and data[4:36] == public_key:
            port: int = struct.unpack(">H", data[36:38])[0]
            return port
    raise AssertionError(f"no beacon from the agent within {timeout:g} s")


# ---------------------------------------------------------------- a peer speaking the protocol by hand


class WirePeer:
    """A hand-made peer on one TCP connection: speaks the link handshake as documented
    (agent.core.wire), so a test can complete it and then misbehave in a chosen way."""

    def __init__(self, sock: socket.socket, certificate_for: Callable[[bytes], bytes] | None = None) -> None:
        """``certificate_for(public key)``: the fleet certificate its card carries (none by default)."""
        self.sock = sock
        self.identity = generate_identity()
        card = make_card("wire-peer", "test", "0", {})
        if certificate_for is not None:
            card = dataclasses.replace(card, certificate=certificate_for(self.identity.public_key))
        self.card = sign_record(
            self.identity.private_key, self.identity.public_key, 1, int(time.time()) + 3600, card
        )
        self.nonce = os.urandom(NONCE_BYTES)
        self.remote_key = b""

    def send(self, kind: MessageType, *fields: Any) -> None:
        message = bytes([FRAME_WHOLE]) + encode_message(kind, *fields)
        self.sock.sendall(struct.pack(">I", len(message)) + message)

    def receive(self, timeout: float = 5.0) -> tuple[MessageType, tuple[Any, ...]]:
        self.sock.settimeout(timeout)
        (length,) = struct.unpack(">I", self._exactly(4))
        frame = self._exactly(length)
        assert frame[0] == FRAME_WHOLE, frame[:8]
        return decode_message(frame[1:])

    def handshake(self) -> None:
        """HELLO and PROOF both ways: the remote then asks its connection request handler."""
        self.send(MessageType.HELLO, PROTOCOL_VERSION, self.nonce, self.card.raw, ROUTER.encode())
        kind, fields = self.receive()
        assert kind is MessageType.HELLO, kind
        _, remote_nonce, remote_card, _ = fields
        self.remote_key = open_record(remote_card).public_key
        proof = self.identity.private_key.sign(
            HANDSHAKE_CONTEXT + remote_nonce + self.identity.public_key + self.remote_key
        )
        self.send(MessageType.PROOF, proof)
        kind, _ = self.receive()
        assert kind is MessageType.PROOF, kind

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the agent")
            data += chunk
        return data
