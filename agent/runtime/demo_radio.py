"""``presence-agent demo --radio``: Pis whose only path is emulated radio over real ptys, shown live.

Five ``presence-agent run`` processes: four on a line 2.5 km apart, each with one emulated LoRa
dongle (a real pty the agent's radio transport opens by path, as it opens ``/dev/ttyUSB0``;
behind it the dongle firmware's own core on one simulated channel, SF7/125 kHz, EU868 g3), so the
ends are three radio hops apart; the fourth also runs the LAN on loopback, bridging to a fifth that
has no dongle at all::

    pi-kitchen ~ 2.5 km ~ pi-garden ~ 2.5 km ~ pi-garage ~ 2.5 km ~ pi-attic == LAN == pi-cellar

The first agent's graph table and its connections (type and distance: ``Radio`` ones measured from
RSSI) are printed whenever they change; on Ctrl-C (or after ``--duration``) every agent is stopped
with SIGTERM and must exit cleanly. The radio field comes from the caller (``agent.cli`` passes
:class:`agent.sim.radio_lab.RadioLab`, which this layer does not import): anything with the
:class:`RadioField` shape.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from agent.runtime.control import request
from agent.runtime.demo import wait_for_control
from agent.runtime.render import LiveTable, connections_table, graph_table

#: The radio line's agents (one dongle each), then the LAN-only one behind the last.
RADIO_NAMES = ("kitchen", "garden", "garage", "attic")
LAN_NAME = "cellar"
#: Metres between neighbours on the line (SF7/125 kHz reaches about 3.2 km in the emulated medium).
SPACING = 2500.0
#: Seconds every agent has to answer on its control socket after it was started.
START_TIMEOUT = 20.0


class FieldAgent(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def state_dir(self) -> Path: ...


class RadioField(Protocol):
    """An emulated radio field that starts agent processes on its dongles (``RadioLab``)."""

    def spawn(self, name: str, node: int | None, *, lan: bool = False, extra_config: str = "") -> Any: ...

    def stop(self) -> list[int]: ...

    def __enter__(self) -> RadioField: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


#: Makes the field: (its root directory, the dongles' positions in metres).
FieldFactory = Callable[[Path, Sequence[tuple[float, float]]], RadioField]


def topology_line() -> str:
    radio = f" ~ {SPACING / 1000:g} km ~ ".join(f"pi-{n}" for n in RADIO_NAMES)
    return f"{radio} == LAN == pi-{LAN_NAME}"


def run_radio_demo(make_field: FieldFactory, duration: float | None) -> int:
    """Run the radio demo; 0 when every agent stopped cleanly."""
    positions = [(i * SPACING, 0.0) for i in range(len(RADIO_NAMES))]
    everyone = len(RADIO_NAMES) + 1
    with (
        tempfile.TemporaryDirectory(prefix="presence-radio-demo-") as tmp,
        make_field(Path(tmp), positions) as field,
    ):
        agents: list[FieldAgent] = [
            field.spawn(f"pi-{name}", i, lan=i == len(RADIO_NAMES) - 1) for i, name in enumerate(RADIO_NAMES)
        ]
        agents.append(field.spawn(f"pi-{LAN_NAME}", None, lan=True))
        started = time.monotonic()
        codes: list[int] = []
        try:
            for agent in agents:
                wait_for_control(agent.state_dir, started + START_TIMEOUT)
                room = agent.name.removeprefix("pi-")
                request(agent.state_dir, {"op": "metadata_set", "json": json.dumps({"room": room})})
            print(f"started {everyone} agents (state under {tmp}); Ctrl-C stops them", flush=True)
            print(f"{topology_line()}\n(emulated LoRa dongles on real ptys under {tmp}/dev)\n", flush=True)
            live = LiveTable(started)
            while duration is None or time.monotonic() - started < duration:
                document = request(agents[0].state_dir, {"op": "graph"})["graph"]
                live.show(f"{graph_table(document)}\n\n{connections_table(document)}")
                seen = len(document["remote_peers"]) == everyone - 1
                live.seen(seen, f"all {everyone} agents see each other")
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
        finally:
            codes = field.stop()
    clean = all(code == 0 for code in codes)
    print(f"all agents stopped {'cleanly' if clean else f'with exit codes {codes}'}", flush=True)
    return 0 if clean else 1
