"""scripts/provision-node: a BLE node's key, firmware and settings onto a MicroPython board.

Steps, each shown before it runs (``--dry-run``: shown, none run):

1. a fresh Ed25519 seed from the OS's RNG, written 0600 into a private temporary directory (never
   printed, never logged; deleted once it is on the node, so only this host's memory and the
   node ever held it); provisioning again gives the node a new key, and a new peer key;
2. mpremote installs aioble from micropython-lib (``mip install``; skip with ``--no-mip``);
3. with ``--fleet-ca DIR`` (a fleet turns trust on, docs/THREAT_MODEL.md): the fleet CA in DIR
   issues the node's certificate for its new key with ``--identity`` as its identity metadata,
   exactly as ``presence-agent fleet-ca issue`` would (the CA directory opened and the identity
   checked before the board is touched; in --dry-run nothing is issued, so no serial is spent);
4. mpremote copies the node image (``firmware_bridge.images.NODE``), ``node.key``, ``node.json``
   (name, metadata, advertising interval; checked here first), ``node.cert`` when issued, and the
   entry point as main.py last, sets the node's clock from this host's (``rtc --set``: records
   carry an expiry), and resets the board.

It prints the node's peer key, so it can go on an allowlist for the connection request handler.
A failure is one line on stderr and exit status 1; bad usage exits 2. Tested:
tests/test_provision_node.py runs it against a virtual MicroPython board on a real pty (mpremote
really copies the files; the key on the board gives the printed peer key); the board has no RTC,
so ``rtc --set`` is tested by its command line in --dry-run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import MetadataError
from agent.core.keys import peer_key_string
from agent.core.records import Metadata, parse_metadata_json, validate_metadata
from agent.state.fleet_ca import FleetCa, FleetCaError, open_ca
from firmware_bridge.board_tools import (
    DryRun,
    Runner,
    Shell,
    ToolError,
    mpremote_copy,
    mpremote_mip,
    mpremote_reset,
    mpremote_rtc_set,
)
from firmware_bridge.images import FIRMWARE_DIR, NODE, ImageError, Placement

PROG = "provision-node"
KEY_FILE = "node.key"
CERT_FILE = "node.cert"
SEED_BYTES = 32


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/provision-node",
        description="Give a MicroPython board (ESP32, Pico W) its own key and the presence-agent BLE node "
        "firmware, and print its peer key.",
        epilog="Tested against a virtual MicroPython board; see README.md, 'Put a BLE node next to a Pi'.",
    )
    p.add_argument("--port", required=True, help="the board's serial port (e.g. /dev/ttyACM0)")
    p.add_argument("--name", required=True, help="the node's device name (at most 64 bytes)")
    p.add_argument("--metadata", default="{}", help="the node's metadata, a JSON object (default: {})")
    p.add_argument(
        "--advertising-interval-ms", type=int, default=250, help="20..10240 (longer saves battery)"
    )
    p.add_argument("--router", help="the peer id (16 hex digits) of the one Pi this node may attach to")
    p.add_argument(
        "--fleet-ca",
        type=Path,
        help="a fleet CA directory (presence-agent fleet-ca init): issue the node's certificate for its "
        "new key and write it to the node",
    )
    p.add_argument(
        "--identity",
        default="{}",
        help="with --fleet-ca: the certificate's identity metadata, a JSON object (site, role, serial)",
    )
    p.add_argument(
        "--days", type=int, default=365, help="with --fleet-ca: the certificate's lifetime in days"
    )
    p.add_argument("--no-mip", action="store_true", help="do not install aioble from micropython-lib")
    p.add_argument(
        "--no-rtc", action="store_true", help="do not set the node's clock (it must then be set another way)"
    )
    p.add_argument(
        "--source", type=Path, default=FIRMWARE_DIR, help="the firmware sources (default: %(default)s)"
    )
    p.add_argument("--dry-run", action="store_true", help="print every command it would run, and run none")
    return p


def node_settings(args: argparse.Namespace) -> dict[str, object]:
    """node.json, checked as the node will check it; ToolError naming what is wrong."""
    try:
        metadata = json.loads(args.metadata)
        validate_metadata(metadata)
    except (ValueError, MetadataError) as e:
        raise ToolError(f"--metadata: {e}") from None
    if len(args.name.encode("utf-8")) > 64:
        raise ToolError("--name: at most 64 bytes of UTF-8")
    if not 20 <= args.advertising_interval_ms <= 10240:
        raise ToolError("--advertising-interval-ms: BLE allows 20..10240")
    settings: dict[str, object] = {
        "name": args.name,
        "metadata": metadata,
        "advertising_interval_ms": args.advertising_interval_ms,
    }
    if args.router is not None:
        try:
            if len(bytes.fromhex(args.router)) != 8:
                raise ValueError
        except ValueError:
            raise ToolError(
                "--router: a peer id is 16 hex digits (the first 8 bytes of the Pi's key)"
            ) from None
        settings["router"] = args.router.lower()
    return settings


def identity_metadata(args: argparse.Namespace) -> Metadata | None:
    """The certificate's identity metadata (None without --fleet-ca); ToolError naming what is wrong."""
    if args.fleet_ca is None:
        if args.identity != "{}":
            raise ToolError("--identity: only with --fleet-ca (the CA that certifies it)")
        return None
    try:
        return parse_metadata_json(args.identity)
    except (ValueError, MetadataError) as e:
        raise ToolError(f"--identity: {e}") from None


