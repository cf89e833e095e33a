"""Connections and links: unauthenticated connections against a restarting peer, hostile admitted links.

**connections.** A target and an honest peer with the lower key (so the honest
peer dials the target, through the flooded accept path). A flood opens
connections to the target at a fixed rate, each sending a 35-byte HELLO that
names a card nobody holds and then nothing (the newest 256 stay open on our
side). During the flood the honest peer is stopped (SIGTERM) several times at
even intervals, waited out of the target's graph and spawned again; its rejoin
time runs from the spawn (start-up included) to both being in each other's graph.

**hostile_links.** Two honest agents that cannot hear each other's beacons
(two multicast groups) and a bridge between them: agent ``left`` and the bridge
share one group, agent ``right`` is on another, where the bridge's beacon is
repeated, so ``right`` dials the bridge and ``left`` and ``right`` see each
other only through it (two hops). Then hostile peers with genuine keys whose
peer ids are ground below the honest ones (a lower id once sorted first in the
links record) connect to the bridge and complete the handshake, up to the
count given; the admitted ones are kept alive. Every 0.2 s all three graphs are
read; the figure is the share of rounds in which every honest agent is in every
honest agent's graph.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import deque

from agent.core.limits import PEER_ID_BYTES
from agent.core.records import RecordKind
from agent.core.wire import FRAME_WHOLE, digest_entry, encode_hello
from agent.runtime.control import request
from agent.transports.lan_settings import LanSettings
from bench.processes import AgentProcess, Launcher
from bench.reliability.common import (
    BeaconRelay,
    Goal,
    Plan,
    Result,
    Sampler,
    all_see_all,
    latency_details,
    make_identity,
    progress,
    remote_keys,
    stats_of,
    tcp_port,
    wait_all_see_all,
)
from bench.reliability.peer import HostilePeer, LinkKeeper, keypair

REJOIN_GOAL_S = 3.0
REJOIN_TIMEOUT_S = 30.0
#: Connections of the flood still open on our side at any time.
HELD = 256


def keyless_hello() -> bytes:
    """A framed HELLO naming, by reference, a card nobody holds: 35 bytes that prove nothing."""
    reference = digest_entry(os.urandom(PEER_ID_BYTES), RecordKind.CARD, 1)
    message = bytes([FRAME_WHOLE]) + encode_hello(os.urandom(16), reference)
    return struct.pack(">I", len(message)) + message


class KeylessFlood(threading.Thread):
    """Opens ``rate`` connections a second to ``port``, each sending a keyless HELLO and never
    answering; the newest :data:`HELD` stay open on our side (the agent may close them first)."""

    def __init__(self, port: int, rate: float) -> None:
        super().__init__(daemon=True, name="keyless-flood")
        self.port, self.rate = port, rate
        self.opened = 0
        self.failed = 0
        self._halt = threading.Event()

    def run(self) -> None:
        socks: deque[socket.socket] = deque()
        started = time.monotonic()
        hello = keyless_hello()
        try:
            while not self._halt.is_set():
                if (wait := started + self.opened / self.rate - time.monotonic()) > 0:
                    self._halt.wait(wait)
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                    sock.sendall(hello)
                    socks.append(sock)
                except OSError:
                    self.failed += 1
                self.opened += 1
                while len(socks) > HELD:
                    socks.popleft().close()
        finally:
            for sock in socks:
                sock.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _gone(proc: AgentProcess, key: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = remote_keys(proc)
        if keys is not None and key not in keys:
            return
        time.sleep(0.05)
    raise RuntimeError("the stopped peer never left the target's graph")


def connections(plan: Plan) -> Result:
    """Scenario 3: unauthenticated connections at a fixed rate; a restarting honest peer rejoins."""
    started = time.monotonic()
    with Launcher("presence-rel-conns-") as launcher:
        target_key = make_identity(launcher, "target", lambda key: key[0] >= 0x80)
        make_identity(launcher, "honest", lambda key: key[0] < 0x80)
        target = launcher.spawn("target")
        launcher.wait_ready(target)
        port = tcp_port(launcher, target_key)
        honest = launcher.spawn("honest")
        launcher.wait_ready(honest)
        if wait_all_see_all([target, honest], 30) is None:
            raise RuntimeError("the honest peer never linked")
        sampler = Sampler(target, 0.1)
        sampler.start()
        flood = KeylessFlood(port, plan.connections_per_s)
        flood.start()
        attack_from = sampler.mark()
        began = time.monotonic()
        rejoins: list[float | None] = []
        try:
            for i in range(plan.connection_restarts):
                at = began + (i + 1) * plan.connections_s / (plan.connection_restarts + 1)
                time.sleep(max(0.0, at - time.monotonic()))
                launcher.stop(honest)
                _gone(target, honest.peer_key, 15)
                honest = launcher.spawn("honest")
                launcher.wait_ready(honest)
                rejoin = wait_all_see_all([target, honest], REJOIN_TIMEOUT_S, since=honest.started_at)
                rejoins.append(rejoin)
                progress(
                    f"  connections: restart {i + 1}/{plan.connection_restarts} rejoined in "
                    f"{'never' if rejoin is None else f'{rejoin:.2f} s'} "
                    f"({flood.opened:,} connections so far)"
                )
            time.sleep(max(0.0, began + plan.connections_s - time.monotonic()))
        finally:
            flood.stop()
        attack_to = sampler.mark()
        elapsed = time.monotonic() - began
        sampler.stop()
        stats = stats_of(target)
        alive = target.popen.poll() is None
    measured = [r for r in rejoins if r is not None]
    worst = None if len(measured) < len(rejoins) or not measured else max(measured)
    rate = flood.opened / elapsed
    progress(f"connections: {flood.opened:,} at {rate:,.0f}/s; rejoins {rejoins}")
    return Result(
        key="connections",
        title=f"{plan.connections_per_s:,.0f} unauthenticated connections a second for "
        f"{plan.connections_s:g} s",
        goal=f"a restarting honest peer rejoins within {REJOIN_GOAL_S:g} s",
        method=(
            "each connection sends a keyless 35-byte HELLO and nothing more; the honest peer (the lower "
            f"key: it dials the flooded target) is restarted {plan.connection_restarts} times during the "
            "flood and timed from spawn to linked both ways"
        ),
        policy=(
            "a connection that has proved nothing holds a pending slot only for `admission_timeout` "
            "(3 s), and a newcomer beyond `max_pending_connections` evicts the oldest unproven one, "
            "so a flood delays a newcomer but never locks one out"
        ),
        goals=(Goal("slowest rejoin of the restarted peer", worst, REJOIN_GOAL_S, unit="s"),),
        details={
            "connections_opened": flood.opened,
            "connections_failed": flood.failed,
            "achieved_rate_per_s": round(rate, 1),
            "rejoins_s": [None if r is None else round(r, 3) for r in rejoins],
            "pending_evicted": stats.get("transport.lan.pending_evicted", 0),
            "admission_timeout": stats.get("transport.lan.admission_timeout", 0),
            "target_alive": alive,
            "control_latency": latency_details(sampler.latencies(attack_from, attack_to)),
            "attack_window_s": [round(attack_from, 2), round(attack_to, 2)],
        },
        series={"target": sampler.series("fds", "latency_s")},
        duration_s=time.monotonic() - started,
    )


def _low_id_keys(count: int) -> list[tuple[object, bytes]]:
    """Genuine key pairs whose peer ids sort below every id starting at 0x40."""
    keys: list[tuple[object, bytes]] = []
    while len(keys) < count:
        private, public = keypair()
        if public[0] < 0x40:
            keys.append((private, public))
    return keys


def hostile_links(plan: Plan) -> Result:
    """Scenario 4: hostile admitted links at a bridge; honest peers behind it stay in every graph."""
    started = time.monotonic()
    with Launcher("presence-rel-links-") as near, Launcher("presence-rel-links-far-") as far:
        make_identity(near, "left", lambda key: key[0] >= 0xC0)
        make_identity(far, "right", lambda key: key[0] >= 0xC0)
        bridge_key = make_identity(near, "bridge", lambda key: key[0] >= 0x40)
        left, bridge = near.spawn("left"), near.spawn("bridge")
        right = far.spawn("right")
        for launcher, proc in ((near, left), (near, bridge), (far, right)):
            launcher.wait_ready(proc)
        port = tcp_port(near, bridge_key)
        relay = BeaconRelay(bridge_key, port, far.multicast_port)
        relay.start()
        honest = [left, bridge, right]
        keeper = LinkKeeper()
        try:
            if wait_all_see_all(honest, 30) is None:
                raise RuntimeError("left and right never saw each other through the bridge")
            direct = right.peer_key in (remote_keys(left) or set()) and _direct(left, right.peer_key)
            progress(f"  hostile_links: grinding {plan.hostile_links} low peer ids")
            keys = _low_id_keys(plan.hostile_links)
            sampler = Sampler(bridge, 0.2)
            sampler.start()
            keeper.start()
            rounds: list[float] = []
            visible: list[float] = []
            halt = threading.Event()

            def watch() -> None:
                while not halt.is_set():
                    rounds.append(sampler.mark())
                    visible.append(1.0 if all_see_all(honest) else 0.0)
                    halt.wait(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            attack_from = sampler.mark()
            admitted = refused = 0
            for i, (private, _) in enumerate(keys):
                peer = HostilePeer(port, private, name=f"hostile-{i}")  # type: ignore[arg-type]
                try:
                    peer.handshake()
                except (OSError, ConnectionError, ValueError):
                    refused += 1
                    peer.close()
                    continue
                admitted += 1
                keeper.add(peer)
                if (i + 1) % max(1, len(keys) // 5) == 0:
                    progress(f"  hostile_links: {i + 1} tried, {admitted} admitted, {refused} refused")
            time.sleep(plan.hostile_links_s)
            attack_to = sampler.mark()
            halt.set()
            watcher.join(10)
            sampler.stop()
            stats = stats_of(bridge)
            alive_links = keeper.alive
        finally:
            keeper.stop()
            relay.stop()
    share = sum(visible) / len(visible) if visible else None
    progress(
        f"hostile_links: {admitted} admitted, {refused} refused; every honest peer in every graph in "
        f"{sum(visible):.0f} of {len(visible)} rounds"
    )
    return Result(
        key="hostile_links",
        title=f"{plan.hostile_links} hostile links at a bridge",
        goal="every honest multi-hop peer stays in every graph",
        method=(
            "left and right reach each other only through the bridge (two multicast groups, the "
            f"bridge's beacon repeated into the second); {plan.hostile_links} hostile peers with "
            "genuine keys and ground low peer ids link to the bridge and stay; all three graphs read "
            "every 0.2 s"
        ),
        policy=(
            f"admitted links are capped (`max_links`, {LanSettings().max_links}) and beyond it new inbound "
            "connections are refused; the links record lists the links established first, so a newcomer "
            "never displaces a listed link"
        ),
        goals=(
            Goal(
                "rounds with every honest peer in every honest graph",
                None if share is None else 100 * share,
                100.0,
                at_most=False,
                unit="%",
            ),
        ),
        details={
            "hostile_tried": len(keys),
            "hostile_admitted": admitted,
            "hostile_refused": refused,
            "hostile_alive_at_end": alive_links,
            "refused_max_links": stats.get("transport.lan.refused_max_links", 0),
            "rounds": len(visible),
            "rounds_all_visible": int(sum(visible)),
            "left_right_direct_before": direct,
            "control_latency": latency_details(sampler.latencies(attack_from, attack_to)),
            "attack_window_s": [round(attack_from, 2), round(attack_to, 2)],
        },
        series={"visibility": {"t": rounds, "all_visible": visible}, "bridge": sampler.series("fds")},
        duration_s=time.monotonic() - started,
    )


def _direct(proc: AgentProcess, key: str) -> bool:
    """Whether ``proc``'s graph shows the peer ``key`` as directly linked."""
    graph = request(proc.state_dir, {"op": "graph"}, timeout=10)["graph"]
    for peer in graph["remote_peers"]:
        if peer["peer_key_string"] == key:
            return bool(peer.get("is_direct"))
    return False
