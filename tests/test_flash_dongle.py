"""scripts/flash-dongle: its mpremote steps against a virtual MicroPython board on a real pty; its
esptool steps by their exact command lines (--dry-run) and by failing on a pty that is no ESP32."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from dongle_scripts_support import (
    ESP32_ESPNOW,
    HELTEC_EU868,
    LILYGO_US915,
    one_line,
    script,
    stand_in_firmware,
)
from virtual_board import virtual_board

from firmware_bridge.dongle_config import load_profile
from firmware_bridge.images import DONGLE

PY = sys.executable


def commands(stdout: str) -> list[str]:
    """The commands a run shows, in order."""
    return [line.removeprefix("  $ ") for line in stdout.splitlines() if line.startswith("  $ ")]


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    return stand_in_firmware(tmp_path / "firmware")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC-v1.27.0.bin"
    path.write_bytes(b"\xe9" + bytes(255))  # an image's first byte; never written anywhere here
    return path


def test_dry_run_shows_every_command_in_order_and_runs_none(firmware: Path, image: Path) -> None:
    port = "/dev/ttyUSB7"  # no such port: nothing may touch it
    done = script(
        "flash_dongle", "--port", port, "--profile", str(HELTEC_EU868),
        "--firmware", str(image), "--source", str(firmware), "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    libraries = " ".join(shlex.quote(str(firmware / name)) for name in DONGLE.files)
    mpremote = f"{PY} -m mpremote connect {port}"
    assert commands(done.stdout)[:2] == [
        f"{PY} -m esptool --chip esp32 --port {port} erase-flash",
        f"{PY} -m esptool --chip esp32 --port {port} --baud 460800 write-flash -z 0x1000 {image}",
    ]
    assert commands(done.stdout)[2:4] == [
        f"{mpremote} mip install lora-sx127x",
        f"{mpremote} fs cp {libraries} :",
    ]
    json_copy, main_copy, reset = commands(done.stdout)[4:]
    assert json_copy.startswith(f"{mpremote} fs cp ") and json_copy.endswith("/dongle.json :dongle.json")
    assert (main_copy, reset) == (
        f"{mpremote} fs cp {firmware / 'dongle_main.py'} :main.py",
        f"{mpremote} reset",
    )
    assert done.stdout.splitlines()[-1].startswith("flash-dongle: done: ")


@pytest.mark.parametrize(
    ("chip", "offset"),
    [("esp32", "0x1000"), ("esp32s2", "0x1000"), ("esp32s3", "0x0"), ("esp32c3", "0x0"), ("esp32c6", "0x0")],
)
def test_the_image_goes_at_the_chip_familys_offset(
    chip: str, offset: str, firmware: Path, image: Path
) -> None:
    done = script(
        "flash_dongle", "--port", "/dev/ttyUSB7", "--profile", str(ESP32_ESPNOW), "--chip", chip,
        "--firmware", str(image), "--source", str(firmware), "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    erase, write = commands(done.stdout)[:2]
    assert erase.endswith(f"--chip {chip} --port /dev/ttyUSB7 erase-flash")
    assert write.endswith(f"--chip {chip} --port /dev/ttyUSB7 --baud 460800 write-flash -z {offset} {image}")


def test_the_profiles_chip_is_the_default(firmware: Path, image: Path) -> None:
    done = script(
        "flash_dongle", "--port", "/dev/ttyACM0", "--profile", str(LILYGO_US915),
        "--firmware", str(image), "--source", str(firmware), "--dry-run",
    )  # fmt: skip
    assert "--chip esp32s3" in commands(done.stdout)[0]
    assert "write-flash -z 0x0 " in commands(done.stdout)[1]
    assert f"{PY} -m mpremote connect /dev/ttyACM0 mip install lora-sx126x" in commands(done.stdout)


def test_without_an_image_or_mip_only_mpremote_copies(firmware: Path) -> None:
    done = script(
        "flash_dongle", "--port", "/dev/ttyUSB7", "--profile", str(HELTEC_EU868),
        "--source", str(firmware), "--no-mip", "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    steps = commands(done.stdout)
    assert len(steps) == 4 and all(" -m mpremote connect /dev/ttyUSB7 " in step for step in steps)


def test_flashing_copies_the_image_its_dongle_json_and_main_py_onto_the_board(
    tmp_path: Path, firmware: Path
) -> None:
    with virtual_board(tmp_path / "flash", {"main.py": b"old firmware"}) as board:
        done = script(
            "flash_dongle", "--port", board.port, "--profile", str(ESP32_ESPNOW), "--source", str(firmware)
        )
        on_board = board.files()
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {name: (firmware / name).read_bytes() for name in DONGLE.files}
    expected["main.py"] = (firmware / "dongle_main.py").read_bytes()
    assert {name: data for name, data in on_board.items() if name != "dongle.json"} == expected
    assert json.loads(on_board["dongle.json"]) == load_profile(ESP32_ESPNOW).settings.to_json()
    assert json.loads(on_board["dongle.json"])["region"] == 0  # NONE: the serial protocol's code
    shown = [line for line in done.stdout.splitlines() if line.startswith("flash-dongle: ")]
    assert [line.split(":")[1].strip() for line in shown[1:5]] == [
        f"copy {len(DONGLE.files)} firmware files",
        "write dongle.json from esp32-espnow.toml",
        "install dongle_main.py as main.py",
        f"reset the board on {board.port} so it boots with them",
    ]


def test_esptool_failing_on_a_port_that_is_no_esp32_is_one_line_and_nothing_is_copied(
    tmp_path: Path, firmware: Path, image: Path
) -> None:
    # The virtual board answers esptool's SLIP sync with REPL text, as a board without its
    # bootloader (or something else entirely) would.
    with virtual_board(tmp_path / "flash", {"main.py": b"kept"}) as board:
        done = script(
            "flash_dongle", "--port", board.port, "--profile", str(ESP32_ESPNOW),
            "--firmware", str(image), "--source", str(firmware),
        )  # fmt: skip
        on_board = board.files()
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"flash-dongle: erase the flash of the esp32 on {board.port}: esptool failed: ")
    assert "Failed to connect to ESP32" in line and line.endswith("to enter its bootloader)")
    assert "Traceback" not in done.stdout + done.stderr
    assert on_board == {"main.py": b"kept"}
    assert "mpremote" not in done.stdout


def test_mpremote_failing_is_one_line(firmware: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB-unplugged")
    done = script(
        "flash_dongle", "--port", missing, "--profile", str(ESP32_ESPNOW), "--source", str(firmware)
    )
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"flash-dongle: copy {len(DONGLE.files)} firmware files: mpremote failed: "
        f"mpremote: failed to access {missing} (it may be in use by another program)"
    )


def test_a_profile_over_the_regions_limits_is_refused_before_any_step(tmp_path: Path, firmware: Path) -> None:
    loud = tmp_path / "loud.toml"
    loud.write_text(HELTEC_EU868.read_text().replace("tx_power_dbm = 14", "tx_power_dbm = 20"))
    done = script("flash_dongle", "--port", "/dev/ttyUSB7", "--profile", str(loud), "--source", str(firmware))
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        f"flash-dongle: {loud}: [dongle]: tx_power_dbm 20 is over EU868_G1's limit of 14 dBm"
    )
    assert done.stdout == ""


def test_missing_firmware_files_are_named_before_any_step(tmp_path: Path, firmware: Path) -> None:
    (firmware / "dongle.py").unlink()
    done = script(
        "flash_dongle", "--port", "/dev/ttyUSB7", "--profile", str(HELTEC_EU868), "--source", str(firmware)
    )
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"flash-dongle: {firmware} is missing dongle.py of the dongle firmware: "
        "use a checkout that has them (or --source DIR)"
    )
    assert done.stdout == ""


def test_a_missing_image_is_one_line(tmp_path: Path, firmware: Path) -> None:
    done = script(
        "flash_dongle", "--port", "/dev/ttyUSB7", "--profile", str(HELTEC_EU868),
        "--firmware", str(tmp_path / "nope.bin"), "--source", str(firmware), "--dry-run",
    )  # fmt: skip
    assert done.returncode == 1
    assert "nope.bin: no such file" in one_line(done.stderr)


def test_a_profile_is_found_from_the_repository_root_as_on_a_pi(firmware: Path, tmp_path: Path) -> None:
    done = script(
        "flash_dongle", "--port", "/dev/ttyUSB7", "--profile", "hw_configs/dongles/esp32-espnow.toml",
        "--source", str(firmware), "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "write dongle.json from esp32-espnow.toml" in done.stdout
