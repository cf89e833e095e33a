"""Running scripts/flash-dongle and scripts/configure-dongle's modules as a user runs them.

They run as ``python -m firmware_bridge.<module>`` with this Python (the bash wrappers in
scripts/ only run scripts/bootstrap first). The dongle firmware is another branch's work, so
the tests copy a stand-in tree that has every file ``firmware_bridge.images.DONGLE`` names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from firmware_bridge.images import DONGLE

ROOT = Path(__file__).resolve().parent.parent
DONGLE_PROFILES = ROOT / "hw_configs" / "dongles"
HELTEC_EU868 = DONGLE_PROFILES / "heltec-lora32-v2-eu868.toml"
LILYGO_US915 = DONGLE_PROFILES / "lilygo-t3s3-sx1262-us915.toml"
ESP32_ESPNOW = DONGLE_PROFILES / "esp32-espnow.toml"
#: mpremote and esptool runs, several per script run, on a loaded machine.
SCRIPT_TIMEOUT = 300.0


def stand_in_firmware(where: Path) -> Path:
    """A directory with every file of the dongle image, each a module naming itself."""
    where.mkdir(parents=True, exist_ok=True)
    for name in (*DONGLE.files, DONGLE.main or ""):
        if name:
            (where / name).write_text(f"# stand-in for {name}\nNAME = {name!r}\n", encoding="utf-8")
    return where


def script(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the script's module from ``cwd``, importing this checkout's package."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", f"firmware_bridge.{module}", *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
        cwd=cwd,
        env=env,
    )


def one_line(text: str) -> str:
    """The only line of ``text`` (an AssertionError if there are more or none)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]
