"""Floods: forged records and a Sybil flood through one admitted link, fresh-key beacons over UDP.

**forged.** One hostile peer with a genuine key is admitted by the target and
sends cards from fresh keys whose signature is random bytes, at 0.8 MB/s (the
most one link may send). After a warm-up of a few thousand, the target's RSS is
sampled every 50 ms with a ``status`` or ``graph`` request timed on a fresh
control connection each time; RSS growth is the peak during and after the
flood minus the level before it.

**beacons.** Beacons in the LAN format, each from a fresh key above the
target's (so the target is the one to dial) and pointing at a port that listens
but never accepts (each dial hangs until the handshake timeout), sent to the
target's multicast group over loopback. Dials in flight are bounded if the
target's fds stay within ``max_dials_in_flight`` (plus a few for the sampler's
own connections) above its idle level.

**sybil.** Three honest agents; a hostile peer admitted by one of them sends
genuine self-signed cards from fresh keys expiring in 2106, at 0.8 MB/s. Once
every agent is quiet again, a new honest agent starts; its join time runs from
its spawn (start-up included) to every agent having every other in its graph
(the same measure, taken before the flood, is the normal join time).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
from collections.abc import Iterator

from agent.core.engine import EngineConfig
from agent.core.keys import public_key_from_string
from agent.state.layout import STORE_FILE_NAME
from agent.transports.lan_settings import LanSettings
from bench.processes import AgentProcess, Launcher
from bench.reliability.common import (
    CONTROL_LATENCY_GOAL_S,
    MB,
    Goal,
    Plan,
    Result,
    Sampler,
    beacon,
    beacon_sender,
    fd_count,
    latency_details,
    make_identity,
    progress,
    rss_of,
    stats_of,
    tcp_port,
    wait_all_see_all,
    wait_quiet,
)
from bench.reliability.peer import HostilePeer, LinkKeeper, forged_cards, records_frames, sybil_cards

RSS_GROWTH_GOAL_MB = 5.0
FORGED_WARMUP = 3000
BEACON_WARMUP = 2000
#: ``[lan] max_dials_in_flight``'s default, and room for the sampler's own control connections.
DIALS_IN_FLIGHT = LanSettings().max_dials_in_flight
FD_SLACK = 8
SYBIL_RSS_GOAL_MB = 80.0
#: A card of about 250 bytes: a 100-byte pad in its metadata.
SYBIL_METADATA_BYTES = 100
#: The normal join time on the LAN: a new agent in every graph, every agent in its graph.
JOIN_GOAL_S = 3.0
JOIN_TIMEOUT_S = 30.0


def _in_chunks(total: int, what: str) -> Iterator[tuple[int, int]]:
    """(start, count) slices of ``total`` in tenths, printing progress before each."""
    step = max(1, total // 10)
    for start in range(0, total, step):
        progress(f"  {what}: {start:,} of {total:,}")
        yield start, min(step, total - start)


def _rejected(proc: AgentProcess) -> int:
    stats = stats_of(proc)
    return sum(v for k, v in stats.items() if k.startswith("records.rejected"))


def _admitted(launcher: Launcher, proc: AgentProcess) -> tuple[HostilePeer, LinkKeeper]:
    peer = HostilePeer(tcp_port(launcher, public_key_from_string(proc.peer_key)))
    peer.handshake()
    keeper = LinkKeeper()
    keeper.add(peer)
    keeper.start()
    return peer, keeper


def forged(plan: Plan) -> Result:
    """Scenario 1: forged records from fresh keys through one admitted link."""
    started = time.monotonic()
    mtu = LanSettings().max_frame_bytes
    with Launcher("presence-rel-forged-") as launcher:
        target = launcher.spawn("target")
        launcher.wait_ready(target)
        peer, keeper = _admitted(launcher, target)
        try:
            peer.send_paced(records_frames(forged_cards(FORGED_WARMUP), mtu))
            wait_quiet(lambda: _rejected(target), 1.5, 30)
            sampler = Sampler(target)
            sampler.start()
            time.sleep(1.5)
            before = max(sampler.rss_mb)
            attack_from = sampler.mark()
            expected = _rejected(target) + plan.forged_records
            for _, count in _in_chunks(plan.forged_records, "forged records sent"):
                peer.send_paced(records_frames(forged_cards(count), mtu))
            deadline = time.monotonic() + 120
            while _rejected(target) < expected and time.monotonic() < deadline and not peer.closed:
                time.sleep(0.2)
            attack_to = sampler.mark()
            time.sleep(2.5)
            sampler.stop()
            stats = stats_of(target)
            link_closed = peer.closed
        finally:
            keeper.stop()
    latencies = sampler.latencies(attack_from, attack_to)
    peak = max(sampler.rss_mb[i] for i in sampler.window(attack_from))
    rejected = stats.get("records.rejected.bad_signature", 0) - FORGED_WARMUP
    growth = peak - before
    control = latency_details(latencies)
    progress(
        f"forged: {rejected:,} of {plan.forged_records:,} rejected as bad_signature; RSS {before:.1f} -> "
        f"peak {peak:.1f} MB (+{growth:.2f}); control max {control['max_s']} s, p99 {control['p99_s']} s"
    )
    return Result(
        key="forged",
        title=f"{plan.forged_records:,} forged records through one admitted link",
        goal=f"RSS growth ≤ {RSS_GROWTH_GOAL_MB:g} MB; control socket answering within "
        f"{CONTROL_LATENCY_GOAL_S:g} s throughout",
        method=(
            "a hostile peer with a genuine key is admitted, then sends cards from fresh keys with random "
            f"signatures at {0.8:g} MB/s after a {FORGED_WARMUP:,}-record warm-up; RSS and a timed "
            "`status`/`graph` request sampled every 50 ms"
        ),
        policy=(
            "a record's signature is checked before anything is kept for its key, and a rejected record "
            "leaves no per-key state (no key cache, no id table entry)"
        ),
        goals=(
            Goal("RSS growth (peak during the flood, minus before)", growth, RSS_GROWTH_GOAL_MB, unit="MB"),
            Goal(
                "slowest control answer during the flood", control["max_s"], CONTROL_LATENCY_GOAL_S, unit="s"
            ),
        ),
        details={
            "records_sent": plan.forged_records,
            "rejected_bad_signature": rejected,
            "rss_before_mb": round(before, 2),
            "rss_peak_mb": round(peak, 2),
            "rss_after_mb": round(sampler.rss_mb[-1], 2),
            "control_latency": control,
            "unanswered_requests": sampler.unanswered,
            "hostile_link_closed": link_closed,
            "attack_window_s": [round(attack_from, 2), round(attack_to, 2)],
        },
        series={"target": sampler.series("rss_mb", "latency_s")},
        duration_s=time.monotonic() - started,
    )


@contextlib.contextmanager
def _never_accepting() -> Iterator[int]:
    """A port that listens but never accepts: once its backlog is full, connects hang."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        yield sock.getsockname()[1]


