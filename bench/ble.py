"""What a BLE node costs and how fast the mesh follows it: attach, bytes per hour, Pi CPU, departure.

    python -m bench.ble [--quick] [--out bench/ble.json] [--doc docs/BLE_PERFORMANCE.md]

Four figures, each beside its goal (issue 12). Everything runs in this process; the nodes are
``agent.sim.ble.VirtualNode`` (a Bumble GATT peripheral running the node firmware's own
``leaf.py`` and pure-Python Ed25519) on the node firmware's defaults (5 s keepalive, 15 s dead,
250 ms advertising), the Pis are ``agent.runtime.Agent`` runtimes with the production
``BleTransport`` on Bumble virtual adapters, and [ble] is the default's timing.

a. **Attach**: a new node switched on, heard by pi0 at 1 m and pi1 at about 2 m (pi2 out of range,
   it learns the node over the LAN on loopback), until every one of the three Pis shows it with a
   Bluetooth connection (median of the attaches); also until pi0 alone does. The node's own cost
   is counted: Ed25519 signatures made during the attach (``LeafNode.stats["signatures"]``, the
   card, each link's PROOF, each links record). The signing time is quoted from
   ``bench/micropython.json`` (the MicroPython WebAssembly port, measured by
   ``bench/micropython.py``); an ESP32's attach cost is **estimated** as signatures x its signing
   time, taking the ESP32 to be 10 to 100 times slower than that port (not measured).
b. **Bytes per hour, quiet mesh**: virtual time on ``agent.sim.leaf_wire`` (Bumble in real time
   is too slow for an hour): one router (a host ``Engine``), one firmware leaf attached to it over
   a BLE link spec (244-byte frames, 5 s / 15 s), and 10, 100 or 1,000 other peers in the router's
   mesh, held by the router as their pre-signed cards and links records (``held_records``: in a
   quiet hour nobody re-signs, records live 24 h); at 10 peers also as 10 real host engines on
   LAN links to the router, as a cross-check that the leaf sees what a router in a live mesh
   sends it. Counted after a 60 s settle, over one hour: frame bytes the node sends (ATT
   notifications) and receives (ATT writes), and frames; the ATT/L2CAP headers (7 bytes a frame)
   come on top. Goal: flat in the mesh's size.
c. **Pi CPU per served node**: one Pi alone (its Agent, BleTransport on one virtual adapter, no
   LAN) serving 0, 1, 2 and 4 attached nodes, interleaved round by round; for each, this process's
   CPU time over a steady window (``time.process_time``). That includes the Bumble controllers and
   hosts on both sides of every virtual link and the virtual nodes' firmware, which a Pi does not
   run: the slope per node is an upper bound, and one window at 4 nodes under ``cProfile`` says
   which share is whose (the agent's own modules; the bleak backend over Bumble standing in for
   BlueZ; Bumble; the node firmware; asyncio and the rest).
d. **Departure**: each attached node switched off (its connections end, as a supervision timeout
   or a disconnect ends them on a board) until no Pi's graph shows it (median). Goal <= 6 s.

A measurement, not a test: nothing is asserted. Prints tables, writes JSON and the Markdown page.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import __version__
from agent.core.engine import Engine
from agent.core.linkspec import LinkSpec
from agent.core.records import ConnectionType, LinkEntry, Links, make_card, sign_record
from agent.runtime.ble_demo import BlePi, ble_pis, sees
from agent.sim.ble import VirtualAir, VirtualNode
from agent.sim.leaf_node import LeafNode, NodeIdentity
from agent.sim.leaf_wire import LeafWire
from agent.state.store import MemoryCounter
from agent.transports.ble_settings import BleSettings
from bench.common import goal, median, progress, rounded
from bench.machine import describe

ROOT: Final = Path(__file__).resolve().parent
DEFAULT_OUT: Final = ROOT / "ble.json"
DEFAULT_DOC: Final = ROOT.parent / "docs" / "BLE_PERFORMANCE.md"
MICROPYTHON: Final = ROOT / "micropython.json"
NOW: Final = 1_800_000_000.0
HOUR: Final = 3600.0
#: [ble] as shipped (5 s keepalive, 15 s dead, as the node firmware's node.json defaults).
SETTINGS: Final = BleSettings(enabled=True)
KEEPALIVE: Final = SETTINGS.keepalive_interval
DEAD: Final = SETTINGS.dead_interval
#: A node's BLE link as the transport brings it up at a 247-byte ATT MTU.
BLE_LINK: Final = LinkSpec(
    ConnectionType.BLUETOOTH, mtu=244, keepalive_interval=KEEPALIVE, dead_interval=DEAD
)
LAN_LINK: Final = LinkSpec(ConnectionType.ACCESS_POINT)
#: What a BLE link adds per frame on top of the frame: ATT opcode + handle, L2CAP header.
ATT_L2CAP_BYTES: Final = 7
#: The ESP32 estimate: this many times slower than the WebAssembly port (bench/micropython.py).
ESP32_SLOWER: Final = (10, 100)
DEPARTURE_GOAL_S: Final = 6.0
#: How long any one wait may take before the bench gives up (a loaded 2-core machine).
PATIENCE: Final = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How much work each figure does."""

    name: str
    attaches: int
    quiet_sizes: tuple[int, ...]
    quiet_hours: float
    cpu_rounds: int
    cpu_window_s: float
    cpu_nodes: tuple[int, ...] = (0, 1, 2, 4)


