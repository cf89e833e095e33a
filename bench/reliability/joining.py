"""A fresh peer joining a mesh that holds 16 MB of records, with real processes.

**big_join.** Two honest agents, ``a`` and ``b``, linked. A feeder (a peer with a
genuine key, admitted by ``a``) brings a tree of genuine peers under it: cards
with near-4 KiB metadata and links records, every peer reachable, until the
records total the plan's size; ``a`` syncs them to ``b``. Once both hold all of
it, a fresh agent ``c`` starts and is pushed the whole mesh by both neighbours.
An honest link drop is any link closed on ``a``, ``b`` or ``c`` (the engine's
``links.closed``) or the feeder's link closed, between ``c``'s spawn and its
convergence (``c``'s graph shows every peer).
"""

from __future__ import annotations

import time

from agent.core.keys import public_key_from_string
from agent.runtime.control import request
from agent.transports.lan_settings import LanSettings
from bench.common import TIMES
from bench.processes import AgentProcess, Launcher
from bench.reliability.common import (
    Goal,
    Plan,
    Result,
    Sampler,
    progress,
    stats_of,
    tcp_port,
    wait_all_see_all,
    wait_quiet,
)
from bench.reliability.peer import HostilePeer, LinkKeeper, records_frames, tree

#: Cards near the 4 KiB record limit.
METADATA_BYTES = 3800
#: A near-4 KiB card and its links record.
PEER_BYTES = 4096 + 200
CONVERGE_TIMEOUT_S = 600.0


def _accepted(proc: AgentProcess) -> int:
    return stats_of(proc).get("records.accepted", 0)


def _closed(proc: AgentProcess) -> int:
    return stats_of(proc).get("links.closed", 0)


def _graph_size(proc: AgentProcess) -> int:
    graph = request(proc.state_dir, {"op": "graph"}, timeout=60)["graph"]
    return len(graph["remote_peers"])


def big_join(plan: Plan) -> Result:
    """Scenario 6: a fresh peer joins a mesh holding ``plan.join_mesh_bytes`` of records."""
    started = time.monotonic()
    mtu = LanSettings().max_frame_bytes
    with Launcher("presence-rel-join-") as launcher:
        a, b = launcher.spawn("join-a"), launcher.spawn("join-b")
        for proc in (a, b):
            launcher.wait_ready(proc)
        if wait_all_see_all([a, b], 30) is None:
            raise RuntimeError("a and b never linked")
        feeder = HostilePeer(tcp_port(launcher, public_key_from_string(a.peer_key)), name="feeder")
        feeder.handshake()
        keeper = LinkKeeper()
        keeper.add(feeder)
        keeper.start()
        try:
            peers = max(4, plan.join_mesh_bytes // PEER_BYTES)
            progress(f"  big_join: signing {peers:,} peers' cards and links records")
            fed = tree(feeder.public_key, peers, METADATA_BYTES)
            progress(f"  big_join: feeding {fed.bytes / 1e6:.1f} MB to a at 0.8 MB/s")
            raws = [feeder.links(fed.children).raw, *(r.raw for r in fed.records)]
            feeder.send_paced(records_frames(raws, mtu))
            expected = len(fed.records)
            progress("  big_join: waiting for a and b to hold every record")
            deadline = time.monotonic() + CONVERGE_TIMEOUT_S
            while min(_accepted(a), _accepted(b)) < expected and time.monotonic() < deadline:
                time.sleep(0.5)
            wait_quiet(lambda: _accepted(a) + _accepted(b), 2.0, 60)
            before = {p.name: _closed(p) for p in (a, b)}
            feeder_closed_before = feeder.closed
            c = launcher.spawn("join-c")
            sampler = Sampler(c, 0.25, control=False)
            launcher.wait_ready(c)
            sampler.start()
            progress("  big_join: c joined; waiting for it to hold every record")
            while _accepted(c) < expected and time.monotonic() < deadline:
                time.sleep(0.5)
            held = _accepted(c)
            converged = time.perf_counter() - c.started_at
            wait_quiet(lambda: _accepted(c), 2.0, 60)
            shown = _graph_size(c)
            time.sleep(1.0)
            after = {p.name: _closed(p) for p in (a, b, c)}
            flooding = {p.name: stats_of(p).get("transport.lan.peer_flooding", 0) for p in (a, b, c)}
            feeder_dropped = feeder.closed and not feeder_closed_before
            sampler.stop()
        finally:
            keeper.stop()
    drops = sum(after[name] - before.get(name, 0) for name in after) + int(feeder_dropped)
    progress(
        f"big_join: c held {held:,} of {expected:,} records {converged:.1f} s after spawn, shows {shown:,} "
        f"peers; link drops {drops} (peer_flooding {flooding})"
    )
    return Result(
        key="big_join",
        title=f"a fresh peer joining a mesh that holds {fed.bytes / 1e6:.1f} MB of records",
        goal="no honest link drops",
        method=(
            f"two linked agents hold {len(fed.records) // 2:,} peers' near-4 KiB cards and links "
            "records (fed through one of them by a peer they are reachable through); a fresh third agent "
            "starts and is synced by both; links closed anywhere until it holds everything are counted"
        ),
        policy=(
            "a sender paces its sync to what the receiver will accept: the LAN transport hands the engine a "
            f"send budget of 0.8 {TIMES} the receive limit both sides use, so keepalives still get through"
        ),
        goals=(Goal("honest links dropped while the fresh peer synced", drops, 0, unit="links"),),
        details={
            "mesh_bytes": fed.bytes,
            "peers": len(fed.records) // 2,
            "records": expected,
            "fresh_peer_accepted": held,
            "fresh_peer_graph_peers": shown,
            "fresh_peer_converged_s": round(converged, 2),
            "links_closed": {k: after[k] - before.get(k, 0) for k in after},
            "feeder_link_dropped": feeder_dropped,
            "peer_flooding": flooding,
        },
        series={"join-c": sampler.series("rss_mb")},
        duration_s=time.monotonic() - started,
    )