def open_fleet_ca(
    args: argparse.Namespace, runner: Runner
) -> contextlib.AbstractContextManager[FleetCa | None]:
    """The fleet CA, opened (and locked) before the board is touched; None without --fleet-ca or in
    --dry-run (which issues nothing, so no serial is spent)."""
    if args.fleet_ca is None or isinstance(runner, DryRun):
        return contextlib.nullcontext()
    try:
        return open_ca(args.fleet_ca)
    except FleetCaError as e:
        raise ToolError(f"--fleet-ca: {e}") from None


def certify(
    args: argparse.Namespace, ca: FleetCa | None, identity: Metadata, public: bytes, work: Path
) -> Path:
    """The node's certificate, issued by ``ca`` for ``public`` and written to ``work``; its file."""
    cert = work / CERT_FILE
    step = f"issue the node's certificate from the fleet CA in {args.fleet_ca} (identity {args.identity})"
    if ca is None:
        print(f"{PROG}: would {step}")
        return cert
    print(f"{PROG}: {step}")
    try:
        issued = ca.issue(public, identity, args.days)
    except FleetCaError as e:
        raise ToolError(f"--fleet-ca: {e}") from None
    cert.write_bytes(issued.certificate.raw)
    print(f"{PROG}: certificate serial {issued.certificate.serial} written to {issued.path}")
    return cert


def provision(args: argparse.Namespace, runner: Runner) -> str:
    """Run every step; return the closing line (with the peer key). ToolError / ImageError on failure."""
    settings = node_settings(args)
    identity = identity_metadata(args)
    placements = NODE.placements(args.source)
    with open_fleet_ca(args, runner) as ca:
        return _provision(args, runner, settings, identity, ca, placements)


def _provision(
    args: argparse.Namespace,
    runner: Runner,
    settings: dict[str, object],
    identity: Metadata | None,
    ca: FleetCa | None,
    placements: tuple[Placement, ...],
) -> str:
    port = args.port
    seed = os.urandom(SEED_BYTES)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    print(f"{PROG}: {args.name!r} on {port}")
    if not args.no_mip:
        runner.run(mpremote_mip(port, NODE.mip_packages["ble"]))
    libraries = [p.source for p in placements if p.target != "main.py"]
    runner.run(mpremote_copy(port, libraries, "", f"copy {len(libraries)} node library files"))
    with tempfile.TemporaryDirectory(prefix="provision-node-") as work:
        key = Path(work) / KEY_FILE
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
        config = Path(work) / NODE.config
        config.write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
        runner.run(mpremote_copy(port, [key], KEY_FILE, f"write the node's key ({KEY_FILE}, not shown)"))
        runner.run(mpremote_copy(port, [config], NODE.config, f"write {NODE.config}"))
        if identity is not None:
            cert = certify(args, ca, identity, public, Path(work))
            runner.run(mpremote_copy(port, [cert], CERT_FILE, f"write the node's certificate ({CERT_FILE})"))
    (entry,) = [p for p in placements if p.target == "main.py"]
    runner.run(mpremote_copy(port, [entry.source], "main.py", f"install {entry.source.name} as main.py"))
    if not args.no_rtc:
        runner.run(mpremote_rtc_set(port))
    runner.run(mpremote_reset(port))
    done = "would have" if args.dry_run else "has"
    return f"{PROG}: done: {args.name!r} on {port} {done} peer key {peer_key_string(public)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    runner: Runner = DryRun(PROG) if args.dry_run else Shell(PROG)
    try:
        print(provision(args, runner))
    except (ImageError, ToolError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