def _send_beacons(multicast_port: int, dead_port: int, count: int, rate: float) -> None:
    group = LanSettings().multicast_group
    with beacon_sender() as sock:
        began = time.perf_counter()
        for i in range(count):
            sock.sendto(beacon(b"\xff" + os.urandom(31), dead_port), (group, multicast_port))
            if i % 256 == 0 and (ahead := began + i / rate - time.perf_counter()) > 0:
                time.sleep(ahead)


def beacons(plan: Plan) -> Result:
    """Scenario 2: fresh-key beacons at a port that never accepts."""
    started = time.monotonic()
    with Launcher("presence-rel-beacons-") as launcher, _never_accepting() as dead_port:
        make_identity(launcher, "target", lambda key: key[0] < 0xFF)
        target = launcher.spawn("target")
        launcher.wait_ready(target)
        _send_beacons(launcher.multicast_port, dead_port, BEACON_WARMUP, plan.beacons_per_s)
        time.sleep(LanSettings().handshake_timeout + 1)  # the warm-up's dials time out
        idle_fds = fd_count(target.pid)
        sampler = Sampler(target)
        sampler.start()
        time.sleep(1.5)
        before = max(sampler.rss_mb)
        attack_from = sampler.mark()
        for _, count in _in_chunks(plan.beacons, "beacons sent"):
            _send_beacons(launcher.multicast_port, dead_port, count, plan.beacons_per_s)
        attack_to = sampler.mark()
        time.sleep(LanSettings().handshake_timeout + 1)
        sampler.stop()
        stats = stats_of(target)
    window = sampler.window(attack_from)
    peak = max(sampler.rss_mb[i] for i in window)
    peak_fds = int(max(sampler.fds[i] for i in window))
    growth = peak - before
    control = latency_details(sampler.latencies(attack_from, attack_to))
    progress(
        f"beacons: RSS {before:.1f} -> peak {peak:.1f} MB (+{growth:.2f}); "
        f"fds {idle_fds} -> peak {peak_fds}; "
        f"dial_budget_full {stats.get('transport.lan.dial_budget_full', 0)}; control max {control['max_s']} s"
    )
    return Result(
        key="beacons",
        title=f"{plan.beacons:,} fresh-key beacons (UDP)",
        goal=f"RSS growth ≤ {RSS_GROWTH_GOAL_MB:g} MB, dials in flight bounded, control socket answering "
        f"within {CONTROL_LATENCY_GOAL_S:g} s throughout",
        method=(
            f"beacons from fresh keys above the target's at {plan.beacons_per_s:,.0f}/s, all naming a "
            "port that listens but never accepts; RSS, fds and a timed control request sampled every 50 ms"
        ),
        policy=(
            "a beacon is a hint: per-key discovery state is capped (the oldest forgotten first), at most "
            f"`max_dials_in_flight` ({DIALS_IN_FLIGHT}) dials are in flight, and beacons beyond are dropped "
            "and counted"
        ),
        goals=(
            Goal("RSS growth (peak during the flood, minus before)", growth, RSS_GROWTH_GOAL_MB, unit="MB"),
            Goal(
                "fds above idle at the peak (dials in flight + sampler)",
                peak_fds - idle_fds,
                DIALS_IN_FLIGHT + FD_SLACK,
                unit="fds",
            ),
            Goal(
                "slowest control answer during the flood", control["max_s"], CONTROL_LATENCY_GOAL_S, unit="s"
            ),
        ),
        details={
            "beacons_sent": plan.beacons,
            "beacons_per_s": plan.beacons_per_s,
            "rss_before_mb": round(before, 2),
            "rss_peak_mb": round(peak, 2),
            "idle_fds": idle_fds,
            "peak_fds": peak_fds,
            "dial_budget_full": stats.get("transport.lan.dial_budget_full", 0),
            "dial_failed": stats.get("transport.lan.dial_failed", 0),
            "control_latency": control,
            "unanswered_requests": sampler.unanswered,
            "attack_window_s": [round(attack_from, 2), round(attack_to, 2)],
        },
        series={"target": sampler.series("rss_mb", "fds", "latency_s")},
        duration_s=time.monotonic() - started,
    )


