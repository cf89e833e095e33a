"""What fleet trust costs a LAN handshake: time and bytes, with and without trust on.

    python -m bench.trust [--repetitions 200] [--out bench/trust.json]

Two in-process engines on a zero-latency in-memory wire (LAN link spec, no
send budget) run the real handshake: HELLO, PROOF, ACCEPT and the first
SUMMARY (the links records follow on a 50 ms timer, not counted). Measured per
handshake, from both ``link_up`` calls until both ends are established and
nothing is left to send:

* **time**: CPU time of the whole exchange on this machine (both engines; the
  wire adds none), so it is the handshake's own cost: signatures (PROOF, the
  card, with trust on the certificate's CA signature too) and encoding;
* **bytes** and **frames** both engines sent (``bytes.sent``).

Two shapes: a **first contact** (each card sent whole in HELLO, so with trust
on it carries the certificate, about 190 bytes more, and two more signatures
are checked on each side) and a **rejoin** (the same two engines again on a
new link: cards sent by reference, the held certificate only re-judged).
Trust off and trust on alternate, pair by pair, so drift in the machine's load
hits both alike; the figures are medians. A measurement, not a test: nothing
is asserted. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.certs import FleetTrust, issue_certificate, raw_public_key
from agent.core.engine import Engine, LinkSpec, Membership
from agent.core.events import ConnectionRequested
from agent.core.records import ConnectionType, make_card
from agent.state.store import MemoryCounter
from bench.common import median, progress, rounded

NOW: Final = float(int(time.time()))
DEFAULT_OUT: Final = Path(__file__).with_name("trust.json")
METADATA: Final = {"site": "depot-3", "role": "gateway", "serial": "S-0017"}
_links = itertools.count(1)


class Pair:
    """Two engines and the wire between them; ``ca`` set: both with trust on, certified by it."""

    def __init__(self, ca: Ed25519PrivateKey | None) -> None:
        self.engines = [self._engine(ca, serial) for serial in (1, 2)]
        self.link = 0

    @staticmethod
    def _engine(ca: Ed25519PrivateKey | None, serial: int) -> Engine:
        private = Ed25519PrivateKey.generate()
        public = raw_public_key(private)
        membership = None
        if ca is not None:
            cert = issue_certificate(ca, serial, public, METADATA, int(NOW) - 60, int(NOW) + 86_400)
            membership = Membership(FleetTrust.of([raw_public_key(ca)]), cert.raw)
        return Engine(
            private_key=private,
            public_key=public,
            counters=MemoryCounter(),
            card=make_card(f"pi-{serial:02d}", "Linux", "0.1.0", {}),
            now=NOW,
            rng=os.urandom,
            membership=membership,
        )

    def handshake(self) -> tuple[float, int, int]:
        """One handshake on a new link: (CPU seconds, bytes sent, frames sent) by both engines."""
        a, b = self.engines
        link = self.link = next(_links)
        before = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        started = time.process_time()
        a.link_up(link, LinkSpec(ConnectionType.ACCESS_POINT, expected_peer=b.public_key), NOW)
        b.link_up(link, LinkSpec(ConnectionType.ACCESS_POINT, expected_peer=a.public_key), NOW)
        self._pump(link)
        elapsed = time.process_time() - started
        if not all(any(item[0] == link for item in e.established_links()) for e in self.engines):
            raise RuntimeError("the handshake did not complete")
        sent = [(e.stats["bytes.sent"], e.stats["frames.sent"]) for e in self.engines]
        data = sum(s[0] - p[0] for s, p in zip(sent, before, strict=True))
        frames = sum(s[1] - p[1] for s, p in zip(sent, before, strict=True))
        return elapsed, data, frames

    def _pump(self, link: int) -> None:
        a, b = self.engines
        other = {id(a): b, id(b): a}
        for _ in range(10_000):
            moved = False
            for engine in self.engines:
                while (event := engine.next_event()) is not None:
                    if isinstance(event, ConnectionRequested):
                        engine.decide(event.link, True, NOW)
                        moved = True
                for _, frame in engine.datagrams_to_send(NOW):
                    other[id(engine)].receive(link, frame, NOW)
                    moved = True
            if not moved:
                return
        raise RuntimeError("the engines never went quiet")

    def drop(self) -> None:
        """The link goes down at both ends (each keeps the other's card)."""
        for engine in self.engines:
            engine.link_down(self.link, NOW)


def measure(repetitions: int, on_progress: Callable[[str], None] = progress) -> dict[str, Any]:
    ca = Ed25519PrivateKey.generate()
    samples: dict[tuple[str, str], list[tuple[float, int, int]]] = {
        (trust, shape): [] for trust in ("off", "on") for shape in ("first contact", "rejoin")
    }
    for i in range(repetitions):
        for trust in ("off", "on") if i % 2 == 0 else ("on", "off"):
            pair = Pair(ca if trust == "on" else None)
            samples[(trust, "first contact")].append(pair.handshake())
            pair.drop()
            samples[(trust, "rejoin")].append(pair.handshake())
        if (i + 1) % 50 == 0:
            on_progress(f"trust: {i + 1}/{repetitions} pairs")
    rows = []
    for (trust, shape), values in samples.items():
        rows.append(
            {
                "trust": trust,
                "handshake": shape,
                "median_ms": rounded(median([v[0] for v in values]) * 1000),
                "bytes": int(median([v[1] for v in values])),
                "frames": int(median([v[2] for v in values])),
                "samples": len(values),
            }
        )
    return {
        "what": "LAN handshake of two in-process engines, both ends, until established and quiet",
        "repetitions": repetitions,
        "certificate_metadata": METADATA,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'trust':<6} {'handshake':<14} {'median ms':>10} {'bytes':>7} {'frames':>7}"]
    for row in result["rows"]:
        trust, shape, ms = row["trust"], row["handshake"], row["median_ms"]
        lines.append(f"{trust:<6} {shape:<14} {ms:>10} {row['bytes']:>7} {row['frames']:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=200, help="pairs per configuration")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    args = parser.parse_args(argv)
    result = measure(args.repetitions)
    print(table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
