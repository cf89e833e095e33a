"""The command line: one line a field engineer can act on, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.core.keys import public_key_from_string


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_keys_show_prints_a_stable_peer_key(tmp_path: Path) -> None:
    first = run_cli("keys", "show", "--state-dir", str(tmp_path))
    second = run_cli("keys", "show", "--state-dir", str(tmp_path), "--json")
    assert first.returncode == 0 and second.returncode == 0
    key = first.stdout.strip()
    assert len(public_key_from_string(key)) == 32
    assert json.loads(second.stdout)["peer_key_string"] == key
    assert (tmp_path / "identity.key").stat().st_mode & 0o777 == 0o600


def test_a_damaged_key_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "identity.key").write_bytes(b"not a key")
    os.chmod(tmp_path / "identity.key", 0o600)
    result = run_cli("keys", "show", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "identity.key" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sim_runs_a_small_mesh_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = run_cli("sim", "--peers", "8", "--topology", "grid", "--json", str(out))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["peers"] == 8 and figures["converge_simulated_s"] > 0
