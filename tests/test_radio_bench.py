"""bench/radio.py: its airtime bound is the stated formula, its quick run writes well-formed figures.

No timing is asserted: the quick run (real agent processes forming over SF7, several minutes) is
slow-marked and checks only that every figure was measured; the lab's configuration files are
what an agent accepts, and the connections table names each connection once with its distance.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import load_config
from agent.core.airtime import LoRaModulation
from agent.core.certs import raw_public_key
from agent.core.medium import MEDIUM_HEADER_BYTES
from agent.core.records import make_card, sign_record
from agent.core.wire import FRAGMENT_HEADER_BYTES, MessageType, encode_message
from agent.runtime.render import connections_table
from agent.sim.radio_lab import LabRadio, RadioLab, line
from bench.radio import airtime_bound, lab_settings, link_mtu

ROOT = Path(__file__).resolve().parents[1]


def signed_card(metadata_bytes: int) -> bytes:
    key = Ed25519PrivateKey.generate()
    card = make_card("r0", "Linux", "0.1.0", {"pad": "x" * metadata_bytes})
    return sign_record(key, raw_public_key(key), 7, 2_000_000_000, card).raw


def test_the_bound_is_three_hops_of_the_one_frame_that_carries_a_small_card() -> None:
    radio = LabRadio()
    card = signed_card(10)
    frame = 1 + len(encode_message(MessageType.RECORDS, card)) + MEDIUM_HEADER_BYTES
    bound, sizes = airtime_bound(radio, card)
    assert sizes == [frame]
    assert bound == pytest.approx(3 * LoRaModulation().airtime(frame))
    assert link_mtu(radio) == LoRaModulation().mtu - MEDIUM_HEADER_BYTES  # no cut at EU868 g3's 10 %


def test_a_card_bigger_than_a_frame_is_bounded_by_all_its_fragments() -> None:
    radio = LabRadio()
    card = signed_card(1000)
    message = len(encode_message(MessageType.RECORDS, card))
    bound, sizes = airtime_bound(radio, card)
    chunk = link_mtu(radio) - FRAGMENT_HEADER_BYTES
    assert len(sizes) == math.ceil(message / chunk) > 1
    assert sum(sizes) == message + len(sizes) * (FRAGMENT_HEADER_BYTES + MEDIUM_HEADER_BYTES)
    assert bound == pytest.approx(3 * sum(LoRaModulation().airtime(n) for n in sizes))


def test_the_lab_writes_configurations_an_agent_accepts_with_its_dongle_as_the_only_port(
    tmp_path: Path,
) -> None:
    with RadioLab(tmp_path, line(2)) as lab:
        for node, lan in ((0, False), (1, True)):
            path = tmp_path / f"{node}.toml"
            path.write_text(lab.config_text(node, lan), encoding="utf-8")
            config = load_config(path)
            # Every [radio] key as the bench computes with it, and the dongle's pty the only port.
            assert config.radio == dataclasses.replace(
                lab_settings(lab.radio), ports=(lab.emulator.path(node),)
            )
            assert config.lan.enabled is lan


def test_the_connections_table_shows_each_connection_once_with_its_distance() -> None:
    def peer(key: str, name: str, connections: list[dict[str, object]]) -> dict[str, object]:
        return {"peer_key_string": key, "device_name": name, "connections": connections}

    radio = {"id": "ab", "peer_key_string1": "kb", "peer_key_string2": "ka", "connection_type": "Radio"}
    lan = {"id": "bc", "peer_key_string1": "kb", "peer_key_string2": "kc", "connection_type": "AccessPoint"}
    radio["approximate_distance_in_meters"] = 2540.0
    lan["approximate_distance_in_meters"] = None
    document = {
        "local_peer": peer("ka", "pi-a", [radio]),
        "remote_peers": [peer("kb", "pi-b", [radio, lan]), peer("kc", "pi-c", [lan])],
    }
    rows = [line.split() for line in connections_table(document).splitlines()]
    assert rows == [
        ["FROM", "TO", "TYPE", "DISTANCE"],
        ["pi-a", "pi-b", "Radio", "2.5", "km"],
        ["pi-b", "pi-c", "AccessPoint", "-"],
    ]


@pytest.mark.slow  # real processes forming over SF7, then 2 quiet minutes: several minutes
def test_the_quick_radio_bench_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "radio.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.radio", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["mode"] == "quick"
    assert doc["setup"]["medium_refused"] == [0] * 5
    change = doc["change_across_three_hops"]
    assert len(change["changes"]) == 5 and change["ratio_measured_to_bound"] > 1
    assert doc["cpu_per_received_frame"]["quiet"]["frames"] > 0
    air = doc["airtime_per_quiet_hour"]
    assert set(air["processes_s_per_hour"]) == {"r0", "r1", "r2", "r3"}
    assert all(0 < x < air["region_budget_s_per_hour"] for x in air["processes_s_per_hour"].values())
    assert len(air["simulated_hour"]["per_node_s_per_hour"]) == 4
    assert len(doc["replug"]["seconds"]) == 5
    assert "a. change across 3 hops" in proc.stdout and "d. replug" in proc.stdout
