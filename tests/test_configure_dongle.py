"""scripts/configure-dongle rewrites dongle.json on a virtual MicroPython board on a real pty, and
refuses settings outside the radio's or the region's limits with one line, writing nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dongle_scripts_support import HELTEC_EU868, one_line, script
from virtual_board import VirtualBoard, virtual_board

from firmware_bridge.dongle_config import load_profile

HELTEC_JSON = load_profile(HELTEC_EU868).settings.to_json()


def configure(board: VirtualBoard, *args: str) -> tuple[int, str, str]:
    done = script("configure_dongle", "--port", board.port, *args)
    return done.returncode, done.stdout, done.stderr


def dongle_json(board: VirtualBoard) -> object:
    return json.loads(board.files()["dongle.json"])


@pytest.fixture(scope="module")
def heltec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualBoard]:
    """A board flashed with the Heltec EU868 profile (shared: the tests on it write nothing)."""
    seeded = {"dongle.json": json.dumps(HELTEC_JSON).encode()}
    with virtual_board(tmp_path_factory.mktemp("heltec"), seeded) as board:
        yield board


def test_changes_are_merged_into_what_the_board_has(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"dongle.json": json.dumps(HELTEC_JSON).encode()}) as board:
        code, out, err = configure(board, "--sf", "9", "--tx-power-dbm", "10", "--frequency-hz", "868300000")
        written = dongle_json(board)
    assert code == 0, err
    assert written == {**HELTEC_JSON, "spreading_factor": 9, "tx_power_dbm": 10, "frequency_hz": 868300000}
    assert out.splitlines()[-1] == (
        f"configure-dongle: {board.port} is now: sx127x, EU868_G1 868.300 MHz, SF9 125 kHz 4/5, 10 dBm; "
        "a full frame takes 1250.3 ms (no dwell limit)"
    )
    assert f"{board.port} so it boots with them" in out  # reset, so the firmware reads it


def test_a_board_without_dongle_json_gets_one_from_the_options(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash") as board:
        code, out, err = configure(
            board,
            "--radio",
            "espnow",
            "--region",
            "none",
            "--channel",
            "6",
            "--tx-power-dbm",
            "8",
            "--no-reset",
        )
        written = dongle_json(board)
    assert code == 0, err
    assert written == {"radio": "espnow", "pins": {}, "region": 0, "tx_power_dbm": 8, "channel": 6}
    assert f"{board.port} has no dongle.json yet" in out
    assert "reset the board" not in out


def test_a_region_change_is_checked_with_the_settings_already_there(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"dongle.json": json.dumps(HELTEC_JSON).encode()}) as board:
        code, _, err = configure(board, "--region", "US915", "--frequency-hz", "903900000", "--no-reset")
        written = dongle_json(board)
    assert code == 0, err
    assert written == {**HELTEC_JSON, "region": 4, "frequency_hz": 903900000}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--frequency-hz", "869000000"],
            "frequency_hz 869000000 with a 125 kHz channel is not inside EU868_G1",
        ),
        (
            ["--frequency-hz", "868000000"],
            "choose 868062500..868537500",
        ),  # the channel's edge, not its centre
        (["--tx-power-dbm", "17"], "tx_power_dbm 17 is over EU868_G1's limit of 14 dBm"),
        (["--tx-power-dbm", "25"], "tx_power_dbm 25: a sx127x transmits at 2..20 dBm"),
        (["--sf", "13"], "spreading_factor 13: choose 7..12"),
        (["--bw", "100000"], "bandwidth_hz 100000 is not a LoRa bandwidth"),
        (["--cr", "9"], "coding_rate 9: choose 5..8"),
        (["--region", "EU433"], "region 'EU433' is not one of NONE, EU868_G1, EU868_G2, EU868_G3, US915"),
        (["--region", "NONE"], "region NONE has no LoRa band"),
        (
            ["--region", "US915", "--frequency-hz", "903900000", "--sf", "8"],
            "a 255-byte frame takes 707.1 ms at these settings, over US915's 400 ms dwell limit",
        ),
        (
            ["--radio", "espnow", "--channel", "6"],
            "ESP-NOW works at 2.4 GHz: its region is NONE, not EU868_G1",
        ),
        (["--queue-capacity", "65"], "queue_capacity is 65, expected an integer in 1..64"),
        (["--sync-word", "256"], "sync_word is 256, expected an integer in 0..255"),
    ],
)
def test_settings_outside_the_limits_are_one_line_and_nothing_is_written(
    heltec: VirtualBoard, args: list[str], message: str
) -> None:
    before = heltec.files()
    code, out, err = configure(heltec, *args)
    assert code == 1
    line = one_line(err)
    assert line.startswith("configure-dongle: ") and message in line, line
    assert heltec.files() == before
    assert "write dongle.json" not in out


def test_dry_run_reads_and_shows_but_writes_nothing(heltec: VirtualBoard) -> None:
    before = heltec.files()
    code, out, err = configure(heltec, "--sf", "8", "--dry-run")
    assert code == 0, err
    assert heltec.files() == before
    assert '"spreading_factor": 8' in out
    assert f"write dongle.json to {heltec.port} (dry run)" in out
    assert out.splitlines()[-1].startswith(f"configure-dongle: {heltec.port} would be: sx127x, EU868_G1")


def test_without_changes_it_shows_what_the_board_has(heltec: VirtualBoard) -> None:
    code, out, err = configure(heltec)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        f"configure-dongle: {heltec.port}: sx127x, EU868_G1 868.100 MHz, SF7 125 kHz 4/5, 14 dBm; "
        "a full frame takes 399.6 ms (no dwell limit) (nothing to change)"
    )


def test_a_dongle_json_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"dongle.json": b"{radio: sx127x"}) as board:
        code, _, err = configure(board, "--sf", "8")
        assert board.files() == {"dongle.json": b"{radio: sx127x"}
    assert code == 1
    assert one_line(err) == (
        f"configure-dongle: dongle.json on {board.port} is not a JSON object: "
        "rewrite it with scripts/flash-dongle --profile"
    )


def test_settings_the_checks_need_but_the_board_lacks_are_named(tmp_path: Path) -> None:
    with virtual_board(tmp_path / "flash", {"dongle.json": b'{"radio": "sx126x", "region": 4}'}) as board:
        code, _, err = configure(board, "--sf", "8")
    assert code == 1
    assert one_line(err) == (
        f"configure-dongle: dongle.json for {board.port}: sx126x needs frequency_hz, bandwidth_hz, "
        "coding_rate, tx_power_dbm, preamble_symbols, which are not set"
    )


def test_a_port_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    done = script("configure_dongle", "--port", str(tmp_path / "ttyUSB-gone"), "--sf", "8")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"configure-dongle: read dongle.json from {tmp_path / 'ttyUSB-gone'}: mpremote failed: "
        f"mpremote: failed to access {tmp_path / 'ttyUSB-gone'} (it may be in use by another program)"
    )
