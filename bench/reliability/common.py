"""Shared pieces of the reliability script: plans, goals, results, samplers, identities, beacons.

Every scenario returns a :class:`Result`: its goals (each a :class:`Goal`,
measured against a limit), the sentence of policy that makes it hold, its
details (plain JSON values) and optionally time series for a plot. Processes
are watched from ``/proc``: resident memory (``VmRSS``), open file descriptors
(``/proc/PID/fd``) and threads (``Threads:`` in ``/proc/PID/status``); the
control socket's latency is the time a ``status`` or ``graph`` request takes,
a fresh connection each time, as ``presence-agent graph`` makes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.runtime.control import ControlError, request
from agent.state.identity import load_or_create_identity
from agent.state.layout import IDENTITY_FILE_NAME
from agent.transports.lan import BEACON_MAGIC
from agent.transports.lan_settings import LanSettings
from bench.processes import AgentProcess, Launcher, beacon_listener, memory_of, next_beacon

MB = 1024 * 1024
#: The control socket must answer within this (seconds) throughout an attack.
CONTROL_LATENCY_GOAL_S = 0.1
#: A request that takes longer than this counts as unanswered (and as this long).
CONTROL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How much each scenario does: ``quick`` (a check that the script works) or ``full``."""

    name: str
    forged_records: int
    beacons: int
    beacons_per_s: float
    connections_per_s: float
    connections_s: float
    connection_restarts: int
    hostile_links: int
    hostile_links_s: float
    idle_clients: int
    watch_cycles: int
    join_mesh_bytes: int
    kills: int
    sybil_cards: int

    @property
    def quick(self) -> bool:
        return self.name == "quick"


QUICK = Plan(
    name="quick",
    forged_records=10_000,
    beacons=20_000,
    beacons_per_s=10_000,
    connections_per_s=200,
    connections_s=6.0,
    connection_restarts=1,
    hostile_links=80,
    hostile_links_s=4.0,
    idle_clients=300,
    watch_cycles=200,
    join_mesh_bytes=400_000,
    kills=4,
    sybil_cards=2_000,
)

