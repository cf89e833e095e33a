"""scripts/provision-node against a virtual MicroPython board on a real pty (mpremote really copies).

What is checked: the node image, node.json, a fresh 32-byte key and main.py land on the board, and
the clock is set; the peer key printed is the key's on the board; the key is never printed and a
second run gives a new one; --dry-run shows every command and runs none; bad settings are one line,
exit 1, before anything is copied.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dongle_scripts_support import one_line, script
from virtual_board import virtual_board

from agent.core.keys import peer_key_string
from firmware_bridge.images import FIRMWARE_DIR, NODE

ARGS = ("--name", "leaf-kitchen", "--metadata", '{"room": "kitchen"}', "--no-mip", "--no-rtc")


def test_the_node_gets_its_image_key_and_settings_and_its_peer_key_is_printed(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"main.py": b"old"}) as board:
        done = script("provision_node", "--port", board.port, *ARGS, "--router", "45BF4C409D54CD65")
        on_board = board.files()
    assert done.returncode == 0, done.stdout + done.stderr
    for name in NODE.files:
        assert on_board[name] == (FIRMWARE_DIR / name).read_bytes(), name
    assert on_board["main.py"] == (FIRMWARE_DIR / "node_main.py").read_bytes()
    assert json.loads(on_board["node.json"]) == {
        "name": "leaf-kitchen",
        "metadata": {"room": "kitchen"},
        "advertising_interval_ms": 250,
        "router": "45bf4c409d54cd65",
    }
    seed = on_board["node.key"]
    assert len(seed) == 32
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith(f"has peer key {peer_key_string(key)}")
    assert seed.hex() not in done.stdout + done.stderr


def test_a_dry_run_shows_every_command_and_runs_none(tmp_path: Path) -> None:
    # No board at that path: any command run would fail the script.
    done = script("provision_node", "--port", str(tmp_path / "ttyACM9"), "--dry-run", "--name", "n")
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("  $ ")]
    assert any(" mip install aioble" in line for line in shown)
    assert any(line.endswith(":node.key") for line in shown) and any(" rtc --set" in line for line in shown)
    assert shown[-1].endswith(" reset") and "would have peer key" in done.stdout


def test_bad_settings_are_one_line_before_anything_is_copied(tmp_path: Path) -> None:
    for bad, says in (
        (("--metadata", "[1]"), "--metadata: metadata must be a JSON object"),
        (("--metadata", '{"t": 1e999}'), "--metadata:"),
        (("--advertising-interval-ms", "5"), "--advertising-interval-ms: BLE allows 20..10240"),
        (("--router", "zz"), "--router: a peer id is 16 hex digits"),
    ):
        done = script("provision_node", "--port", "/dev/null-not-a-board", "--name", "n", *bad)
        assert done.returncode == 1
        assert one_line(done.stderr).startswith(f"provision-node: {says}"), done.stderr
