"""Figure 4: a LoRa-class line of four peers: time and airtime for changes to cross three hops.

Peers ``lora-0`` … ``lora-3`` form a line over :data:`agent.sim.LORA` (255-byte
frames, ~0.4 s airtime per full frame, a 1 % duty cycle as send budget), once
without loss and once with 10 % frame loss (``dataclasses.replace(LORA,
loss=0.1)``). A fifth peer, ``ble-sensor``, hangs off ``lora-0`` over a
Bluetooth-like link; the link change is that link going away and coming back,
which changes ``lora-0``'s links record and nothing else that has to cross the
radio. The metadata change is ``lora-0`` publishing new metadata.

For each change: the time until ``lora-3`` (three radio hops away) holds the
new record, against the hop-optimal time (3 x (airtime of the one frame that
carries it + latency)); and the airtime used on the radio links from the
change until ``TAIL`` seconds after it arrived, summed over frames as
(bytes + overhead) x airtime per byte, split by message type.

Quiet hour: an hour with no change, counting what the radio carried, to
confirm no card is sent unless something changed: neither in RECORDS nor in
the HELLOs of links that went dead and were dialled again (a re-handshake names
the card by reference).

Baseline, in the same run: the push-pull gossip of :mod:`bench.baseline`
on the same five peers and link models with the same record sizes. On the
radio its rounds are limited by the duty-cycle budget, not by its interval.

The simulator does not redial a link that an engine closed (with 10 % loss,
a run of lost keepalives closes a link as dead, and a handshake can miss its
deadline), so the benchmark redials after ``REDIAL_AFTER`` seconds as a radio
transport would; redials are counted.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.records import ConnectionType, RecordKind
from agent.core.wire import MessageType, encode_message
from agent.sim import LORA, LinkModel, SimPeer, Transmission
from bench.baseline import CARD, LINKS, GossipMesh
from bench.common import Mode, goal, median, progress, ratio, rounded
from bench.simtap import BenchSimulation, summarize

LOSSY = dataclasses.replace(LORA, loss=0.1)
BLE = LinkModel(connection_type=ConnectionType.BLUETOOTH, latency=0.02, mtu=244)
HOPS = 3
POLL = 0.01
TAIL = 30.0
SETTLE = 600.0
QUIET_HOUR = 3600.0
REDIAL_AFTER = 10.0
#: Generous: on the lossy line a lost handshake frame costs a ~23-minute handshake deadline.
CONVERGE_TIMEOUT = 24 * 3600.0
CHANGE_TIMEOUT = 24 * 3600.0
BASELINE = (
    "memberlist-style full-state push-pull gossip (bench/baseline.py) on the same five peers, "
    "link models and record sizes, same run"
)
CHANGES = ("metadata", "link_cut", "link_restore")


def _holds(peer: SimPeer, key: bytes, kind: RecordKind, counter: int) -> bool:
    return any(r.kind is kind and r.counter >= counter for r in peer.engine.records_of(key))


def _resigned(peer: SimPeer, before: int) -> bool:
    return peer.engine.own_records[1].counter > before


def _wait(sim: BenchSimulation, check: Callable[[], bool], timeout: float) -> float:
    """Run until ``check()``; the time taken, to within ``POLL`` or 0.1 % of it, whichever is larger."""
    start = sim.now
    while not check():
        if sim.now - start >= timeout:
            raise RuntimeError(f"LoRa line: condition not met after {timeout:g} simulated seconds")
        sim.run_until(sim.now + max(POLL, (sim.now - start) / 1000))
    return sim.now - start


def _radio(frames: Sequence[Transmission]) -> list[Transmission]:
    return [f for f in frames if f.model.airtime_per_byte > 0]


def _frame_airtime(record: bytes) -> float:
    frame = 1 + len(encode_message(MessageType.RECORDS, record))
    assert frame <= LORA.mtu
    return (frame + LORA.frame_overhead_bytes) * LORA.airtime_per_byte


def _airtime_block(frames: Sequence[Transmission]) -> dict[str, Any]:
    summary = summarize(_radio(frames))
    return {
        "radio_frames": summary.frames,
        "radio_bytes": summary.bytes,
        "airtime_s": rounded(summary.airtime_s),
        "airtime_by_type_s": {k: rounded(v) for k, v in sorted(summary.airtime_by_type.items())},
        "bytes_by_type": dict(sorted(summary.bytes_by_type.items())),
        "records_sent": summary.records_by_kind,
    }


def run_line(model: LinkModel, seed: int) -> dict[str, Any]:
    """One seed: converge, a quiet hour, then the three changes; subject and baseline."""
    sim = BenchSimulation(seed=seed, tap=True, redial_after=REDIAL_AFTER)
    lora = [sim.add_peer(f"lora-{i}") for i in range(HOPS + 1)]
    for a, b in itertools.pairwise(lora):
        sim.connect(a, b, model, 1000)
    sensor = sim.add_peer("ble-sensor")
    sim.connect(lora[0], sensor, BLE)
    everyone = [*lora, sensor]
    result: dict[str, Any] = {"seed": seed}
    try:
        converge = _wait(
            sim,
            lambda: (
                all(p.engine.held_record_count() >= 2 * len(everyone) for p in everyone)
                and all(p.engine.peer_count(sim.now) == len(everyone) for p in everyone)
            ),
            CONVERGE_TIMEOUT,
        )
        result["converge_s"] = rounded(converge, 2)
        sim.run_for(SETTLE)
        sizes = [(len(p.engine.own_records[0].raw), len(p.engine.own_records[1].raw)) for p in everyone]

        mark = len(sim.tapped)
        sim.run_for(QUIET_HOUR)
        quiet = _airtime_block(sim.tapped[mark:])
        quiet["card_bytes"] = sizes[0][0]
        result["quiet_hour"] = quiet

        origin, far = lora[0], lora[-1]
        key = origin.engine.public_key
        changes: dict[str, Any] = {}
        replay: list[tuple[str, int]] = []
        for change in CHANGES:
            sim.run_for(SETTLE)
            mark = len(sim.tapped)
            t0 = sim.now
            if change == "metadata":
                origin.presence.set_peer_metadata({"role": "gateway", "battery": 87})
                kind = RecordKind.CARD
            else:
                kind = RecordKind.LINKS
                before = origin.engine.own_records[1].counter
                if change == "link_cut":
                    sim.disconnect(origin, sensor)
                else:
                    sim.connect(origin, sensor, BLE)
                _wait(sim, functools.partial(_resigned, origin, before), 60.0)
            record = origin.engine.own_records[0 if kind is RecordKind.CARD else 1]
            arrived = functools.partial(_holds, far, key, kind, record.counter)
            reach = (sim.now - t0) + _wait(sim, arrived, CHANGE_TIMEOUT)
            sim.run_until(t0 + reach + TAIL)
            frame_airtime = _frame_airtime(record.raw)
            hop_optimal = HOPS * (frame_airtime + model.latency)
            block = _airtime_block(sim.tapped[mark:])
            changes[change] = {
                "record_bytes": len(record.raw),
                "time_s": rounded(reach),
                "hop_optimal_s": rounded(hop_optimal),
                "ratio_to_hop_optimal": rounded(reach / hop_optimal),
                "minimum_airtime_s": rounded(HOPS * frame_airtime),
                "window_s": rounded(sim.now - t0),
                **block,
            }
            replay.append((change, len(record.raw)))
        result["subject"] = changes
        result["redials"] = sim.redials
        result["frames_lost"] = sim.frames_lost
    finally:
        sim.close()
    result["baseline"] = _baseline(model, seed, sizes, replay)
    return result


def _baseline(
    model: LinkModel, seed: int, sizes: list[tuple[int, int]], replay: list[tuple[str, int]]
) -> dict[str, Any]:
    edges = [(i, i + 1, model) for i in range(HOPS)] + [(0, HOPS + 1, BLE)]
    mesh = GossipMesh(len(sizes), edges, sizes, seed=seed)
    mesh.run_until(mesh.now + SETTLE)
    before = mesh.totals()
    mesh.run_until(mesh.now + QUIET_HOUR)
    after = mesh.totals()
    out: dict[str, Any] = {
        "full_state_message_bytes": mesh.state_message_bytes(0),
        "quiet_hour": {
            "radio_frames": int(after["radio_frames"] - before["radio_frames"]),
            "radio_bytes": int(after["radio_bytes"] - before["radio_bytes"]),
            "airtime_s": rounded(after["airtime_s"] - before["airtime_s"]),
        },
    }
    for change, size in replay:
        mesh.run_until(mesh.now + SETTLE)
        before = mesh.totals()
        t0 = mesh.now
        if change == "metadata":
            version = mesh.set_record(0, CARD, size)
            required = {(0, CARD): version}
        else:
            if change == "link_cut":
                mesh.remove_edge(0, HOPS + 1, (size, mesh.size_of(HOPS + 1, LINKS)))
            else:
                mesh.add_edge(0, HOPS + 1, BLE, (size, mesh.size_of(HOPS + 1, LINKS)))
            required = {(0, LINKS): mesh.version_of(0, LINKS)}
        reach = mesh.run_until_all_hold(required, CHANGE_TIMEOUT, nodes=[HOPS])
        if reach is None:
            raise RuntimeError(f"baseline: {change} did not cross the LoRa line")
        mesh.run_until(t0 + reach + TAIL)
        after = mesh.totals()
        out[change] = {
            "time_s": rounded(reach),
            "radio_frames": int(after["radio_frames"] - before["radio_frames"]),
            "radio_bytes": int(after["radio_bytes"] - before["radio_bytes"]),
            "airtime_s": rounded(after["airtime_s"] - before["airtime_s"]),
            "window_s": rounded(mesh.now - t0),
        }
    return out


def _condition(label: str, model: LinkModel, seeds: int) -> dict[str, Any]:
    runs = []
    for seed in range(1, seeds + 1):
        wall = time.perf_counter()
        runs.append(run_line(model, seed))
        last = runs[-1]
        progress(
            f"figure 4: {label}, seed {seed}: metadata change crossed in "
            f"{last['subject']['metadata']['time_s']} s (gossip {last['baseline']['metadata']['time_s']} s); "
            f"wall {time.perf_counter() - wall:.1f} s"
        )
    medians: dict[str, Any] = {}
    for change in CHANGES:
        subject = [r["subject"][change] for r in runs]
        baseline = [r["baseline"][change] for r in runs]
        row = {
            "subject_median_time_s": rounded(median([s["time_s"] for s in subject])),
            "subject_worst_time_s": max(s["time_s"] for s in subject),
            "subject_seeds_over_10x_hop_optimal": sum(s["ratio_to_hop_optimal"] > 10 for s in subject),
            "subject_median_ratio_to_hop_optimal": rounded(
                median([s["ratio_to_hop_optimal"] for s in subject])
            ),
            "subject_median_airtime_s": rounded(median([s["airtime_s"] for s in subject])),
            "subject_median_records_airtime_s": rounded(
                median([s["airtime_by_type_s"].get("RECORDS", 0.0) for s in subject])
            ),
            "hop_optimal_s": subject[0]["hop_optimal_s"],
            "minimum_airtime_s": subject[0]["minimum_airtime_s"],
            "record_bytes": subject[0]["record_bytes"],
            "baseline_median_time_s": rounded(median([b["time_s"] for b in baseline])),
            "baseline_worst_time_s": max(b["time_s"] for b in baseline),
            "baseline_median_airtime_s": rounded(median([b["airtime_s"] for b in baseline])),
        }
        row["time_ratio_subject_to_baseline"] = rounded(
            ratio(row["subject_median_time_s"], row["baseline_median_time_s"])
        )
        row["airtime_ratio_subject_to_baseline"] = rounded(
            ratio(row["subject_median_airtime_s"], row["baseline_median_airtime_s"])
        )
        medians[change] = row
    quiet = [r["quiet_hour"] for r in runs]
    medians["quiet_hour"] = {
        "subject_median_radio_bytes": rounded(median([q["radio_bytes"] for q in quiet]), 1),
        "subject_median_airtime_s": rounded(median([q["airtime_s"] for q in quiet])),
        "subject_max_cards_sent": max(
            q["records_sent"]["CARD"] + q["records_sent"]["CARD_IN_HELLO"] for q in quiet
        ),
        "subject_max_cards_in_hello": max(q["records_sent"]["CARD_IN_HELLO"] for q in quiet),
        "subject_max_records_sent": max(
            q["records_sent"]["CARD"] + q["records_sent"]["LINKS"] for q in quiet
        ),
        "card_bytes": quiet[0]["card_bytes"],
        "baseline_median_radio_bytes": rounded(
            median([r["baseline"]["quiet_hour"]["radio_bytes"] for r in runs]), 1
        ),
        "baseline_median_airtime_s": rounded(
            median([r["baseline"]["quiet_hour"]["airtime_s"] for r in runs])
        ),
    }
    return {
        "label": label,
        "loss": model.loss,
        "seeds": seeds,
        "medians": medians,
        "redials_total": sum(r["redials"] for r in runs),
        "runs": runs,
    }


def run(mode: Mode) -> dict[str, Any]:
    """Both conditions (no loss, 10 % loss); medians over seeds."""
    conditions = []
    for label, model in (("no loss", LORA), ("10 % frame loss", LOSSY)):
        progress(f"figure 4: LoRa line of {HOPS + 1}, {label}")
        conditions.append(_condition(label, model, mode.lora_seeds))

    return {
        "title": f"LoRa-class line of {HOPS + 1}: time and airtime for a change to cross {HOPS} hops",
        "goal": (
            "the card (metadata) is not sent unless something changed: no card on the radio in a quiet hour"
        ),
        "baseline": BASELINE,
        "link_model": {
            "mtu": LORA.mtu,
            "bytes_per_second": LORA.bytes_per_second,
            "frame_overhead_bytes": LORA.frame_overhead_bytes,
            "airtime_per_byte_s": LORA.airtime_per_byte,
            "latency_s": LORA.latency,
            "keepalive_s": LORA.keepalive_interval,
        },
        "side_link_model": (
            f"a Bluetooth-like link: {BLE.latency * 1000:g} ms latency, MTU {BLE.mtu}, "
            "no send budget, no airtime"
        ),
        "repetitions": mode.lora_seeds,
        "tail_s": TAIL,
        "poll_s": POLL,
        "redial_after_s": REDIAL_AFTER,
        "conditions": conditions,
        "goals": [
            goal(
                f"cards sent in a quiet hour, {c['label']} (worst seed; RECORDS and HELLO)",
                c["medians"]["quiet_hour"]["subject_max_cards_sent"],
                0,
                at_most=True,
                unit="cards",
            )
            for c in conditions
        ],
    }