QUICK: Final = Plan(
    "quick", attaches=5, quiet_sizes=(10, 100, 1000), quiet_hours=1.0, cpu_rounds=2, cpu_window_s=3.0
)
FULL: Final = Plan(
    "full", attaches=9, quiet_sizes=(10, 100, 1000), quiet_hours=1.0, cpu_rounds=5, cpu_window_s=10.0
)


# ---------------------------------------------------------------------- b. quiet-mesh bytes


def _keypair(rng: random.Random) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _engine(rng: random.Random, name: str, held: Sequence[bytes] = ()) -> Engine:
    private, public = _keypair(rng)
    return Engine(
        private_key=private,
        public_key=public,
        counters=MemoryCounter(),
        card=make_card(name, "Linux", __version__, {"room": name}),
        now=NOW,
        rng=rng.randbytes,
        held_records=held,
    )


def mesh_records(peers: int, router: bytes, rng: random.Random) -> list[bytes]:
    """A card and a links record from each of ``peers`` keys, each linked to the router and to one
    other peer (what a router in a settled mesh holds), valid for a day."""
    keys = [_keypair(rng) for _ in range(peers)]
    expiry = int(NOW + 86_400)
    out = []
    for i, (private, public) in enumerate(keys):
        card = make_card(f"peer-{i:04d}", "Linux", __version__, {"room": f"r{i % 40}"})
        out.append(sign_record(private, public, 1, expiry, card).raw)
        neighbour = keys[(i + 1) % peers][1][:8]
        entries = sorted({router[:8], neighbour})
        links = Links(tuple(LinkEntry(pid, ConnectionType.ACCESS_POINT, None) for pid in entries))
        out.append(sign_record(private, public, 2, expiry, links).raw)
    return out


