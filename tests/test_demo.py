"""The README's main command: a real local mesh that finds itself and stops cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_demo_brings_up_a_mesh_shows_it_and_stops_every_agent_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--agents", "3", "--duration", "6"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 3 agents see each other" in result.stdout
    assert "pi-kitchen" in result.stdout and "pi-garden" in result.stdout and "pi-garage" in result.stdout
    assert "all agents stopped cleanly" in result.stdout  # the first one's web view included
    assert "web view of pi-kitchen: http://127.0.0.1:" in result.stdout


def radio_demo(duration: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--radio", "--duration", str(duration)],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )


def test_the_radio_demo_starts_five_agents_on_emulated_dongles_and_stops_them_cleanly() -> None:
    result = radio_demo(3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started 5 agents" in result.stdout
    assert "pi-kitchen ~ 2.5 km ~ pi-garden ~ 2.5 km ~ pi-garage ~ 2.5 km ~ pi-attic == LAN == pi-cellar" in (
        result.stdout
    )
    assert "all agents stopped cleanly" in result.stdout


@pytest.mark.slow  # the line forms over SF7 in a minute or two; scripts/soak runs it
def test_the_radio_demo_shows_radio_connections_with_distances_and_the_lan_bridge() -> None:
    result = radio_demo(150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 5 agents see each other" in result.stdout
    last = result.stdout.rsplit("FROM", 1)[1]  # the last connections table printed
    rows = [line.split() for line in last.splitlines()[1:] if line.startswith("pi-")]
    radio = {(row[0], row[1]): " ".join(row[3:]) for row in rows if row[2] == "Radio"}
    assert set(radio) == {("pi-garden", "pi-kitchen"), ("pi-garage", "pi-garden"), ("pi-attic", "pi-garage")}
    assert all(distance.endswith(" km") for distance in radio.values()), radio
    assert [row[:3] for row in rows if row[2] == "AccessPoint"] == [["pi-attic", "pi-cellar", "AccessPoint"]]
