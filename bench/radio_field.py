"""Figure 8: a LoRa field of Pis on one broadcast channel, and leaves on a router (issue 10's figures).

**The field.** ``n`` Pis at seeded random positions (:func:`agent.sim.radio_field.radio_field`,
range = the channel's median range, so the field's radio edges are the medium's neighbours; the
first seed whose diameter is 3..5 hops is taken), every one running the real engine with one
broadcast interface on one :class:`~agent.sim.radio.RadioMedium` (collisions and capture,
half-duplex radios, each transmitter's EU868 g1 1 % duty-cycle ledger, which raises if exceeded),
at SF7/125 kHz and at SF10/125 kHz, each without and with 10 % loss (:class:`LossyMedium`: every
reception that survived the channel is then dropped with probability 0.1, independently per
receiver). One BLE sensor hangs off the origin over a point-to-point wire, for the link change.

**Formation** runs in steps of ``STEP`` virtual seconds until every peer holds every peer in its
graph and every peer (the sensor too) holds the same records (equal summaries: the sync repairs
that follow the graph are formation, not quiet-hour traffic), or ``formation_hours`` pass; the
curve is the fraction of the ``n x n`` graph entries held.
Forming is budget-bound (every peer's share of the allowance is ~11 s an hour for handshakes and
floods), so the figures below are then measured on the field as formed, and say how far it formed.

**Figures, on the formed field**, in this order:

1. *Transmissions per node per flooded record*: every frame on the air that carries a piece of
   the origin's new card (metadata change) or links record (link change), from the change until
   ``TAIL`` after it reached everyone, divided by ``n``. Baseline, from the same field's neighbour
   counts: one-link-per-neighbour flooding sends a record on every link but the one it came in on,
   so ``(deg(origin) + sum over the others of (deg - 1)) / n`` per node: a lower bound for any
   per-link flood (it cannot skip a neighbour without knowing what it holds).
2. *Time for the change to reach every peer* that held the origin's previous record, against the
   hop-optimal bound: hops from the origin to the farthest of them (BFS over the medium's
   neighbours) x (airtime of the frame carrying the record + the dongle model's mean
   listen-before-talk back-off, 4.5 slots of a 32-byte frame).
3. *Quiet hour*: each node's airtime in an hour without a change (after a settle), max and median.
4. *Duty cycle*: the most airtime any node sent in any rolling hour of the whole run, as a fraction.
5. *A powered-off node* (a non-origin node whose loss keeps the field connected): time until it
   is gone from every live peer's graph, against 3 x its dead interval + the link change's
   measured flooding time, beside Meshtastic's 2-hour "online" window.

**Runs.** Each condition runs ``Mode.field_runs`` times (3 in the full run) on independent
simulator seeds (the peers' keys, every timer, which receptions the loss drops) over the same field,
on every core; :func:`summarise_runs` makes them one result: each figure is the median run's, the
duty cycle the worst run's, the formation the least formed run's, beside every run's value.

**Leaves** (issue 10's figure 6): one router with ``LEAVES`` firmware leaves
(:class:`agent.sim.leaf_node.LeafNode`, the node's own ``leaf.py``), half on 20-byte and half on
244-byte Bluetooth MTUs, in a LAN mesh of 10, 100 and 1,000 peers behind it (random geometric,
30 s keepalives), while the mesh churns (one metadata change per 10 peers per window): bytes each
leaf received over ``LEAF_WINDOW`` virtual seconds, scaled to an hour.
"""

from __future__ import annotations

import functools
import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from agent.api.presence import Presence
from agent.core.airtime import LoRaModulation
from agent.core.engine import Engine
from agent.core.events import LinkId
from agent.core.linkspec import LinkSpec
from agent.core.medium import (
    DEAD_KEEPALIVES,
    MEDIUM_HEADER_BYTES,
    MediumSpec,
    parse_medium_frame,
    quiet_keepalive,
)
from agent.core.records import ConnectionType, RecordKind
from agent.core.wire import FRAME_WHOLE, MessageType, decode_message, encode_message
from agent.sim import LinkModel, RadioTransmission, SimPeer, Simulation, Transmission, build
from agent.sim.leaf_node import LeafNode, NodeIdentity
from agent.sim.network import _SimOutputs
from agent.sim.radio import Delivery, RadioConfig, RadioMedium
from agent.sim.radio_field import RadioField, radio_field
from bench.common import TIMES, Mode, goal, progress, ratio, rounded