def quiet_hour(peers: int, *, real_engines: bool, hours: float = 1.0, seed: int = 1) -> dict[str, Any]:
    """One leaf's traffic on its router link over ``hours`` of a quiet mesh of ``peers`` others."""
    rng = random.Random(seed)
    wire = LeafWire(NOW)
    if real_engines:
        router = _engine(rng, "router")
        for i in range(peers):
            wire.connect(router, _engine(rng, f"peer-{i}"), LAN_LINK)
    else:
        router_private, router_public = _keypair(rng)
        held = mesh_records(peers, router_public, rng)
        router = Engine(
            private_key=router_private,
            public_key=router_public,
            counters=MemoryCounter(),
            card=make_card("router", "Linux", __version__, {}),
            now=NOW,
            rng=rng.randbytes,
            held_records=held,
        )
    node = LeafNode(
        rng.randbytes(32),
        NodeIdentity("node-kitchen", "MicroPython 1.27.0 esp32", metadata={"room": "kitchen"}),
        wall=lambda: wire.now,
        urandom=rng.randbytes,
        keepalive_s=KEEPALIVE,
        dead_s=DEAD,
    )
    link = wire.connect(router, node, BLE_LINK)
    wire.run_until(wire.now + 60.0)
    in_graph = len(router.graph(wire.now).peers())
    held_records = router.held_record_count()
    # Held peers are not in the router's graph (no links record of the router lists them) but it
    # holds and syncs their records; real engines are in it. The leaf is in it either way.
    settled = held_records >= 2 * peers + 2 and in_graph >= (peers + 2 if real_engines else 2)
    if not node.established or not settled:
        raise RuntimeError(
            f"did not settle: leaf links {node.established}, {held_records} records, {in_graph} peers"
        )
    attach_sent, attach_received = wire.sent(link, node), wire.sent(link, router)
    signatures = node.stats["signatures"]
    wire.run_until(wire.now + hours * HOUR)
    if not node.established or router.held_record_count() < held_records:
        raise RuntimeError("the leaf's link ended or the router dropped records during the quiet hour")
    sent, received = wire.sent(link, node), wire.sent(link, router)
    return {
        "peers": peers,
        "mesh": "real host engines on LAN links" if real_engines else "pre-signed records held by the router",
        "hours": hours,
        "router_holds_records": held_records,
        "router_graph_peers": in_graph,
        "attach_bytes_sent": attach_sent.bytes,
        "attach_bytes_received": attach_received.bytes,
        "bytes_sent_per_hour": rounded((sent.bytes - attach_sent.bytes) / hours),
        "bytes_received_per_hour": rounded((received.bytes - attach_received.bytes) / hours),
        "frames_sent_per_hour": rounded((sent.frames - attach_sent.frames) / hours),
        "frames_received_per_hour": rounded((received.frames - attach_received.frames) / hours),
        "signatures_per_hour": rounded((node.stats["signatures"] - signatures) / hours),
    }


