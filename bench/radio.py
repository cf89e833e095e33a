"""Radio figures (issue 11): real agent processes whose only path is emulated radio over real ptys.

    python -m bench.radio [--quick] [--out bench/radio.json]

**Set-up.** :class:`agent.sim.radio_lab.RadioLab` in this process runs the emulated dongles (the
firmware's own core behind one real pty each, on one simulated channel: SF7/125 kHz, EU868 g3's
10 %, no shadowing or fading) and starts one ``presence-agent run`` process per dongle, LAN off,
``[radio]`` naming its pty as its only port (keepalive 15 s, dead interval 60 s): four on a line
2.5 km apart (``r0`` .. ``r3``: each hears only its neighbours, the ends are three hops apart)
and a fifth, ``lonely``, 100 km away, which hears nobody (the idle baseline of b). The agents
are asked over their control sockets (``status`` counters, ``graph``, ``metadata_set``); the
figures start once every line agent's graph holds all four.

**a. A change across three hops.** One end sets new metadata (the ends take turns); the time
runs from the ``metadata_set`` answer to the other end's ``graph`` (polled every 50 ms) showing
it. Beside it, its airtime bound: what must cross is the new card, in one RECORDS message,
relayed by each of the three hops, so::

    bound = 3 x sum over f in frames_for(RECORDS(card), link MTU) of T_air(len(f) + 8)

with ``T_air`` Semtech's time on air for the medium's modulation (agent.core.airtime.LoRaModulation:
SF7, 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC), ``len(f) + 8`` the frame with the
medium header (sender and destination ids), the link MTU the interface's (the dongle's 255 bytes
less the header; no cut at 10 %) and the card the origin's own signed card, read back from its
graph after the change. The ratio measured / bound is what flood delays, queues, listen-before-talk
and the serial hops add to the air.

**b. Host CPU per received radio frame.** Over windows of ``WINDOW`` s (the quiet ones of c, and
the whole of a), an agent's CPU time (its threads' run time from ``/proc/<pid>/task/*/schedstat``,
in nanoseconds: ``/proc/<pid>/stat``'s utime + stime tick at 10 ms, too coarse for a quiet
window) divided by the frames its radio transport received (``transport.radio.rx``). Every window
reads every agent, in an order that rotates; ``lonely``'s CPU in the same window (it receives
nothing, and is asked for ``status`` as often) is the idle cost, so the marginal figure is
``(cpu - cpu_lonely) / rx``. Medians over (agent, window) pairs with frames. During a, only the
middle agents count (the ends' graphs are polled every 50 ms).

**c. Airtime per quiet hour per node.** After the changes, ``W`` quiet minutes (2 quick, 10 full):
each dongle's transmitted airtime from the emulator's accounting (the medium's, per node), over the
window, scaled to an hour, beside the region's budget (10 % = 360 s/h; presence's half, 180 s/h;
and EU868 g1's 1 % = 36 s/h for reference). Also the same line in ``agent.sim`` (virtual time, the
same engine, channel and ``[radio]`` timings, no processes or serial link): a full simulated hour
after convergence.

**d. Replug.** A line agent's dongle is unplugged (its pty closed, its symlink removed) and, once
the agent counts it down (``transport.radio.down``), plugged back in (a new pty, a fresh core);
the time runs from the replug to the agent counting it up again (``transport.radio.up``, polled
every 20 ms). The replug comes 1 to 1.5 s (seeded, uniform) after the agent counted it down, so
it meets the transport's 0.5 s port poll at any phase. The agents take turns. Goal: at most 2 s.

A measurement, not a test: nothing is asserted. Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.core.distance import PathLoss
from agent.core.medium import MEDIUM_HEADER_BYTES, fitted
from agent.core.records import RecordKind, open_record
from agent.core.wire import MessageType, encode_message, frames_for
from agent.runtime.control import ControlError, request
from agent.sim import Simulation
from agent.sim.radio import RadioConfig, RadioMedium
from agent.sim.radio_lab import LabAgent, LabRadio, RadioLab
from agent.transports.radio_settings import RadioSettings, medium_spec
from bench import machine
from bench.common import goal, median, progress, ratio, rounded
from bench.processes import cpu_seconds, wait_for

ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_OUT: Final = Path(__file__).with_name("radio.json")
HOPS: Final = 3
LINE: Final = [(0.0, 0.0), (2500.0, 0.0), (5000.0, 0.0), (7500.0, 0.0)]
LONELY: Final = (100_000.0, 0.0)
#: Seconds per CPU window (b).
WINDOW: Final = 20.0
CONVERGE_TIMEOUT: Final = 600.0
CHANGE_TIMEOUT: Final = 300.0
#: Quiet seconds between changes, and before the quiet window (floods and answers end).
SETTLE: Final = 5.0
QUIET_SETTLE: Final = 30.0
REPLUG_GOAL: Final = 2.0
REPLUG_POLL: Final = 0.02
RX: Final = "transport.radio.rx"


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    changes: int
    quiet_minutes: float
    replugs: int


QUICK: Final = Mode("quick", changes=5, quiet_minutes=2.0, replugs=5)
FULL: Final = Mode("full", changes=9, quiet_minutes=10.0, replugs=9)


def child_env() -> dict[str, str]:
    """The agents import this checkout (the bench may run from any directory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def stats(agent: LabAgent) -> dict[str, int]:
    answer: dict[str, int] = request(agent.state_dir, {"op": "status"}, timeout=5.0)["stats"]
    return answer


def graph(agent: LabAgent) -> dict[str, Any]:
    document: dict[str, Any] = request(agent.state_dir, {"op": "graph"}, timeout=5.0)["graph"]
    return document


def peer_keys(document: dict[str, Any]) -> set[str]:
    return {p["peer_key_string"] for p in [document["local_peer"], *document["remote_peers"]]}


def metadata_seen(document: dict[str, Any], key: str) -> dict[str, Any] | None:
    peer = next((p for p in document["remote_peers"] if p["peer_key_string"] == key), None)
    return None if peer is None else dict(peer["peer_metadata"])


def lab_settings(radio: LabRadio) -> RadioSettings:
    """The ``[radio]`` settings the lab writes for every agent (as the agents parse them)."""
    modulation = radio.modulation
    return RadioSettings(
        enabled=True,
        region=radio.region_setting,
        frequency_hz=radio.frequency_hz,
        bandwidth_hz=int(modulation.bandwidth),
        spreading_factor=modulation.sf,
        coding_rate=modulation.coding_rate,
        preamble_symbols=modulation.preamble,
        keepalive_interval=radio.keepalive_interval,
        dead_interval=radio.dead_interval,
        rssi_at_1m_dbm=radio.rssi_at_1m_dbm,
        path_loss_exponent=radio.path_loss_exponent,
    )


def link_mtu(radio: LabRadio) -> int:
    """The interface's link MTU as the radio transport computes it (medium_for): the dongle's MTU
    cut to the longest frame the budget allows, less the medium header."""
    spec = fitted(
        medium_spec(lab_settings(radio), radio.modulation, radio.region.duty_cycle, radio.region.dwell)
    )
    assert spec is not None, "the lab's modulation fits its region"
    return spec.mtu


def airtime_bound(radio: LabRadio, card: bytes, hops: int = HOPS) -> tuple[float, list[int]]:
    """The module docstring's bound (s) for ``card`` crossing ``hops`` hops, and the frames' sizes on
    the air (medium header included)."""
    message = encode_message(MessageType.RECORDS, card)
    sizes = [len(f) + MEDIUM_HEADER_BYTES for f in frames_for(message, link_mtu(radio), 0)]
    return hops * sum(radio.modulation.airtime(n) for n in sizes), sizes


def own_card(document: dict[str, Any]) -> bytes:
    for text in document["local_peer"]["signed_records"]:
        raw = base64.b64decode(text)
        if open_record(raw).kind is RecordKind.CARD:
            return raw
    raise RuntimeError("the origin's graph holds no card of its own")


# ---------------------------------------------------------------- the figures


def converge(lab: RadioLab, line: list[LabAgent]) -> float:
    started = time.monotonic()
    everyone = {str(request(a.state_dir, {"op": "status"})["peer_key_string"]) for a in line}
    shown = [started]

    def done() -> bool:
        sizes = [len(peer_keys(graph(a))) for a in line]
        if time.monotonic() - shown[0] >= 30:
            shown[0] = time.monotonic()
            progress(
                f"graph sizes {sizes} after {shown[0] - started:.0f} s; medium {lab.emulator.medium_stats()}"
            )
        return sizes == [len(everyone)] * len(line)

    wait_for(done, CONVERGE_TIMEOUT, "every line agent's graph to hold all four", poll=0.5)
    return time.monotonic() - started


def changes(lab: RadioLab, line: list[LabAgent], mode: Mode) -> dict[str, Any]:
    ends = [line[0], line[-1]]
    keys = [str(request(a.state_dir, {"op": "status"})["peer_key_string"]) for a in ends]
    rows: list[dict[str, Any]] = []
    for k in range(mode.changes):
        origin, far = (0, 1) if k % 2 == 0 else (1, 0)
        metadata = {"bench": k}
        request(ends[origin].state_dir, {"op": "metadata_set", "json": json.dumps(metadata)})
        changed = time.perf_counter()
        wait_for(
            lambda: metadata_seen(graph(ends[far]), keys[origin]) == metadata,  # noqa: B023 (called now)
            CHANGE_TIMEOUT,
            f"change {k} at the far end",
        )
        took = time.perf_counter() - changed
        bound, sizes = airtime_bound(lab.radio, own_card(graph(ends[origin])))
        rows.append({"origin": ends[origin].name, "seconds": took, "bound_s": bound, "frame_bytes": sizes})
        progress(
            f"change {k + 1}/{mode.changes} from {ends[origin].name}: {took:.2f} s (bound {bound:.3f} s)"
        )
        time.sleep(SETTLE)
    took_median = median([r["seconds"] for r in rows])
    bound_median = median([r["bound_s"] for r in rows])
    return {
        "changes": [{**r, "seconds": rounded(r["seconds"]), "bound_s": rounded(r["bound_s"])} for r in rows],
        "median_s": rounded(took_median),
        "airtime_bound_s": rounded(bound_median),
        "ratio_measured_to_bound": rounded(ratio(took_median, bound_median)),
    }


def cpu_time(pid: int) -> float:
    """A process's CPU time (s) at nanosecond resolution: the sum of its threads' run time in
    ``/proc/<pid>/task/*/schedstat``; ``/proc/<pid>/stat``'s utime + stime (10 ms ticks) if absent."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
                total += int(schedstat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return total / 1e9


def sample(agents: list[LabAgent], order: int) -> dict[str, tuple[float, int]]:
    """(CPU seconds, frames received) of every agent, read in a rotated order."""
    rotated = agents[order % len(agents) :] + agents[: order % len(agents)]
    return {a.name: (cpu_time(a.pid), stats(a).get(RX, 0)) for a in rotated}


def per_frame(
    before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]], idle: str
) -> list[dict[str, Any]]:
    """One row per agent that received frames: gross and marginal CPU per frame (s)."""
    idle_cpu = after[idle][0] - before[idle][0]
    rows = []
    for name in before:
        if name == idle:
            continue
        cpu, frames = after[name][0] - before[name][0], after[name][1] - before[name][1]
        if frames > 0:
            rows.append({"agent": name, "cpu_s": cpu, "frames": frames, "idle_cpu_s": idle_cpu})
    return rows


def quiet(lab: RadioLab, agents: list[LabAgent], mode: Mode) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The quiet windows: CPU rows (b) and airtime per node (c)."""
    windows = max(1, round(mode.quiet_minutes * 60 / WINDOW))
    nodes = [a for a in agents if a.node is not None]
    airtime_start = {
        a.name: lab.emulator.stats(a.node)["medium_airtime_us"] for a in nodes if a.node is not None
    }
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    before = sample(agents, 0)
    for w in range(windows):
        time.sleep(WINDOW)
        after = sample(agents, w + 1)
        rows += per_frame(before, after, "lonely")
        before = after
        progress(f"quiet window {w + 1}/{windows}")
    seconds = time.monotonic() - started
    airtime_end = {
        a.name: lab.emulator.stats(a.node)["medium_airtime_us"] for a in nodes if a.node is not None
    }
    per_hour = {n: (airtime_end[n] - airtime_start[n]) / 1e6 / seconds * 3600 for n in airtime_start}
    return rows, {"window_s": rounded(seconds), "per_node_s_per_hour": per_hour}


def simulated_quiet_hour(radio: LabRadio) -> dict[str, Any]:
    """c in agent.sim: the same line, engine and timings over a full simulated quiet hour."""
    sim = Simulation(seed=5)
    peers = [sim.add_peer(f"r{i}") for i in range(len(LINE))]
    channel = RadioConfig.lora(
        radio.modulation, path_loss=PathLoss(radio.rssi_at_1m_dbm, radio.path_loss_exponent)
    )
    medium = RadioMedium(LINE, channel, seed=5, region=radio.region)
    spec = medium_spec(lab_settings(radio), radio.modulation, radio.region.duty_cycle, radio.region.dwell)
    sim.add_radio(peers, medium, spec)
    everyone = {p.peer_key_string for p in peers}
    formed = sim.run_until_true(
        lambda: all({q.peer_key_string for q in p.engine.graph(sim.now).peers()} == everyone for p in peers),
        timeout=24 * 3600.0,
        check_every=1.0,
    )
    sim.run_for(QUIET_SETTLE)
    start = list(medium.airtime_used)
    sim.run_for(3600.0)
    per_hour = [medium.airtime_used[i] - start[i] for i in range(len(LINE))]
    return {"formed_after_s": rounded(formed), "per_node_s_per_hour": [rounded(x) for x in per_hour]}


def replugs(lab: RadioLab, line: list[LabAgent], mode: Mode) -> list[float]:
    rng = random.Random(11)
    took = []
    for k in range(mode.replugs):
        agent = line[(k + 1) % len(line)]
        assert agent.node is not None
        counts = stats(agent)
        lab.emulator.unplug(agent.node)
        wait_for(
            lambda: stats(agent).get("transport.radio.down", 0) > counts.get("transport.radio.down", 0),  # noqa: B023
            10.0,
            f"{agent.name} to count its dongle down",
        )
        time.sleep(1.0 + rng.uniform(0.0, 0.5))  # any phase of the transport's 0.5 s port poll
        replugged = time.perf_counter()
        lab.emulator.replug(agent.node)
        wait_for(
            lambda: stats(agent).get("transport.radio.up", 0) > counts.get("transport.radio.up", 0),  # noqa: B023
            30.0,
            f"{agent.name} to count its dongle up",
            poll=REPLUG_POLL,
        )
        took.append(time.perf_counter() - replugged)
        progress(f"replug {k + 1}/{mode.replugs} ({agent.name}): {took[-1]:.2f} s")
        time.sleep(2.0)
    return took


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [rounded(x) or 0.0 for x in os.getloadavg()]
    return []


def run(mode: Mode) -> dict[str, Any]:
    radio = LabRadio()
    load_before = loadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-radio-") as tmp,
        RadioLab(Path(tmp), [*LINE, LONELY], radio=radio, env=child_env(), cwd=ROOT) as lab,
    ):
        line = [lab.spawn(f"r{i}", i) for i in range(len(LINE))]
        lonely = lab.spawn("lonely", len(LINE))
        agents = [*line, lonely]
        for agent in agents:
            wait_for(lambda: _answers(agent), 30.0, f"{agent.name} to answer")  # noqa: B023
        progress("agents up; waiting for the line to converge")
        formed = converge(lab, line)
        progress(f"converged after {formed:.1f} s")

        before = sample(agents, 0)
        change = changes(lab, line, mode)
        # The ends' graphs are polled every 50 ms meanwhile: only the middle agents count here.
        middle = {a.name for a in line[1:-1]}
        active_rows = [r for r in per_frame(before, sample(agents, 1), "lonely") if r["agent"] in middle]

        time.sleep(QUIET_SETTLE)
        quiet_rows, airtime = quiet(lab, agents, mode)
        replug = replugs(lab, line, mode)
        refused = [lab.emulator.stats(i)["medium_refused"] for i in range(len(LINE) + 1)]
        medium = lab.emulator.medium_stats()
        lonely_airtime = airtime["per_node_s_per_hour"].pop("lonely")
    progress("the same line in agent.sim: one simulated quiet hour")
    simulated = simulated_quiet_hour(radio)

    def cpu_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
        gross = [r["cpu_s"] / r["frames"] for r in rows]
        marginal = [(r["cpu_s"] - r["idle_cpu_s"]) / r["frames"] for r in rows]
        return {
            "samples": len(rows),
            "frames": sum(r["frames"] for r in rows),
            "gross_ms_per_frame_median": rounded(median(gross) * 1000) if gross else None,
            "marginal_ms_per_frame_median": rounded(median(marginal) * 1000) if marginal else None,
        }

    per_node = airtime["per_node_s_per_hour"]
    budget = radio.region.duty_cycle * 3600
    quiet_median = median(list(per_node.values()))
    return {
        "mode": mode.name,
        "machine": {**machine.describe(ROOT), "loadavg_before": load_before, "loadavg_after": loadavg()},
        "setup": {
            "line": "4 agent processes 2.5 km apart, plus one 100 km away (hears nobody)",
            "modulation": "LoRa SF7 / 125 kHz / CR 4/5 / preamble 8, explicit header, CRC",
            "region": radio.region.name,
            "keepalive_s": radio.keepalive_interval,
            "dead_interval_s": radio.dead_interval,
            "link_mtu": link_mtu(radio),
            "converged_after_s": rounded(formed),
            "medium_refused": refused,
            "medium": medium,
        },
        "change_across_three_hops": change,
        "cpu_per_received_frame": {
            "window_s": WINDOW,
            "quiet": cpu_figure(quiet_rows),
            "during_changes": cpu_figure(active_rows),
        },
        "airtime_per_quiet_hour": {
            "measured_window_s": airtime["window_s"],
            "processes_s_per_hour": {k: rounded(v) for k, v in per_node.items()},
            "processes_median_s_per_hour": rounded(quiet_median),
            "lonely_s_per_hour": rounded(lonely_airtime),
            "simulated_hour": simulated,
            "region_budget_s_per_hour": rounded(budget),
            "presence_share_s_per_hour": rounded(budget * lab_settings(radio).presence_share),
            "eu868_g1_budget_s_per_hour": 36.0,
        },
        "replug": {
            "seconds": [rounded(x) for x in replug],
            "median_s": rounded(median(replug)),
            "goals": [goal("replug to interface up", median(replug), REPLUG_GOAL, at_most=True, unit="s")],
        },
    }


