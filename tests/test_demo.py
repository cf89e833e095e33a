"""The README's main command: a real local mesh that finds itself and stops cleanly."""

from __future__ import annotations

import subprocess
import sys


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
