"""Figure 5: real agent processes: memory per held peer, start-up time, observer latency.

**Memory.** A real ``presence-agent run`` process (LAN on loopback, a private
multicast port, every other setting at its default) is fed N remote peers'
signed records through its real receive path: a :class:`Feeder` in this
process dials the agent's TCP port (read from its beacon), completes the link
handshake (HELLO, PROOF, ACCEPT, as the engine speaks it) and sends RECORDS
frames, length-prefixed as the LAN transport frames them, so the agent
decodes, verifies, merges, stores and persists each record exactly as in
production. The feeder is itself one remote peer; the other N - 1 form a tree
under it (each lists its parent and up to ``FAN_OUT`` children in its links
record, its parent lists it back), so every one of them is reachable and in
the agent's graph. Records are signed with a 24-hour expiry and fed at
``FEED_BYTES_PER_S``, below the transport's default receive limit. Once the
agent's ``status`` counters show every record accepted and its SUMMARY (the
hash of all it holds) equals the feeder's, and after two store flushes, its
VmRSS is read from ``/proc``. Baseline: the same process idle, before the
feeder connects (0 remote peers); per-peer bytes are the difference over N.
The graph's peer count is then checked over the control socket.

**Start-up.** Spawn of ``presence-agent run`` (fresh state directory) to the
first beacon seen by a socket joined to its multicast group, with a bytecode
cache (as an installed package has) and without. Baselines, spawn to exit:
``python -c pass`` and ``python -c "import agent.runtime.agent"``. The four
alternate, their order rotating.

**Observer latency.** An :class:`~agent.runtime.agent.Agent` in this process
(LAN on loopback) with a ``presence.observe`` callback; a second agent process
changes its metadata over its control socket. The time runs from the moment
the agent's LAN transport handed the engine the frame carrying the new card
(an :class:`Agent` subclass stamps every received frame) to the callback.
Baseline: a bare cross-thread hand-off (``queue.SimpleQueue`` put to get) in
the same process, the least any observer thread could cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.config import AgentConfig, parse_config
from agent.core.graph import PresenceGraph
from agent.core.keys import peer_id, peer_key_string, public_key_from_string
from agent.core.limits import HANDSHAKE_CONTEXT, NONCE_BYTES, PROTOCOL_VERSION
from agent.core.records import ConnectionType, LinkEntry, Links, Record, decode_record, make_card, sign_record
from agent.core.wire import FRAME_WHOLE, ROUTER, MessageType, decode_message, encode_message
from agent.runtime.agent import Agent
from agent.runtime.control import ControlError, request
from agent.transports.lan import BEACON_BYTES, BEACON_MAGIC
from agent.transports.lan_settings import LanSettings
from bench.common import TIMES, Mode, goal, median, progress, ratio, rounded
from bench.ingest import pack_frames

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
PYCACHE = Path(tempfile.gettempdir()) / f"presence-bench-pycache-{os.getuid()}"
MB = 1024 * 1024
RSS_GOALS_MB = {1000: 40.0, 10000: 80.0}
STARTUP_GOAL_S = 1.0
#: Children per fake peer in the tree of fed peers (links records of up to 5 entries).
FAN_OUT = 4
#: Below the LAN transport's default receive limit (1 MB/s, 2 MB burst), which closes faster links.
FEED_BYTES_PER_S = 800_000
#: Two store flushes (one per second) after the last record, before RSS is read.
SETTLE_S = 2.5
IDLE_S = 1.5
#: Records outlive any run.
RECORD_TTL_S = 24 * 3600
_LENGTH = struct.Struct(">I")
STARTUP_BASELINES = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import agent.runtime.agent'": ["-c", "import agent.runtime.agent"],
}
NO_BYTECODE = "agent, no bytecode cache"
_IMPORT_AND_WAIT = (
    "import sys, agent.runtime.run, agent.transports.lan\nprint('ready', flush=True)\nsys.stdin.read()\n"
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much figure 5 measures in each mode."""

    rss_sizes: tuple[int, ...]
    rss_repetitions: int
    startup_repetitions: int
    observer_changes: int