FULL = Plan(
    name="full",
    forged_records=1_000_000,
    beacons=1_000_000,
    beacons_per_s=25_000,
    connections_per_s=1000,
    connections_s=60.0,
    connection_restarts=3,
    hostile_links=500,
    hostile_links_s=20.0,
    idle_clients=10_000,
    watch_cycles=10_000,
    join_mesh_bytes=16_000_000,
    kills=200,
    sybil_cards=100_000,
)


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the summary table)."""
    print(f"reliability: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- goals and results


def _rounded(value: float | None, digits: int = 4) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"refusing to record a non-finite value {value!r}")
    if value != 0 and abs(value) < 1:
        return float(f"{value:.{digits}g}")
    return round(value, digits)


@dataclass(frozen=True, slots=True)
class Goal:
    """One figure against its limit; ``measured`` is ``None`` when it could not be measured."""

    name: str
    measured: float | None
    limit: float
    at_most: bool = True
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return False
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": _rounded(self.measured),
            "limit": self.limit,
            "comparison": "<=" if self.at_most else ">=",
            "unit": self.unit,
            "met": self.met,
        }


@dataclass(frozen=True, slots=True)
class Result:
    """What one scenario measured."""

    key: str
    title: str
    #: The goal as issue 13 states it.
    goal: str
    #: How the scenario attacks and measures, in a sentence or two.
    method: str
    #: The policy that makes the goal hold, in a sentence.
    policy: str
    goals: tuple[Goal, ...]
    details: dict[str, Any] = field(default_factory=dict)
    #: Name -> columns (name -> values), for the page's plots.
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def met(self) -> bool:
        return all(g.met for g in self.goals)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "goal": self.goal,
            "method": self.method,
            "policy": self.policy,
            "met": self.met,
            "goals": [g.to_json() for g in self.goals],
            "details": self.details,
            "series": {
                name: {col: [_rounded(v) for v in values] for col, values in columns.items()}
                for name, columns in self.series.items()
            },
            "duration_s": round(self.duration_s, 1),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank rule; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- watching a process


def fd_count(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    """Threads of a process (``Threads:`` in ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Threads line for {pid}")


def rss_of(pid: int) -> int:
    return memory_of(pid)["VmRSS"]


def timed_request(state_dir: Path, op: str) -> tuple[float, bool]:
    """How long a control request takes (seconds) and whether it was answered ``ok``."""
    started = time.perf_counter()
    try:
        answer = request(state_dir, {"op": op}, timeout=CONTROL_TIMEOUT_S)
        ok = bool(answer.get("ok"))
    except (ControlError, OSError, ValueError):
        ok = False
    took = time.perf_counter() - started
    return (took if ok else max(took, CONTROL_TIMEOUT_S)), ok


class Sampler(threading.Thread):
    """Samples one agent every ``interval`` s: control latency (``status`` and ``graph``
    alternately), RSS, fds and threads, each with its time since the sampler started."""

    def __init__(self, proc: AgentProcess, interval: float = 0.05, *, control: bool = True) -> None:
        super().__init__(daemon=True, name=f"sampler-{proc.name}")
        self.proc, self.interval, self.control = proc, interval, control
        self.t: list[float] = []
        self.latency_s: list[float] = []
        self.rss_mb: list[float] = []
        self.fds: list[float] = []
        self.threads: list[float] = []
        self.unanswered = 0
        self.started_at = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        turn = 0
        while not self._halt.is_set():
            pid = self.proc.pid
            try:
                rss, fds, threads = rss_of(pid), fd_count(pid), thread_count(pid)
            except (OSError, RuntimeError):
                break  # the process is gone
            latency = 0.0
            if self.control:
                latency, ok = timed_request(self.proc.state_dir, ("status", "graph")[turn % 2])
                self.unanswered += not ok
                turn += 1
            self.t.append(time.monotonic() - self.started_at)
            self.latency_s.append(latency)
            self.rss_mb.append(rss / MB)
            self.fds.append(fds)
            self.threads.append(threads)
            self._halt.wait(self.interval)

    def mark(self) -> float:
        """Seconds since the sampler started (to mark phases on a plot)."""
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        self._halt.set()
        self.join(CONTROL_TIMEOUT_S + 5)

    def window(self, start: float, end: float = math.inf) -> list[int]:
        """Indexes of the samples taken between ``start`` and ``end`` (sampler time)."""
        return [i for i, t in enumerate(self.t) if start <= t <= end]

    def latencies(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        return [self.latency_s[i] for i in self.window(start, end)]

    def series(self, *columns: str) -> dict[str, list[float]]:
        chosen: dict[str, list[float]] = {"t": list(self.t)}
        for name in columns:
            chosen[name] = list(getattr(self, name))
        return chosen


def latency_details(values: Sequence[float]) -> dict[str, Any]:
    """Max, p99 and median of control latencies (seconds), and how many samples."""
    return {
        "samples": len(values),
        "max_s": _rounded(max(values)) if values else None,
        "p99_s": _rounded(percentile(values, 0.99)),
        "median_s": _rounded(percentile(values, 0.5)),
    }


# ---------------------------------------------------------------- identities, ports, beacons


def make_identity(launcher: Launcher, name: str, wanted: Callable[[bytes], bool]) -> bytes:
    """Create agent ``name``'s identity in its state directory, drawn until ``wanted(key)``."""
    state_dir = launcher.root / name
    while True:
        key = load_or_create_identity(state_dir).public_key
        if wanted(key):
            return key
        (state_dir / IDENTITY_FILE_NAME).unlink()


def tcp_port(launcher: Launcher, key: bytes, timeout: float = 10.0) -> int:
    """The TCP port the agent with public key ``key`` announces in its beacons."""
    listener = beacon_listener(launcher.multicast_port)
    try:
        deadline = time.monotonic() + timeout
        while (beacon := next_beacon(listener, deadline)) is not None:
            if beacon[1] == key:
                return beacon[2]
    finally:
        listener.close()
    raise RuntimeError("no beacon from the agent")


def beacon(key: bytes, port: int) -> bytes:
    """A beacon in the LAN format: magic, 32-byte key, TCP port."""
    return BEACON_MAGIC + key + struct.pack(">H", port)


def beacon_sender() -> socket.socket:
    """A UDP socket sending to the beacon group over loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return sock


class BeaconRelay(threading.Thread):
    """Repeats one agent's beacon on another multicast port, so agents there (and only they)
    dial it: how a bridge between two groups that cannot hear each other is built on loopback."""

    def __init__(self, key: bytes, port: int, multicast_port: int) -> None:
        super().__init__(daemon=True, name="beacon-relay")
        self.data = beacon(key, port)
        self.multicast_port = multicast_port
        self._halt = threading.Event()

    def run(self) -> None:
        group = LanSettings().multicast_group
        with beacon_sender() as sock:
            while not self._halt.is_set():
                sock.sendto(self.data, (group, self.multicast_port))
                self._halt.wait(LanSettings().beacon_interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def remote_keys(proc: AgentProcess) -> set[str] | None:
    """The peer key strings in an agent's graph, or ``None`` if it does not answer."""
    with contextlib.suppress(ControlError, OSError, ValueError):
        answer = request(proc.state_dir, {"op": "graph"}, timeout=CONTROL_TIMEOUT_S)
        return {p["peer_key_string"] for p in answer["graph"]["remote_peers"]}
    return None


def stats_of(proc: AgentProcess) -> dict[str, int]:
    """An agent's counters (the control ``status`` op)."""
    stats: dict[str, int] = request(proc.state_dir, {"op": "status"}, timeout=30)["stats"]
    return stats


def all_see_all(procs: Sequence[AgentProcess]) -> bool:
    """Every agent has every other in its graph."""
    for proc in procs:
        keys = remote_keys(proc)
        if keys is None or any(o.peer_key not in keys for o in procs if o is not proc):
            return False
    return True


def wait_all_see_all(
    procs: Sequence[AgentProcess], timeout: float, since: float | None = None
) -> float | None:
    """Seconds until every agent has every other in its graph, counted from ``since`` (a
    ``time.perf_counter()`` reading, such as a spawn time) or from now; ``None`` by ``timeout``."""
    origin = time.perf_counter() if since is None else since
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all_see_all(procs):
            return time.perf_counter() - origin
        time.sleep(0.02)
    return None


def state_bytes(proc: AgentProcess) -> int:
    """Bytes of every file in an agent's state directory (the store and its journal)."""
    total = 0
    for path in proc.state_dir.iterdir():
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_socket():
                total += path.stat().st_size
    return total


def wait_quiet(counter: Callable[[], int], quiet_s: float, timeout: float) -> int:
    """Wait until ``counter()`` has not changed for ``quiet_s`` (or ``timeout``); its last value."""
    deadline = time.monotonic() + timeout
    value, since = counter(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now_value = counter()
        if now_value != value:
            value, since = now_value, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return value
