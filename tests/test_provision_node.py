"""scripts/provision-node against a virtual MicroPython board on a real pty (mpremote really copies).

What is checked: the node image, node.json, a fresh 32-byte key and main.py land on the board, and
the clock is set; the peer key printed is the key's on the board; the key is never printed and a
second run gives a new one; --dry-run shows every command and runs none; bad settings are one line,
exit 1, before anything is copied; with a fleet CA, the node gets a certificate for its new key (and
nothing is issued in --dry-run or when the board cannot be provisioned for bad input).
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dongle_scripts_support import one_line, script
from virtual_board import virtual_board

from agent.core.certs import open_certificate
from agent.core.keys import peer_key_string
from agent.core.records import thaw_metadata
from agent.state.fleet_ca import init_ca
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


def test_with_a_fleet_ca_the_node_gets_a_certificate_for_its_new_key(tmp_path: Path) -> None:
    with init_ca(tmp_path / "ca") as ca:
        ca_key = ca.public_key
    identity = '{"site": "depot-3", "role": "sensor"}'
    with virtual_board(tmp_path / "flash", {}) as board:
        done = script(
            "provision_node",
            "--port",
            board.port,
            *ARGS,
            "--fleet-ca",
            str(tmp_path / "ca"),
            "--identity",
            identity,
        )
        on_board = board.files()
    assert done.returncode == 0, done.stdout + done.stderr
    key = Ed25519PrivateKey.from_private_bytes(on_board["node.key"]).public_key().public_bytes_raw()
    cert = open_certificate(on_board["node.cert"], [ca_key])
    assert cert.device_key == key
    assert thaw_metadata(cert.metadata) == json.loads(identity)
    assert cert.serial == 1 and (tmp_path / "ca" / "certs" / "0000000001.cert").read_bytes() == cert.raw
    assert "certificate serial 1" in done.stdout


def test_a_fleet_ca_that_cannot_be_opened_or_a_bad_identity_is_one_line_before_the_board_is_touched(
    tmp_path: Path,
) -> None:
    with init_ca(tmp_path / "ca"):
        pass
    with virtual_board(tmp_path / "flash", {"main.py": b"old"}) as board:
        for bad, says in (
            (("--fleet-ca", str(tmp_path / "nowhere")), "provision-node: --fleet-ca: "),
            (("--fleet-ca", str(tmp_path / "ca"), "--identity", "[1]"), "provision-node: --identity: "),
            (("--identity", '{"site": "x"}'), "provision-node: --identity: only with --fleet-ca"),
        ):
            done = script("provision_node", "--port", board.port, *ARGS, *bad)
            assert done.returncode == 1, done.stdout
            assert one_line(done.stderr).startswith(says), done.stderr
        assert board.files() == {"main.py": b"old"}
    assert not list((tmp_path / "ca" / "certs").iterdir())  # no serial spent


def test_a_dry_run_with_a_fleet_ca_issues_nothing(tmp_path: Path) -> None:
    with init_ca(tmp_path / "ca"):
        pass
    done = script(
        "provision_node",
        "--port",
        str(tmp_path / "ttyACM9"),
        "--dry-run",
        "--name",
        "n",
        "--fleet-ca",
        str(tmp_path / "ca"),
        "--identity",
        '{"site": "x"}',
    )
    assert done.returncode == 0, done.stderr
    assert "would issue the node's certificate" in done.stdout
    assert any(line.endswith(":node.cert") for line in done.stdout.splitlines())
    assert not list((tmp_path / "ca" / "certs").iterdir())
