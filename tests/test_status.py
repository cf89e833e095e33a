"""``presence-agent status``: what a running agent's transports report, its mirror and counters.

A real agent process on loopback (LAN only): the readable form names its peer key, says the
mirror is off and lists non-zero counters; ``--json`` is the control socket's answer. An agent
with a radio dongle (a scripted dongle on a real pty, the production driver and transport; the
agent in this process, its control socket real) shows the dongle: kind, id, firmware, MTU; an
unplugged one shows its port watched. BLE nodes connected and waiting are in
tests/test_ble_transport.py (the slot test reads the same report).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lan_support import Mesh, cli
from scripted_dongle import ESPNOW_INFO, ScriptedDongle

from agent.runtime.agent import Agent
from agent.transports.radio import RadioTransport
from agent.transports.radio_settings import RadioSettings


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


def test_status_shows_the_peer_the_mirror_and_the_counters_and_json_is_the_controls(mesh: Mesh) -> None:
    agent = mesh.start_agent("status")
    shown = cli("status", "--state-dir", str(agent.state))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"peer     {agent.peer_key}"
    assert "mqtt     off" in lines and "counters (non-zero):" in lines
    as_json = cli("status", "--json", "--state-dir", str(agent.state))
    answer = json.loads(as_json.stdout)
    assert answer["peer_key_string"] == agent.peer_key and answer["transports"] == []
    assert answer["mqtt"] is None and all(isinstance(v, int) for v in answer["stats"].values())


def test_status_shows_each_dongle_up_and_a_port_left_without_one(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, str]:
        dongle = ScriptedDongle(tmp_path / "ttyUSB0").plug()
        settings = RadioSettings(enabled=True, ports=(str(dongle.path), str(tmp_path / "ttyUSB9")))
        agent = Agent(state_dir=tmp_path / "pi", transports=[RadioTransport(settings)])
        await agent.start()
        try:
            for _ in range(200):
                if agent.stats().get("transport.radio.up"):
                    break
                await asyncio.sleep(0.05)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent.cli",
                "status",
                "--state-dir",
                str(tmp_path / "pi"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err
            return out.decode(), str(dongle.path)
        finally:
            await agent.close()
            dongle.unplug()

    text, port = asyncio.run(scenario())
    info = dataclasses.asdict(ESPNOW_INFO)
    firmware = ".".join(map(str, info["firmware_version"]))
    assert (
        f"radio    {port}: ESP_NOW dongle {ESPNOW_INFO.dongle_id.hex()}, firmware {firmware}, MTU 250" in text
    )
    assert f"radio    {tmp_path / 'ttyUSB9'}: no dongle up (watching the port)" in text