HOUR = 3600.0
ALLOWANCE = 0.01
#: The quiet-hour goal: a tenth of the 1 % allowance, in seconds per hour.
QUIET_GOAL_S = ALLOWANCE * 0.1 * HOUR
MESHTASTIC_ONLINE_S = 2 * HOUR
STEP = 900.0
SETTLE = 600.0
TAIL = 120.0
CHANGE_TIMEOUT = 3 * HOUR
POLL = 0.05
#: Run ``r`` of a condition seeds its simulator with the field's seed + r times this (a prime).
RUN_SEED_STRIDE = 7919
SENSOR = LinkModel(connection_type=ConnectionType.BLUETOOTH, latency=0.02, mtu=244)
BASELINE = (
    "one-link-per-neighbour flooding on the same field, from its neighbour counts (a record on every "
    "link but the one it came in on); for the leaves, the same leaves at 10 peers"
)


@dataclass(frozen=True, slots=True)
class Condition:
    label: str
    n: int
    sf: int
    loss: float
    formation_hours: float
    #: Changes of each kind measured on the formed field (the figures are their medians).
    changes: int = 5


def conditions(mode: Mode) -> list[Condition]:
    if mode.quick:
        return [Condition("8 Pis, SF7", 8, 7, 0.0, 6, changes=3)]
    return [
        Condition("8 Pis, SF7", 8, 7, 0.0, 12),
        Condition("8 Pis, SF7, 10 % loss", 8, 7, 0.1, 12),
        Condition("8 Pis, SF10", 8, 10, 0.0, 48),
        Condition("8 Pis, SF10, 10 % loss", 8, 10, 0.1, 48),
        Condition("30 Pis, SF7", 30, 7, 0.0, 24),
        Condition("30 Pis, SF7, 10 % loss", 30, 7, 0.1, 24),
        Condition("30 Pis, SF10", 30, 10, 0.0, 48),
        Condition("30 Pis, SF10, 10 % loss", 30, 10, 0.1, 48),
    ]


class LossyMedium(RadioMedium):
    """A :class:`RadioMedium` that also drops each reception with probability ``loss`` (seeded)."""

    def __init__(
        self,
        positions: Sequence[tuple[float, float]],
        config: RadioConfig,
        seed: int,
        loss: float,
        run: int = 0,
    ):
        super().__init__(positions, config, seed=seed)  # the same seed, the same links: one field
        self.loss = loss
        self.dropped = 0
        self._loss_rng = random.Random(f"loss:{seed}" if run == 0 else f"loss:{seed}:{run}")

    def deliveries(self, now: float) -> list[Delivery]:
        got = super().deliveries(now)
        if not self.loss:
            return got
        kept = [d for d in got if self._loss_rng.random() >= self.loss]
        self.dropped += len(got) - len(kept)
        return kept


def _slowest_last(value: float | None) -> float:
    """A measure for ranking, where ``None`` (it never happened) ranks after every value."""
    return math.inf if value is None else float(value)