def measure_quiet(plan: Plan, on_progress: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    for peers in plan.quiet_sizes:
        started = time.process_time()
        rows.append(quiet_hour(peers, real_engines=False, hours=plan.quiet_hours))
        on_progress(f"quiet hour, {peers} held peers: {time.process_time() - started:.1f} s CPU")
    rows.append(quiet_hour(10, real_engines=True, hours=plan.quiet_hours))
    on_progress("quiet hour, 10 real engines")
    held = [r for r in rows if r["mesh"].startswith("pre-signed")]
    totals = [r["bytes_sent_per_hour"] + r["bytes_received_per_hour"] for r in held]
    spread = (max(totals) - min(totals)) / min(totals)
    return {
        "title": "bytes per hour a node sends and receives in a quiet mesh",
        "goal": "flat in the mesh's size (10 / 100 / 1,000 peers behind the router)",
        "timing": f"[ble] keepalive {KEEPALIVE:g} s, dead {DEAD:g} s; 244-byte frames",
        "per_frame_on_air_extra_bytes": ATT_L2CAP_BYTES,
        "rows": rows,
        "goals": [
            goal("spread of bytes/hour across sizes, largest-smallest over smallest", spread, 0.05, True)
        ],
    }


# ---------------------------------------------------------------------- a, d. attach and departure


async def _wait(condition: Callable[[], bool], what: str) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > PATIENCE:
            raise RuntimeError(f"gave up after {PATIENCE:g} s waiting for {what}")
        await asyncio.sleep(0.01)
    return loop.time() - started


def _gone(pis: Sequence[BlePi], node: VirtualNode) -> bool:
    return all(p.agent.engine.graph(p.agent.now()).peer(node.peer_key_string) is None for p in pis)


async def _one_attach(
    pis: Sequence[BlePi], air: VirtualAir, name: str, samples: dict[str, list[float]]
) -> None:
    """A new node switched on until every Pi shows it, then off until none does."""
    heard = {pis[0].adapter: -59, pis[1].adapter: -66, pis[2].adapter: None}
    node = air.node(name, {"room": "kitchen"}, heard, KEEPALIVE, DEAD)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await node.start()
    await _wait(lambda: sees(pis[0].agent, node), "the first Pi")
    samples["first_pi_s"].append(loop.time() - started)
    await _wait(lambda: all(sees(p.agent, node) for p in pis), "every Pi")
    samples["every_pi_s"].append(loop.time() - started)
    # Both Pis that hear it attach; let the second link and its links record settle.
    await _wait(lambda: len(node.leaf.established) == 2, "the second Pi's link")
    await asyncio.sleep(1.0)
    samples["signatures"].append(node.leaf.stats["signatures"])
    await node.power_off()
    samples["departure_s"].append(await _wait(lambda: _gone(pis, node), "the departure"))


async def _attach_and_depart(root: Path, attaches: int, on_progress: Callable[[str], None]) -> dict[str, Any]:
    air = VirtualAir()
    samples: dict[str, list[float]] = {
        "first_pi_s": [],
        "every_pi_s": [],
        "signatures": [],
        "departure_s": [],
    }
    async with ble_pis(root, air, ("pi0", "pi1", "pi2"), SETTINGS, control_socket=False) as pis:
        await _wait(
            lambda: all(len(p.agent.engine.graph(p.agent.now()).peers()) >= 3 for p in pis), "the LAN mesh"
        )
        for i in range(attaches):
            await _one_attach(pis, air, f"node-{i}", samples)
            on_progress(
                f"attach {i + 1}/{attaches}: every Pi {samples['every_pi_s'][-1]:.2f} s, "
                f"gone {samples['departure_s'][-1]:.2f} s, {samples['signatures'][-1]:g} signatures"
            )
    return samples


def _signing() -> dict[str, Any]:
    measured = json.loads(MICROPYTHON.read_text(encoding="utf-8"))
    figures = measured["figures"]
    return {
        "source": "bench/micropython.json (python -m bench.micropython)",
        "runtime": measured["runtime"],
        "measured_on": measured["machine"].get("date"),
        "sign_ms": figures["sign_ms"],
        "sign_card_ms": figures["sign_card_ms"],
        "sign_links_ms": figures["sign_links_ms"],
        "table_build_ms": figures["table_build_ms"],
    }


def attach_figures(samples: dict[str, list[float]]) -> tuple[dict[str, Any], dict[str, Any]]:
    signing = _signing()
    signatures = median(samples["signatures"])
    per_signature_ms = signing["sign_links_ms"]  # a whole signed record: CBOR + COSE + signature
    wasm_ms = signatures * per_signature_ms
    low, high = (wasm_ms * f / 1000 for f in ESP32_SLOWER)
    attach = {
        "title": "node attach until seen by every Pi (3 Pis, LAN on loopback)",
        "goal": "seconds on a board, dominated by the node's signing (no fixed bound in issue 12)",
        "attaches": len(samples["every_pi_s"]),
        "first_pi_median_s": rounded(median(samples["first_pi_s"])),
        "every_pi_median_s": rounded(median(samples["every_pi_s"])),
        "every_pi_s": [rounded(v) for v in samples["every_pi_s"]],
        "node_signatures_per_attach_median": signatures,
        "node_signatures_note": "the card, a PROOF per Pi attached, a links record per links change "
        "(two Pis hear it)",
        "signing_micropython_wasm": signing,
        "node_signing_wasm_ms": rounded(wasm_ms),
        "esp32_estimate": {
            "measured": False,
            "assumes": f"an ESP32 {ESP32_SLOWER[0]} to {ESP32_SLOWER[1]} x slower than the WebAssembly port",
            "signing_s_low": rounded(low),
            "signing_s_high": rounded(high),
            "formula": "signatures x per-signature time",
        },
    }
    departure = {
        "title": "node switched off until gone from every Pi's graph",
        "goal": f"<= {DEPARTURE_GOAL_S:g} s",
        "departures": len(samples["departure_s"]),
        "median_s": rounded(median(samples["departure_s"])),
        "max_s": rounded(max(samples["departure_s"])),
        "samples_s": [rounded(v) for v in samples["departure_s"]],
        "how": "VirtualNode.power_off ends its connections (a disconnect); a board that vanishes "
        "silently is noticed at the BLE supervision timeout (set by the central; BlueZ's default 420 ms) "
        f"or at worst the leaf link's dead interval ({DEAD:g} s)",
        "goals": [goal("median departure", median(samples["departure_s"]), DEPARTURE_GOAL_S, True, "s")],
    }
    return attach, departure


# ---------------------------------------------------------------------- c. Pi CPU per node


def _share(profile: cProfile.Profile) -> dict[str, float]:
    """The profiled CPU time (own time of each function) by whose code it is, as fractions."""
    stats = pstats.Stats(profile)
    buckets: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, _, _) in raw.items():
        path = filename.replace("\\", "/")
        if "/firmware_bridge/" in path:
            who = "node firmware (leaf.py, ed25519.py)"
        elif "/agent/sim/" in path:
            who = "virtual Bluetooth glue (bleak backend over Bumble, virtual nodes)"
        elif "/agent/" in path:
            who = "the agent (engine, runtime, BleTransport)"
        elif "/bumble/" in path:
            who = "Bumble (controllers, hosts, GATT)"
        elif "/bleak" in path:
            who = "bleak (incl. bleak-retry-connector)"
        else:
            who = "asyncio, stdlib, cryptography, the rest"
        buckets[who] = buckets.get(who, 0.0) + own
    total = sum(buckets.values()) or 1.0
    return {k: rounded(v / total) or 0.0 for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])}


