"""``presence-agent demo --ble``: three in-process Pis and virtual BLE nodes that every Pi sees,
and a Pi's graph read from another process through its control socket while the demo runs."""

from __future__ import annotations

import subprocess
import sys

NODES = ("node-fridge", "node-bench", "node-bike")


def test_the_ble_demo_shows_every_node_in_every_pis_graph_and_stops_cleanly() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "demo", "--ble", "--duration", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        out = []
        state_dir = None
        for line in demo.stdout:  # the demo ends by itself after --duration
            out.append(line)
            if line.startswith("from another terminal: presence-agent graph --state-dir "):
                state_dir = line.split("--state-dir ", 1)[1].strip()
            if line.startswith("every Pi sees all 3 nodes"):
                break
        assert state_dir is not None, "".join(out)
        graph = subprocess.run(
            [sys.executable, "-m", "agent.cli", "graph", "--state-dir", state_dir],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert graph.returncode == 0, graph.stderr
        assert all(name in graph.stdout for name in NODES), graph.stdout
        rest, errors = demo.communicate(timeout=60)
    finally:
        demo.kill()
    stdout = "".join(out) + rest
    assert demo.returncode == 0, stdout + errors
    for name in ("pi-kitchen", "pi-garden", "pi-garage", *NODES):
        assert name in stdout, name
    assert "MicroPython 1.27.0 virtual" in stdout and "Bluetooth" in stdout
    assert '"door":"open"' in stdout  # the metadata change signed on the node reached pi-kitchen
    assert "all Pis stopped cleanly" in stdout