def _answers(agent: LabAgent) -> bool:
    if agent.popen.poll() is not None:
        raise RuntimeError(f"agent {agent.name} exited with {agent.popen.returncode}")
    with contextlib.suppress(ControlError, OSError):
        request(agent.state_dir, {"op": "status"}, timeout=1.0)
        return True
    return False


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def report(doc: dict[str, Any]) -> str:
    change, cpu, air, replug = (
        doc["change_across_three_hops"],
        doc["cpu_per_received_frame"],
        doc["airtime_per_quiet_hour"],
        doc["replug"],
    )
    setup = doc["setup"]
    lines = [
        f"radio figures ({doc['mode']}): {setup['line']}; {setup['modulation']}; {setup['region']}, "
        f"keepalive {setup['keepalive_s']:g} s; converged after {setup['converged_after_s']:.0f} s",
        "",
    ]
    rows: list[tuple[str, ...]] = [("figure", "measured", "beside it")]
    rows.append(
        (
            "a. change across 3 hops (median)",
            f"{change['median_s']:.2f} s",
            f"airtime bound {change['airtime_bound_s'] * 1000:.0f} ms: "
            f"ratio {change['ratio_measured_to_bound']:.1f}",
        )
    )
    for label, key in (("quiet", "quiet"), ("during changes", "during_changes")):
        c = cpu[key]
        gross, marginal = c["gross_ms_per_frame_median"], c["marginal_ms_per_frame_median"]
        rows.append(
            (
                f"b. host CPU per received frame, {label}",
                "-" if gross is None else f"{gross:.2f} ms",
                "-"
                if marginal is None
                else f"{marginal:.2f} ms beyond the idle agent's ({c['frames']} frames)",
            )
        )
    rows.append(
        (
            f"c. airtime per quiet hour per node ({air['measured_window_s'] / 60:.0f} min, processes)",
            f"{air['processes_median_s_per_hour']:.1f} s/h",
            f"budget {air['region_budget_s_per_hour']:.0f} s/h "
            f"(presence {air['presence_share_s_per_hour']:.0f}), "
            f"1 %: {air['eu868_g1_budget_s_per_hour']:.0f} s/h",
        )
    )
    sim = air["simulated_hour"]["per_node_s_per_hour"]
    rows.append(("c. the same, one simulated hour (agent.sim)", f"{median(sim):.1f} s/h", f"per node {sim}"))
    rows.append(
        (
            "d. replug to interface up (median)",
            f"{replug['median_s']:.2f} s",
            f"goal <= {REPLUG_GOAL:g} s: {'met' if replug['goals'][0]['met'] else 'NOT met'}",
        )
    )
    lines.append(table(rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.radio", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 quiet minutes, 5 changes and replugs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    doc = run(QUICK if args.quick else FULL)
    print(report(doc))
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