def summarise_changes(repetitions: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated changes of one kind as one: the median repetition's measures (by ratio to the
    hop-optimal time; a change that never reached everyone counts as slowest), the median time
    and transmissions, the worst ratio (``None`` if one never reached everyone) and every
    repetition."""

    def slowness(r: dict[str, Any]) -> float:
        return _slowest_last(r["ratio_to_hop_optimal"])

    ranked = sorted(repetitions, key=slowness)
    middle = dict(ranked[len(ranked) // 2])
    reached = [r for r in repetitions if r["ratio_to_hop_optimal"] is not None]
    sends = [r["transmissions_per_node"] for r in reached]
    middle.update(
        {
            "transmissions_per_node": rounded(statistics.median(sends)) if sends else None,
            "worst_ratio_to_hop_optimal": slowness(ranked[-1]) if len(reached) == len(ranked) else None,
            "times_s": [r["time_s"] for r in repetitions],
            "changes": len(repetitions),
            "repetitions": repetitions,
        }
    )
    return middle


def _change_ratio(kind: str, run: dict[str, Any]) -> float | None:
    value: float | None = run["changes"][kind]["ratio_to_hop_optimal"]
    return value


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Independent runs of one condition as one result of the same shape, so that a lucky or an
    unlucky run decides no figure: each figure is the median run's (its whole section, so the
    section stays one run's consistent account), except the duty cycle, the worst run's (the goal
    is "never, in any run"), and the formation, the least formed run's. Each section adds the
    figure's value in every run (``*_runs``); a change's worst is the worst over all runs."""
    if len(runs) == 1:
        return {**runs[0], "runs": 1}

    def median_run(measure: Callable[[dict[str, Any]], float | None]) -> dict[str, Any]:
        return sorted(runs, key=lambda r: _slowest_last(measure(r)))[len(runs) // 2]

    out = dict(runs[0])
    out["runs"] = len(runs)
    out["simulator_seeds"] = [r["simulator_seed"] for r in runs]
    least = min(runs, key=lambda r: (r["formation"]["fraction_held"], -r["formation"]["hours"]))
    out["formation"] = {**least["formation"], "hours_runs": [r["formation"]["hours"] for r in runs]}
    quiet = median_run(lambda r: r["quiet_hour"]["max_airtime_s"])
    out["quiet_hour"] = {
        **quiet["quiet_hour"],
        "max_airtime_runs_s": [r["quiet_hour"]["max_airtime_s"] for r in runs],
        "links_dead_runs": [r["quiet_hour"]["links_dead"] for r in runs],
    }
    changes: dict[str, Any] = {}
    for kind in runs[0]["changes"]:
        middle = median_run(functools.partial(_change_ratio, kind))["changes"][kind]
        worst = [r["changes"][kind]["worst_ratio_to_hop_optimal"] for r in runs]
        sends = [r["changes"][kind]["transmissions_per_node"] for r in runs]
        reached = [v for v in sends if v is not None]
        changes[kind] = {
            **middle,
            "transmissions_per_node": rounded(statistics.median(reached)) if reached else None,
            "ratio_runs": [r["changes"][kind]["ratio_to_hop_optimal"] for r in runs],
            "transmissions_per_node_runs": sends,
            "worst_ratio_to_hop_optimal": None if None in worst else max(worst),
            "changes": sum(r["changes"][kind]["changes"] for r in runs),
        }
    out["changes"] = changes
    departure = median_run(lambda r: r["departure"]["time_s"])
    out["departure"] = {**departure["departure"], "time_runs_s": [r["departure"]["time_s"] for r in runs]}
    duty = max(runs, key=lambda r: r["duty_cycle"]["max_fraction"])
    out["duty_cycle"] = {
        **duty["duty_cycle"],
        "max_fraction_runs": [r["duty_cycle"]["max_fraction"] for r in runs],
    }
    return out


def diameter(f: RadioField) -> int:
    return max(max(f.radio_hops(i).values()) for i in range(f.n))


def pick_field(n: int, range_m: float, degree: float) -> tuple[int, RadioField]:
    """The first seed whose field is 3..5 hops across (fewer for a field too small to be)."""
    for seed in range(1, 200):
        f = radio_field(n, seed, range_m=range_m, mean_degree=degree, lan_fraction=0.0)
        if 3 <= diameter(f) <= 5 or (n < 10 and diameter(f) >= 2):
            return seed, f
    raise RuntimeError(f"no {n}-node field 3..5 hops across in 200 seeds at degree {degree}")


def _holds(peer: SimPeer, key: bytes, kind: RecordKind, counter: int) -> bool:
    return any(r.kind is kind and r.counter >= counter for r in peer.engine.records_of(key))


def _all_hold(peers: Sequence[SimPeer], key: bytes, kind: RecordKind, counter: int) -> bool:
    return all(_holds(p, key, kind, counter) for p in peers)


def _resigned(peer: SimPeer, before: int) -> bool:
    return peer.engine.own_records[1].counter > before


def _note(label: str, note: str) -> None:
    progress(f"figure 8: {label}: {note}")


def _wait(sim: Simulation, check: Callable[[], bool], timeout: float) -> float | None:
    """Run until ``check()``; the time taken (to POLL or 0.1 %), or ``None`` after ``timeout``."""
    start = sim.now
    while not check():
        if sim.now - start >= timeout:
            return None
        sim.run_until(sim.now + max(POLL, (sim.now - start) / 1000))
    return sim.now - start


def _graph_keys(peer: SimPeer, now: float) -> set[str]:
    return {p.peer_key_string for p in peer.engine.graph(now).peers()}


def message_type(frame: bytes) -> str:
    """What a frame on the air carries: its message type, or ``fragment`` for a piece of one."""
    _, _, link_frame = parse_medium_frame(frame)
    if link_frame[0] != FRAME_WHOLE:
        return "fragment"
    return decode_message(link_frame[1:])[0].name


def airtime_by_type(sent: Sequence[tuple[float, int, float, bytes]]) -> dict[str, float]:
    """Airtime on the air per message type, summed over every node (s)."""
    out: dict[str, float] = defaultdict(float)
    for _, _, airtime, frame in sent:
        out[message_type(frame)] += airtime
    return {k: rounded(v) or 0.0 for k, v in sorted(out.items())}


def max_rolling(sent: Sequence[tuple[float, float]], window: float = HOUR) -> float:
    """The most airtime any window of ``window`` s holds (windows starting at a transmission)."""
    best = total = 0.0
    j = 0
    for i, (start, _) in enumerate(sent):
        while j < len(sent) and sent[j][0] < start + window:
            total += min(sent[j][1], start + window - sent[j][0])
            j += 1
        best = max(best, total)
        s, a = sent[i]
        total -= min(a, start + window - s)
    return best


def run_field(cond: Condition, wall_note: Callable[[str], None], run: int = 0) -> dict[str, Any]:
    """One run of a condition: form the field, then figures 1-5 on it. Runs differ in the
    simulator's seed (the peers' keys and timers) and in which receptions the loss drops; the field
    (positions, links) is the same."""
    modulation = LoRaModulation(sf=cond.sf)
    channel = RadioConfig.lora(modulation)
    keepalive = quiet_keepalive(modulation, ALLOWANCE)
    spec = MediumSpec(
        modulation,
        keepalive_interval=keepalive,
        dead_interval=DEAD_KEEPALIVES * keepalive,
        path_loss=channel.path_loss,
    )
    degree = 6.0 if cond.n < 10 else 8.0
    seed, fld = pick_field(cond.n, channel.range_m, degree)
    sim = Simulation(seed=seed + RUN_SEED_STRIDE * run)
    peers = [sim.add_peer(f"pi-{i}") for i in range(cond.n)]
    medium = LossyMedium(fld.positions, channel, seed, cond.loss, run)
    sim.add_radio(peers, medium, spec)
    neighbours = [medium.neighbours(i) for i in range(cond.n)]
    eccentricity = [max(fld.radio_hops(i).values()) for i in range(cond.n)]
    origin_index = max(range(cond.n), key=lambda i: (eccentricity[i], -i))
    origin = peers[origin_index]
    sensor = sim.add_peer("ble-sensor")
    sim.connect(origin, sensor, SENSOR)
    sent: list[tuple[float, int, float, bytes]] = []

    def on_air(t: RadioTransmission) -> None:
        sent.append((t.time, peers.index(t.sender), t.airtime, t.frame))

    sim.on_radio(on_air)
    everyone = {p.peer_key_string for p in peers}
    t0 = sim.now

    def held() -> float:
        return sum(len(_graph_keys(p, sim.now) & everyone) for p in peers) / cond.n**2

    def synced() -> bool:
        # Every peer, the sensor too, holds the same records: the sync repairs are over.
        return len({p.engine.summary for p in [*peers, sensor]}) == 1

    curve: list[list[float]] = [[0.0, rounded(held()) or 0.0]]
    while sim.now - t0 < cond.formation_hours * HOUR and not (curve[-1][1] >= 1.0 and synced()):
        sim.run_for(STEP)
        curve.append([rounded((sim.now - t0) / HOUR) or 0.0, rounded(held()) or 0.0])
    formed_s = sim.now - t0
    formation_frames = len(sent)
    wall_note(f"formed {curve[-1][1]:.3f} in {formed_s / HOUR:g} h (synced: {synced()})")
    sim.run_for(SETTLE)
    result: dict[str, Any] = {
        "label": cond.label,
        "peers": cond.n,
        "sf": cond.sf,
        "loss": cond.loss,
        "seed": seed,
        "simulator_seed": seed + RUN_SEED_STRIDE * run,
        "diameter_hops": diameter(fld),
        "mean_degree": rounded(statistics.mean(len(x) for x in neighbours)),
        "keepalive_s": keepalive,
        "dead_interval_s": spec.dead_interval,
        "formation": {
            "curve": curve,
            "formed": curve[-1][1] >= 1.0,
            "hours": rounded(formed_s / HOUR),
            "fraction_held": curve[-1][1],
            "synced": synced(),
            "cap_hours": cond.formation_hours,
        },
    }

    # 3. the quiet hour
    mark = len(sent)
    start = sim.now
    dead_before = sum(p.engine.stats["links.dead"] for p in peers)
    sim.run_for(HOUR)
    per_node = [0.0] * cond.n
    for _, node, airtime, _ in sent[mark:]:
        per_node[node] += airtime
    result["quiet_hour"] = {
        "max_airtime_s": rounded(max(per_node)),
        "median_airtime_s": rounded(statistics.median(per_node)),
        "frames": len(sent) - mark,
        "airtime_by_type_s": airtime_by_type(sent[mark:]),
        "links_dead": sum(p.engine.stats["links.dead"] for p in peers) - dead_before,
        "window_s": rounded(sim.now - start),
    }

    # 1 and 2: metadata changes, then link changes (the sensor's link cut, restored, cut, ...)
    hops = fld.radio_hops(origin_index)
    slot = 4.5 * medium.airtime(32)
    key = origin.engine.public_key
    changes: dict[str, Any] = {}
    sensor_linked = True
    for change in ("metadata", "link"):
        repetitions: list[dict[str, Any]] = []
        for rep in range(cond.changes):
            sim.run_for(SETTLE)
            kind = RecordKind.CARD if change == "metadata" else RecordKind.LINKS
            targets = [
                i
                for i, p in enumerate(peers)
                if p is not origin and any(r.kind is kind for r in p.engine.records_of(key))
            ]
            mark, t_change = len(sent), sim.now
            before = origin.engine.own_records[1].counter
            if change == "metadata":
                origin.presence.set_peer_metadata({"role": "gateway", "battery": 87 - rep})
            else:
                if sensor_linked:
                    sim.disconnect(origin, sensor)
                else:
                    sim.connect(origin, sensor, SENSOR)
                sensor_linked = not sensor_linked
                _wait(sim, functools.partial(_resigned, origin, before), 60.0)
            record = origin.engine.own_records[0 if kind is RecordKind.CARD else 1]
            took = _wait(
                sim,
                functools.partial(_all_hold, [peers[i] for i in targets], key, kind, record.counter),
                CHANGE_TIMEOUT,
            )
            reach = None if took is None or not targets else sim.now - t_change
            sim.run_for(TAIL)
            chunks = [record.raw[i : i + 32] for i in range(0, len(record.raw) - 31, 32)]
            carrying = sum(1 for _, _, _, frame in sent[mark:] if any(c in frame for c in chunks))
            frame_bytes = MEDIUM_HEADER_BYTES + 1 + len(encode_message(MessageType.RECORDS, record.raw))
            far = max((hops[i] for i in targets), default=0)
            # Per node that had to get the record: the origin and every peer that held its last one.
            flooders = [origin_index, *targets]
            per_link = (len(neighbours[origin_index]) + sum(len(neighbours[i]) - 1 for i in targets)) / len(
                flooders
            )
            bound = far * (medium.airtime(frame_bytes) + slot)
            repetitions.append(
                {
                    "record_bytes": len(record.raw),
                    "peers_to_reach": len(targets),
                    "hops_to_farthest": far,
                    "time_s": rounded(reach),
                    "hop_optimal_s": rounded(bound),
                    "ratio_to_hop_optimal": rounded(ratio(reach, bound)) if reach is not None else None,
                    "transmissions": carrying,
                    # A change that never reached everyone has no per-record count (it is still spreading).
                    "transmissions_per_node": rounded(carrying / len(flooders))
                    if reach is not None
                    else None,
                    "per_link_transmissions_per_node": rounded(per_link) if targets else None,
                    "ratio_to_per_link": (
                        rounded(carrying / len(flooders) / per_link) if reach is not None else None
                    ),
                    "rebroadcast_delay_s": list(spec.rebroadcast_window),
                    "airtime_by_type_s": airtime_by_type(sent[mark:]),
                }
            )
        changes[change] = summarise_changes(repetitions)
    result["changes"] = changes

    # 5. a powered-off node
    def connected_without(victim: int) -> bool:
        rest = [i for i in range(cond.n) if i != victim]
        seen, todo = {rest[0]}, [rest[0]]
        while todo:
            for other in neighbours[todo.pop()]:
                if other != victim and other not in seen:
                    seen.add(other)
                    todo.append(other)
        return len(seen) == len(rest)

    candidates = [i for i in range(cond.n) if i != origin_index and connected_without(i)]
    candidates.sort(key=lambda i: (len(neighbours[i]), i))
    victim_index = candidates[len(candidates) // 2]
    victim = peers[victim_index]
    vkey = victim.peer_key_string
    seers = [p for p in peers if p is not victim and vkey in _graph_keys(p, sim.now)]
    sim.run_for(SETTLE)
    sim.kill(victim)
    gone = _wait(sim, lambda: all(vkey not in _graph_keys(p, sim.now) for p in seers), CHANGE_TIMEOUT)
    flooding = changes["link"]["time_s"]
    result["departure"] = {
        "peers_that_saw_it": len(seers),
        "time_s": rounded(gone),
        "limit_s": rounded(3 * spec.dead_interval + (flooding or 0.0)),
        "meshtastic_online_window_s": MESHTASTIC_ONLINE_S,
    }

    # 4. duty cycle over the whole run
    by_node: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for at, node, airtime, _ in sent:
        by_node[node].append((at, airtime))
    worst = max(max_rolling(v) for v in by_node.values()) / HOUR
    result["duty_cycle"] = {
        "max_fraction": rounded(worst),
        "allowance": ALLOWANCE,
        "presence_share": spec.allowance * spec.presence_share,
        "run_hours": rounded((sim.now - t0) / HOUR),
        "frames": len(sent),
        "collisions": medium.stats["collision"],
        "half_duplex": medium.stats["half_duplex"],
        "dropped_by_loss": medium.dropped,
        "delivered": medium.stats["delivered"],
        "formation_airtime_by_type_s": airtime_by_type(sent[:formation_frames]),
        "links_dead": sum(p.engine.stats["links.dead"] for p in peers if p.alive),
    }
    sim.close()
    return result


# ---------------------------------------------------------------------------- leaves


class _NoGraphs:
    """A leaf has no Presence API in the simulator: it never wants graphs."""

    wants_graphs = False

    def close(self) -> None:
        pass


@dataclass
class _LeafEngine:
    """A firmware :class:`LeafNode` behind the engine interface :class:`Simulation` drives."""

    node: LeafNode
    now: float
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def public_key(self) -> bytes:
        return self.node.public_key

    @property
    def peer_key_string(self) -> str:
        return self.node.peer_key_string

    def link_up(self, link: LinkId, spec: LinkSpec, now: float) -> None:
        self.now = now
        self.node.link_up(link, spec.mtu, now, spec.expected_peer)

    def receive(self, link: LinkId, frame: bytes, now: float) -> None:
        self.now = now
        self.node.receive(link, frame, now)

    def link_down(self, link: LinkId, now: float) -> None:
        self.now = now
        self.node.link_down(link, now)

    def next_event(self) -> None:
        self.node.take_events()

    def datagrams_to_send(self, now: float) -> list[tuple[Hashable, bytes]]:
        return self.node.take_output()

    def next_timer(self) -> float | None:
        return self.node.next_tick(self.now)

    def handle_timer(self, now: float) -> None:
        self.now = now
        self.node.tick(now)


def _add_leaf(sim: Simulation, name: str, seed: bytes) -> SimPeer:
    node = LeafNode(seed, NodeIdentity(name), wall=lambda: sim.now, keepalive_s=10.0, dead_s=30.0)
    engine = _LeafEngine(node, sim.now)
    peer = SimPeer(len(sim.peers), name, cast(Engine, engine))
    peer.presence = cast(Presence, _NoGraphs())
    # The simulator has no public way to add a peer that is not an Engine: its own outputs adapter.
    peer.outputs = _SimOutputs(sim, peer)
    sim.peers.append(peer)
    return peer


LEAVES = 8
LEAF_WINDOW = 600.0
LAN = LinkModel(keepalive_interval=30.0, dead_interval=90.0)


def run_leaves(n: int, seed: int = 1) -> dict[str, Any]:
    """A router (peer 0) of an ``n``-peer LAN mesh with LEAVES firmware leaves on it."""
    sim = Simulation(seed=seed)
    mesh = build("random_geometric", n, seed)
    peers = [sim.add_peer(f"m{i}") for i in range(n)]
    for a, b in mesh.edges:
        sim.connect(peers[a], peers[b], LAN)
    router = peers[0]
    leaves, mtus = [], []
    for j in range(LEAVES):
        mtu = 20 if j < LEAVES // 2 else 244
        leaf = _add_leaf(sim, f"leaf-{j}", bytes([j + 1]) * 32)
        sim.connect(
            router,
            leaf,
            LinkModel(
                ConnectionType.BLUETOOTH, latency=0.02, mtu=mtu, keepalive_interval=10.0, dead_interval=30.0
            ),
        )
        leaves.append(leaf)
        mtus.append(mtu)
    total = n + LEAVES
    formed = _wait(sim, lambda: all(p.engine.peer_count(sim.now) == total for p in peers), 600.0)
    sim.run_for(60.0)
    received: dict[int, int] = defaultdict(int)
    leaf_index = {leaf.index: j for j, leaf in enumerate(leaves)}

    def tap(t: Transmission) -> None:
        j = leaf_index.get(t.receiver.index)
        if j is not None:
            received[j] += len(t.frame)

    sim.on_transmit(tap)
    rng = random.Random(seed)
    changes = max(1, n // 10)
    for c in range(changes):
        sim.run_for(LEAF_WINDOW / changes / 2)
        rng.choice(peers[1:]).presence.set_peer_metadata({"change": c})
        sim.run_for(LEAF_WINDOW / changes / 2)
    scale = HOUR / LEAF_WINDOW
    by_mtu = {}
    for mtu in sorted(set(mtus)):
        values = [received[j] * scale for j in range(LEAVES) if mtus[j] == mtu]
        by_mtu[str(mtu)] = {
            "median_bytes_per_hour": rounded(statistics.median(values)),
            "max_bytes_per_hour": rounded(max(values)),
        }
    sim.close()
    return {"peers": n, "formed_s": rounded(formed), "changes_in_window": changes, "by_mtu": by_mtu}


# ---------------------------------------------------------------------------- the figure


def _timed_run(cond: Condition, run: int, of: int) -> dict[str, Any]:
    label = cond.label if of == 1 else f"{cond.label}, run {run + 1}/{of}"
    wall = time.perf_counter()
    progress(f"figure 8: {label}")
    result = run_field(cond, functools.partial(_note, label), run)
    progress(f"figure 8: {label}: wall {time.perf_counter() - wall:.0f} s")
    return result


def run_fields(mode: Mode, workers: int | None = None) -> list[dict[str, Any]]:
    """Every condition's ``mode.field_runs`` runs, on every core (runs are independent: a
    simulation in virtual time, nothing shared), summarised per condition in condition order."""
    jobs = [(cond, run) for cond in conditions(mode) for run in range(mode.field_runs)]
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    if workers == 1:
        results = [_timed_run(cond, run, mode.field_runs) for cond, run in jobs]
    else:
        # The slowest first (large fields, slow spreading factors), so that no core idles at the end.
        order = sorted(range(len(jobs)), key=lambda j: (-jobs[j][0].n, -jobs[j][0].sf, j))
        with ProcessPoolExecutor(workers) as pool:
            futures = {j: pool.submit(_timed_run, *jobs[j], mode.field_runs) for j in order}
            results = [futures[j].result() for j in range(len(jobs))]
    by_condition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (cond, _), result in zip(jobs, results, strict=True):
        by_condition[cond.label].append(result)
    return [summarise_runs(by_condition[cond.label]) for cond in conditions(mode)]


def run(mode: Mode) -> dict[str, Any]:
    runs = run_fields(mode)
    sizes = (10, 100) if mode.quick else (10, 100, 1000)
    leaves = []
    for n in sizes:
        wall = time.perf_counter()
        leaves.append(run_leaves(n))
        progress(f"figure 8: leaves at {n} peers: wall {time.perf_counter() - wall:.0f} s")
    goals = []
    for r in runs:
        label = f"{r['label']} ({r['formation']['fraction_held'] * 100:.0f} % formed)"
        for change in ("metadata", "link"):
            c = r["changes"][change]
            goals.append(
                goal(
                    f"{label}: {change} change, transmissions per node per flooded record",
                    c["transmissions_per_node"],
                    1.3,
                    at_most=True,
                )
            )
        for change in ("metadata", "link"):
            c = r["changes"][change]
            goals.append(
                goal(
                    f"{label}: {change} change to every peer, median {TIMES} hop-optimal",
                    c["ratio_to_hop_optimal"],
                    2.0,
                    at_most=True,
                    unit=TIMES,
                )
            )
        goals.append(
            goal(
                f"{label}: quiet-hour airtime, worst node",
                r["quiet_hour"]["max_airtime_s"],
                QUIET_GOAL_S,
                at_most=True,
                unit="s",
            )
        )
        goals.append(
            goal(
                f"{label}: duty cycle, worst node and rolling hour",
                r["duty_cycle"]["max_fraction"] * 100,
                ALLOWANCE * 100,
                at_most=True,
                unit="%",
            )
        )
        d = r["departure"]
        goals.append(
            goal(
                f"{label}: powered-off node gone from every graph",
                d["time_s"],
                d["limit_s"],
                at_most=True,
                unit="s",
            )
        )
    for mtu in ("20", "244"):
        first = leaves[0]["by_mtu"][mtu]["median_bytes_per_hour"]
        last = leaves[-1]["by_mtu"][mtu]["median_bytes_per_hour"]
        goals.append(
            goal(
                f"leaf on a {mtu}-byte MTU: bytes/hour at {leaves[-1]['peers']} peers {TIMES} at 10",
                ratio(last, first),
                1.25,
                at_most=True,
                unit=TIMES,
            )
        )
    return {
        "title": "A LoRa field of Pis on one broadcast channel, and leaves on a router",
        "goal": (
            "issue 10's figures: at most 1.3 transmissions per node per flooded record; changes within "
            "2x hop-optimal; quiet hour at most 3.6 s of airtime per node; never above the 1 % allowance; "
            "a powered-off node gone within 3 dead intervals plus flooding; a leaf's traffic flat in mesh "
            "size"
        ),
        "baseline": BASELINE,
        "repetitions": mode.field_runs,
        "fields": runs,
        "leaves": leaves,
        "leaf_window_s": LEAF_WINDOW,
        "goals": goals,
    }