PLANS = {
    "quick": Plan(rss_sizes=(200,), rss_repetitions=2, startup_repetitions=3, observer_changes=5),
    "full": Plan(rss_sizes=(1000, 10000), rss_repetitions=3, startup_repetitions=9, observer_changes=30),
}


# ---------------------------------------------------------------- agent processes (figure 6 uses these too)


def free_udp_port() -> int:
    """A UDP port nobody is bound to now: each run's private beacon port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(bytecode: bool = True) -> dict[str, str]:
    """The environment of agent processes: with ``bytecode``, a bytecode cache as an installed
    package has (this checkout may run with PYTHONDONTWRITEBYTECODE, compiling every module on
    every start); it lives in the temporary directory, never beside the sources."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def warm_bytecode_cache() -> None:
    """Compile what an agent imports into the bytecode cache, so no measured start compiles."""
    imports = "import agent.cli, agent.config, agent.runtime.run, agent.transports.lan"
    subprocess.run([sys.executable, "-c", imports], cwd=ROOT, env=child_env(), check=True)


def lan_config(multicast_port: int, extra: str = "") -> str:
    """A configuration file as a user would write it: loopback only, a private beacon port."""
    return f'[lan]\ninterfaces = ["127.0.0.1"]\nmulticast_port = {multicast_port}\n{extra}'


@dataclass(eq=False)
class AgentProcess:
    """One ``presence-agent run`` child, in a process group (a session) of its own."""

    name: str
    popen: subprocess.Popen[bytes]
    state_dir: Path
    started_at: float
    peer_key: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid


class Launcher:
    """Starts agent processes on one private multicast port; kills every one it started when closed."""

    def __init__(self, prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.root = Path(self._tmp.name)
        self.multicast_port = free_udp_port()
        self.procs: list[AgentProcess] = []
        self._logs: list[IO[bytes]] = []

    def spawn(self, name: str, extra_config: str = "", *, bytecode: bool = True) -> AgentProcess:
        config = self.root / f"{name}.toml"
        config.write_text(lan_config(self.multicast_port, extra_config), encoding="utf-8")
        state_dir = self.root / name
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the launcher)
        self._logs.append(log)
        argv = [sys.executable, "-m", "agent.cli", "run", "--config", str(config)]
        argv += ["--state-dir", str(state_dir), "--name", name]
        started = time.perf_counter()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=ROOT,
            env=child_env(bytecode),
            start_new_session=True,  # its own process group, killed as one
        )
        proc = AgentProcess(name, popen, state_dir, started)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: AgentProcess, timeout: float = 30.0) -> str:
        """Wait until the agent answers ``status`` on its control socket; its peer key string."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"agent {proc.name} exited with {proc.popen.returncode}: {self.log(proc)}")
            with contextlib.suppress(ControlError, OSError, ValueError):
                answer = request(proc.state_dir, {"op": "status"}, timeout=2.0)
                proc.peer_key = str(answer["peer_key_string"])
                return proc.peer_key
            time.sleep(0.02)
        raise RuntimeError(f"agent {proc.name} did not answer within {timeout:g} s: {self.log(proc)}")

    def log(self, proc: AgentProcess) -> str:
        try:
            return (self.root / f"{proc.name}.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, proc: AgentProcess, timeout: float = 10.0) -> None:
        """SIGTERM (a clean stop), SIGKILL to its group if it does not exit in time."""
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)

    def close(self) -> None:
        for proc in self.procs:
            kill_group(proc)
        for log in self._logs:
            log.close()
        self._tmp.cleanup()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def kill_group(proc: AgentProcess) -> None:
    """SIGKILL the agent's process group (a stopped process dies too) and reap it."""
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(10)


