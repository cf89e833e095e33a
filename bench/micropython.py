"""What the node library costs under real MicroPython: signing, verifying, the table, SHA-512.

    python -m bench.micropython [--rounds 20] [--out bench/micropython.json]

Runs ``firmware_bridge/micropython`` under the official MicroPython WebAssembly port in
Node.js (``tests/micropython/run.mjs``; ``scripts/bootstrap`` installs the port) and times,
with ``time.ticks_ms`` inside MicroPython (the port's clock has millisecond steps, so
each figure times a batch of ``--rounds`` calls):

* **table build**: the Ed25519 fixed-base table (256 points, 24,576 bytes), once per boot
  unless the firmware saves it to flash and restores it with ``set_base_table``;
* **key**: ``SigningKey(seed)`` (one SHA-512 and one [a]B);
* **sign**: one Ed25519 signature of a typical links record's Sig_structure (~120 bytes);
* **verify**: one verification of it;
* **sign card**, **sign links**: a whole signed record (CBOR + COSE + signature) with a
  small card and a three-connection links record;
* **SHA-512**: throughput of the pure-Python hash over 16 KiB.

Each figure is the median of five batches, per call. A measurement, not a test: nothing is
asserted; prints a table and writes JSON.

These are WebAssembly-on-x86 figures. An ESP32 (240 MHz Xtensa, no 64-bit multiply) or an
RP2040 (133 MHz Cortex-M0+) runs MicroPython's big-int arithmetic one to two orders of
magnitude slower, so expect a signature to take from about a second to several seconds on a
node: the firmware must sign off the BLE hot path (never inside an IRQ or a GATT callback,
and only on attach, a metadata or links change, or a refresh before expiry).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "micropython" / "run.mjs"
FIRMWARE = ROOT / "firmware_bridge" / "micropython"

SCRIPT = """
import time, json, ed25519, records, sha512

ROUNDS = %d

def median(values):
    values = sorted(values)
    return values[len(values) // 2]

def timed(fn, rounds=ROUNDS):
    # The port's clock ticks in milliseconds: time batches of ROUNDS calls, five times.
    samples = []
    for _ in range(5):
        t = time.ticks_ms()
        for _ in range(rounds):
            fn()
        samples.append(time.ticks_diff(time.ticks_ms(), t) / rounds)
    return median(samples)

t = time.ticks_ms()
ed25519.base_table()
table_ms = time.ticks_diff(time.ticks_ms(), t)
builds = []
for _ in range(5):
    t = time.ticks_ms()
    ed25519._build_table()
    builds.append(time.ticks_diff(time.ticks_ms(), t))
seed = bytes(range(32))
key = ed25519.SigningKey(seed)
message = bytes(120)
sig = key.sign(message)
links = [(bytes([i]) * 8, "Bluetooth", 10 * i) for i in range(1, 4)]
data = bytes(16384)
sha_ms = timed(lambda: sha512.sha512(data), 2)
out = {
    "table_first_ms": table_ms,
    "table_build_ms": median(builds),
    "key_ms": timed(lambda: ed25519.SigningKey(seed)),
    "sign_ms": timed(lambda: key.sign(message)),
    "verify_ms": timed(lambda: ed25519.verify(key.public_key, message, sig)),
    "sign_card_ms": timed(lambda: records.sign_card(key, 7, 1800000000, "node", "MicroPython", "0.1.0",
                                                    {"room": "kitchen", "battery": 87})),
    "sign_links_ms": timed(lambda: records.sign_links(key, 8, 1800000000, links)),
    "sha512_kib_per_s": 16 / (sha_ms / 1000),
}
print(json.dumps(out))
"""

ROWS = [
    ("table_build_ms", "fixed-base table build", "ms"),
    ("key_ms", "key from seed", "ms"),
    ("sign_ms", "sign (120-byte message)", "ms"),
    ("verify_ms", "verify", "ms"),
    ("sign_card_ms", "sign a card record", "ms"),
    ("sign_links_ms", "sign a links record (3 links)", "ms"),
    ("sha512_kib_per_s", "SHA-512 throughput", "KiB/s"),
]


def measure(rounds: int) -> dict[str, Any]:
    """Run the timing script under MicroPython; its figures."""
    if shutil.which("node") is None:
        sys.exit("bench.micropython: node is not on PATH (scripts/bootstrap installs nodejs)")
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "bench.py"
        script.write_text(SCRIPT % rounds, encoding="utf-8")
        done = subprocess.run(
            ["node", str(RUNNER), "--lib", str(FIRMWARE), str(script)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        sys.exit(f"bench.micropython: MicroPython failed:\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: round(v, 2) for k, v in figures.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micropython", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="calls per timed batch")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "micropython.json")
    args = parser.parse_args(argv)
    figures = measure(args.rounds)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    result = {
        "what": "node library (firmware_bridge/micropython) under the MicroPython WebAssembly port",
        "runtime": f"MicroPython WebAssembly port under Node.js {node} on {platform.machine()}",
        "rounds": args.rounds,
        "machine": describe(ROOT),
        "figures": figures,
    }
    print(f"{'figure':<34}{'value':>12}  unit")
    for key, label, unit in ROWS:
        print(f"{label:<34}{figures[key]:>12.2f}  {unit}")
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