async def _cpu(root: Path, plan: Plan, on_progress: Callable[[str], None]) -> dict[str, Any]:
    air = VirtualAir()
    per_count: dict[int, list[float]] = {n: [] for n in plan.cpu_nodes}
    shares: dict[str, float] = {}
    async with ble_pis(root, air, ("pi",), SETTINGS, lan=False, control_socket=False) as (pi,):
        made = 0

        async def window(count: int, profile: cProfile.Profile | None = None) -> float:
            nonlocal made
            nodes = []
            for _ in range(count):
                made += 1
                nodes.append(air.node(f"n{made}", {"room": "x"}, {pi.adapter: -60}, KEEPALIVE, DEAD))
                await nodes[-1].start()
            await _wait(lambda: all(sees(pi.agent, n) for n in nodes), f"{count} nodes attached")
            await asyncio.sleep(2.0)  # links records and distances settle
            if profile is not None:
                profile.enable()
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.sleep(plan.cpu_window_s)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            if profile is not None:
                profile.disable()
            for n in nodes:
                await n.power_off()
            await _wait(lambda: not any(sees(pi.agent, n) for n in nodes), "the nodes gone")
            return cpu / wall

        for r in range(plan.cpu_rounds):
            order = list(plan.cpu_nodes) if r % 2 == 0 else list(reversed(plan.cpu_nodes))
            for count in order:
                per_count[count].append(await window(count))
            on_progress(
                f"cpu round {r + 1}/{plan.cpu_rounds}: "
                + ", ".join(f"{n} nodes {per_count[n][-1] * 100:.1f} %" for n in plan.cpu_nodes)
            )
        profile = cProfile.Profile(time.process_time)  # CPU, not the loop's idle waits
        await window(max(plan.cpu_nodes), profile)
        shares = _share(profile)
    medians = {n: median(v) for n, v in per_count.items()}
    xs, ys = list(medians), [medians[n] for n in medians]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    agent_share = shares.get("the agent (engine, runtime, BleTransport)", 0.0)
    return {
        "title": "Pi CPU per served node (one Pi, no LAN, nodes attached and quiet)",
        "goal": "small against a Pi's four cores (no fixed bound in issue 12)",
        "what": "this process's CPU time / wall time over each window: the Pi's agent plus Bumble's "
        "controllers and hosts on both ends of every link plus the virtual nodes' firmware",
        "window_s": plan.cpu_window_s,
        "rounds": plan.cpu_rounds,
        "cpu_percent_median_by_nodes": {str(n): rounded(v * 100) for n, v in medians.items()},
        "slope_percent_of_a_core_per_node": rounded(slope * 100),
        "profiled_share_at_max_nodes": shares,
        "agent_share_of_slope_percent_estimate": rounded(slope * 100 * agent_share),
        "machine_note": "an x86 server core; a Pi 4 core is roughly 3 to 5 x slower (not measured)",
    }


# ---------------------------------------------------------------------- the whole


def measure(plan: Plan, on_progress: Callable[[str], None] = progress) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ble-") as tmp:
        root = Path(tmp)
        samples = asyncio.run(_attach_and_depart(root / "mesh", plan.attaches, on_progress))
        attach, departure = attach_figures(samples)
        cpu = asyncio.run(_cpu(root / "cpu", plan, on_progress))
    quiet = measure_quiet(plan, on_progress)
    return {
        "what": "BLE nodes: attach, bytes per hour in a quiet mesh, Pi CPU per node, departure",
        "mode": plan.name,
        "machine": describe(ROOT.parent),
        "figures": {"attach": attach, "quiet_bytes": quiet, "cpu": cpu, "departure": departure},
    }


