"""bench/ble.py: a quiet node's traffic does not grow with the mesh behind its router, and the
whole bench (virtual Bluetooth in real time, slow-marked) writes well-formed figures. No timing is
asserted: times are printed and written by the bench."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.ble import quiet_hour

ROOT = Path(__file__).resolve().parents[1]
PER_HOUR = (
    "bytes_sent_per_hour",
    "bytes_received_per_hour",
    "frames_sent_per_hour",
    "frames_received_per_hour",
)


def test_a_quiet_nodes_bytes_per_hour_are_the_same_behind_10_and_100_peers_and_a_live_mesh() -> None:
    small = quiet_hour(10, real_engines=False)
    large = quiet_hour(100, real_engines=False)
    live = quiet_hour(10, real_engines=True)  # real host engines: the leaf sees what a live router sends
    assert large["router_holds_records"] >= 200 and live["router_graph_peers"] >= 12
    for key in PER_HOUR:
        assert small[key] == large[key] == live[key] > 0, key
    # Quiet: one SUMMARY keepalive each way per 5 s, nothing re-signed on the node.
    assert small["frames_sent_per_hour"] == small["frames_received_per_hour"] == 3600 / 5
    assert small["signatures_per_hour"] == 0


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


@pytest.mark.slow
def test_the_quick_bench_writes_every_figure_beside_its_goal(tmp_path: Path) -> None:
    out, doc = tmp_path / "ble.json", tmp_path / "BLE_PERFORMANCE.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ble", "--quick", "--out", str(out), "--doc", str(doc)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    figures = result["figures"]
    assert set(figures) == {"attach", "quiet_bytes", "cpu", "departure"}
    assert all(figure["title"] and figure["goal"] for figure in figures.values())
    assert all(math.isfinite(x) for x in _numbers(result))
    assert figures["attach"]["attaches"] >= 5 and figures["departure"]["departures"] >= 5
    assert figures["attach"]["node_signatures_per_attach_median"] >= 3  # card, a PROOF, a links record
    assert figures["attach"]["esp32_estimate"]["measured"] is False
    assert [r["peers"] for r in figures["quiet_bytes"]["rows"]][:3] == [10, 100, 1000]
    assert set(figures["cpu"]["cpu_percent_median_by_nodes"]) == {"0", "1", "2", "4"}
    for key in ("quiet_bytes", "departure"):
        assert all(isinstance(g["met"], bool) for g in figures[key]["goals"])
    text = doc.read_text(encoding="utf-8")
    assert "python -m bench.ble" in text and "ESTIMATE" in text and "1000" in text
    assert "a. attach" in proc.stdout
