"""Figure 6: a real LAN mesh on loopback: time until all see all, and until a dead agent has left.

N ``presence-agent run`` processes start together on loopback, on a private
multicast port, with the LAN and presence timings written out in their
configuration files as a user would (the defaults: beacons and keepalives
every 0.5 s, a link silent for 2 s is dead, 0.5 s departure grace). Each
agent's graph is followed through its control socket's ``watch`` op (one
stream per agent, every update timestamped on arrival).

* **All see all**: from the first spawn until the last agent's graph lists
  every other agent. Lower bound, same run: the last agent's first beacon
  (seen by a socket joined to the group); nobody can see an agent before it
  announces itself.
* **SIGKILL**: one agent killed; until it has left every other graph. On one
  host the kernel closes the dead process's TCP connections, so its
  neighbours lose their links at once and re-sign their links records at
  once (the links throttle only spaces bursts); the timer bound is the
  departure grace plus the links throttle, which a second change within it pays.
* **SIGSTOP** (a frozen agent, as after a power cut: no connection is
  closed): another agent stopped; neighbours notice only when its link has
  been silent for the dead interval, so the timer bound adds the dead interval
  (detection can come up to one keepalive interval sooner, as the last frame
  heard precedes the stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.engine import EngineConfig
from agent.core.keys import peer_key_string
from agent.runtime.control import socket_path
from bench.common import Mode, goal, median, progress, ratio, rounded
from bench.processes import (
    Launcher,
    beacon_listener,
    cpu_seconds,
    next_beacon,
    wait_for,
    warm_bytecode_cache,
)

GOAL_S = 3.0
BEACON_INTERVAL = 0.5
KEEPALIVE = 0.5
DEAD = 2.0
GRACE = 0.5
TIMING = (
    f"beacon_interval = {BEACON_INTERVAL}\nkeepalive_interval = {KEEPALIVE}\ndead_interval = {DEAD}\n"
    f"[presence]\ndeparture_grace = {GRACE}\n"
)
_ENGINE = EngineConfig()
#: Timers alone: a lost link is followed by the neighbours' re-signed links records (at once
#: after a quiet spell, else within the links throttle) and then the departure grace; the
#: 20 ms reachability settle can overlap them.
KILL_BOUND = _ENGINE.links_debounce + GRACE
STOP_BOUND = DEAD + KILL_BOUND
SIZES = {"quick": ((4, 1),), "full": ((10, 3), (20, 3))}
#: Between convergence and each departure: the departures land at random points of the keepalive cycle.
SETTLE = (1.0, 1.5)
TIMEOUT = 60.0


class Watcher:
    """Follows one agent's graph through the control socket's ``watch`` op, timestamping each update."""

    def __init__(self, state_dir: Path) -> None:
        self._path = socket_path(state_dir)
        self._lock = threading.Lock()
        self._updates: list[tuple[float, frozenset[str]]] = []
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="bench-watch")
        self._thread.start()

    def _connect(self) -> socket.socket | None:
        while not self._closed.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self._path))
                return sock
            except OSError:
                sock.close()
                time.sleep(0.01)  # the agent has not opened its control socket yet
        return None

    def _follow(self) -> None:
        sock = self._connect()
        if sock is None:
            return
        self._sock = sock
        with contextlib.suppress(OSError, ValueError), sock.makefile("rb") as lines:
            sock.sendall(b'{"op": "watch"}\n')
            for line in lines:
                arrived = time.perf_counter()
                document = json.loads(line)["graph"]
                keys = frozenset(p["peer_key_string"] for p in document["remote_peers"])
                with self._lock:
                    self._updates.append((arrived, keys))

    def first(self, since: float, condition: Callable[[frozenset[str]], bool]) -> float | None:
        """When the first update at or after ``since`` satisfying ``condition`` arrived, if one did."""
        with self._lock:
            updates = list(self._updates)
        return next((t for t, keys in updates if t >= since and condition(keys)), None)

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


class BeaconLog:
    """The first beacon heard from each key on the group (a thread joined to it)."""

    def __init__(self, port: int) -> None:
        self._sock = beacon_listener(port)
        self.first: dict[str, float] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True, name="bench-beacons")
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed.is_set():
            beacon = next_beacon(self._sock, time.monotonic() + 0.2)
            if beacon is not None:
                self.first.setdefault(peer_key_string(beacon[1]), beacon[0])

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


def _departure(watchers: list[Watcher], victim: str, since: float, what: str) -> tuple[float, list[float]]:
    """Until every watched graph has dropped ``victim``: the time taken, and each graph's."""

    def all_gone() -> list[float] | None:
        times = [w.first(since, lambda keys: victim not in keys) for w in watchers]
        return None if None in times else [t for t in times if t is not None]

    times = wait_for(all_gone, TIMEOUT, what)
    return max(times) - since, [t - since for t in times]