def beacon_listener(port: int) -> socket.socket:
    """A UDP socket joined to the default beacon group on loopback, as the agents' own is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", port))
    group = LanSettings().multicast_group
    membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    return sock


def next_beacon(sock: socket.socket, deadline: float) -> tuple[float, bytes, int] | None:
    """The next well-formed beacon before ``deadline`` (monotonic): (arrival, key, TCP port)."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except TimeoutError:
            return None
        arrived = time.perf_counter()
        if len(data) == BEACON_BYTES and data.startswith(BEACON_MAGIC):
            (port,) = struct.unpack(">H", data[36:38])
            return arrived, data[4:36], port
    return None


def memory_of(pid: int) -> dict[str, int]:
    """A process's resident memory from /proc, in bytes: ``VmRSS``, its peak ``VmHWM``, and
    ``RssAnon`` (its own heap and stacks) and ``RssFile`` (mapped files: the interpreter and
    libraries, shared with other processes running them), which sum (with ``RssShmem``) to VmRSS."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[name] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, poll: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# ---------------------------------------------------------------- the records fed to the agent


def _keypair(rng: random.Random) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class FedPeers:
    """The feeder's identity and the signed records of the N - 1 peers in the tree under it."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    card: Record
    #: Peer ids of the feeder's children in the tree (its links record lists them).
    children: tuple[bytes, ...]
    records: list[Record]


def make_fed_peers(remote_peers: int, seed: int) -> FedPeers:
    """A feeder and ``remote_peers - 1`` more peers in a tree of fan-out ``FAN_OUT`` under it.

    Tree node 0 is the feeder, 1.. the others; node k's parent is ``(k - 1) // FAN_OUT``.
    Each peer's links record lists its parent and its children, so claims are mutual.
    """
    rng = random.Random(seed)
    expiry = int(time.time() + RECORD_TTL_S)
    keys = [_keypair(rng) for _ in range(remote_peers)]
    ids = [peer_id(public) for _, public in keys]
    records: list[Record] = []
    for k in range(1, remote_peers):
        private, public = keys[k]
        card = make_card(f"fed-{k:05d}", "Linux", __version__, {})
        records.append(sign_record(private, public, 1, expiry, card))
        neighbours = [
            (k - 1) // FAN_OUT,
            *range(FAN_OUT * k + 1, min(FAN_OUT * k + FAN_OUT + 1, remote_peers)),
        ]
        entries = tuple(
            LinkEntry(ids[j], ConnectionType.RADIO, 10 * (1 + (k * j) % 300)) for j in sorted(neighbours)
        )
        records.append(sign_record(private, public, 2, expiry, Links(entries)))
    private, public = keys[0]
    feeder_card = sign_record(private, public, 1, expiry, make_card("bench-feeder", "Linux", __version__, {}))
    children = tuple(ids[j] for j in range(1, min(FAN_OUT + 1, remote_peers)))
    return FedPeers(private, public, feeder_card, children, records)


# ---------------------------------------------------------------- the feeder: a peer speaking the protocol


