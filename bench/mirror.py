"""MQTT mirror latency: how long a metadata change takes to appear at a broker subscriber.

Two real agent processes on loopback (started by figure 5's :class:`Launcher`)
mirror to a private mosquitto (started here, on a free port, no persistence).
A subscriber in this process watches two retained topics while the first
agent's metadata is changed through its control socket, ``repetitions`` times:

* ``own``: the changed agent's own view of itself (the mirror alone: coalesce
  window, JSON, publish, broker);
* ``remote``: the second agent's view of the first (one mesh hop, then its mirror).

Baseline in the same run: a bare paho publish -> receive through the same
broker (the floor any mirror pays). The agents run with the ``[mqtt]`` defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt.settings import MqttSettings
from agent.mqtt.topics import TopicKind, TopicLayout
from agent.runtime.control import request
from bench.common import Mode, median, progress, rounded
from bench.processes import Launcher, wait_for

LAYOUT = TopicLayout()


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@contextlib.contextmanager
def _broker(binary: str, workdir: Path) -> Iterator[int]:
    with socket.socket() as sock:  # a TCP port nobody is bound to now
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    # As root mosquitto would drop to a user who cannot read the temporary directory.
    user = "user root\n" if os.getuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _accepts(port), 10, "mosquitto to listen")
        yield port
    finally:
        proc.kill()
        proc.wait(5)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class _Watcher:
    """Records when each (topic, metadata value) first arrives, and which topics have spoken."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.topics: set[str] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        with self._lock:
            self.topics.add(message.topic)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            value = str(json.loads(message.payload)["peer_metadata"].get("n"))
            with self._lock:
                self.seen.setdefault((message.topic, value), now)

    def arrival(self, topic: str, value: str) -> float | None:
        with self._lock:
            return self.seen.get((topic, value))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _broker_floor(port: int, repetitions: int) -> list[float]:
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda *_: got.set()
    client.connect("127.0.0.1", port)
    client.subscribe("bench/floor", qos=1)
    client.loop_start()
    time.sleep(0.2)
    samples = []
    try:
        for _ in range(repetitions):
            got.clear()
            start = time.perf_counter()
            client.publish("bench/floor", b"x", qos=1)
            if got.wait(5):
                samples.append(time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()
    return samples


TITLE = "MQTT mirror: a metadata change at a broker subscriber"


def run(mode: Mode) -> dict[str, Any]:
    binary = _mosquitto()
    if binary is None:
        progress("mqtt mirror latency: mosquitto is not installed; skipped")
        return {"title": TITLE, "unavailable": "mosquitto is not installed", "goals": []}
    repetitions = 5 if mode.quick else 25
    progress(f"mqtt mirror latency: 2 agents, {repetitions} metadata changes")
    with Launcher("bench-mqtt-") as launcher, _broker(binary, launcher.root) as port:
        mqtt_table = f'[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\n'
        first, second = (launcher.spawn(name, mqtt_table) for name in ("alpha", "beta"))
        alpha, beta = launcher.wait_ready(first), launcher.wait_ready(second)
        own = LAYOUT.peer_topic(alpha, alpha, TopicKind.STATE)
        remote = LAYOUT.peer_topic(beta, alpha, TopicKind.STATE)
        watcher = _Watcher(port, [own, remote])
        try:
            wait_for(lambda: remote in watcher.topics, 15, "the mirrors to publish")
            own_samples, remote_samples = [], []
            for i in range(repetitions):
                value = f"{i}-{time.monotonic_ns()}"
                start = time.perf_counter()
                request(first.state_dir, {"op": "metadata_set", "json": json.dumps({"n": value})})

                def reached(v: str = value) -> float | None:
                    return watcher.arrival(remote, v)

                remote_samples.append(wait_for(reached, 10, "the change at the subscriber") - start)
                own_at = watcher.arrival(own, value)
                if own_at is not None:
                    own_samples.append(own_at - start)
                time.sleep(0.3)  # let both mirrors go quiet before the next change
        finally:
            watcher.close()
        floor = _broker_floor(port, repetitions)
    result = {
        "title": TITLE,
        "goal": "reported, no numeric goal (issue 4 asks how long a change takes to reach a subscriber)",
        "baseline": "bare paho publish -> receive through the same broker",
        "repetitions": repetitions,
        "coalesce_s": MqttSettings().coalesce,
        "own_view_ms": rounded(median(own_samples) * 1000, 2),
        "remote_view_ms": rounded(median(remote_samples) * 1000, 2),
        "broker_floor_ms": rounded(median(floor) * 1000, 3),
        "goals": [],
    }
    progress(
        f"mqtt: own view {result['own_view_ms']} ms, via one hop {result['remote_view_ms']} ms, "
        f"broker floor {result['broker_floor_ms']} ms (medians)"
    )
    return result


if __name__ == "__main__":
    import sys

    from bench.common import FULL, QUICK

    print(json.dumps(run(QUICK if "--quick" in sys.argv else FULL), indent=1))