def run_one(n: int, repetition: int) -> dict[str, Any]:
    """N agents: all see all, then one SIGKILLed, then another SIGSTOPped."""
    rng = random.Random(n * 100 + repetition)
    with Launcher(f"presence-bench-mesh{n}-") as launcher:
        beacons = BeaconLog(launcher.multicast_port)
        watchers: list[Watcher] = []
        try:
            started = time.perf_counter()
            procs = [launcher.spawn(f"m{i:02d}", TIMING) for i in range(n)]
            watchers = [Watcher(p.state_dir) for p in procs]
            keys = [launcher.wait_ready(p) for p in procs]
            everyone = frozenset(keys)

            def all_seen() -> list[float] | None:
                times = [
                    w.first(started, lambda seen, k=k: seen == everyone - {k})  # type: ignore[misc]
                    for w, k in zip(watchers, keys, strict=True)
                ]
                return None if None in times else [t for t in times if t is not None]

            seen = wait_for(all_seen, TIMEOUT, f"all {n} agents to see each other")
            all_see_all = max(seen) - started
            # How busy the machine was meanwhile (read just after: an upper bound).
            converge_cpu = sum(cpu_seconds(p.pid) for p in procs)
            wait_for(lambda: everyone <= beacons.first.keys(), 5, "a beacon from every agent")
            last_beacon = max(beacons.first[k] for k in keys) - started

            killed, stopped = rng.sample(range(n), 2)
            time.sleep(rng.uniform(*SETTLE))
            survivors = [w for i, w in enumerate(watchers) if i != killed]
            others = [p for i, p in enumerate(procs) if i != killed]
            cpu_before = sum(cpu_seconds(p.pid) for p in others)
            since = time.perf_counter()
            os.kill(procs[killed].pid, signal.SIGKILL)
            kill_s, _ = _departure(survivors, keys[killed], since, "the SIGKILLed agent to leave every graph")
            kill_cpu = sum(cpu_seconds(p.pid) for p in others) - cpu_before

            time.sleep(rng.uniform(*SETTLE))
            survivors = [w for i, w in enumerate(watchers) if i not in (killed, stopped)]
            since = time.perf_counter()
            os.kill(procs[stopped].pid, signal.SIGSTOP)
            stop_s, _ = _departure(
                survivors, keys[stopped], since, "the SIGSTOPped agent to leave every graph"
            )
        finally:
            for watcher in watchers:
                watcher.close()
            beacons.close()
    progress(
        f"figure 6: {n} agents, repetition {repetition + 1}: all see all after {all_see_all:.2f} s "
        f"(last first beacon {last_beacon:.2f} s); SIGKILL left every graph in {kill_s:.2f} s, "
        f"SIGSTOP in {stop_s:.2f} s"
    )
    return {
        "agents": n,
        "all_see_all_s": rounded(all_see_all),
        "last_first_beacon_s": rounded(last_beacon),
        "after_last_beacon_s": rounded(all_see_all - last_beacon),
        "agents_cpu_until_all_see_all_s": rounded(converge_cpu, 2),
        "cores_busy_until_all_see_all": rounded(converge_cpu / all_see_all, 2),
        "sigkill_left_every_graph_s": rounded(kill_s),
        "survivors_cpu_until_sigkilled_gone_s": rounded(kill_cpu, 3),
        "sigstop_left_every_graph_s": rounded(stop_s),
    }


def run(mode: Mode) -> dict[str, Any]:
    """Every mesh size of ``mode``, several repetitions each; medians per size."""
    warm_bytecode_cache()
    runs: list[dict[str, Any]] = []
    medians: list[dict[str, Any]] = []
    for n, repetitions in SIZES[mode.name]:
        group = [run_one(n, rep) for rep in range(repetitions)]
        runs += group
        row: dict[str, Any] = {"agents": n, "repetitions": repetitions}
        for key in (
            "all_see_all_s",
            "last_first_beacon_s",
            "after_last_beacon_s",
            "cores_busy_until_all_see_all",
            "sigkill_left_every_graph_s",
            "survivors_cpu_until_sigkilled_gone_s",
            "sigstop_left_every_graph_s",
        ):
            row[f"median_{key}"] = rounded(median([r[key] for r in group]))
        row["all_see_all_ratio_to_last_beacon"] = rounded(
            ratio(row["median_all_see_all_s"], row["median_last_first_beacon_s"])
        )
        row["sigkill_ratio_to_timer_bound"] = rounded(
            ratio(row["median_sigkill_left_every_graph_s"], KILL_BOUND)
        )
        row["sigstop_ratio_to_timer_bound"] = rounded(
            ratio(row["median_sigstop_left_every_graph_s"], STOP_BOUND)
        )
        medians.append(row)
    goals = [
        goal(
            f"SIGKILLed agent left every graph, {m['agents']} agents",
            m["median_sigkill_left_every_graph_s"],
            GOAL_S,
            at_most=True,
            unit="s",
        )
        for m in medians
    ]
    return {
        "title": "Real LAN on loopback: all see all, and a dead agent leaving every graph",
        "goal": f"a SIGKILLed agent has left every graph within {GOAL_S:g} s; all-see-all time reported",
        "baseline": (
            "all see all: the last agent's first beacon, same run (nobody can see an agent before it "
            f"announces itself); departure: the configured timers alone, {KILL_BOUND:g} s after a SIGKILL "
            f"(links debounce + departure grace) and {STOP_BOUND:g} s after a SIGSTOP (the dead interval "
            "on top)"
        ),
        "repetitions": {str(n): reps for n, reps in SIZES[mode.name]},
        "cores": os.cpu_count() or 1,
        "timing": {
            "beacon_interval_s": BEACON_INTERVAL,
            "keepalive_interval_s": KEEPALIVE,
            "dead_interval_s": DEAD,
            "departure_grace_s": GRACE,
            "links_debounce_s": _ENGINE.links_debounce,
            "reachability_settle_s": _ENGINE.reachability_settle,
        },
        "sigkill_timer_bound_s": rounded(KILL_BOUND),
        "sigstop_timer_bound_s": rounded(STOP_BOUND),
        "medians": medians,
        "runs": runs,
        "goals": goals,
    }