class Feeder:
    """One TCP link to the agent, spoken by hand as the engine speaks it.

    Not an :class:`~agent.core.engine.Engine`: the feeder must sign a links
    record that claims the fed peers (its tree children), which an engine only
    does for links it really has. Everything the agent receives is what a
    neighbour would send: HELLO, PROOF, ACCEPT, then RECORDS and SUMMARY
    keepalives. The SUMMARY sent is the hash of what the agent should hold by
    then, so the agent never needs a DIGEST; its own SUMMARY equal to ours
    proves it holds exactly the records fed.
    """

    def __init__(self, peers: FedPeers, port: int) -> None:
        self.peers = peers
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self._summary = peers.card.summary_hash  # the agent merges our HELLO card
        self._agent_records: dict[int, Record] = {}
        self._agent_links = threading.Event()
        self.agent_key = b""
        self.agent_summary = b""
        self.digests_received = 0
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ framing

    def _send(self, message: bytes) -> None:
        frame = bytes([FRAME_WHOLE]) + message
        with self._send_lock:
            self.sock.sendall(_LENGTH.pack(len(frame)) + frame)

    def _exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the agent closed the link")
            data += chunk
        return bytes(data)

    def _receive(self) -> tuple[MessageType, tuple[Any, ...]] | None:
        (length,) = _LENGTH.unpack(self._exactly(4))
        frame = self._exactly(length)
        if frame[0] != FRAME_WHOLE:
            return None  # the agent never fragments on a 16 KiB TCP link; skip if it did
        return decode_message(frame[1:])

    # ------------------------------------------------------------ protocol

    def handshake(self) -> None:
        """HELLO, PROOF and ACCEPT both ways; then wait for the agent's links record."""
        nonce = os.urandom(NONCE_BYTES)
        self._send(
            encode_message(MessageType.HELLO, PROTOCOL_VERSION, nonce, self.peers.card.raw, ROUTER.encode())
        )
        proved = accepted = False
        while not (proved and accepted):
            received = self._receive()
            if received is None:
                continue
            kind, fields = received
            if kind is MessageType.HELLO and not self.agent_key:
                agent_card = decode_record(fields[2])
                self.agent_key = agent_card.public_key
                self._note_agent_record(agent_card)
                signed = HANDSHAKE_CONTEXT + fields[1] + self.peers.public_key + self.agent_key
                self._send(encode_message(MessageType.PROOF, self.peers.private_key.sign(signed)))
            elif kind is MessageType.PROOF:
                proved = True
                self._send(encode_message(MessageType.ACCEPT))
            elif kind is MessageType.ACCEPT:
                accepted = True
            elif kind is MessageType.DENY:
                raise RuntimeError("the agent denied the feeder's link")
        self.sock.settimeout(None)
        for target in (self._read_forever, self._keepalive_forever):
            thread = threading.Thread(target=target, daemon=True, name="bench-feeder")
            thread.start()
            self._threads.append(thread)
        if not self._agent_links.wait(10):
            raise RuntimeError("the agent never sent its links record")

    def _note_agent_record(self, record: Record) -> None:
        held = self._agent_records.get(record.kind)
        if held is None or held.counter < record.counter:
            self._agent_records[record.kind] = record

    def _read_forever(self) -> None:
        with contextlib.suppress(OSError, ConnectionError, ValueError):
            while not self._closed.is_set():
                received = self._receive()
                if received is None:
                    continue
                kind, fields = received
                if kind is MessageType.RECORDS:
                    for raw in fields:
                        record = decode_record(raw)
                        if record.public_key == self.agent_key:
                            self._note_agent_record(record)
                            self._agent_links.set()
                elif kind is MessageType.SUMMARY:
                    self.agent_summary = fields[0]
                elif kind is MessageType.DIGEST:
                    self.digests_received += 1

    def _keepalive_forever(self) -> None:
        interval = LanSettings().keepalive_interval * 0.8
        with contextlib.suppress(OSError):
            while not self._closed.wait(interval):
                self._send(encode_message(MessageType.SUMMARY, self.summary()))

    def summary(self) -> bytes:
        """The hash of everything the agent should hold: what we sent, and its own records."""
        value = self._summary
        for record in list(self._agent_records.values()):
            value ^= record.summary_hash
        return value.to_bytes(8, "big")

    def feed(self, mtu: int) -> None:
        """Our links record, then every fed record, in RECORDS frames paced to ``FEED_BYTES_PER_S``."""
        entries = [LinkEntry(peer_id(self.agent_key), ConnectionType.ACCESS_POINT)]
        entries += [LinkEntry(child, ConnectionType.RADIO, 10) for child in self.peers.children]
        entries.sort(key=lambda e: (e.peer_id, e.connection_type.value))
        links = sign_record(
            self.peers.private_key, self.peers.public_key, 2, self.peers.card.expiry, Links(tuple(entries))
        )
        records = [links, *self.peers.records]
        by_raw = {r.raw: r for r in records}
        started = time.perf_counter()
        sent = 0
        for frame in pack_frames([r.raw for r in records], mtu):
            _, raws = decode_message(frame[1:])
            with self._send_lock:
                self.sock.sendall(_LENGTH.pack(len(frame)) + frame)
                for raw in raws:
                    self._summary ^= by_raw[raw].summary_hash
            sent += len(frame) + _LENGTH.size
            ahead = started + sent / FEED_BYTES_PER_S - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


