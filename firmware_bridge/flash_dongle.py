"""scripts/flash-dongle: MicroPython and the dongle firmware onto an ESP32, configured by a profile.

Steps, each shown before it runs (``--dry-run``: shown, none run):

1. with ``--firmware IMAGE.bin``: esptool erases the flash and writes the image at the chip
   family's offset (ESP32 / ESP32-S2 0x1000; ESP32-S3 / C3 / C6 0x0);
2. mpremote installs the radio's micropython-lib driver (``mip install``; skip with ``--no-mip``);
3. mpremote copies the dongle image (``firmware_bridge.images.DONGLE``), the profile's
   dongle.json, and the entry point as main.py last, then resets the board.

The profile is read and checked (``firmware_bridge.dongle_config``) and every file is found
before the first step. A failure is one line on stderr and exit status 1; bad usage exits 2.
Tested: tests/test_flash_dongle.py runs it against a virtual MicroPython board on a real pty
(mpremote really copies the files); esptool is tested by its exact command lines in --dry-run
and by failing against a pty that is not an ESP32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from firmware_bridge.board_tools import (
    DryRun,
    Runner,
    Shell,
    ToolError,
    esptool_erase,
    esptool_write,
    mpremote_copy,
    mpremote_mip,
    mpremote_reset,
)
from firmware_bridge.dongle_config import CHIP_OFFSETS, DongleConfigError, load_profile
from firmware_bridge.images import DONGLE, FIRMWARE_DIR, ImageError

PROG = "flash-dongle"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/flash-dongle",
        description="Flash MicroPython (optional) and the presence-agent dongle firmware onto an ESP32 "
        "radio dongle, configured by a hw_configs/dongles/*.toml profile.",
        epilog="Tested against a virtual MicroPython board (mpremote steps) and by its esptool "
        "command lines in --dry-run; see hw_configs/README.md.",
    )
    p.add_argument("--port", required=True, help="the dongle's serial port (e.g. /dev/ttyUSB0)")
    p.add_argument("--profile", required=True, type=Path, help="hw_configs/dongles/BOARD-REGION.toml")
    p.add_argument(
        "--chip", choices=sorted(CHIP_OFFSETS), help="esptool's chip family (default: the profile's)"
    )
    p.add_argument(
        "--firmware",
        type=Path,
        metavar="IMAGE.bin",
        help="a MicroPython image to write first (erases the flash); without it, the board runs MicroPython",
    )
    p.add_argument(
        "--no-mip", action="store_true", help="do not install the radio driver from micropython-lib"
    )
    p.add_argument(
        "--source", type=Path, default=FIRMWARE_DIR, help="the firmware sources (default: %(default)s)"
    )
    p.add_argument("--dry-run", action="store_true", help="print every command it would run, and run none")
    return p


def flash(args: argparse.Namespace, runner: Runner) -> str:
    """Run every step; return the closing line. DongleConfigError / ImageError / ToolError on failure."""
    profile = load_profile(_from_repo(args.profile))
    placements = DONGLE.placements(args.source)
    chip = args.chip or profile.chip
    if args.firmware is not None and not args.firmware.is_file():
        raise ToolError(f"--firmware {args.firmware}: no such file (download one from micropython.org)")
    port = args.port
    print(f"{PROG}: {profile.name} ({chip}) on {port}: {profile.settings.describe()}")
    if args.firmware is not None:
        runner.run(esptool_erase(port, chip))
        runner.run(esptool_write(port, chip, args.firmware))
    packages = DONGLE.mip_packages.get(profile.settings.radio, ())
    if packages and not args.no_mip:
        runner.run(mpremote_mip(port, packages))
    libraries = [p.source for p in placements if p.target != "main.py"]
    runner.run(mpremote_copy(port, libraries, "", f"copy {len(libraries)} firmware files"))
    with tempfile.TemporaryDirectory(prefix="flash-dongle-") as work:
        config = Path(work) / DONGLE.config
        config.write_text(profile.settings.dumps(), encoding="utf-8")
        runner.run(
            mpremote_copy(port, [config], DONGLE.config, f"write {DONGLE.config} from {profile.path.name}")
        )
    (entry,) = [p for p in placements if p.target == "main.py"]
    runner.run(mpremote_copy(port, [entry.source], "main.py", f"install {entry.source.name} as main.py"))
    runner.run(mpremote_reset(port))
    return f"{PROG}: done: {port} is a {profile.settings.radio} dongle ({profile.path.name})"


def _from_repo(path: Path) -> Path:
    """A profile named from the current directory, or else from the repository root."""
    if path.exists() or path.is_absolute():
        return path
    in_repo = Path(__file__).resolve().parent.parent / path
    return in_repo if in_repo.exists() else path


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runner: Runner = DryRun(PROG) if args.dry_run else Shell(PROG)
    try:
        print(flash(args, runner))
    except (DongleConfigError, ImageError, ToolError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
