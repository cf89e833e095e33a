"""``presence-agent demo``: a small real mesh on this machine, shown live.

Starts several ``presence-agent run`` processes on loopback, each with its own
state directory, publishes a little metadata on each, prints the first agent's
graph table whenever it changes, serves the web view of the first agent (its
``[view]`` table, on a free loopback port) and prints its address, and on Ctrl-C (or after ``--duration``)
stops them all with SIGTERM and checks they exit cleanly.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.core.errors import PresenceError
from agent.runtime.control import ControlError, request
from agent.runtime.render import LiveTable, graph_table

NAMES = ("kitchen", "garden", "garage", "attic", "cellar", "porch", "shed", "loft")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_control(state_dir: Path, deadline: float) -> None:
    """Wait until the agent on ``state_dir`` answers ``status`` (monotonic ``deadline``)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(ControlError, OSError):
            request(state_dir, {"op": "status"}, timeout=1.0)
            return
        time.sleep(0.1)
    raise PresenceError(f"the agent on {state_dir} did not start")


def run_demo(agents: int, duration: float | None) -> int:
    """Run the demo; 0 when every agent stopped cleanly."""
    agents = max(2, min(agents, len(NAMES)))
    with tempfile.TemporaryDirectory(prefix="presence-demo-") as tmp:
        root = Path(tmp)
        config = root / "demo.toml"
        config.write_text(f'[lan]\ninterfaces = ["127.0.0.1"]\nmulticast_port = {_free_udp_port()}\n')
        # The first agent also serves the web view, in process.
        web_port = _free_tcp_port()
        first_config = root / "demo-view.toml"
        view_table = f'\n[view]\nenabled = true\nlisten = "127.0.0.1:{web_port}"\n'
        first_config.write_text(config.read_text() + view_table)
        dirs = [root / f"pi-{name}" for name in NAMES[:agents]]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "run",
                    "--config",
                    str(first_config if d == dirs[0] else config),
                    "--state-dir",
                    str(d),
                    "--name",
                    f"pi-{d.name[3:]}",
                ],
                stderr=subprocess.DEVNULL,
            )
            for d in dirs
        ]
        started = time.monotonic()
        try:
            for i, d in enumerate(dirs):
                wait_for_control(d, started + 15)
                metadata = {"room": NAMES[i], "app_version": "1.2.4"}
                request(d, {"op": "metadata_set", "json": json.dumps(metadata)})
            print(f"started {agents} agents on loopback (state under {root}); Ctrl-C stops them", flush=True)
            print(f"web view of pi-{NAMES[0]}: http://127.0.0.1:{web_port}/\n", flush=True)
            live = LiveTable(started)
            while duration is None or time.monotonic() - started < duration:
                document = request(dirs[0], {"op": "graph"})["graph"]
                live.show(graph_table(document))
                live.seen(len(document["remote_peers"]) == agents - 1, f"all {agents} agents see each other")
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            codes = []
            for proc in procs:
                try:
                    codes.append(proc.wait(10))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(proc.wait())
        clean = all(code == 0 for code in codes)
        print(f"all agents stopped {'cleanly' if clean else f'with exit codes {codes}'}", flush=True)
        return 0 if clean else 1