def tables(result: dict[str, Any]) -> str:
    f = result["figures"]
    a, q, c, d = f["attach"], f["quiet_bytes"], f["cpu"], f["departure"]
    est = a["esp32_estimate"]
    lines = [
        f"a. attach ({a['attaches']} nodes, 3 Pis): first Pi {a['first_pi_median_s']} s, "
        f"every Pi {a['every_pi_median_s']} s (median)",
        f"   node signatures per attach {a['node_signatures_per_attach_median']:g}: "
        f"{a['node_signing_wasm_ms']} ms under MicroPython/WebAssembly; "
        f"ESP32 ESTIMATE (not measured) {est['signing_s_low']}-{est['signing_s_high']} s",
        "",
        f"b. quiet mesh, bytes/hour on the node's link ({q['timing']}; +{ATT_L2CAP_BYTES} B/frame on air)",
        f"   {'peers':>6} {'mesh':<40} {'sent B/h':>9} {'recv B/h':>9} {'frames out/in':>14} {'sigs/h':>6}",
    ]
    for r in q["rows"]:
        frames = f"{r['frames_sent_per_hour']:g}/{r['frames_received_per_hour']:g}"
        lines.append(
            f"   {r['peers']:>6} {r['mesh']:<40} {r['bytes_sent_per_hour']:>9g} "
            f"{r['bytes_received_per_hour']:>9g} {frames:>14} {r['signatures_per_hour']:>6g}"
        )
    lines += [
        "",
        "c. Pi CPU (% of one core) by attached nodes: "
        + ", ".join(f"{n}: {v}" for n, v in c["cpu_percent_median_by_nodes"].items())
        + f"; slope {c['slope_percent_of_a_core_per_node']} % per node (upper bound), "
        f"the agent's own share about {c['agent_share_of_slope_percent_estimate']} %",
        "   profiled share: "
        + "; ".join(f"{k} {v:.0%}" for k, v in c["profiled_share_at_max_nodes"].items()),
        "",
        f"d. departure: median {d['median_s']} s, max {d['max_s']} s over {d['departures']} "
        f"(goal {d['goal']})",
    ]
    return "\n".join(lines)


