"""``python -m agent.sim``: run a simulated mesh and report how it converges.

Example::

    python -m agent.sim --peers 1000 --topology random_geometric --seed 1 --json sim.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent.sim.network import LORA, LinkModel, Simulation
from agent.sim.topology import TOPOLOGY_NAMES, build


def _all_see_all(sim: Simulation, expected: int) -> bool:
    return all(p.engine.peer_count(sim.now) == expected for p in sim.peers if p.alive)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(peers: int, topology: str, seed: int, link: str) -> dict[str, Any]:
    """Build, converge, change metadata, kill a peer; return the figures."""
    model = LORA if link == "lora" else LinkModel()
    topo = build(topology, peers, seed)
    sim = Simulation(seed=seed)
    wall = time.perf_counter()
    nodes = sim.build(topo, model)
    _progress(f"built {peers} peers, {len(topo.edges)} links ({topology}, {link})")

    # Convergence: held-record counts are cheap to poll; confirm with full graphs at the end.
    target = 2 * peers
    step = 0.05 if link == "lan" else 5.0
    start = sim.now
    while True:
        sim.run_for(step)
        done = sum(1 for p in nodes if p.engine.held_record_count() >= target)
        _progress(f"  t={sim.now - start:8.2f}s simulated: {done}/{peers} peers hold every record")
        if done == peers and _all_see_all(sim, peers):
            break
        if sim.now - start > (600 if link == "lan" else 36000):
            raise SystemExit("mesh did not converge")
    converge_sim = sim.now - start
    converge_wall = time.perf_counter() - wall

    origin = nodes[0]
    origin.presence.set_peer_metadata({"demo": "changed"})
    card = origin.engine.own_records[0]
    t0 = sim.now
    # Polling held records is cheap; the graphs are checked once it holds everywhere.
    sim.run_until_true(
        lambda: all(card in p.engine.records_of(origin.engine.public_key) for p in nodes),
        timeout=3600,
        check_every=step / 5,
    )
    assert all(
        p.engine.graph(sim.now).peer(origin.peer_key_string).peer_metadata == {"demo": "changed"}  # type: ignore[union-attr]
        for p in nodes[:: max(1, peers // 20)]
    )
    metadata_sim = sim.now - t0

    victim = nodes[-1]
    sim.kill(victim)
    t0 = sim.now
    sim.run_until_true(
        lambda: all(p.engine.peer_count(sim.now) == peers - 1 for p in nodes if p.alive),
        timeout=36000,
        check_every=step,
    )
    departure_sim = sim.now - t0
    total_wall = time.perf_counter() - wall
    bytes_sent = sum(p.engine.stats["bytes.sent"] for p in nodes)
    frames_sent = sum(p.engine.stats["frames.sent"] for p in nodes)
    sim.close()
    return {
        "peers": peers,
        "topology": topology,
        "link": link,
        "seed": seed,
        "links": len(topo.edges),
        "eccentricity_of_origin": topo.eccentricity(0),
        "converge_simulated_s": round(converge_sim, 3),
        "converge_wall_s": round(converge_wall, 2),
        "metadata_change_simulated_s": round(metadata_sim, 3),
        "departure_simulated_s": round(departure_sim, 3),
        "total_wall_s": round(total_wall, 2),
        "frames_sent_per_peer": round(frames_sent / peers, 1),
        "bytes_sent_per_peer": round(bytes_sent / peers, 1),
        "signature_verifications": sim.codec.verifications,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.sim", description=__doc__)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--topology", choices=TOPOLOGY_NAMES, default="random_geometric")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--link", choices=("lan", "lora"), default="lan")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    args = parser.parse_args(argv)
    figures = run(args.peers, args.topology, args.seed, args.link)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
