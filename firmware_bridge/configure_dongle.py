"""scripts/configure-dongle: change a dongle's radio settings (its dongle.json) over mpremote.

1. reads dongle.json from the board (``mpremote fs cat``; none there: an empty object);
2. merges the options given over it, and checks the result against the radio and the region's
   limits (``firmware_bridge.dongle_config.check``): nothing is written unless it passes;
3. writes it back (``mpremote fs cp``) and resets the board, which reads it at boot.

``--dry-run`` still reads (that changes nothing) and shows the dongle.json it would write and
the commands, running none of them. Without any setting to change, it shows what is there.
A failure is one line on stderr and exit status 1; bad usage exits 2. Tested:
tests/test_configure_dongle.py rewrites dongle.json on a virtual MicroPython board on a real pty.

The dongle must not be held by a running agent (stop it first), and its firmware must let
mpremote in (Ctrl-C at its REPL).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from firmware_bridge.board_tools import (
    DryRun,
    Runner,
    Shell,
    ToolError,
    missing_file_is,
    mpremote_cat,
    mpremote_copy,
    mpremote_reset,
)
from firmware_bridge.dongle_config import RADIOS, DongleConfigError, check, region_code
from firmware_bridge.images import DONGLE
from firmware_bridge.protocol import RegionCode

PROG = "configure-dongle"

#: Options that set one dongle.json key each: (flags, key, help).
SETTINGS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("--frequency-hz",), "frequency_hz", "LoRa centre frequency (Hz), inside the region's band"),
    (("--bandwidth-hz", "--bw"), "bandwidth_hz", "LoRa bandwidth (Hz): 125000, 250000, 500000, ..."),
    (("--spreading-factor", "--sf"), "spreading_factor", "LoRa spreading factor, 7..12"),
    (("--coding-rate", "--cr"), "coding_rate", "LoRa coding rate denominator, 5..8 (4/5..4/8)"),
    (
        ("--tx-power-dbm",),
        "tx_power_dbm",
        "transmit power (dBm), within the radio's range and the region's limit",
    ),
    (("--preamble-symbols",), "preamble_symbols", "LoRa preamble length (symbols)"),
    (("--sync-word",), "sync_word", "LoRa sync word (0..255; 18 = 0x12, private networks)"),
    (("--channel",), "channel", "ESP-NOW's Wi-Fi channel, 1..13"),
    (
        ("--status-interval-s",),
        "status_interval_s",
        "seconds between unasked STATUS frames (0: only when asked)",
    ),
    (("--queue-capacity",), "queue_capacity", "TX queue slots, 1..64"),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/configure-dongle",
        description="Check radio settings against the region's limits, then write them to the dongle's "
        "dongle.json (merged with what is there) and reset it.",
        epilog="Tested against a virtual MicroPython board on a real pty; see hw_configs/README.md.",
    )
    p.add_argument("--port", required=True, help="the dongle's serial port (e.g. /dev/ttyUSB0)")
    p.add_argument("--radio", choices=sorted(RADIOS), help="the dongle's radio (set by its profile)")
    p.add_argument(
        "--region", help=f"one of {', '.join(r.name for r in RegionCode)} (limits: agent/core/duty_cycle.py)"
    )
    for flags, key, text in SETTINGS:
        p.add_argument(*flags, dest=key, type=int, help=text)
    p.add_argument("--no-reset", action="store_true", help="do not reset the board after writing")
    p.add_argument(
        "--dry-run", action="store_true", help="read and check, show what it would write; write nothing"
    )
    return p


def changes(args: argparse.Namespace) -> dict[str, object]:
    """The dongle.json keys the options set."""
    out: dict[str, object] = {}
    if args.radio is not None:
        out["radio"] = args.radio
    if args.region is not None:
        out["region"] = region_code(args.region)
    for _, key, _ in SETTINGS:
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def read_current(port: str, reader: Runner) -> dict[str, object]:
    """The board's dongle.json as an object ({} when it has none)."""
    try:
        text = reader.run(mpremote_cat(port, DONGLE.config))
    except ToolError as e:
        if missing_file_is(str(e)):
            print(f"{PROG}: {port} has no {DONGLE.config} yet: starting from an empty one")
            return {}
        raise
    try:
        current = json.loads(text)
    except ValueError:
        current = None
    if not isinstance(current, dict):
        raise DongleConfigError(
            f"{DONGLE.config} on {port} is not a JSON object: rewrite it with scripts/flash-dongle --profile"
        )
    return current


def configure(args: argparse.Namespace, reader: Runner, writer: Runner) -> str:
    """Read, merge, check, write; return the closing line."""
    wanted = changes(args)
    port = args.port
    current = read_current(port, reader)
    merged = dict(current)
    merged.update(wanted)
    settings = check(merged, f"{DONGLE.config} for {port}")
    if not wanted:
        return f"{PROG}: {port}: {settings.describe()} (nothing to change)"
    text = settings.dumps()
    print(f"{PROG}: the new {DONGLE.config}:\n{text}", end="")
    with tempfile.TemporaryDirectory(prefix="configure-dongle-") as work:
        path = Path(work) / DONGLE.config
        path.write_text(text, encoding="utf-8")
        writer.run(mpremote_copy(port, [path], DONGLE.config, f"write {DONGLE.config} to {port}"))
    if not args.no_reset:
        writer.run(mpremote_reset(port))
    done = "would be" if args.dry_run else "is now"
    return f"{PROG}: {port} {done}: {settings.describe()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    reader = Shell(PROG)
    writer: Runner = DryRun(PROG) if args.dry_run else reader
    try:
        print(configure(args, reader, writer))
    except (DongleConfigError, ToolError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