def _store_peers(proc: AgentProcess) -> int:
    """Distinct keys in an agent's SQLite store (read-only, beside the running agent)."""
    uri = f"file:{proc.state_dir / STORE_FILE_NAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        (count,) = db.execute("SELECT COUNT(DISTINCT public_key) FROM records").fetchone()
    return int(count)


def _store_mb(proc: AgentProcess) -> float:
    total = 0
    for path in proc.state_dir.glob(f"{STORE_FILE_NAME}*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total / MB


def sybil(plan: Plan) -> Result:
    """Scenario 8: genuine cards from fresh keys through one admitted link, then a new honest peer."""
    started = time.monotonic()
    mtu = LanSettings().max_frame_bytes
    max_peers = EngineConfig().max_peers
    with Launcher("presence-rel-sybil-") as launcher:
        honest = [launcher.spawn(name) for name in ("sybil-a", "sybil-b")]
        for proc in honest:
            launcher.wait_ready(proc)
        if wait_all_see_all(honest, JOIN_TIMEOUT_S) is None:
            raise RuntimeError("the first two honest agents never saw each other")
        third = launcher.spawn("sybil-c")
        launcher.wait_ready(third)
        honest.append(third)
        normal_join = wait_all_see_all(honest, JOIN_TIMEOUT_S, since=third.started_at)
        samplers = [Sampler(proc, 0.25, control=False) for proc in honest]
        for sampler in samplers:
            sampler.start()
        peer, keeper = _admitted(launcher, honest[0])
        try:
            attack_from = samplers[0].mark()
            for _, count in _in_chunks(plan.sybil_cards, "Sybil cards signed and sent"):
                peer.send_paced(records_frames(sybil_cards(count, SYBIL_METADATA_BYTES), mtu))
            progress("  sybil: waiting for every agent to be quiet")

            def handled() -> int:
                return sum(
                    s.get("records.accepted", 0) + sum(v for k, v in s.items() if k.startswith("records.rej"))
                    for s in map(stats_of, honest)
                )

            wait_quiet(handled, 3.0, 600)
            attack_to = samplers[0].mark()
            newcomer = launcher.spawn("sybil-newcomer")
            launcher.wait_ready(newcomer)
            join = wait_all_see_all([*honest, newcomer], JOIN_TIMEOUT_S, since=newcomer.started_at)
            progress(f"  sybil: newcomer join {join if join is None else round(join, 2)} s")
            time.sleep(1.5)
            everyone = [*honest, newcomer]
            rss = {p.name: rss_of(p.pid) / MB for p in everyone}
            store_peers = {p.name: _store_peers(p) for p in everyone}
            store_mb = {p.name: round(_store_mb(p), 2) for p in everyone}
            capacity = {p.name: stats_of(p).get("records.rejected.capacity", 0) for p in everyone}
            link_closed = peer.closed
        finally:
            keeper.stop()
            for sampler in samplers:
                sampler.stop()
    peak_rss = max(max(s.rss_mb) for s in samplers)
    progress(
        f"sybil: normal join {normal_join} s, newcomer join {join} s; peak RSS {peak_rss:.1f} MB; "
        f"store peers {store_peers}"
    )
    series = {s.proc.name: {"t": s.t, "rss_mb": s.rss_mb} for s in samplers}
    return Result(
        key="sybil",
        title=f"Sybil: {plan.sybil_cards:,} fresh-key cards through one admitted link",
        goal=f"a new honest peer in every graph within the normal join time; RSS ≤ {SYBIL_RSS_GOAL_MB:g} MB "
        "per agent; the store bounded",
        method=(
            "three honest agents; a hostile peer admitted by one sends genuine self-signed cards from fresh "
            f"keys (expiry 2106, {SYBIL_METADATA_BYTES}-byte metadata pad) at 0.8 MB/s; once every agent is "
            "quiet a new honest agent is spawned and timed from spawn to all-see-all (the same measure "
            "before the flood gives the normal join time)"
        ),
        policy=(
            "a peer seen first-hand, or reachable without passing through the flooding neighbour, outranks "
            "the flood: the table is bounded, and when it is full the flooding neighbour's own newcomers "
            "are refused while anyone else's take the flood's places (agent.core.occupancy)"
        ),
        goals=(
            Goal("new honest peer in every graph after the flood", join, JOIN_GOAL_S, unit="s"),
            Goal("peak RSS of any agent", peak_rss, SYBIL_RSS_GOAL_MB, unit="MB"),
            Goal("peers in the largest store", max(store_peers.values()), max_peers, unit="peers"),
        ),
        details={
            "cards_sent": plan.sybil_cards,
            "metadata_pad_bytes": SYBIL_METADATA_BYTES,
            "normal_join_s": None if normal_join is None else round(normal_join, 3),
            "join_after_flood_s": None if join is None else round(join, 3),
            "join_timeout_s": JOIN_TIMEOUT_S,
            "rss_mb": {k: round(v, 2) for k, v in rss.items()},
            "store_peers": store_peers,
            "store_mb": store_mb,
            "rejected_capacity": capacity,
            "max_peers": max_peers,
            "hostile_link_closed": link_closed,
            "attack_window_s": [round(attack_from, 2), round(attack_to, 2)],
        },
        series=series,
        duration_s=time.monotonic() - started,
    )