def document(result: dict[str, Any], seconds: float) -> str:
    """docs/BLE_PERFORMANCE.md: the figures beside their goals, how they were measured."""
    f, m = result["figures"], result["machine"]
    a, q, c, d = f["attach"], f["quiet_bytes"], f["cpu"], f["departure"]
    est, signing = a["esp32_estimate"], a["signing_micropython_wasm"]
    held = [r for r in q["rows"] if r["mesh"].startswith("pre-signed")]
    flat = ", ".join(f"{r['bytes_sent_per_hour'] + r['bytes_received_per_hour']:g}" for r in held)
    lines = [
        "# BLE nodes: figures",
        "",
        "<!-- Generated by python -m bench.ble: edit bench/ble.py, not this file. -->",
        "",
        f"Generated by `python -m bench.ble{' --quick' if result['mode'] == 'quick' else ''}` "
        f"({result['mode']} mode) on {m['date']}, in {seconds:.0f} s, on {m['cpu_model']} "
        f"({m['cores']} cores, shared with other work), Python {m['python']}, commit `{m['git_commit']}`. "
        "The raw numbers are in `bench/ble.json`; how each is measured is the module docstring of "
        "`bench/ble.py`. Nodes are virtual (Bumble peripherals running the node firmware's own "
        "`leaf.py` and Ed25519 under CPython) on the firmware's defaults (5 s keepalive, 15 s dead, "
        "250 ms advertising); the Pis are in-process agents with the production `BleTransport` on "
        "Bumble virtual adapters, [ble] as shipped.",
        "",
        "| figure | measured | goal |",
        "| --- | --- | --- |",
        f"| a. node attach until seen by every Pi (3 Pis, LAN between) | median {a['every_pi_median_s']} s "
        f"over {a['attaches']} attaches (first Pi {a['first_pi_median_s']} s) | {a['goal']} |",
        f"| a. the node's signing per attach | {a['node_signatures_per_attach_median']:g} signatures, "
        f"{a['node_signing_wasm_ms']} ms under MicroPython (WebAssembly); **ESP32: ESTIMATE, not measured**, "
        f"{est['signing_s_low']} to {est['signing_s_high']} s | off the BLE hot path |",
        f"| b. bytes/hour a quiet node sends + receives, 10 / 100 / 1,000 peers | {flat} | {q['goal']} |",
        f"| c. Pi CPU per served node | {c['slope_percent_of_a_core_per_node']} % of a core per node "
        f"(upper bound: includes the virtual radio), the agent's own part about "
        f"{c['agent_share_of_slope_percent_estimate']} % | {c['goal']} |",
        f"| d. node switched off until gone from every Pi | median {d['median_s']} s, max {d['max_s']} s "
        f"over {d['departures']} | {d['goal']} |",
        "",
        "## a. Attach and the node's signing",
        "",
        "A new node (fresh key) is switched on, heard by pi0 at 1 m and pi1 at about 2 m; pi2 does not "
        "hear it and learns it over the LAN. Timed from switch-on until every Pi's graph shows the node "
        "with a Bluetooth connection. Each attach: " + ", ".join(f"{v} s" for v in a["every_pi_s"]) + ".",
        "",
        f"The node signs {a['node_signatures_per_attach_median']:g} times per attach "
        f"(`LeafNode.stats['signatures']`: {a['node_signatures_note']}). A whole signed record takes "
        f"{signing['sign_links_ms']} ms under the MicroPython WebAssembly port ({signing['measured_on']}, "
        f"`{signing['source']}`; a bare signature {signing['sign_ms']} ms, the fixed-base table "
        f"{signing['table_build_ms']} ms once per boot). On an ESP32 the attach costs about signatures x "
        f"its signing time: **an estimate, not measured**, taking the ESP32 {est['assumes'][9:]}, "
        f"{est['signing_s_low']} to {est['signing_s_high']} s of signing. The virtual air has no "
        "connection intervals or radio delays: on hardware, connecting and discovering the service "
        "add their own time (not measured here), and the signing is the node's part of it.",
        "",
        "## b. Bytes per hour in a quiet mesh",
        "",
        f"Virtual time (`agent.sim.leaf_wire`), one hour after a 60 s settle; {q['timing']}. The mesh "
        "behind the router: its pre-signed cards and links records held by the router (no re-signing "
        "happens in a quiet hour: records live 24 h), and at 10 peers also real host engines on LAN "
        f"links, as a cross-check. Frame bytes; a BLE link adds {ATT_L2CAP_BYTES} bytes a frame "
        "(ATT and L2CAP headers) and its link layer's own.",
        "",
        "| peers | mesh | router holds records | sent B/h | received B/h | frames out/in per h "
        "| signatures/h |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['peers']} | {r['mesh']} | {r['router_holds_records']} | {r['bytes_sent_per_hour']:g} | "
            f"{r['bytes_received_per_hour']:g} | {r['frames_sent_per_hour']:g} / "
            f"{r['frames_received_per_hour']:g} | {r['signatures_per_hour']:g} |"
        )
    lines += [
        "",
        "Flat by design: a router floods nothing to a leaf and its SUMMARY to it covers the leaf's own "
        "records only (docs/LEAF_PROFILE.md), so a quiet node's whole cost is one 12-byte SUMMARY "
        "keepalive each way per keepalive interval.",
        "",
        "## c. Pi CPU per served node",
        "",
        f"One Pi alone (no LAN), 0 / 1 / 2 / 4 nodes attached and quiet, {c['rounds']} interleaved rounds "
        f"of {c['window_s']:g} s windows; this process's CPU time over wall time, median per count "
        "(% of one core): "
        + ", ".join(f"{n} nodes {v} %" for n, v in c["cpu_percent_median_by_nodes"].items())
        + f". Least-squares slope: {c['slope_percent_of_a_core_per_node']} % per node. {c['what']}, so "
        "it is an upper bound. Where the CPU went, one profiled window at 4 nodes (own CPU time per "
        "function, by whose code it is):",
        "",
        "| whose code | share |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v:.1%} |" for k, v in c["profiled_share_at_max_nodes"].items()]
    lines += [
        "",
        "On a Pi the virtual radio's share is BlueZ and the controller's instead, and bleak's backend "
        "is D-Bus; " + c["machine_note"] + ".",
        "",
        "## d. Departure",
        "",
        "Each attached node switched off until no Pi's graph shows it: "
        + ", ".join(f"{v} s" for v in d["samples_s"])
        + f". {d['how']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter CPU windows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="the Markdown page to write")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = measure(QUICK if args.quick else FULL)
    print(tables(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.doc.write_text(document(result, time.monotonic() - started), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