# ---------------------------------------------------------------- memory


def _accepted(state_dir: Path) -> int:
    stats = request(state_dir, {"op": "status"})["stats"]
    return int(stats.get("records.accepted", 0))


def _announced_port(listener: socket.socket, key: str) -> int:
    """The TCP port in the beacons of the agent with peer key string ``key``."""
    deadline = time.monotonic() + 10
    while (beacon := next_beacon(listener, deadline)) is not None:
        if peer_key_string(beacon[1]) == key:
            return beacon[2]
    raise RuntimeError("no beacon from the agent")


def measure_rss(remote_peers: int, peers: FedPeers, repetition: int) -> dict[str, Any]:
    """One agent process: idle RSS, then RSS holding ``remote_peers`` peers' records."""
    mtu = LanSettings().max_frame_bytes
    with Launcher("presence-bench-rss-") as launcher:
        listener = beacon_listener(launcher.multicast_port)
        try:
            proc = launcher.spawn(f"rss-{remote_peers}-{repetition}")
            key = launcher.wait_ready(proc)
            port = _announced_port(listener, key)
        finally:
            listener.close()
        time.sleep(IDLE_S)
        idle = memory_of(proc.pid)
        feeder = Feeder(peers, port)
        try:
            feeder.handshake()
            accepted_before = _accepted(proc.state_dir)
            started = time.perf_counter()
            feeder.feed(mtu)
            expected = accepted_before + 1 + len(peers.records)  # our links record and the fed ones
            wait_for(lambda: _accepted(proc.state_dir) >= expected, 120, "the agent to accept every record")
            ingest_s = time.perf_counter() - started
            wait_for(lambda: feeder.agent_summary == feeder.summary(), 10, "the agent's summary to match")
            time.sleep(SETTLE_S)
            held = memory_of(proc.pid)
            status = request(proc.state_dir, {"op": "status"})["stats"]
            rejected = sum(v for k, v in status.items() if k.startswith("records.rejected"))
            graph = request(proc.state_dir, {"op": "graph"}, timeout=120)["graph"]
            shown = len(graph["remote_peers"])
            del graph
            after_graph = memory_of(proc.pid)
            digests = feeder.digests_received
        finally:
            feeder.close()
        launcher.stop(proc)
    if shown != remote_peers or rejected:
        raise RuntimeError(f"the agent shows {shown} of {remote_peers} peers and rejected {rejected} records")
    return {
        "remote_peers": remote_peers,
        "records_fed": len(peers.records) + 2,
        "idle_rss_bytes": idle["VmRSS"],
        "idle_anon_bytes": idle["RssAnon"],
        "idle_file_bytes": idle["RssFile"],
        "rss_bytes": held["VmRSS"],
        "anon_bytes": held["RssAnon"],
        "peak_rss_bytes": held["VmHWM"],
        "rss_after_graph_request_bytes": after_graph["VmRSS"],
        "bytes_per_peer": rounded((held["VmRSS"] - idle["VmRSS"]) / remote_peers, 1),
        "graph_remote_peers": shown,
        "ingest_s": rounded(ingest_s, 3),
        "digests_from_agent": digests,
    }


def import_rss() -> int:
    """RSS of a Python process that has only imported the agent's runtime and LAN modules."""
    popen = subprocess.Popen(
        [sys.executable, "-c", _IMPORT_AND_WAIT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
    )
    try:
        assert popen.stdout is not None and popen.stdin is not None
        popen.stdout.readline()
        rss = memory_of(popen.pid)["VmRSS"]
        popen.stdin.close()
        popen.wait(10)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    return rss


def _memory(plan: Plan) -> dict[str, Any]:
    sizes: list[dict[str, Any]] = []
    import_samples: list[int] = []
    for n in plan.rss_sizes:
        progress(f"figure 5: signing {2 * (n - 1)} records of {n - 1} peers for the feeder")
        peers = make_fed_peers(n, seed=n)
        runs = []
        for rep in range(plan.rss_repetitions):
            import_samples.append(import_rss())
            runs.append(measure_rss(n, peers, rep))
            r = runs[-1]
            progress(
                f"figure 5: {n} remote peers, repetition {rep + 1}/{plan.rss_repetitions}: "
                f"idle {r['idle_rss_bytes'] / MB:.1f} MB, holding {r['rss_bytes'] / MB:.1f} MB "
                f"({r['bytes_per_peer']:,.0f} B per peer), ingest {r['ingest_s']:.1f} s"
            )
        held = median([r["rss_bytes"] for r in runs])
        idle = median([r["idle_rss_bytes"] for r in runs])
        sizes.append(
            {
                "remote_peers": n,
                "repetitions": len(runs),
                "median_idle_rss_mb": rounded(idle / MB, 2),
                "median_idle_file_backed_mb": rounded(median([r["idle_file_bytes"] for r in runs]) / MB, 2),
                "median_rss_mb": rounded(held / MB, 2),
                "median_peak_rss_mb": rounded(median([r["peak_rss_bytes"] for r in runs]) / MB, 2),
                "median_rss_after_graph_request_mb": rounded(
                    median([r["rss_after_graph_request_bytes"] for r in runs]) / MB, 2
                ),
                "median_bytes_per_peer": rounded(median([r["bytes_per_peer"] for r in runs]), 1),
                "ratio_to_idle": rounded(ratio(held, idle)),
                "mean_record_bytes": rounded(sum(len(r.raw) for r in peers.records) / len(peers.records), 1),
                "runs": runs,
            }
        )
    return {"sizes": sizes, "median_import_only_rss_mb": rounded(median(import_samples) / MB, 2)}


# ---------------------------------------------------------------- start-up


def _time_exit(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=child_env(), check=True)
    return time.perf_counter() - started


def _time_first_beacon(bytecode: bool) -> float:
    with Launcher("presence-bench-start-") as launcher:
        listener = beacon_listener(launcher.multicast_port)
        try:
            proc = launcher.spawn("start", bytecode=bytecode)
            beacon = next_beacon(listener, time.monotonic() + 30)
        finally:
            listener.close()
        if beacon is None:
            raise RuntimeError(f"no beacon within 30 s: {launcher.log(proc)}")
        took = beacon[0] - proc.started_at
        launcher.stop(proc)
    return took


def _startup(plan: Plan) -> dict[str, Any]:
    steps: list[tuple[str, Callable[[], float]]] = [
        ("agent", lambda: _time_first_beacon(bytecode=True)),
        (NO_BYTECODE, lambda: _time_first_beacon(bytecode=False)),
        *((name, lambda args=args: _time_exit(args)) for name, args in STARTUP_BASELINES.items()),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    for rep in range(plan.startup_repetitions):
        for name, step in steps[rep % len(steps) :] + steps[: rep % len(steps)]:
            samples[name].append(step())
    medians = {name: median(values) for name, values in samples.items()}
    progress(
        f"figure 5: start-up to first beacon {medians['agent'] * 1000:.0f} ms (median of "
        f"{plan.startup_repetitions}); python -c pass {medians['python -c pass'] * 1000:.0f} ms"
    )
    import_name = "python -c 'import agent.runtime.agent'"
    return {
        "repetitions": plan.startup_repetitions,
        "agent_first_beacon_s": [rounded(v) for v in samples["agent"]],
        "median_agent_first_beacon_s": rounded(medians["agent"]),
        "no_bytecode_first_beacon_s": [rounded(v) for v in samples[NO_BYTECODE]],
        "median_no_bytecode_first_beacon_s": rounded(medians[NO_BYTECODE]),
        "baselines": {
            name: {"samples_s": [rounded(v) for v in samples[name]], "median_s": rounded(medians[name])}
            for name in STARTUP_BASELINES
        },
        "ratio_to_python_pass": rounded(ratio(medians["agent"], medians["python -c pass"])),
        "ratio_to_import": rounded(ratio(medians["agent"], medians[import_name])),
        "beyond_import_s": rounded(medians["agent"] - medians[import_name]),
    }


# ---------------------------------------------------------------- observer latency


class _StampingAgent(Agent):
    """An agent that stamps every frame its transports hand it, and notes which one
    brought a new card from the watched peer (keyed by the card's ``bench_seq``)."""

    watched: bytes = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[int, tuple[float, float]] = {}
        self._counter = 0

    def receive(self, link: Any, frame: bytes) -> None:
        received = time.perf_counter()
        super().receive(link, frame)
        if not self.watched or self._local is None:
            return
        done = time.perf_counter()
        for record in self.engine.records_of(self.watched):
            body = record.body
            if record.counter > self._counter and hasattr(body, "metadata"):
                self._counter = record.counter
                seq = body.metadata.get("bench_seq")
                if isinstance(seq, int):
                    self.arrivals.setdefault(seq, (received, done))


@contextlib.contextmanager
def _agent_on_thread(agent: Agent) -> Iterator[asyncio.AbstractEventLoop]:
    """Run ``agent`` on an event loop of its own thread (as BlockingAgent does) until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-agent-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(agent.start(), loop).result(30)
        try:
            yield loop
        finally:
            asyncio.run_coroutine_threadsafe(agent.close(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _handoff_baseline(samples: int) -> list[float]:
    """A bare cross-thread hand-off: put a timestamp on a SimpleQueue, another thread takes it."""
    inbox: queue.SimpleQueue[float | None] = queue.SimpleQueue()
    delays: list[float] = []

    def take() -> None:
        while (sent := inbox.get()) is not None:
            delays.append(time.perf_counter() - sent)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    for _ in range(samples):
        inbox.put(time.perf_counter())
        time.sleep(0.01)
    inbox.put(None)
    taker.join(5)
    return delays


def _observer(plan: Plan) -> dict[str, Any]:
    with Launcher("presence-bench-observer-") as launcher:
        config: AgentConfig = parse_config(lan_config(launcher.multicast_port), "bench")
        agent = _StampingAgent(config, state_dir=launcher.root / "observer", control_socket=False)
        changer = launcher.spawn("changer")
        with _agent_on_thread(agent):
            key = launcher.wait_ready(changer)
            agent.watched = public_key_from_string(key)

            def sees_changer() -> bool:
                return any(p.peer_key_string == key for p in agent.presence.graph().remote_peers)

            wait_for(sees_changer, 30, "the observer agent to see the changer")
            delivered: dict[int, float] = {}
            arrived = threading.Event()
            target = [-1]

            def on_graph(graph: PresenceGraph) -> None:
                now = time.perf_counter()
                for peer in graph.remote_peers:
                    seq = peer.peer_metadata.get("bench_seq") if peer.peer_key_string == key else None
                    if isinstance(seq, int) and seq not in delivered:
                        delivered[seq] = now
                        if seq == target[0]:
                            arrived.set()

            observer = agent.presence.observe(on_graph)
            set_at: dict[int, float] = {}
            rng = random.Random(5)
            try:
                for seq in range(plan.observer_changes):
                    target[0] = seq
                    arrived.clear()
                    set_at[seq] = time.perf_counter()
                    answer = request(
                        changer.state_dir, {"op": "metadata_set", "json": json.dumps({"bench_seq": seq})}
                    )
                    if not answer.get("ok") or not arrived.wait(10):
                        raise RuntimeError(f"metadata change {seq} never reached the observer: {answer}")
                    # Changes land at random points of the keepalive cycle.
                    time.sleep(rng.uniform(0.05, 0.3))
            finally:
                observer.stop()
        launcher.stop(changer)
    arrivals = agent.arrivals
    seqs = sorted(set(delivered) & set(arrivals) & set(set_at))
    if len(seqs) < plan.observer_changes:
        raise RuntimeError(f"only {len(seqs)} of {plan.observer_changes} changes were stamped and delivered")
    latency = [delivered[s] - arrivals[s][0] for s in seqs]
    in_engine = [arrivals[s][1] - arrivals[s][0] for s in seqs]
    end_to_end = [delivered[s] - set_at[s] for s in seqs]
    handoff = _handoff_baseline(len(seqs))
    progress(
        f"figure 5: observer latency {median(latency) * 1000:.2f} ms from frame to callback (median of "
        f"{len(seqs)}); bare hand-off {median(handoff) * 1000:.3f} ms"
    )
    return {
        "changes": len(seqs),
        "receive_to_callback_s": [rounded(v) for v in latency],
        "receive_handled_s": [rounded(v) for v in in_engine],
        "metadata_set_to_callback_s": [rounded(v) for v in end_to_end],
        "handoff_baseline_s": [rounded(v) for v in handoff],
        "median_receive_to_callback_s": rounded(median(latency)),
        "max_receive_to_callback_s": rounded(max(latency)),
        "median_receive_handled_s": rounded(median(in_engine)),
        "median_metadata_set_to_callback_s": rounded(median(end_to_end)),
        "median_handoff_baseline_s": rounded(median(handoff)),
        "ratio_to_handoff": rounded(ratio(median(latency), median(handoff))),
    }


# ---------------------------------------------------------------- the figure


def run(mode: Mode) -> dict[str, Any]:
    """Memory, start-up and observer latency of real agent processes."""
    plan = PLANS[mode.name]
    warm_bytecode_cache()
    memory = _memory(plan)
    startup = _startup(plan)
    observer = _observer(plan)
    by_size = {s["remote_peers"]: s for s in memory["sizes"]}
    goals = [
        goal(
            f"RSS holding {n:,} remote peers",
            by_size[n]["median_rss_mb"] if n in by_size else None,
            limit,
            at_most=True,
            unit="MB",
        )
        for n, limit in RSS_GOALS_MB.items()
    ]
    goals.append(
        goal("start-up to first beacon", startup["median_agent_first_beacon_s"], STARTUP_GOAL_S, True, "s")
    )
    return {
        "title": "Real processes: memory per held peer, start-up to first beacon, observer latency",
        "goal": (
            f"RSS ≤ {RSS_GOALS_MB[1000]:g} MB holding 1,000 remote peers and ≤ {RSS_GOALS_MB[10000]:g} MB "
            f"holding 10,000; first beacon ≤ {STARTUP_GOAL_S:g} s after spawn; observer latency reported "
            "(no numeric goal)"
        ),
        "baseline": (
            "memory: the same agent process idle with 0 remote peers; start-up: spawn to exit of "
            "`python -c pass` and of `python -c 'import agent.runtime.agent'`; observer: a bare "
            f"cross-thread hand-off (queue.SimpleQueue put {TIMES} get) in the same process"
        ),
        "repetitions": {
            "memory": plan.rss_repetitions,
            "startup": plan.startup_repetitions,
            "observer_changes": plan.observer_changes,
        },
        "fan_out": FAN_OUT,
        "feed_bytes_per_s": FEED_BYTES_PER_S,
        "settle_s": SETTLE_S,
        "memory": memory,
        "startup": startup,
        "observer": observer,
        "goals": goals,
    }
